"""Results on disk: one layout for every result kind, one loader (:func:`load`).

Every frozen result (phonons of a crystal or molecule, force constants, spectra, predictions, fits)
saves itself with ``result.save(directory)`` and comes back, equal field by field, from
``atomvib.load(directory)``. The layout (``schema_version`` 2; see ``docs/results.md``)::

    DIR/summary.json   what a person reads first: "schema_version", "kind", "atomvib_version", "created"
                       and the kind's own summary (engine, formula, ω_max, thermal properties, ...)
    DIR/result.json    the object tree: every field of the result, arrays by name into arrays.npz
    DIR/arrays.npz     every array, named by its field path ("force_constants/force_constants"), no pickle
    DIR/...            files for other tools and people (phonopy.yaml, dos.csv, band.json, ...): written,
                       never read back, so editing them cannot change what ``load`` returns

Why our own format: no library saves nested frozen dataclasses holding arrays without pickle, and
pickle runs code from the data file. Here a data file can only name a kind from the fixed table
:data:`KINDS` (classes of this package); every array is read with ``allow_pickle=False``.

Policy for old directories: ``schema_version`` 1 (atomvib ≤ 0.1 before this module: summary.json +
phonopy.yaml or modes.npz) is read by rebuilding the result from those files (crystal analyses are
recomputed from the force constants: same numbers, a second or so); a version newer than
:data:`SCHEMA_VERSION` is refused with a message that names it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import InputError, OutputExistsError

SCHEMA_VERSION = 2

#: result kinds that save on their own: kind name → class (module path inside atomvib, never from data)
KINDS: dict[str, str] = {
    "crystal": "atomvib.harmonic.crystal:CrystalPhonons",
    "committee": "atomvib.harmonic.committee:CommitteePhonons",
    "molecule": "atomvib.harmonic.molecule:MoleculeVibrations",
    "force_constants": "atomvib.harmonic.force_constants:ForceConstants",
    "ins_spectrum": "atomvib.spectra.ins:InsSpectrum",
    "ins_map": "atomvib.spectra.ins:InsMap",
    "coherent_map": "atomvib.spectra.coherent:CoherentMap",
    "optical_spectrum": "atomvib.spectra.ir:OpticalSpectrum",
    "dos_spectrum": "atomvib.spectra.dos:DosSpectrum",
    "dos_prediction": "atomvib.learn.predictor:DosPrediction",
    "comparison": "atomvib.spectra.compare:CompareResult",
    "fit": "atomvib.spectra.compare:FitResult",
    "spectrum_1d": "atomvib.spectra.measured:Spectrum1D",
    "sqe_map": "atomvib.spectra.measured:SQEMap",
    "qha": "atomvib.harmonic.qha:QuasiHarmonic",
    "force_constants_3": "atomvib.anharmonic.force_constants3:AnharmonicForceConstants",
    "kappa": "atomvib.anharmonic.conductivity:ThermalConductivity",
    "md_trajectory": "atomvib.dynamics.md:MDTrajectory",
    "md_dos": "atomvib.dynamics.vacf:VibrationalDos",
    "mode_spectra": "atomvib.dynamics.modes:ModeSpectra",
    "md_ir": "atomvib.dynamics.dipole:DipoleSpectrum",
    "md_sqe": "atomvib.dynamics.sqw:TrajectorySqe",
    "md_sqe_path": "atomvib.dynamics.sqw:TrajectorySqePath",
    "effective_phonons": "atomvib.dynamics.tdep:EffectivePhonons",
    "identification": "atomvib.identify.core:Identification",
}
#: value types that appear inside results (saved as part of one)
VALUE_TYPES: dict[str, str] = {
    "structure": "atomvib.structure:Structure",
    "phonon_settings": "atomvib.settings:PhononSettings",
    "kappa_settings": "atomvib.settings:KappaSettings",
    "engine_info": "atomvib.engines.base:EngineInfo",
    "nac": "atomvib.harmonic.force_constants:NacParams",
    "dos": "atomvib.harmonic.crystal:Dos",
    "band_structure": "atomvib.harmonic.crystal:BandStructure",
    "instability": "atomvib.harmonic.crystal:Instability",
    "thermal": "atomvib.harmonic.thermal:Thermal",
    "relaxation": "atomvib.relax:Relaxation",
    "similarity": "atomvib.spectra.compare:Similarity",
    "qha_settings": "atomvib.harmonic.qha:QhaSettings",
    "md_settings": "atomvib.dynamics.settings:MDSettings",
}
_ALL = {**KINDS, **VALUE_TYPES}
_RESERVED = ("__kind__", "__array__", "__tuple__", "__float__", "__items__", "__complex__")


def _class(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def kind_of(obj) -> str:
    """The registered kind (or value-type) name of ``obj``'s class; raises TypeError if it has none."""
    cls = type(obj)
    target = f"{cls.__module__}:{cls.__qualname__}"
    for name, path in _ALL.items():
        if path == target:
            return name
    raise TypeError(f"{cls.__name__} is not a result kind atomvib can save (known: {', '.join(KINDS)})")


# ------------------------------------------------------------------------------------------ encoding
class _Encoder:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, a: np.ndarray, path: str):
        if a.dtype == object:
            raise TypeError(f"{path}: object arrays cannot be saved without pickle")
        key = path or "array"
        while key in self.arrays:
            key += "_"
        self.arrays[key] = np.ascontiguousarray(a)
        return {"__array__": key}

    def __call__(self, v, path: str = ""):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return int(v)
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, (float, np.floating)):
            f = float(v)
            return f if math.isfinite(f) else {"__float__": repr(f)}
        if isinstance(v, (complex, np.complexfloating)):
            return {"__complex__": [float(v.real), float(v.imag)]}
        if isinstance(v, np.ndarray):
            return self.array(v, path)
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return {"__tuple__": [self(x, f"{path}/{i}") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self(x, f"{path}/{i}") for i, x in enumerate(v)]
        if isinstance(v, dict):
            if all(isinstance(k, str) and k not in _RESERVED for k in v):
                return {k: self(x, f"{path}/{k}") for k, x in v.items()}
            return {"__items__": [[self(k), self(x, f"{path}/{i}")] for i, (k, x) in enumerate(v.items())]}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            name = kind_of(v)
            out = {"__kind__": name}
            for f in dataclasses.fields(v):
                if f.init:
                    out[f.name] = self(getattr(v, f.name), f"{path}/{f.name}".lstrip("/"))
            return out
        raise TypeError(f"{path or 'value'}: cannot save a {type(v).__name__}")


def _decode(v, arrays):
    if isinstance(v, list):
        return [_decode(x, arrays) for x in v]
    if not isinstance(v, dict):
        return v
    if "__array__" in v:
        return arrays[v["__array__"]]
    if "__tuple__" in v:
        return tuple(_decode(x, arrays) for x in v["__tuple__"])
    if "__float__" in v:
        return float(v["__float__"])
    if "__complex__" in v:
        return complex(*v["__complex__"])
    if "__items__" in v:
        return {_hashable(_decode(k, arrays)): _decode(x, arrays) for k, x in v["__items__"]}
    if "__kind__" in v:
        name = v["__kind__"]
        if name not in _ALL:
            raise InputError(f"result.json names an unknown kind {name!r}", fix="load it with the atomvib that wrote it")
        cls = _class(_ALL[name])
        fields = {k: _decode(x, arrays) for k, x in v.items() if k != "__kind__"}
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: x for k, x in fields.items() if k in known})
    return {k: _decode(x, arrays) for k, x in v.items()}


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


def _json_safe(v):
    """A JSON-serialisable copy of a summary: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return _json_safe(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.bool_):
        return bool(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _json_safe(v.to_dict() if hasattr(v, "to_dict") else dataclasses.asdict(v))
    if isinstance(v, Path):
        return str(v)
    return v


def _scalar_fields(obj) -> dict:
    """The fields of ``obj`` a person can read at a glance (strings, numbers, short tuples): a default summary."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, (str, bool, int, float, np.integer, np.floating)) or v is None:
            out[f.name] = v
        elif isinstance(v, tuple) and len(v) <= 8 and all(isinstance(x, (str, int, float)) for x in v):
            out[f.name] = list(v)
        elif isinstance(v, np.ndarray):
            out[f.name] = {"shape": list(v.shape)}
    return out


def provenance() -> dict:
    """Who wrote a result, where and when (ISO 8601 with offset)."""
    from . import __version__

    return {
        "atomvib_version": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ------------------------------------------------------------------------------------------ save / load
def save(result, directory, force: bool = False) -> Path:
    """Write ``result`` to ``directory`` (created if needed); returns the directory.

    An existing result there is refused unless ``force``. ``summary.json`` is written last, so an
    interrupted save never leaves a directory that :func:`load` mistakes for a finished result.
    """
    kind = kind_of(result)
    if kind not in KINDS:
        raise TypeError(f"a {type(result).__name__} is saved as part of a result, not on its own")
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file", fix="give a directory to save the result in")
    if (out / "summary.json").exists() and not force:
        raise OutputExistsError(f"{out} already holds results", fix="give another directory, or force=True (--force)")
    enc = _Encoder()
    tree = enc(result)
    doc = json.dumps({"schema_version": SCHEMA_VERSION, "kind": kind, "result": tree}, allow_nan=False)
    own = result.summary() if hasattr(result, "summary") else _scalar_fields(result)
    summary = {"schema_version": SCHEMA_VERSION, "kind": kind, **_json_safe(own)}
    summary.setdefault("provenance", provenance())
    summary["schema_version"], summary["kind"] = SCHEMA_VERSION, kind
    text = json.dumps(_json_safe(summary), indent=2, allow_nan=False)
    try:
        out.mkdir(parents=True, exist_ok=True)
        # every file is written into a staging directory beside the result and moved into place with os.replace:
        # a reader never sees a half-written file, an error leaves the old result as it was
        stage = Path(tempfile.mkdtemp(prefix=".save-", suffix=".tmp", dir=out))
    except OSError as exc:
        raise InputError(f"cannot write {out} ({exc.strerror or exc})", fix="give a directory you can write") from None
    try:
        np.savez_compressed(stage / "arrays.npz", **enc.arrays)
        (stage / "result.json").write_text(doc)
        if hasattr(result, "_write_files"):
            result._write_files(stage)
        (stage / "summary.json").write_text(text)
        # the old summary.json goes first: while files are replaced the directory is not taken for a result;
        # the new one comes last
        (out / "summary.json").unlink(missing_ok=True)
        for p in sorted(stage.iterdir(), key=lambda p: p.name == "summary.json"):
            os.replace(p, out / p.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _write_text(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_summary(directory) -> dict:
    """``summary.json`` of a result directory (cheap: no arrays are read)."""
    d = Path(directory)
    if d.is_file() and d.name in ("summary.json", "result.json"):
        d = d.parent
    p = d / "summary.json"
    if not d.exists():
        raise InputError(f"{directory}: no such file or directory", fix="check the path")
    if not p.is_file():
        raise InputError(
            f"{directory} is not an atomvib result directory (no summary.json)",
            fix="give a directory written by atomvib (e.g. `atomvib phonons ... --out DIR`)",
        )
    try:
        s = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})", fix="re-run the calculation that wrote it") from None
    if not isinstance(s, dict) or "kind" not in s:
        raise InputError(f"{p} has no 'kind'", fix="give a directory written by atomvib")
    return s


def is_result_dir(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "summary.json").is_file()


def load(path, expect: type | tuple | None = None):
    """The result saved in ``path`` (a result directory or its summary.json), as its typed object.

    Parameters
    ----------
    path : str or Path
    expect : class or tuple of classes, optional
        Raise :class:`InputError` unless the result is one of these.
    """
    d = Path(path)
    if d.is_file() and d.name in ("summary.json", "result.json"):
        d = d.parent
    summary = read_summary(d)
    version = summary.get("schema_version")
    kind = summary.get("kind")
    if version == 1:
        obj = _load_v1(d, summary)
    elif version == SCHEMA_VERSION:
        obj = _load_v2(d, kind)
    elif isinstance(version, int) and version > SCHEMA_VERSION:
        raise InputError(
            f"{d} was written with result schema_version {version}; this atomvib reads versions 1–{SCHEMA_VERSION}",
            fix="upgrade atomvib (pip install -U atomvib)",
        )
    else:
        raise InputError(f"{d}/summary.json has an unknown schema_version {version!r}", fix="re-run the calculation")
    if expect is not None and not isinstance(obj, expect):
        names = " or ".join(c.__name__ for c in (expect if isinstance(expect, tuple) else (expect,)))
        raise InputError(f"{d} holds a {kind} result, not a {names}", fix="give a directory with the right kind of result")
    return obj


def _load_v2(d: Path, kind: str):
    if kind not in KINDS:
        raise InputError(f"{d} holds a result of unknown kind {kind!r}", fix=f"atomvib reads: {', '.join(KINDS)}")
    rp, ap = d / "result.json", d / "arrays.npz"
    if not rp.is_file():
        raise InputError(f"{d}: result.json is missing", fix="re-run the calculation that wrote this directory")
    try:
        doc = json.loads(rp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{rp}: not valid JSON ({exc})", fix="re-run the calculation that wrote it") from None
    arrays = {}
    if ap.is_file():
        try:
            with np.load(ap, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"{ap}: cannot read it ({exc})", fix="re-run the calculation that wrote it") from None
    try:
        obj = _decode(doc["result"], arrays)
    except KeyError as exc:
        raise InputError(f"{d}: arrays.npz lacks {exc}", fix="re-run the calculation that wrote this directory") from None
    if kind_of(obj) != kind:
        raise InputError(f"{d}: summary.json says {kind!r} but result.json holds {kind_of(obj)!r}", fix="re-run it")
    return obj


def _load_v1(d: Path, summary: dict):
    """Rebuild a schema-1 result (summary.json + phonopy.yaml, or + modes.npz and structure.xyz)."""
    from .engines.base import EngineInfo
    from .settings import PhononSettings

    kind = summary.get("kind")
    settings = PhononSettings(**{k: v for k, v in (summary.get("settings") or {}).items()
                                 if k in {f.name for f in dataclasses.fields(PhononSettings)}})
    engine = EngineInfo.from_dict(summary.get("engine") or {"name": "unknown", "version": ""})
    if kind == "crystal":
        from .harmonic.crystal import analyse_crystal
        from .workflow import read_phonopy_yaml

        y = d / "phonopy.yaml"
        if not y.is_file():
            raise InputError(f"{d} (result schema_version 1) has no phonopy.yaml", fix="re-run `atomvib phonons`")
        fc, n_disp = read_phonopy_yaml(y, settings)
        return analyse_crystal(fc, settings, structure=fc.unitcell, engine=engine,
                               n_displacements=int(summary.get("n_displacements", n_disp)),
                               relaxation=summary.get("relaxation"))
    if kind == "molecule":
        from .harmonic.molecule import MoleculeVibrations
        from .structure import read_structure

        m, x = d / "modes.npz", d / "structure.xyz"
        if not (m.is_file() and x.is_file()):
            raise InputError(f"{d} (result schema_version 1) lacks modes.npz or structure.xyz", fix="re-run `atomvib phonons`")
        with np.load(m, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return MoleculeVibrations(
            structure=read_structure(x), hessian=arrays["hessian_eV_per_A2"], frequencies_cm1=arrays["frequencies_cm1"],
            modes=arrays["modes"], energy_ev=float(summary.get("energy_eV", 0.0)), engine=engine, settings=settings,
            relaxation=summary.get("relaxation"), n_displacements=int(summary.get("n_displacements", 0)),
            dipole_derivatives=arrays.get("dipole_derivatives_e"),
        )
    raise InputError(f"{d}: a schema_version 1 {kind!r} result cannot be read", fix="re-run the calculation")


# ------------------------------------------------------------------------------------------ equality
def equal(a, b) -> bool:
    """Deep equality of results: same types, same fields, arrays equal element by element (NaN equals NaN)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        if type(a) is not type(b):
            return False
        return all(equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a) if f.init)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and type(a) is type(b) and len(a) == len(b) and all(
            equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


class Result:
    """Mixin of the frozen result kinds: ``save``, ``load`` and deep ``==`` (see :func:`equal`).

    Results stay hashable by identity (they hold arrays); two equal results may hash differently.
    """

    def save(self, directory, force: bool = False) -> Path:
        """Write this result to ``directory`` (see :mod:`atomvib.results` for the layout)."""
        return save(self, directory, force=force)

    @classmethod
    def load(cls, directory):
        """Read a result of this class from ``directory``."""
        return load(directory, expect=cls)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return equal(self, other)

    __hash__ = object.__hash__


__all__ = ["SCHEMA_VERSION", "KINDS", "Result", "save", "load", "read_summary", "is_result_dir", "equal", "kind_of"]
