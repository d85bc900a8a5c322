"""``atomvib batch`` (many structures on Dask, results in a database) and ``atomvib db`` (query it)."""

from __future__ import annotations

import argparse
import sys

from .common import add_phonon_options, settings_from_args

BATCH_EPILOG = """examples:
  atomvib batch structures/ --tasks relax,phonons --engine chgnet          # every structure file in a folder
  atomvib batch 'mp/*.cif' candidates.extxyz --workers 8 --db screen.db    # globs and multi-structure files
  atomvib batch 'mp/*.cif' --scheduler tcp://head:8786                     # an existing Dask cluster
  atomvib batch 'mp/*.cif' --slurm --slurm-queue gpu --slurm-jobs 10 --db postgresql+psycopg://me@db/atomvib

what it does:
  every input is read and keyed by a symmetry-aware hash (the same crystal in another setting is computed
  once); each (structure, task, engine identity, settings that change that task's output) is one row of the
  database. Re-running the same command skips what is done, resumes what was interrupted and (with
  --retry-failed) retries failures; a task added later (--tasks phonons,ins) reuses the finished phonons, and
  another --mesh-density or temperature grid reuses the forces. A failing structure is recorded as failed
  with its message; the batch goes on.

outputs:
  DB (default ./atomvib.db)   status, timings, errors, omega_max_thz, has_imaginary, provenance per calculation
  RESULTS/<key[:2]>/<key>/     the files of each calculation (phonons: a saved result, atomvib.load(DIR), with
                               dos.csv, band.json, thermal.csv, phonopy.yaml; relax: relaxed.extxyz, summary.json)
  RESULTS/forces/              forces of displaced cells, per structure + engine + displacement settings
  query with: atomvib db list | show | export
database passwords: give them in PGPASSWORD, ~/.pgpass or a ~/.pg_service.conf service
  (--db 'postgresql+psycopg:///?service=atomvib'), not in --db; a password in a URL is masked in every
  message and in the database's record of the command, but stays visible to `ps` while the batch runs.
exit codes: 0 all done, 1 some calculations failed (or the database failed under the batch: the batch
  stops, keeps what finished, and the same command resumes it), 2 bad input (also a damaged or foreign
  database file), 130 interrupted (Ctrl-C: finished results kept, the rest given back)"""

DB_EPILOG = """examples:
  atomvib db list --status failed                    # what failed and why
  atomvib db list --formula NaCl --engine chgnet
  atomvib db show 3fa9c2                             # one structure (hash prefix) or calculation key
  atomvib db export --format csv --out results.csv   # one row per calculation
  atomvib db export --format extxyz --has-imaginary no --out stable.extxyz
  atomvib db export --format json --db postgresql+psycopg://me@db/atomvib

CSV columns: structure_hash, formula, source, engine, engine_version, task, status (done|failed|running|pending),
error, omega_max_thz, has_imaginary, energy_ev, kappa_300k_w_per_mk (kappa task, W/m-K),
thermal_expansion_300k_per_k (qha task, 1/K), seconds, attempts, settings_digest, key, result_dir, ...,
finished (ISO 8601, UTC). Values a row does not have (omega_max_thz of an ins or predict row) are blank."""


def _add_db_option(p):
    p.add_argument("--db", metavar="URL", help="SQLite file or SQLAlchemy URL (default ./atomvib.db)")


def add_parser(sub):
    p = sub.add_parser(
        "batch",
        help="run tasks on many structures (Dask), every result in a provenance database",
        description="Relax and compute phonons (and plug-in tasks) for many structures in parallel, on this "
        "machine (Dask LocalCluster, one model per worker process), an existing Dask cluster, or SLURM.",
        epilog=BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="structure files, directories, glob patterns, extxyz with many structures",
    )
    p.add_argument(
        "--tasks",
        default="phonons",
        metavar="LIST",
        help="comma-separated tasks in order: relax,phonons[,ins,predict,kappa,qha] or md[,tdep] (default phonons; "
        "kappa, qha: atomvib kappa's and atomvib qha's defaults, κ(300 K) and α(300 K) in the database; md: "
        "NVT Langevin at --md-temperature, the trajectory a file in the row's result directory; tdep: effective "
        "phonons fitted to it, ω_max and has_imaginary in the database)",
    )
    g = p.add_argument_group("md and tdep tasks")
    g.add_argument("--md-temperature", type=float, default=300.0, metavar="K", help="MD temperature, K (default 300)")
    g.add_argument("--md-time", type=float, default=1.0, metavar="PS", help="MD production time, ps (default 1)")
    g.add_argument("--md-timestep", type=float, default=1.0, metavar="FS", help="MD timestep, fs (default 1)")
    g.add_argument("--md-equilibration", type=int, default=500, metavar="N",
                   help="thermostatted steps before the production (default 500)")
    _add_db_option(p)
    p.add_argument(
        "--results",
        metavar="DIR",
        help="directory for result files (default: <db name>_results next to the database)",
    )
    g = p.add_argument_group("where to compute (default: a local cluster with one worker per core)")
    g.add_argument(
        "--workers", "-j", type=int, metavar="N", help="local worker processes (default: available cores)"
    )
    g.add_argument(
        "--scheduler", metavar="ADDRESS", help="use an existing Dask scheduler, e.g. tcp://host:8786"
    )
    g.add_argument("--slurm", action="store_true", help="submit Dask workers as SLURM jobs (dask-jobqueue)")
    g.add_argument("--slurm-queue", metavar="PARTITION", help="SLURM partition (#SBATCH -p)")
    g.add_argument("--slurm-account", metavar="ACCOUNT", help="SLURM account (#SBATCH -A)")
    g.add_argument(
        "--slurm-walltime", default="01:00:00", metavar="HH:MM:SS", help="job wall time (default 01:00:00)"
    )
    g.add_argument(
        "--slurm-cores",
        type=int,
        default=4,
        metavar="N",
        help="cores per job = worker processes per job (default 4)",
    )
    g.add_argument("--slurm-memory", default="16GB", metavar="MEM", help="memory per job (default 16GB)")
    g.add_argument("--slurm-jobs", type=int, default=1, metavar="N", help="number of SLURM jobs (default 1)")
    g = p.add_argument_group("behaviour")
    g.add_argument("--retry-failed", action="store_true", help="compute again what is recorded as failed")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no Dask log lines")
    add_phonon_options(p)
    p.set_defaults(func=run)

    d = sub.add_parser(
        "db",
        help="list, show and export the batch database",
        description="Query the provenance database written by `atomvib batch`.",
        epilog=DB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = d.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, hlp in (("list", "a table of calculations"), ("export", "calculations as csv, json or extxyz")):
        q = dsub.add_parser(name, help=hlp)
        _add_db_option(q)
        q.add_argument("--formula", help="reduced formula, any element order (NaCl = ClNa)")
        q.add_argument("--engine", help="engine name or spec")
        q.add_argument("--status", choices=("done", "failed", "running", "pending"))
        q.add_argument("--task", help="task name (relax, phonons, ...)")
        q.add_argument(
            "--has-imaginary", choices=("yes", "no"), help="only unstable (yes) or stable (no) results"
        )
        q.add_argument("--out", "-o", metavar="FILE", help="write to FILE instead of standard output")
        if name == "export":
            q.add_argument("--format", "-f", choices=("csv", "json", "extxyz"), default="csv")
        q.set_defaults(func=run_db)
    q = dsub.add_parser("show", help="everything about one structure (hash prefix) or calculation (key)")
    _add_db_option(q)
    q.add_argument("ident", metavar="HASH_OR_KEY")
    q.set_defaults(func=run_db)
    d.set_defaults(func=run_db)


def _slurm(args):
    from ..batch import SlurmOptions

    return SlurmOptions(
        queue=args.slurm_queue,
        account=args.slurm_account,
        walltime=args.slurm_walltime,
        cores=args.slurm_cores,
        memory=args.slurm_memory,
        jobs=args.slurm_jobs,
    )


def run(args) -> int:
    from ..batch import run_batch
    from ..errors import InputError

    if sum(x is not None and x is not False for x in (args.workers, args.scheduler, args.slurm or None)) > 1:
        raise InputError("--workers, --scheduler and --slurm are alternatives", fix="give only one of them")
    if args.workers is not None and args.workers < 1:
        raise InputError(
            f"--workers {args.workers}: needs at least one worker", fix="give --workers 1 or more"
        )
    summary = run_batch(
        args.inputs,
        tasks=args.tasks.split(","),
        settings=settings_from_args(args),
        db=args.db,
        results_dir=args.results,
        workers=args.workers,
        scheduler=args.scheduler,
        slurm=_slurm(args) if args.slurm else None,
        retry_failed=args.retry_failed,
        progress=not args.quiet,
        quiet=args.quiet,
        command=" ".join(["atomvib", *getattr(args, "argv", [])]) or None,
        task_options=_task_options(args),
    )
    print(summary.describe())
    return 1 if summary.failed or summary.n_unreadable else 0


def _open(db):
    """The store for a query; a missing SQLite file is an error (do not create an empty one)."""
    from pathlib import Path

    from ..errors import InputError
    from ..store import Store, database_url

    url = database_url(db)
    if url.startswith("sqlite") and not Path(url.split("///", 1)[1]).is_file():
        raise InputError(
            f"no database at {url.split('///', 1)[1]}", fix="give --db, or run `atomvib batch` first"
        )
    return Store(url)


def _filtered(args):
    imag = None if args.has_imaginary is None else args.has_imaginary == "yes"
    store = _open(args.db)
    df = store.calculations(
        formula=args.formula, engine=args.engine, status=args.status, has_imaginary=imag, task=args.task
    )
    df["engine"] = [_engine_label(e, t) for e, t in zip(df["engine"], df["task"])]
    return store, df


def _emit(text: str, out, what: str = "") -> None:
    """Write ``text`` to the file ``out`` (one line on stdout says what went where) or to stdout."""
    if not out:
        sys.stdout.write(text)
        return
    from pathlib import Path

    from ..errors import InputError

    p = Path(out)
    if p.is_dir():
        raise InputError(f"--out {out} is a directory", fix="give a file name, e.g. --out results.csv")
    if not p.parent.is_dir():
        raise InputError(
            f"--out {out}: directory {p.parent} does not exist", fix="create it or write elsewhere"
        )
    try:
        p.write_text(text)
    except OSError as exc:
        raise InputError(
            f"cannot write {out}: {exc.strerror}", fix="check the path and its permissions"
        ) from None
    if what:
        print(f"wrote {what} to {out}")


def _missing(v) -> bool:
    import pandas as pd

    return v is None or bool(pd.isna(v))


def _engine_label(engine: str, task: str) -> str:
    """The row's engine as users read it: predict rows use the learned predictor, not a force engine."""
    from ..batch.tasks import PREDICTOR_ENGINE

    if task == "predict" or engine == PREDICTOR_ENGINE:
        return PREDICTOR_ENGINE
    return engine


def _list_text(df) -> str:
    if not len(df):
        return "no calculations match"
    view = df[
        [
            "structure_hash",
            "formula",
            "task",
            "engine",
            "status",
            "omega_max_thz",
            "has_imaginary",
            "seconds",
            "source",
            "error",
        ]
    ].copy()
    # κ(300 K) and α(300 K) where some row has them (kappa, qha tasks)
    for col, label, fmt in (("kappa_300k_w_per_mk", "kappa_300K", "{:.2f}"),
                            ("thermal_expansion_300k_per_k", "alpha_300K", "{:.2e}")):
        if col in df and df[col].notna().any():
            view.insert(list(view.columns).index("seconds"), label,
                        ["-" if _missing(v) else fmt.format(v) for v in df[col]])
    view["engine"] = [_engine_label(e, t) for e, t in zip(view["engine"], view["task"])]
    view["omega_max_thz"] = ["-" if _missing(v) else f"{v:.3f}" for v in view["omega_max_thz"]]
    view["has_imaginary"] = ["-" if _missing(v) else ("yes" if v else "no") for v in view["has_imaginary"]]
    view["seconds"] = ["-" if _missing(v) else f"{v:.1f}" for v in view["seconds"]]
    view["error"] = ["" if _missing(e) else str(e).split("\n")[0][:80] for e in view["error"]]
    view["formula"] = ["-" if _missing(f) else f for f in view["formula"]]
    return view.to_string(index=False)


def run_db(args) -> int:
    if args.db_command == "show":
        return _show(args)
    store, df = _filtered(args)
    n = f"{len(df)} calculation{'s' if len(df) != 1 else ''}"
    if args.db_command == "list":
        _emit(_list_text(df) + "\n", args.out, f"a table of {n}")
        return 0
    fmt = args.format
    if fmt == "csv":
        _emit(df.to_csv(index=False), args.out, f"{n} (csv)")
    elif fmt == "json":
        _emit(df.to_json(orient="records", indent=1) + "\n", args.out, f"{n} (json)")
    else:
        text, frames = _extxyz(store, df)
        _emit(text, args.out, f"{frames} structure{'s' if frames != 1 else ''} of {n} (extxyz)")
    return 0


def _extxyz(store, df) -> tuple[str, int]:
    """One frame per calculation that has a structure: the relaxed one if a relax task made it, else the input.

    Returns (text, number of frames). Missing numbers (an ``ins`` or ``predict`` row has no ω_max) are left out
    of ``atoms.info``.
    """
    import io
    from pathlib import Path

    from ase.io import read, write

    buf = io.StringIO()
    frames = 0
    for row in df.itertuples(index=False):
        text = store.structure_extxyz(row.structure_hash)
        if not text:
            continue
        relaxed = Path(row.result_dir) / "relaxed.extxyz" if row.result_dir else None
        atoms = (
            read(relaxed)
            if relaxed is not None and relaxed.is_file()
            else read(io.StringIO(text), format="extxyz")
        )
        atoms.calc = None
        atoms.info = {
            k: str(getattr(row, k)) for k in ("structure_hash", "formula", "source", "task", "status", "key")
        }
        atoms.info["engine"] = _engine_label(row.engine, row.task)
        for k in ("omega_max_thz", "energy_ev", "seconds"):
            v = getattr(row, k)
            if not _missing(v):
                atoms.info[k] = float(v)
        if not _missing(row.has_imaginary):
            atoms.info["has_imaginary"] = bool(row.has_imaginary)
        write(buf, atoms, format="extxyz")
        frames += 1
    return buf.getvalue(), frames


def _show(args) -> int:
    import json

    from ..errors import InputError

    store = _open(args.db)
    df = store.calculations()
    m = df[df["key"].str.startswith(args.ident) | df["structure_hash"].str.startswith(args.ident)]
    if m.empty:
        raise InputError(
            f"nothing in {store.url} matches '{args.ident}'",
            fix="use a structure hash or key from `atomvib db list`",
        )
    for h in dict.fromkeys(m["structure_hash"]):
        sub = m[m["structure_hash"] == h]
        r0 = sub.iloc[0]
        print(f"structure {h}: {r0['formula']} ({r0['natoms']} atoms, {r0['spacegroup']})")
        for s in store.sources_of(h):
            print(f"  source: {s}")
        for _, r in sub.iterrows():
            row = store.get_calculation(r["key"])
            print(
                f"  {r['task']} [{r['status']}] engine {_engine_label(r['engine'], r['task'])} {r['engine_version']}, "
                f"settings {r['settings_digest']}, key {r['key']}"
            )
            if not _missing(r["seconds"]):
                print(
                    f"    {r['seconds']:.2f} s on {r['host']}, finished {r['finished']}, atomvib {r['atomvib_version']}, "
                    f"attempts {r['attempts']}"
                )
            if r["error"]:
                print(f"    error: {r['error']}")
            if r["result_dir"]:
                print(f"    files: {r['result_dir']}")
            summ = json.loads(row.summary_json or "{}")
            for k in ("omega_max_thz", "min_frequency_thz", "has_imaginary", "energy_eV", "steps"):
                if k in summ:
                    print(f"    {k}: {summ[k]}")
    return 0


def _task_options(args) -> dict:
    """The md/tdep tasks' MDSettings from the --md-* options (checked here: one line for a bad number)."""
    from .. import units
    from ..dynamics.settings import MDSettings
    from ..errors import InputError

    tasks = {t.strip() for t in args.tasks.split(",")}
    if not tasks & {"md", "tdep"}:
        return {}
    if not (args.md_time == args.md_time and 0 < args.md_time < 1e6):
        raise InputError(f"--md-time must be a positive time in ps, got {args.md_time!r}", fix="give e.g. --md-time 5")
    dt = MDSettings(timestep_fs=args.md_timestep).timestep_fs
    md = MDSettings(temperature_k=args.md_temperature, timestep_fs=dt, equilibration_steps=args.md_equilibration,
                    steps=int(round(args.md_time / units.FS_TO_PS / dt)), symprec=args.symprec)
    return {"md": md, "tdep": md}

