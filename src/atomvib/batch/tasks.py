"""The batch task registry: a task is a small function ``fn(structure, ctx) -> TaskOutput``.

``relax``, ``phonons``, ``ins`` (VISION spectrum, order 3, 5 K, from the upstream phonons result or
its own) and ``predict`` (the shipped direct DOS predictor) are built in; other modules plug in by
name with :func:`register_task`.

Tasks run inside Dask worker processes. The engine comes from :func:`atomvib.engines.get_engine`,
which caches one engine (one loaded model) per spec per process, so a worker loads its model once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import PhononSettings


@dataclass(frozen=True, eq=False)
class TaskContext:
    """What a task needs besides its structure.

    Attributes
    ----------
    engine : str
        Engine spec (``emt``, ``chgnet``, ...).
    settings : PhononSettings
        Settings of this task (``relax=False`` for phonons that follow a ``relax`` task).
    out_dir : Path
        Directory for the task's files (created by the runner).
    """

    engine: str
    settings: PhononSettings
    out_dir: Path
    #: result directory of the task before this one in the chain, when it ran in this batch
    upstream_dir: Path | None = None


@dataclass(frozen=True, eq=False)
class TaskOutput:
    """Headline numbers of a finished task; large arrays stay in files under ``ctx.out_dir``.

    Attributes
    ----------
    structure : Structure or None
        The structure handed to the next task (the relaxed one for ``relax``).
    omega_max_thz : float or None
        Highest phonon frequency, THz.
    has_imaginary : bool or None
    energy_ev : float or None
        Total energy of the cell, eV.
    summary : dict
        JSON-able details stored in the database (``summary_json``).
    """

    structure: object = None
    omega_max_thz: float | None = None
    has_imaginary: bool | None = None
    energy_ev: float | None = None
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its function and the settings fields that change its result."""

    name: str
    fn: Callable
    #: PhononSettings fields that enter the task's digest; None = all but the engine
    settings_fields: tuple[str, ...] | None = None

    def digest(self, settings: PhononSettings, upstream: str = "") -> str:
        """Settings digest of this task (16 hex chars), chained with the digest of the task before it."""
        if self.settings_fields is None:
            base = settings.digest()
        else:
            d = {k: v for k, v in settings.to_dict().items() if k in self.settings_fields}
            base = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
        if not upstream:
            return base
        return hashlib.sha256(f"{base}|after:{upstream}".encode()).hexdigest()[:16]


TASKS: dict[str, TaskSpec] = {}


def register_task(name: str, fn: Callable, settings_fields: tuple[str, ...] | None = None) -> None:
    """Make ``fn(structure, ctx: TaskContext) -> TaskOutput`` available as ``--tasks name``."""
    TASKS[name] = TaskSpec(name, fn, settings_fields)


def _relax(structure, ctx: TaskContext) -> TaskOutput:
    from ase.io import write

    from ..engines import get_engine
    from ..relax import relax

    eng = get_engine(ctx.engine)
    eng.check(structure)
    t0 = time.perf_counter()
    rel = relax(structure, eng, dataclasses.replace(ctx.settings, relax=True))
    write(ctx.out_dir / "relaxed.extxyz", rel.structure.to_ase(), format="extxyz")
    summary = {**rel.to_dict(), "engine": eng.info.to_dict(), "seconds": time.perf_counter() - t0}
    (ctx.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return TaskOutput(structure=rel.structure, energy_ev=rel.energy_ev, summary=summary)


def _phonons(structure, ctx: TaskContext) -> TaskOutput:
    from ..output import write_result
    from ..workflow import phonons

    # the force checkpoint lives in the task directory: a retried task resumes its displacements
    result = phonons(structure, settings=ctx.settings, checkpoint_dir=ctx.out_dir, progress=False)
    write_result(result, ctx.out_dir, plot=False)
    (ctx.out_dir / "forces_checkpoint.npz").unlink(missing_ok=True)
    s = result.summary()
    keep = {
        k: s[k]
        for k in (
            "kind",
            "omega_max_thz",
            "min_frequency_thz",
            "has_imaginary",
            "mesh",
            "n_displacements",
            "supercell_matrix",
            "thermal",
            "timings_s",
        )
        if k in s
    }
    return TaskOutput(
        structure=getattr(result, "structure", structure),
        omega_max_thz=float(s["omega_max_thz"]),
        has_imaginary=bool(s["has_imaginary"]),
        energy_ev=s.get("energy_eV"),
        summary=keep,
    )


def _ins(structure, ctx: TaskContext) -> TaskOutput:
    """VISION spectrum (order 3, 5 K) written as ``ins.csv``; reuses the upstream phonons result if there is one."""
    from ..spectra.ins import vision_spectrum

    up = ctx.upstream_dir
    if up is not None and (Path(up) / "phonopy.yaml").is_file():
        source = Path(up)
    else:  # no phonons task before this one in the batch: compute them here
        _phonons(structure, ctx)
        source = ctx.out_dir
    spec = vision_spectrum(source, order=3, temperature_k=5.0)
    spec.to_csv(ctx.out_dir / "ins.csv")
    k = int(spec.intensity.argmax())
    summary = {"instrument": "vision", "order": 3, "temperature_K": 5.0, "strongest_peak_meV": float(spec.energy_mev[k])}
    (ctx.out_dir / "ins.json").write_text(json.dumps(summary, indent=2))
    return TaskOutput(structure=structure, summary=summary)


def _predict(structure, ctx: TaskContext) -> TaskOutput:
    """Direct DOS prediction with the shipped model, written as ``prediction.json``."""
    from ..learn import predict

    pred = predict([structure])[0]
    d = pred.to_dict()
    (ctx.out_dir / "prediction.json").write_text(json.dumps(d))
    i300 = int(abs(pred.temperatures_k - 300.0).argmin())
    summary = {
        "in_distribution": d["in_distribution"],
        "heat_capacity_300K_J_per_K_per_mol": float(pred.heat_capacity_j_per_k_per_mol[i300]),
        "heat_capacity_300K_std": float(pred.heat_capacity_j_per_k_per_mol_std[i300]),
        "entropy_300K_J_per_K_per_mol": float(pred.entropy_j_per_k_per_mol[i300]),
    }
    return TaskOutput(structure=structure, summary=summary)


register_task("relax", _relax, settings_fields=("relax_cell", "fmax_ev_per_a", "relax_steps", "symprec"))
register_task("phonons", _phonons)
register_task("ins", _ins)
register_task("predict", _predict, settings_fields=())


def discover_tasks() -> dict[str, TaskSpec]:
    """The task registry."""
    return TASKS
