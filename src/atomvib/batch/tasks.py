"""The batch task registry: a task is a small function ``fn(structure, ctx) -> TaskOutput``.

``relax``, ``phonons``, ``ins`` (VISION spectrum, order 3, 5 K, from the upstream phonons result or
its own), ``predict`` (the shipped direct DOS predictor) and ``kappa`` (lattice thermal conductivity with
phono3py, the default :class:`~atomvib.settings.KappaSettings`) and ``qha`` (quasi-harmonic thermal expansion) are
built in; other modules plug in by
name with :func:`register_task`.

Tasks run inside Dask worker processes. The engine comes from :func:`atomvib.engines.get_engine`,
which caches one engine (one loaded model) per spec per process, so a worker loads its model once.

What keys a task's database row (:meth:`TaskSpec.step`) is what changes its output, and nothing else:

* ``relax``: the input structure, the engine identity and the relax settings;
* ``phonons``: the force constants (structure, engine identity, relax and displacement settings) and
  the analysis settings (mesh, DOS, temperatures, ...). The forces of the displaced cells are cached
  apart, in a checkpoint directory per force-constants identity, so a re-run with another mesh or
  temperature grid makes a new row but evaluates no force;
* ``ins``: the force constants only (its instrument, order and temperature are fixed);
* ``predict``: the structure it is given and the predictor model (no force engine).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..settings import PhononSettings

#: settings of a relaxation (the ``relax`` task, or the one inside ``phonons``)
RELAX_FIELDS = ("relax_cell", "fmax_ev_per_a", "relax_steps", "symprec")
#: settings that decide which cell the phonons are computed for (besides the relaxation)
CELL_FIELDS = ("primitive", "symprec")
#: settings that decide the displaced supercells (with the cell and the engine: the forces)
DISPLACEMENT_FIELDS = ("supercell", "min_supercell_length_a", "displacement_a")
#: the row's engine for tasks that use no force engine
PREDICTOR_ENGINE = "predictor"


def _h(*parts) -> str:
    """16 hex chars of SHA-256 over JSON of ``parts`` (stable: sorted keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mkdir(path: Path) -> None:
    """``mkdir -p`` that survives another process removing an empty parent at the same moment."""
    for attempt in range(5):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == 4:
                raise


def _fields(settings: PhononSettings, names) -> dict:
    d = settings.to_dict()
    return {k: d[k] for k in names if k in d}


@dataclass(frozen=True)
class Chain:
    """Identities handed along a chain of tasks (16-hex digests; absolute: they start from the structure hash).

    Attributes
    ----------
    structure : str
        Identity of the structure the next task receives.
    force_constants : str
        Identity of the force constants of the last ``phonons`` task ("" = none yet).
    upstream : str
        Digest of the task before ("" = the input).
    """

    structure: str
    force_constants: str = ""
    upstream: str = ""


@dataclass(frozen=True)
class Step:
    """One planned calculation: its settings digest, what it hands on, and its force checkpoint id."""

    digest: str
    chain: Chain
    #: identity of the force constants this task computes if it must (names its checkpoint directory)
    forces_id: str = ""


def phonon_ids(settings: PhononSettings, structure_id: str, engine_id: str) -> tuple[str, str]:
    """(identity of the structure ``phonons`` hands on, identity of its force constants).

    Only what determines them enters: the cell settings, the relaxation (settings and engine) if any, and for
    the force constants the displacement settings and the engine identity. Mesh, DOS, temperatures do not.
    """
    cell = _fields(settings, CELL_FIELDS)
    relax = {"relax": settings.relax, **(_fields(settings, RELAX_FIELDS) if settings.relax else {})}
    if not settings.relax and not settings.primitive:
        out_structure = structure_id  # handed on as given
    else:
        out_structure = _h("phonons-cell", structure_id, cell, relax, engine_id if settings.relax else "")
    fc = _h("force-constants", structure_id, cell, relax, _fields(settings, DISPLACEMENT_FIELDS), engine_id)
    return out_structure, fc


def phonons_digest(settings: PhononSettings, fc_id: str) -> str:
    """Row digest of ``phonons``: the force constants plus every other setting that changes the result
    (the relax settings only when it relaxes; the engine is in ``fc_id``)."""
    d = settings.to_dict()
    d.pop("engine", None)
    if not settings.relax:
        for k in RELAX_FIELDS:
            if k != "symprec":
                d.pop(k, None)
    return _h("phonons", fc_id, d)


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
    upstream_dir : Path or None
        Result directory of the task before this one in the chain (computed in this batch or an earlier one).
    upstream_result : object or None
        That result loaded with :func:`atomvib.load` (a ``CrystalPhonons`` after ``phonons``), when it is one.
    checkpoint_dir : Path or None
        Force checkpoint directory shared by every calculation with the same force constants (same
        structure, engine identity, relax and displacement settings): a re-run with another mesh or
        temperature grid evaluates no force. None: ``out_dir``, removed after success.
    options : object or None
        The task's own settings (``md``, ``tdep``: an MDSettings), for tasks that declare ``options_type``.
    """

    engine: str
    settings: PhononSettings
    out_dir: Path
    upstream_dir: Path | None = None
    upstream_result: object = None
    checkpoint_dir: Path | None = None
    options: object = None


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
        Total energy of the cell, eV (None where the task computes none).
    kappa_300k_w_per_mk : float or None
        Lattice thermal conductivity at 300 K, trace average, W/(m·K) (``kappa``).
    thermal_expansion_300k_per_k : float or None
        Volumetric thermal expansion at 300 K, 1/K (``qha``).
    summary : dict
        JSON-able details stored in the database (``summary_json``).
    """

    structure: object = None
    omega_max_thz: float | None = None
    has_imaginary: bool | None = None
    energy_ev: float | None = None
    kappa_300k_w_per_mk: float | None = None
    thermal_expansion_300k_per_k: float | None = None
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its function and what changes its result.

    Attributes
    ----------
    settings_fields : tuple of str or None
        PhononSettings fields that change the result; None = all but the engine.
    uses_engine : bool
        The result depends on the force engine (its identity enters the digest).
    planner : callable or None
        ``planner(settings, chain, engine_id) -> Step`` for tasks that know exactly what they depend
        on (the built-ins); None: the digest chains the whole upstream digest (safe for plug-ins).
    row_engine : callable or None
        ``() -> (engine, engine_version)`` recorded on the row for tasks without a force engine.
    options_type : callable or None
        For tasks with settings of their own: the settings class (called without arguments for the defaults);
        the planner then receives the options as a fourth argument.
    """

    name: str
    fn: Callable
    settings_fields: tuple[str, ...] | None = None
    uses_engine: bool = True
    planner: Callable | None = None
    row_engine: Callable | None = None
    options_type: Callable | None = None

    def default_options(self):
        """The task's default settings (None for tasks without settings of their own)."""
        return self.options_type() if self.options_type is not None else None

    def digest(self, settings: PhononSettings, upstream: str = "", engine_id: str = "") -> str:
        """Settings digest of this task (16 hex chars), chained with the digest of the task before it."""
        if self.settings_fields is None:
            base = settings.digest()
        else:
            base = _h(_fields(settings, self.settings_fields))
        if self.uses_engine and engine_id:
            base = _h(base, engine_id)
        if not upstream:
            return base
        return hashlib.sha256(f"{base}|after:{upstream}".encode()).hexdigest()[:16]

    def step(self, settings: PhononSettings, chain: Chain, engine_id: str, options=None) -> Step:
        """Plan this task after ``chain``: its digest and the chain it hands on."""
        if self.planner is not None:
            if self.options_type is not None:
                return self.planner(settings, chain, engine_id, options if options is not None else self.default_options())
            return self.planner(settings, chain, engine_id)
        d = self.digest(settings, f"{chain.upstream}|{chain.structure}", engine_id)
        # a plug-in may hand on another structure: what follows depends on this task's digest
        return Step(d, Chain(_h(self.name, d), chain.force_constants, d))


def _plan_relax(settings, chain: Chain, engine_id: str) -> Step:
    d = _h("relax", chain.structure, _fields(settings, RELAX_FIELDS), engine_id)
    return Step(d, Chain(_h("relaxed", d), "", d))


def _plan_phonons(settings, chain: Chain, engine_id: str) -> Step:
    out_structure, fc = phonon_ids(settings, chain.structure, engine_id)
    d = phonons_digest(settings, fc)
    return Step(d, Chain(out_structure, fc, d), forces_id=fc)


def _plan_ins(settings, chain: Chain, engine_id: str) -> Step:
    # the force constants of the phonons before it, or of those it computes itself (the same identity)
    fc = chain.force_constants or phonon_ids(settings, chain.structure, engine_id)[1]
    d = _h("ins", "vision", "backward", 3, 5.0, fc)
    return Step(d, Chain(chain.structure, chain.force_constants, d), forces_id=fc)


def _plan_predict(settings, chain: Chain, engine_id: str) -> Step:
    d = _h("predict", chain.structure)
    return Step(d, Chain(chain.structure, chain.force_constants, d))


@lru_cache(maxsize=1)
def predictor_version() -> str:
    """Version of the shipped predictor: ``model-<sha256 of model.pt, 12 chars>``."""
    from ..engines.base import file_sha256
    from ..learn.predictor import DEFAULT_MODEL

    try:
        return "model-" + file_sha256(DEFAULT_MODEL)[:12]
    except OSError:
        return "model-missing"


TASKS: dict[str, TaskSpec] = {}


def register_task(
    name: str,
    fn: Callable,
    settings_fields: tuple[str, ...] | None = None,
    *,
    uses_engine: bool = True,
    planner: Callable | None = None,
    row_engine: Callable | None = None,
    options_type: Callable | None = None,
) -> None:
    """Make ``fn(structure, ctx: TaskContext) -> TaskOutput`` available as ``--tasks name``.

    ``settings_fields`` (None = all but the engine) and ``uses_engine`` say what changes its result;
    see :class:`TaskSpec` for ``planner`` and ``row_engine``.
    """
    TASKS[name] = TaskSpec(name, fn, settings_fields, uses_engine, planner, row_engine, options_type)


def _save(result, out_dir: Path) -> None:
    """Save a result in its own layout (atomvib.results); older result classes: the phonon file writer."""
    save = getattr(result, "save", None)
    if callable(save):
        save(out_dir, force=True)
    else:  # pragma: no cover - result classes before the results API
        from ..output import write_result

        write_result(result, out_dir, plot=False)


def _relax(structure, ctx: TaskContext) -> TaskOutput:
    from ase.io import write

    from ..engines import get_engine
    from ..relax import relax

    eng = get_engine(ctx.engine)
    eng.check(structure)
    t0 = time.perf_counter()
    rel = relax(structure, eng, dataclasses.replace(ctx.settings, relax=True))
    write(ctx.out_dir / "relaxed.extxyz", rel.structure.to_ase(), format="extxyz")
    summary = {**rel.to_dict(), "engine": _engine_dict(eng.info), "seconds": time.perf_counter() - t0}
    (ctx.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return TaskOutput(structure=rel.structure, energy_ev=rel.energy_ev, summary=summary)


def _engine_dict(info) -> dict:
    return info if isinstance(info, dict) else info.to_dict()


def _compute_phonons(structure, ctx: TaskContext, out_dir: Path):
    """Phonons of ``structure`` saved in ``out_dir``, forces through the shared checkpoint directory."""
    from ..workflow import phonons

    ckpt = ctx.checkpoint_dir or out_dir
    _mkdir(Path(ckpt))  # an empty one is removed by the driver if the task fails
    result = phonons(structure, settings=ctx.settings, checkpoint_dir=ckpt, progress=False)
    _mkdir(out_dir)
    _save(result, out_dir)
    if ctx.checkpoint_dir is None:  # a private checkpoint is only for a retry of this task
        (out_dir / "forces_checkpoint.npz").unlink(missing_ok=True)
    return result


def _energy(summary: dict):
    """Energy of the cell where the result has one (molecules; crystals that were relaxed), else None."""
    e = summary.get("energy_eV")
    if e is None:
        e = (summary.get("relaxation") or {}).get("energy_eV")
    return None if e is None else float(e)


def _phonons(structure, ctx: TaskContext) -> TaskOutput:
    result = _compute_phonons(structure, ctx, ctx.out_dir)
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
        energy_ev=_energy(s),
        summary=keep,
    )


def _upstream_phonons(ctx: TaskContext):
    """The phonon result of the task before, if it is one (CrystalPhonons), else None."""
    from ..errors import AtomvibError

    r = ctx.upstream_result
    if r is None and ctx.upstream_dir is not None:
        from ..results import is_result_dir, load

        try:
            r = load(ctx.upstream_dir) if is_result_dir(ctx.upstream_dir) else None
        except AtomvibError:  # unreadable files: compute the phonons here (forces from the checkpoint)
            r = None
    return r if hasattr(r, "force_constants") else None


def _ins(structure, ctx: TaskContext) -> TaskOutput:
    """VISION spectrum (order 3, 5 K) written as ``ins.csv``; reuses the upstream phonons result if there is one."""
    from ..spectra.ins import vision_spectrum

    source = _upstream_phonons(ctx)
    reused = source is not None
    if source is None:  # no phonons task before this one: compute them here (forces from the shared checkpoint)
        source = _compute_phonons(structure, ctx, ctx.out_dir / "phonons")
    spec = vision_spectrum(source, order=3, temperature_k=5.0)
    save = getattr(spec, "save", None)
    if callable(save):
        save(ctx.out_dir, force=True)
    spec.to_csv(ctx.out_dir / "ins.csv")
    k = int(spec.intensity.argmax())
    summary = {
        "instrument": "vision",
        "order": 3,
        "temperature_K": 5.0,
        "strongest_peak_meV": float(spec.energy_mev[k]),
        "phonons": str(ctx.upstream_dir) if reused else "computed here (phonons/)",
    }
    (ctx.out_dir / "ins.json").write_text(json.dumps(summary, indent=2))
    return TaskOutput(structure=structure, summary=summary)


def _predict(structure, ctx: TaskContext) -> TaskOutput:
    """Direct DOS prediction with the shipped model, written as ``prediction.json``."""
    from ..learn import predict

    pred = predict([structure])[0]
    save = getattr(pred, "save", None)
    if callable(save):
        save(ctx.out_dir, force=True)
    d = pred.to_dict()
    (ctx.out_dir / "prediction.json").write_text(json.dumps(d))
    i300 = int(abs(pred.temperatures_k - 300.0).argmin())
    summary = {
        "model": predictor_version(),
        "in_distribution": d["in_distribution"],
        "heat_capacity_300K_J_per_K_per_mol": float(pred.heat_capacity_j_per_k_per_mol[i300]),
        "heat_capacity_300K_std": float(pred.heat_capacity_j_per_k_per_mol_std[i300]),
        "entropy_300K_J_per_K_per_mol": float(pred.entropy_j_per_k_per_mol[i300]),
    }
    return TaskOutput(structure=structure, summary=summary)


def kappa_task_settings():
    """The settings of the batch ``kappa`` task: atomvib kappa's defaults (RTA, mesh density 60 Å, 50–1000 K);
    other settings: ``atomvib kappa`` itself."""
    from ..settings import KappaSettings

    return KappaSettings()


def _plan_kappa(settings, chain: Chain, engine_id: str) -> Step:
    d = _h("kappa", chain.structure, _fields(settings, CELL_FIELDS + ("relax",)),
           _fields(settings, RELAX_FIELDS) if settings.relax else {}, engine_id, kappa_task_settings().digest())
    return Step(d, Chain(_h("kappa-structure", d), "", d))


def _kappa(structure, ctx: TaskContext) -> TaskOutput:
    """Lattice thermal conductivity (:func:`kappa_task_settings`) saved as a result; κ(300 K) queryable."""
    from ..workflow import kappa

    ckpt = ctx.checkpoint_dir or ctx.out_dir
    _mkdir(Path(ckpt))
    result = kappa(structure, settings=ctx.settings, kappa_settings=kappa_task_settings(), checkpoint_dir=ckpt,
                   progress=False)
    _save(result, ctx.out_dir)
    s = result.summary()
    keep = {k: s[k] for k in ("method", "mesh", "n_displacements", "temperature_K", "kappa_W_per_mK",
                              "kappa_average_W_per_mK", "fc3_supercell_matrix", "timings_s") if k in s}
    k300 = float(result.kappa_at(300.0)[:3].mean()) if np.any(np.isclose(result.temperatures_k, 300.0)) else None
    return TaskOutput(structure=result.structure, kappa_300k_w_per_mk=k300, summary=keep,
                      omega_max_thz=float(np.max(result.frequencies_thz)))


def _plan_qha(settings, chain: Chain, engine_id: str) -> Step:
    from ..harmonic.qha import QhaSettings

    d = _h("qha", chain.structure, settings.digest(), engine_id, QhaSettings().to_dict())
    return Step(d, Chain(_h("qha-structure", d), "", d))


def _qha(structure, ctx: TaskContext) -> TaskOutput:
    """Quasi-harmonic thermal properties (default QhaSettings) saved as a result; α(300 K) queryable."""
    from ..harmonic.qha import quasi_harmonic

    ckpt = Path(ctx.checkpoint_dir or ctx.out_dir) / "qha_checkpoints"
    _mkdir(ckpt)
    result = quasi_harmonic(structure, settings=ctx.settings, checkpoint_dir=ckpt, progress=False)
    _save(result, ctx.out_dir)
    s = result.summary()
    alpha = None
    if result.temperatures_k[0] <= 300.0 <= result.t_max_k:
        alpha = result.at(300.0)["thermal_expansion_volumetric_per_K"]
    keep = {k: s[k] for k in ("static_eos", "volume_0K_A3", "zero_point_expansion", "truncation") if k in s}
    return TaskOutput(structure=result.structure, thermal_expansion_300k_per_k=alpha,
                      energy_ev=float(np.min(result.energies_ev)), summary=keep)


def md_task_settings():
    """The default settings of the batch ``md``/``tdep`` tasks: :class:`MDSettings` at 300 K (1 fs, 500 + 1000
    steps); ``atomvib batch --md-temperature/--md-time/--md-timestep`` set others."""
    from ..dynamics.settings import MDSettings

    return MDSettings()


def _plan_md(settings, chain: Chain, engine_id: str, options) -> Step:
    # the MD relaxes and builds its own cell from the structure it gets (the relax settings: MDSettings')
    d = _h("md", chain.structure, options.digest(exclude=("engine",)), engine_id)
    return Step(d, Chain(chain.structure, "", d))


def _plan_tdep(settings, chain: Chain, engine_id: str, options) -> Step:
    d = _h("tdep", chain.upstream, _fields(settings, ("mesh_density", "symprec")), options.digest(exclude=("engine",)))
    return Step(d, Chain(chain.structure, "", d))


def _md_settings(ctx: TaskContext):
    import dataclasses as dc

    return dc.replace(ctx.options or md_task_settings(), engine=ctx.engine, relax=ctx.settings.relax)


def _md(structure, ctx: TaskContext) -> TaskOutput:
    """MD at the options' temperature; ``trajectory.extxyz`` in the task's directory, referenced from the row."""
    from ..dynamics.md import run_md

    s = _md_settings(ctx)
    traj = run_md(structure, settings=s, out=ctx.out_dir / "trajectory.extxyz", force=True)
    _save(traj, ctx.out_dir)
    st = traj.statistics()
    summary = {"trajectory": str(ctx.out_dir / "trajectory.extxyz"), "frames": traj.n_frames,
               "temperature_K": s.temperature_k, "ensemble": s.ensemble, "timestep_fs": s.timestep_fs,
               **{k: st[k] for k in ("temperature_mean_K", "temperature_std_K", "time_ps",
                                     "energy_drift_ev_per_atom_per_ps") if k in st},
               "performance": dict(traj.timings)}
    return TaskOutput(structure=structure, summary=summary)


def _tdep(structure, ctx: TaskContext) -> TaskOutput:
    """Effective phonons fitted to the upstream ``md`` task's trajectory (the task needs ``md`` before it)."""
    from ..dynamics.md import MDTrajectory
    from ..dynamics.tdep import effective_phonons
    from ..errors import InputError
    from ..settings import PhononSettings as _PS

    traj = ctx.upstream_result
    if traj is None and ctx.upstream_dir is not None and (Path(ctx.upstream_dir) / "result.json").is_file():
        from ..results import load

        traj = load(ctx.upstream_dir)
    if not isinstance(traj, MDTrajectory):
        raise InputError("the tdep task fits the trajectory of an md task", fix="give --tasks md,tdep")
    eff = effective_phonons(traj, settings=_PS(mesh_density=ctx.settings.mesh_density, symprec=traj.settings.symprec
                                               if traj.settings else ctx.settings.symprec))
    _save(eff, ctx.out_dir)
    s = eff.summary()["effective_force_constants"]
    return TaskOutput(structure=structure, omega_max_thz=float(eff.omega_max_thz), has_imaginary=bool(eff.has_imaginary),
                      summary={**s, "min_frequency_THz": float(eff.min_frequency_thz)})


register_task("relax", _relax, settings_fields=RELAX_FIELDS, planner=_plan_relax)
register_task("md", _md, planner=_plan_md, options_type=md_task_settings)
register_task("tdep", _tdep, planner=_plan_tdep, options_type=md_task_settings)
register_task("qha", _qha, planner=_plan_qha)
register_task("kappa", _kappa, planner=_plan_kappa)
register_task("phonons", _phonons, planner=_plan_phonons)
register_task("ins", _ins, planner=_plan_ins)
register_task(
    "predict",
    _predict,
    settings_fields=(),
    uses_engine=False,
    planner=_plan_predict,
    row_engine=lambda: (PREDICTOR_ENGINE, predictor_version()),
)


def discover_tasks() -> dict[str, TaskSpec]:
    """The task registry."""
    return TASKS
