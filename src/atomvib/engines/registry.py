"""Engines by name: ``get_engine("sevennet")``, ``get_engine("mace:/path/model")``, ...

The registry keeps one engine object per spec per process (:data:`ENGINE_CACHE`), so a model is loaded
once however many structures follow; an engine's own caches (model, kernels, neighbour lists, worker
pool) live on that object. :func:`clear_engine_cache` drops them all. ``get_engine(engine.info.spec)``
recreates an engine from its provenance record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import AtomvibError, EngineError
from .base import Engine

#: default engines; crystals: chosen by measurement, see docs/validation.md (SevenNet-l3i5: the smallest errors
#: against DFPT on 60 Petretto crystals, 2.2× SevenNet-0's time per force call; ``sevennet`` for SevenNet-0)
DEFAULT_CRYSTAL_ENGINE = "sevennet:7net-l3i5"
DEFAULT_MOLECULE_ENGINE = "xtb"


def _sevennet(arg):
    from .mlip import SevenNetEngine

    return SevenNetEngine(arg)


def _chgnet(arg):
    from .mlip import CHGNetEngine

    return CHGNetEngine(arg)


def _mace(arg):
    from .mlip import MACEEngine

    return MACEEngine(arg)


def _xtb(arg):
    from .quantum import XTBEngine

    return XTBEngine(arg)


def _pyscf(arg):
    from .quantum import PySCFEngine

    return PySCFEngine(arg)


def _emt(arg):
    from .ase_calc import EMTEngine

    return EMTEngine()


def _lj(arg):
    from .ase_calc import LJEngine

    if not arg:
        return LJEngine()
    try:
        sigma, eps = (float(x) for x in arg.split(","))
    except ValueError:
        raise EngineError(f"lj:{arg} is not 'sigma,epsilon'", fix="e.g. --engine lj:3.4,0.0104") from None
    return LJEngine(sigma=sigma, epsilon=eps, rc=2.5 * sigma)


def _ase(arg):
    from .ase_calc import ASECalculatorEngine

    if not arg:
        raise EngineError("'ase' needs a calculator", fix="use ase:module:Class, e.g. ase:ase.calculators.emt:EMT")
    return ASECalculatorEngine(arg)


#: name → (factory(arg), one-line description, example spec)
ENGINES: dict[str, tuple[Callable[[str | None], Engine], str, str]] = {
    "sevennet": (_sevennet, "SevenNet-0 universal MLIP (weights bundled); sevennet:PATH[:HEAD] for your own model (with --trust-model-file)", "sevennet"),
    "chgnet": (_chgnet, "CHGNet 0.3.0 universal MLIP (weights bundled; float32)", "chgnet"),
    "mace": (_mace, "MACE model file you have, with --trust-model-file (optional extra atomvib[mace])", "mace:/path/model.model"),
    "xtb": (_xtb, "GFN2-xTB tight binding via tblite (default for molecules)", "xtb"),
    "pyscf": (_pyscf, "DFT/HF via PySCF for small molecules; pyscf:XC/BASIS", "pyscf:b3lyp/def2-svp"),
    "emt": (_emt, "ASE effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt, H, C, N, O): tests", "emt"),
    "lj": (_lj, "Lennard-Jones (lj:sigma,epsilon in Å, eV): tests", "lj:3.4,0.0104"),
    "ase": (_ase, "any ASE calculator constructed without arguments: ase:module:Class", "ase:ase.calculators.emt:EMT"),
}

#: Bundled models beyond each engine's default, listed by `atomvib engines`: spec → (description, example)
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "sevennet:7net-l3i5": ("SevenNet-l3i5 (l_max 3, MPtrj/PBE; weights bundled in sevenn)", "sevennet:7net-l3i5"),
    "sevennet:7net-mf-0": (
        "SevenNet-MF-0, multi-fidelity (weights bundled in sevenn); heads :pbe (default, MPtrj) and :r2scan (MP-r2SCAN)",
        "sevennet:7net-mf-0:r2scan",
    ),
}

#: The registry's engines, by the spec they were asked for and by their canonical spec
#: (``engine.info.spec``): "sevennet" and "sevennet:7net-0" give the same object. The one piece of
#: process-wide engine state; :func:`clear_engine_cache` empties it.
ENGINE_CACHE: dict[str, Engine] = {}


def trust_engine_model_file(spec: str | None) -> None:
    """Trust the model file named by an engine spec (``sevennet:PATH``, ``chgnet:PATH``, ``mace:PATH``); other
    specs name no file and are left alone. What ``--trust-model-file`` does with ``--engine``."""
    if not spec or isinstance(spec, Engine):
        return
    from .mlip import (
        _BUNDLED_SEVENNET,
        BUNDLED_CHGNET,
        PICKLED_MODEL_ENGINES,
        add_trusted_model_file,
        parse_sevennet_model,
    )

    name, _, arg = spec.strip().partition(":")
    name = name.lower()
    if name == "sevennet" and arg:
        arg = parse_sevennet_model(arg)[0]  # sevennet:PATH:HEAD names the file PATH
    bundled = {"sevennet": _BUNDLED_SEVENNET, "chgnet": BUNDLED_CHGNET}.get(name, ())
    if name in PICKLED_MODEL_ENGINES and arg and arg.lower() not in bundled and Path(arg).expanduser().is_file():
        add_trusted_model_file(arg)


def get_engine(spec: str | Engine, trust_model_file: bool = False) -> Engine:
    """Engine for a spec ``name`` or ``name:arg`` (an :class:`Engine` is returned as is); one object per
    spec per process (:data:`ENGINE_CACHE`).

    ``trust_model_file=True``: the model file of ``sevennet:PATH``, ``chgnet:PATH`` or ``mace:PATH`` may be loaded
    although loading it unpickles it (these packages save models with pickle; unpickling can run code). Without it
    such a file is refused with an :class:`EngineError` (the models bundled inside the packages are trusted).
    """
    if isinstance(spec, Engine):
        return spec
    spec = spec.strip()
    if trust_model_file:
        trust_engine_model_file(spec)
    if spec in ENGINE_CACHE:
        return ENGINE_CACHE[spec]
    name, _, arg = spec.partition(":")
    key = name.lower()
    if key not in ENGINES:
        raise EngineError(f"unknown engine '{name}'", fix=f"choose one of {', '.join(ENGINES)} (see `atomvib engines`)")
    engine = ENGINES[key][0](arg or None)
    canonical = _canonical_spec(engine)
    if canonical:  # the same engine under its canonical spec, if that was asked for before
        engine = ENGINE_CACHE.setdefault(canonical, engine)
    ENGINE_CACHE[spec] = engine
    return engine


def _canonical_spec(engine: Engine) -> str:
    spec = getattr(engine, "spec", None)  # MLIP engines know it without computing provenance
    return spec if isinstance(spec, str) else engine.info.spec


def clear_engine_cache() -> None:
    """Forget the registry's engines (their models, caches and worker pools go with them); the next
    :func:`get_engine` builds afresh."""
    for engine in {id(e): e for e in ENGINE_CACHE.values()}.values():
        close = getattr(engine, "close_pool", None)
        if close is not None:
            close()
    ENGINE_CACHE.clear()


def default_engine_spec(is_molecule: bool) -> str:
    return DEFAULT_MOLECULE_ENGINE if is_molecule else DEFAULT_CRYSTAL_ENGINE


def list_engines() -> list[dict]:
    """Every registered engine with whether it is usable here and why not."""
    rows = []
    entries = []
    for name, (_factory, desc, example) in ENGINES.items():
        entries.append((name, desc, example))
        entries += [(spec, d, ex) for spec, (d, ex) in BUNDLED_MODELS.items() if spec.partition(":")[0] == name]
    for name, desc, example in entries:
        usable, reason = True, ""
        if name in ("mace", "ase", "lj"):
            probe = {"mace": "mace", "ase": "ase", "lj": "ase"}[name]
            import importlib.util

            usable = importlib.util.find_spec(probe) is not None
            reason = "" if usable else f"package '{probe}' not installed"
        else:
            try:
                get_engine(name)
            except AtomvibError as exc:
                usable, reason = False, str(exc)
        rows.append({"name": name, "usable": usable, "description": desc, "example": example, "reason": reason})
    return rows
