"""Batches on Dask: results in the store, duplicates and bad inputs recorded, killed workers and drivers, SLURM."""

from __future__ import annotations

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
