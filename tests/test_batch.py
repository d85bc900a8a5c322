"""Batches on Dask: results in the store, duplicates and bad inputs recorded, killed workers and drivers, SLURM."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from atomvib.batch import expand_inputs, run_batch
from atomvib.cli.main import main
from atomvib.settings import PhononSettings
from atomvib.store import Store

# tiny and fast: 2×2×2 supercells of one-atom cells, coarse mesh, no relaxation (~1–2 s per task)
FAST = PhononSettings(engine="emt", relax=False, min_supercell_length_a=5.0, mesh_density=5.0)
FAST_CLI = ["--engine", "emt", "--no-relax", "--min-length", "5", "--mesh-density", "5", "--quiet"]
ENV = {
    **os.environ,
    "ATOMVIB_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    os.environ.update(
        {k: ENV[k] for k in ("ATOMVIB_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    )
    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield c
    c.close()


def _metals(d: Path, scales=(1.0,)) -> list[Path]:
    files = []
    for el, a in (("Al", 4.05), ("Cu", 3.61), ("Ni", 3.52), ("Au", 4.08)):
        for s in scales:
            p = d / f"{el}_{s:.2f}.cif"
            write(p, bulk(el, "fcc", a=a * s))
            files.append(p)
    return files


def test_expand_inputs(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "a.cif", bulk("Al"))
    write(tmp_path / "sub" / "POSCAR", bulk("Cu"), format="vasp")
    (tmp_path / "sub" / "notes.txt").write_text("x")
    (tmp_path / "res").mkdir()
    write(tmp_path / "res" / "relaxed.extxyz", bulk("Cu"))
    got = expand_inputs([tmp_path, str(tmp_path / "*.cif")], exclude=[tmp_path / "res"])
    assert got == [str(tmp_path / "a.cif"), str(tmp_path / "sub" / "POSCAR")]


def test_batch_records_everything_and_reruns_in_seconds(tmp_path, cluster):
    d = tmp_path / "in"
    d.mkdir()
    write(d / "Al.cif", bulk("Al", "fcc", a=4.05))
    write(d / "Cu.cif", bulk("Cu", "fcc", a=3.61))
    write(d / "Cu_conventional.cif", bulk("Cu", "fcc", a=3.61, cubic=True))  # duplicate of Cu.cif
    write(d / "many.extxyz", [bulk("Ni", "fcc", a=3.52), bulk("Au", "fcc", a=4.08)])
    write(d / "Fe.cif", bulk("Fe", "bcc", a=2.87))  # EMT has no Fe parameters
    (d / "broken.cif").write_text("data_x\n_cell_length_a 3\nnonsense\n")
    db = tmp_path / "b.db"
    s = run_batch([d], tasks=["phonons"], settings=FAST, db=db, scheduler=cluster.scheduler_address)
    assert (s.n_inputs, s.n_structures, s.n_duplicates, s.n_unreadable) == (7, 5, 1, 1)
    assert (s.done, s.failed, s.already_done) == (4, 1, 0)
    store = Store(db)
    df = store.calculations()
    by = {(r.formula, r.task): r for r in df.itertuples()}
    assert (
        by[("Fe", "phonons")].status == "failed"
        and "does not cover element(s) Fe" in by[("Fe", "phonons")].error
    )
    bad = df[df["task"] == "read"]
    assert (
        len(bad) == 1 and bad.iloc[0]["status"] == "failed" and bad.iloc[0]["source"].endswith("broken.cif")
    )
    cu = by[("Cu", "phonons")]
    assert {Path(p).name for p in store.sources_of(cu.structure_hash)} == {"Cu.cif", "Cu_conventional.cif"}
    assert by[("Ni", "phonons")].source.endswith("many.extxyz@0")

    # every stored omega_max agrees with phonopy on the stored force constants (independent evaluation)
    import phonopy

    for f in ("Al", "Cu", "Ni", "Au"):
        row = by[(f, "phonons")]
        assert row.status == "done" and not row.has_imaginary
        summary = json.loads((Path(row.result_dir) / "summary.json").read_text())
        ph = phonopy.load(str(Path(row.result_dir) / "phonopy.yaml"), log_level=0)
        ph.run_mesh(summary["mesh"], is_gamma_center=True)
        band_q = json.loads((Path(row.result_dir) / "band.json").read_text())["qpoints"]
        ph.run_qpoints(band_q)
        ref = max(ph.get_mesh_dict()["frequencies"].max(), ph.get_qpoints_dict()["frequencies"].max())
        assert row.omega_max_thz == pytest.approx(
            ref, abs=1e-4
        )  # omega_max is over the mesh and the band path
    # EMT metals: the lighter and stiffer, the higher the top frequency (Al/Ni above Au by > 2×)
    assert by[("Ni", "phonons")].omega_max_thz > 2 * by[("Au", "phonons")].omega_max_thz

    t0 = time.perf_counter()
    again = run_batch([d], tasks=["phonons"], settings=FAST, db=db, scheduler=cluster.scheduler_address)
    assert time.perf_counter() - t0 < 5.0
    assert (again.done, again.failed, again.already_done) == (0, 0, 5)
    assert len(Store(db).calculations()) == 6

    # query and export through the CLI
    out = tmp_path / "calcs.csv"
    assert main(["db", "export", "--db", str(db), "--format", "csv", "--out", str(out)]) == 0
    import pandas as pd

    csv = pd.read_csv(out)
    for col in (
        "structure_hash",
        "formula",
        "source",
        "engine",
        "task",
        "status",
        "error",
        "omega_max_thz",
        "has_imaginary",
        "seconds",
    ):
        assert col in csv.columns
    assert len(csv) == 6 and set(csv["status"]) == {"done", "failed"}
    assert (
        main(
            [
                "db",
                "export",
                "--db",
                str(db),
                "--format",
                "extxyz",
                "--status",
                "done",
                "--out",
                str(tmp_path / "d.extxyz"),
            ]
        )
        == 0
    )
    frames = read(tmp_path / "d.extxyz", index=":")
    assert sorted(a.get_chemical_formula() for a in frames) == ["Al", "Au", "Cu", "Ni"]
    assert all(a.info["omega_max_thz"] > 0 for a in frames)
    assert (
        main(
            [
                "db",
                "export",
                "--db",
                str(db),
                "--format",
                "json",
                "--formula",
                "Cu",
                "--out",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    assert [r["formula"] for r in json.loads((tmp_path / "c.json").read_text())] == ["Cu"]


def test_cli_batch_and_db_list(tmp_path, cluster, capsys):
    files = _metals(tmp_path)[:2]
    db = str(tmp_path / "c.db")
    rc = main(["batch", *map(str, files), "--scheduler", cluster.scheduler_address, "--db", db, *FAST_CLI])
    assert rc == 0
    assert "2 done, 0 failed" in capsys.readouterr().out
    assert main(["db", "list", "--db", db, "--has-imaginary", "no"]) == 0
    out = capsys.readouterr().out
    assert "Al" in out and "Cu" in out and "done" in out
    assert main(["batch", str(files[0]), "--tasks", "phonons,bogus", "--db", db, *FAST_CLI]) == 2
    assert "unknown task(s) bogus" in capsys.readouterr().err
    assert (
        main(["db", "list", "--db", str(tmp_path / "none.db")]) == 2
    )  # a query never creates an empty database
    assert "no database at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def test_relax_then_phonons_chain(tmp_path, cluster):
    write(tmp_path / "Cu.cif", bulk("Cu", "fcc", a=3.70))  # strained: the relaxation has work to do
    db = tmp_path / "r.db"
    settings = PhononSettings(engine="emt", min_supercell_length_a=5.0, mesh_density=5.0, fmax_ev_per_a=1e-3)
    s = run_batch(
        [tmp_path / "Cu.cif"],
        tasks=["relax", "phonons"],
        settings=settings,
        db=db,
        scheduler=cluster.scheduler_address,
    )
    assert (s.done, s.failed) == (2, 0)
    df = Store(db).calculations().set_index("task")
    relaxed = read(Path(df.loc["relax", "result_dir"]) / "relaxed.extxyz")
    # EMT's Cu equilibrium lattice constant is 3.59 Å (ASE's fitted value, within 0.01 Å)
    assert np.cbrt(4 * relaxed.get_volume()) == pytest.approx(3.59, abs=0.01)
    ph = json.loads((Path(df.loc["phonons", "result_dir"]) / "summary.json").read_text())
    assert ph["relaxation"] is None  # phonons used the relaxed structure, not a second relaxation


def test_killing_a_worker_loses_nothing(tmp_path, cluster):
    from distributed import Client

    files = _metals(tmp_path, scales=(0.99, 1.0, 1.01))  # 12 distinct structures
    db = tmp_path / "k.db"
    client = Client(cluster.scheduler_address)
    box = {}
    t = threading.Thread(target=lambda: box.update(s=run_batch(files, settings=FAST, db=db, client=client)))
    t.start()
    first = None
    deadline = time.time() + 120
    while time.time() < deadline and first is None:
        time.sleep(0.2)
        done = Store(db).calculations(status="done") if db.exists() else None
        if done is not None and len(done):
            first = done.iloc[0]
    assert first is not None, "no task finished within 120 s"
    pids = client.run(os.getpid)
    os.kill(next(iter(pids.values())), signal.SIGKILL)  # a worker dies mid-batch
    t.join(300)
    client.close()
    s = box["s"]
    assert (s.done, s.failed) == (12, 0)
    df = Store(db).calculations().set_index("key")
    assert set(df["status"]) == {"done"} and len(df) == 12
    assert df.loc[first.key, "finished"] == first.finished  # the result finished before the kill is untouched


def _cli(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "atomvib.cli.main", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_killed_driver_resumes_and_two_batches_share_a_database(tmp_path, cluster):
    files = [str(f) for f in _metals(tmp_path, scales=(0.98, 1.0, 1.02))]
    db = str(tmp_path / "s.db")
    common = ["--scheduler", cluster.scheduler_address, "--db", db, *FAST_CLI]
    p = _cli(["batch", *files, *common])
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        if Path(db).exists() and len(Store(db).calculations(status="done")):
            break
    p.kill()  # like a power cut: no cleanup in the driver
    p.wait()
    assert (
        "running" in set(Store(db).calculations()["status"])
        or len(Store(db).calculations(status="done")) == 12
    )
    # two batches over overlapping inputs at once, on the same SQLite file
    p1, p2 = _cli(["batch", *files[:8], *common]), _cli(["batch", *files[4:], *common])
    for q in (p1, p2):
        q.wait(300)
        assert q.returncode == 0, q.stderr.read()
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    df = Store(db).calculations()
    assert len(df) == 12 and set(df["status"]) == {"done"} and df["key"].is_unique
    assert (df["attempts"] == 1).all()  # nothing computed twice, nothing lost


def test_slurm_options_map_to_the_job_script(tmp_path):
    pytest.importorskip("dask_jobqueue")
    from atomvib.cli.batch import _slurm
    from atomvib.cli.main import get_parser

    args = get_parser().parse_args(
        [
            "batch",
            "x.cif",
            "--slurm",
            "--slurm-queue",
            "gpu",
            "--slurm-account",
            "proj42",
            "--slurm-walltime",
            "02:30:00",
            "--slurm-cores",
            "8",
            "--slurm-memory",
            "32GB",
            "--slurm-jobs",
            "3",
        ]
    )
    opts = _slurm(args)
    assert opts.jobs == 3
    cluster = opts.cluster()
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A proj42",
        "#SBATCH -t 02:30:00",
        "#SBATCH --cpus-per-task=8",
        "export ATOMVIB_THREADS=1",
        "--nworkers 8",
        "--nthreads 1",
        "#SBATCH --mem=30G",
    ):
        assert line in script, line


def test_phonons_ins_predict_chain(tmp_path, cluster):
    """ins reuses the upstream phonons result; predict runs the shipped model; both land in the store."""
    write(tmp_path / "Al.cif", bulk("Al", "fcc", a=4.05))
    db = tmp_path / "p.db"
    s = run_batch(
        [tmp_path / "Al.cif"], tasks=["phonons", "ins", "predict"], settings=FAST, db=db,
        scheduler=cluster.scheduler_address,
    )
    assert (s.done, s.failed) == (3, 0)
    df = Store(db).calculations().set_index("task")
    ins_dir = Path(df.loc["ins", "result_dir"])
    assert (ins_dir / "ins.csv").exists() and not (ins_dir / "phonopy.yaml").exists()  # no second phonon run
    ins = json.loads((ins_dir / "ins.json").read_text())
    ph = json.loads((Path(df.loc["phonons", "result_dir"]) / "summary.json").read_text())
    # the strongest VISION one-phonon peak lies within the phonon band
    assert 0 < ins["strongest_peak_meV"] <= ph["omega_max_thz"] * 4.1357 + 1.0
    pred = json.loads((Path(df.loc["predict", "result_dir"]) / "prediction.json").read_text())
    width = pred["frequencies_cm1"][1] - pred["frequencies_cm1"][0]
    assert pred["formula"] == "Al" and abs(sum(pred["dos"]) * width - 3.0) < 0.05  # 3 states per atom


# -- reuse of finished results and force caches -----------------------------------------------------


@pytest.fixture
def inproc():
    """A one-worker Dask cluster inside this process: monkeypatches reach the tasks."""
    from distributed import Client, LocalCluster

    c = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    client = Client(c)
    yield client
    client.close()
    c.close()


@pytest.fixture
def engine_calls(monkeypatch):
    """Counts the cells every engine evaluates (Engine.evaluate, in this process)."""
    from atomvib.engines.base import Engine

    calls = []
    real = Engine.evaluate

    def counting(self, atoms_list, progress=None):
        calls.append(len(atoms_list))
        return real(self, atoms_list, progress)

    monkeypatch.setattr(Engine, "evaluate", counting)
    return calls


def test_added_task_reuses_the_finished_phonons(tmp_path, inproc, engine_calls, monkeypatch, capsys):
    """Bug: `--tasks phonons,ins` after `--tasks phonons` computed the phonons again inside every ins row."""
    from atomvib.batch import TaskOutput, register_task
    from atomvib.batch.tasks import TASKS

    write(tmp_path / "Cu.cif", bulk("Cu", "fcc", a=3.61, cubic=True))  # 4 atoms; phonons hand on the 1-atom cell
    db = tmp_path / "r.db"
    first = run_batch([tmp_path / "Cu.cif"], tasks=["phonons"], settings=FAST, db=db, client=inproc)
    assert (first.done, first.failed) == (1, 0) and sum(engine_calls) > 0
    engine_calls.clear()

    def no_phonons(*a, **k):
        raise AssertionError("phonons computed again")

    monkeypatch.setattr("atomvib.workflow.phonons", no_phonons)
    seen = {}
    monkeypatch.setitem(TASKS, "probe", TASKS["ins"])  # replaced below; setitem restores the registry
    register_task("probe", lambda s, ctx: seen.update(natoms=s.natoms, up=ctx.upstream_dir) or TaskOutput(structure=s))
    again = run_batch(
        [tmp_path / "Cu.cif"], tasks=["phonons", "ins", "probe"], settings=FAST, db=db, client=inproc
    )
    assert (again.done, again.failed, again.already_done) == (2, 0, 1), Store(db).calculations()[["task", "error"]]
    assert engine_calls == []  # not one force evaluated
    df = Store(db).calculations().set_index("task")
    ins = json.loads((Path(df.loc["ins", "result_dir"]) / "ins.json").read_text())
    assert ins["phonons"] == df.loc["phonons", "result_dir"] and ins["strongest_peak_meV"] > 0
    assert seen["natoms"] == 1  # the structure the finished phonons handed on (primitive), read from its files

    # the table and the exports read plainly for rows without phonon numbers (ins, probe)
    capsys.readouterr()
    assert main(["db", "list", "--db", str(db)]) == 0
    table = capsys.readouterr().out
    assert "NaN" not in table and "<NA>" not in table and "ins" in table
    out = tmp_path / "all.extxyz"
    assert main(["db", "export", "--db", str(db), "--format", "extxyz", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 3 structures of 3 calculations (extxyz) to {out}"
    frames = read(out, index=":")
    assert [("omega_max_thz" in a.info, a.info["task"]) for a in frames] == [
        (True, "phonons"),
        (False, "ins"),
        (False, "probe"),
    ]


def test_new_mesh_or_temperatures_reuse_the_forces(tmp_path, inproc, engine_calls):
    """The analysis settings make a new phonons row but no new force evaluation; displacements do."""
    write(tmp_path / "Al.cif", bulk("Al", "fcc", a=4.05))
    db = tmp_path / "m.db"
    run = lambda st, tasks=("phonons",): run_batch(  # noqa: E731
        [tmp_path / "Al.cif"], tasks=list(tasks), settings=st, db=db, client=inproc
    )
    assert run(FAST).done == 1 and sum(engine_calls) > 0
    n_first = sum(engine_calls)
    engine_calls.clear()

    finer = dataclasses.replace(FAST, mesh_density=9.0, temperatures_k=(0.0, 150.0, 300.0))
    s = run(finer, ("phonons", "ins"))
    assert (s.done, s.failed) == (2, 0) and engine_calls == []  # new rows, forces from the checkpoint
    rows = Store(db).calculations(task="phonons")
    assert len(rows) == 2 and rows["settings_digest"].is_unique
    summaries = [json.loads((Path(d) / "summary.json").read_text()) for d in rows["result_dir"]]
    assert summaries[0]["mesh"] != summaries[1]["mesh"]  # new analysis numbers
    assert [_n_temperatures(d) for d in rows["result_dir"]] == [len(FAST.temperatures_k), 3]
    # ins hangs on the force constants only: another mesh again is the same ins row
    s = run(dataclasses.replace(FAST, mesh_density=7.0), ("phonons", "ins"))
    assert (s.done, s.already_done) == (1, 1) and engine_calls == []

    s = run(dataclasses.replace(FAST, displacement_a=0.02))  # other displaced cells: forces again
    assert s.done == 1 and sum(engine_calls) == n_first


def _n_temperatures(result_dir) -> int:
    return len((Path(result_dir) / "thermal.csv").read_text().strip().splitlines()) - 1


def test_row_digests_hash_what_changes_the_output():
    from atomvib.batch.tasks import Chain, discover_tasks

    t = discover_tasks()
    base = dataclasses.replace(FAST, engine="emt")
    c0 = Chain(structure="abc")

    def step(task, st=base, eng="E1", chain=c0):
        return t[task].step(st, chain, eng)

    analysis = dataclasses.replace(base, mesh_density=50.0, temperatures_k=(300.0,), dos_step_thz=0.1)
    forces = dataclasses.replace(base, displacement_a=0.02)
    # phonons: a new row for new analysis settings, with the same force constants (checkpoint directory)
    assert step("phonons", analysis).digest != step("phonons").digest
    assert step("phonons", analysis).forces_id == step("phonons").forces_id
    assert step("phonons", forces).forces_id != step("phonons").forces_id
    assert step("phonons", eng="E2").forces_id != step("phonons").forces_id  # engine identity (kernel path, ...)
    # relax settings matter only when it relaxes
    assert step("phonons", dataclasses.replace(base, fmax_ev_per_a=0.05)).digest == step("phonons").digest
    relaxing = dataclasses.replace(base, relax=True)
    assert step("phonons", dataclasses.replace(relaxing, fmax_ev_per_a=0.05)).forces_id != step("phonons", relaxing).forces_id
    # ins: only the force constants; predict: only the structure it is given (no engine)
    after = lambda st: step("phonons", st).chain  # noqa: E731
    assert step("ins", chain=after(analysis)).digest == step("ins", chain=after(base)).digest
    assert step("ins", chain=after(forces)).digest != step("ins", chain=after(base)).digest
    assert step("ins").digest == step("ins", chain=after(base)).digest  # standalone ins: same force constants
    assert step("predict", chain=after(base)).digest == step("predict", eng="E2", chain=after(base)).digest
    assert step("predict", chain=after(base)).digest == step("predict", chain=after(analysis)).digest
    assert step("predict", chain=after(relaxing)).digest != step("predict", chain=after(base)).digest
    assert step("relax").digest != step("relax", eng="E2").digest


def test_progress_bar_ends_on_the_final_counts(capsys):
    from atomvib.batch.runner import _Bar

    bar = _Bar(3, enabled=True)
    bar.update(running=2)
    for st in ("done", "failed", "done"):
        bar.update(st)
    bar.update(running=1)  # a stale poll after the last result
    bar.close()
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "done 2, failed 1" in last and "running" not in last


@pytest.mark.parametrize(
    "argv, message",
    [
        (["batch", "{cif}", "--db", "{db}", "-j", "0", "--engine", "emt"], "--workers 0: needs at least one worker"),
        (["batch", "{cif}", "--db", "{db}", "--engine", "nope"], "unknown engine 'nope'"),
        (["batch", "{cif}", "--db", "{db}", "--slurm", "--engine", "emt"], "--slurm needs"),
        (["batch", "{cif}", "--db", "{db}", "--results", "{cif}", "--engine", "emt"], "is a file"),
    ],
)
def test_batch_input_errors_are_one_line(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch
    cif = tmp_path / "Al.cif"
    write(cif, bulk("Al"))
    argv = [a.format(cif=cif, db=tmp_path / "e.db") for a in argv]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("(fix:") == 1 and len(err.strip().splitlines()) == 1


def test_kappa_task_stores_kappa_at_300k(tmp_path, inproc, monkeypatch, capsys):
    """`--tasks kappa`: a κ result per structure, κ(300 K) in a queryable column equal to the saved result's."""
    import atomvib
    from atomvib.settings import KappaSettings

    monkeypatch.setattr("atomvib.batch.tasks.kappa_task_settings",
                        lambda: KappaSettings(mesh=(6, 6, 6), temperatures_k=(300.0,)))
    write(tmp_path / "Cu.cif", bulk("Cu", "fcc", a=3.6))
    db = tmp_path / "k.db"
    r = run_batch([tmp_path / "Cu.cif"], tasks=["kappa"], settings=dataclasses.replace(FAST, relax=False), db=db,
                  client=inproc)
    assert (r.done, r.failed) == (1, 0), Store(db).calculations()[["task", "error"]]
    row = Store(db).calculations().iloc[0]
    k = atomvib.load(row["result_dir"])
    assert row["task"] == "kappa" and row["kappa_300k_w_per_mk"] == pytest.approx(k.kappa_at(300.0)[:3].mean())
    assert 5 < row["kappa_300k_w_per_mk"] < 100  # EMT Cu's lattice part: tens of W/m-K
    assert main(["db", "list", "--db", str(db)]) == 0


def test_qha_task_stores_thermal_expansion_at_300k(tmp_path, inproc):
    """`--tasks qha`: a QHA result per structure, α(300 K) in a queryable column equal to the saved result's."""
    import atomvib

    write(tmp_path / "Cu.cif", bulk("Cu", "fcc", a=3.6))
    db = tmp_path / "q.db"
    st = dataclasses.replace(FAST, min_supercell_length_a=6.0, mesh_density=30.0)
    r = run_batch([tmp_path / "Cu.cif"], tasks=["qha"], settings=st, db=db, client=inproc)
    assert (r.done, r.failed) == (1, 0), Store(db).calculations()[["task", "error"]]
    row = Store(db).calculations().iloc[0]
    q = atomvib.load(row["result_dir"])
    a300 = q.at(300.0)["thermal_expansion_volumetric_per_K"]
    assert row["thermal_expansion_300k_per_k"] == pytest.approx(a300) and 3e-5 < a300 < 1e-4  # EMT Cu: 3×20.8e-6


def test_md_then_tdep_tasks(tmp_path, inproc, capsys):
    """md writes its trajectory as a file the row references; tdep fits it (ω_max, has_imaginary in the store);
    a rerun computes nothing; another temperature is another row; the CLI's --md-* options reach the tasks."""
    from atomvib.dynamics.settings import MDSettings

    write(tmp_path / "Al.cif", bulk("Al", "fcc", a=4.05))
    db = tmp_path / "md.db"
    md = MDSettings(temperature_k=200.0, timestep_fs=4.0, steps=300, equilibration_steps=100, write_every=2,
                    supercell=(2, 2, 2))
    s = run_batch([tmp_path / "Al.cif"], tasks=["md", "tdep"], settings=FAST, db=db, client=inproc,
                  task_options={"md": md, "tdep": md})
    assert (s.done, s.failed) == (2, 0)
    store = Store(db)
    df = store.calculations().set_index("task")
    row = store.get_calculation(df.loc["md", "key"])
    traj = Path(json.loads(row.summary_json)["trajectory"])
    assert traj.is_file() and traj.parent == Path(df.loc["md", "result_dir"])
    assert 8.0 < df.loc["tdep", "omega_max_thz"] < 10.0 and not df.loc["tdep", "has_imaginary"]
    assert json.loads(row.settings_json)["task_options"]["temperature_k"] == 200.0
    again = run_batch([tmp_path / "Al.cif"], tasks=["md", "tdep"], settings=FAST, db=db, client=inproc,
                      task_options={"md": md, "tdep": md})
    assert again.done == 0 and again.already_done == 2
    hot = dataclasses.replace(md, temperature_k=400.0)
    third = run_batch([tmp_path / "Al.cif"], tasks=["md"], settings=FAST, db=db, client=inproc,
                      task_options={"md": hot})
    assert third.done == 1 and len(Store(db).calculations()) == 3
    rc = main(["batch", str(tmp_path / "Al.cif"), "--tasks", "md", "--md-time", "-1", "--db", str(db), *FAST_CLI])
    assert rc == 2 and "--md-time" in capsys.readouterr().err
