"""The provenance store: canonical hashes, schema at head, claiming, stale runs, concurrent writers, PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from atomvib.store import Store, canonical_hash
from atomvib.structure import Structure


def _s(atoms) -> Structure:
    return Structure.from_ase(atoms)


def _rotated_permuted_translated(atoms, seed=0):
    a = atoms.copy()
    rot = Rotation.from_euler("xyz", [17, -40, 73], degrees=True).as_matrix()
    a.set_cell(a.cell.array @ rot.T, scale_atoms=True)
    a.translate([0.37, 1.1, -0.6])
    a.wrap()
    return a[np.random.default_rng(seed).permutation(len(a))]


# -- canonical hash --------------------------------------------------------------------------------


def test_same_crystal_in_any_setting_has_one_hash():
    prim = bulk("NaCl", "rocksalt", a=5.64)
    conv = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    variants = [
        prim,
        conv,
        _rotated_permuted_translated(conv),
        prim.repeat((2, 1, 3)),
        _rotated_permuted_translated(prim, 3),
    ]
    hashes = {canonical_hash(_s(v)) for v in variants}
    assert len(hashes) == 1
    # Si: conventional 8-atom cell vs 2-atom primitive cell
    assert canonical_hash(_s(bulk("Si", "diamond", a=5.43))) == canonical_hash(
        _s(bulk("Si", "diamond", a=5.43, cubic=True))
    )


def test_different_crystals_have_different_hashes():
    nacl = canonical_hash(_s(bulk("NaCl", "rocksalt", a=5.64)))
    assert canonical_hash(_s(bulk("NaCl", "rocksalt", a=5.66))) != nacl  # 0.02 Å change of lattice constant
    assert canonical_hash(_s(bulk("NaCl", "zincblende", a=5.64))) != nacl  # same composition, other structure
    assert canonical_hash(_s(bulk("Si", "diamond", a=5.43))) != canonical_hash(
        _s(bulk("Ge", "diamond", a=5.43))
    )


def test_molecule_hash_is_orientation_and_order_invariant():
    w = molecule("H2O")
    w2 = _rotated_permuted_translated(w)
    w2.set_cell(np.zeros((3, 3)))
    w2.pbc = False
    assert canonical_hash(_s(w)) == canonical_hash(_s(w2))
    stretched = w.copy()
    stretched.positions[1] *= 1.05
    assert canonical_hash(_s(stretched)) != canonical_hash(_s(w))


# -- schema and bookkeeping ------------------------------------------------------------------------


def test_fresh_database_is_at_head_and_reopens(tmp_path):
    db = tmp_path / "a.db"
    s = Store(db)
    assert s.revision() == Store.head_revision() == "0003"
    Store(db)  # a second open is a no-op upgrade
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert {"structures", "sources", "calculations", "runs", "alembic_version"} <= tables
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_database_of_the_first_schema_is_upgraded_keeping_its_rows(tmp_path):
    """A 0001 database (before the κ/α columns) opens at head with its rows and the new columns empty."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    import atomvib.store.db as dbmod

    db = tmp_path / "old.db"
    s = Store(db)
    s.plan([_calc(1)])
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(dbmod.__file__).parent / "migrations"))
    with s.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert s.revision() == "0001"
    cols = {r[1] for r in sqlite3.connect(db).execute("pragma table_info(calculations)")}
    assert "kappa_300k_w_per_mk" not in cols
    s2 = Store(db)
    assert s2.revision() == Store.head_revision()
    df = s2.calculations()
    assert list(df["key"]) == ["k00001"] and df["kappa_300k_w_per_mk"].isna().all()


def test_progress_columns_migration_and_writes(tmp_path):
    """0003 adds the progress columns to a 0002 database (rows kept); only the run that holds a running row writes
    its progress; a new claim clears it; another connection reads it."""
    from alembic import command
    from alembic.config import Config

    import atomvib.store.db as dbmod

    db = tmp_path / "p.db"
    s = Store(db)
    s.plan([_calc(1), _calc(2)])
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(dbmod.__file__).parent / "migrations"))
    with s.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    cols = {r[1] for r in sqlite3.connect(db).execute("pragma table_info(calculations)")}
    assert "progress_done" not in cols and "kappa_300k_w_per_mk" in cols
    s = Store(db)
    assert s.revision() == "0003" and list(s.calculations()["key"]) == ["k00001", "k00002"]
    run = s.start_run("test")
    assert s.claim(["k00001"], run) == ["k00001"]
    report = {"stage": "forces of 12 displaced cells", "unit": "calc", "done": 5, "total": 12, "eta_s": 7.5,
              "updated": 1000.0}
    assert s.set_progress(run, {"k00001": report, "k00002": report}) == 1  # k00002 is not running
    assert s.set_progress("another-run", {"k00001": {**report, "done": 99}}) == 0
    other = Store(db)  # another process's view
    assert other.progress(["k00001", "k00002"]) == {"k00001": {"status": "running", **report}}
    s.finish("k00001", run, "failed", error="x")
    assert other.progress(["k00001"])["k00001"]["status"] == "failed"  # kept afterwards: how far it got
    s.end_run(run)
    run2 = s.start_run("again")
    assert s.claim(["k00001"], run2, retry_failed=True) == ["k00001"]
    assert other.progress(["k00001"]) == {}  # a new attempt starts without the old one's progress
    s.close()
    other.close()


def test_worker_progress_reports_are_rate_limited(tmp_path):
    """A task's counted stages (Progress bars, silent or not) reach the progress file at most once a second."""
    import time

    from atomvib.batch.runner import PROGRESS_FILE, read_progress, reporting_progress
    from atomvib.progress import Progress

    calls = []
    with reporting_progress(tmp_path, every=0.5) as rep:
        real = rep._update.__func__

        def counted(self, stage, force=False):
            before = self.last_write
            real(self, stage, force)
            if self.last_write != before:
                calls.append(stage.done)

        rep._update = counted.__get__(rep)
        bar = Progress(enabled=False).bar(10, "forces of 10 displaced cells")
        assert read_progress(tmp_path)["done"] == 0  # the stage and its total at once
        for _ in range(5):
            bar(1)
        assert read_progress(tmp_path)["done"] == 0  # within the interval: not written
        time.sleep(0.55)
        bar(1)
        r = read_progress(tmp_path)
        assert r["done"] == 6 and r["total"] == 10 and r["unit"] == "calc" and r["eta_s"] is not None
        bar.close()
        with Progress(enabled=False).stage("not counted"):
            pass
    assert calls == [0, 6]
    assert not (tmp_path / PROGRESS_FILE).exists()  # removed when the task ends
    b = Progress(enabled=False).bar(3, "outside a task")  # no report: the library's own bar, untouched
    b(1)
    b.close()
    assert not (tmp_path / PROGRESS_FILE).exists()


def _calc(i, h="h0"):
    return {
        "key": f"k{i:05d}",
        "structure_hash": h,
        "task": "phonons",
        "engine": "emt",
        "engine_version": "1",
        "settings_digest": f"d{i}",
        "settings_json": "{}",
        "source": f"s{i}.cif",
    }


def test_claim_is_exclusive_and_plan_keeps_results(tmp_path):
    s = Store(tmp_path / "a.db")
    s.add_structures(
        [
            {
                "hash": "h0",
                "formula": "NaCl",
                "natoms": 2,
                "kind": "crystal",
                "source": "a.cif",
                "spacegroup": "Fm-3m (225)",
                "extxyz": "",
            }
        ]
    )
    s.plan([_calc(i) for i in range(10)])
    r1, r2 = s.start_run(), s.start_run()
    got1 = s.claim([f"k{i:05d}" for i in range(6)], r1)
    got2 = s.claim([f"k{i:05d}" for i in range(10)], r2)
    assert sorted(got1) == [f"k{i:05d}" for i in range(6)]
    assert sorted(got2) == [f"k{i:05d}" for i in range(6, 10)]  # never the rows held by a live run
    s.finish("k00000", r1, "done", omega_max_thz=7.5, has_imaginary=False, seconds=1.0)
    s.finish("k00001", r1, "failed", error="boom")
    s.plan([_calc(i) for i in range(10)])  # re-planning must not reset anything
    df = s.calculations()
    assert df.set_index("key").loc["k00000", "status"] == "done"
    assert df.set_index("key").loc["k00000", "omega_max_thz"] == 7.5
    assert df.set_index("key").loc["k00001", "error"] == "boom"
    s.end_run(r1)  # interrupted: its unfinished rows go back to pending
    c = s.counts()
    assert c == {"done": 1, "failed": 1, "pending": 4, "running": 4}
    assert s.claim(["k00001"], s.start_run()) == []  # failed is kept unless asked
    assert s.claim(["k00001"], s.start_run(), retry_failed=True) == ["k00001"]
    assert (
        len(s.calculations(formula="ClNa")) == 10
        and len(s.calculations(formula="Na2Cl2", status="done")) == 1
    )


def test_rows_of_a_killed_run_are_reset(tmp_path):
    from atomvib.store.models import RunRow

    s = Store(tmp_path / "a.db")
    s.plan([_calc(i) for i in range(3)])
    proc = subprocess.Popen(["sleep", "0"])
    proc.wait()  # a pid that no longer exists: the run 'was killed'
    run = "deadrun"
    s._write(
        lambda ses: ses.add(
            RunRow(id=run, host=socket.gethostname(), pid=proc.pid, started=0.0, heartbeat=0.0, command="")
        )
    )
    assert len(s.claim(["k00000", "k00001"], run)) == 2
    assert s.counts()["running"] == 2
    assert s.reset_stale() == 2
    assert s.counts() == {"pending": 3}


def _writer(db, offset, n, barrier):
    s = Store(db)
    barrier.wait()
    run = s.start_run()
    s.add_structures(
        [
            {
                "hash": "shared",
                "formula": "Cu",
                "natoms": 1,
                "kind": "crystal",
                "source": f"w{offset}",
                "spacegroup": "",
                "extxyz": "",
            }
        ]
    )
    keys = [f"k{offset + i:05d}" for i in range(n)]
    s.plan([_calc(offset + i, h="shared") for i in range(n)])
    for k in s.claim(keys, run):
        s.finish(k, run, "done", seconds=0.01)  # one transaction per result, as the batch driver does
    s.end_run(run)


def test_two_processes_writing_one_sqlite_file(tmp_path):
    db = str(tmp_path / "a.db")
    Store(db)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    n = 150
    procs = [ctx.Process(target=_writer, args=(db, off, n, barrier)) for off in (0, n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    df = Store(db).calculations()
    assert len(df) == 2 * n and set(df["status"]) == {"done"} and df["key"].is_unique
    assert Store(db).sources_of("shared") == ["w0", f"w{n}"] or set(Store(db).sources_of("shared")) == {
        "w0",
        f"w{n}",
    }


# -- queries and exports through the CLI -----------------------------------------------------------


def _db_with_mixed_rows(tmp_path) -> Path:
    """phonons (numbers, energy), ins (no numbers) and a predict row written before the predictor had its own
    engine label (engine 'sevennet'), as rows the batch driver records."""
    import io

    from ase.io import write

    buf = io.StringIO()
    write(buf, bulk("Al"), format="extxyz")
    db = tmp_path / "m.db"
    s = Store(db)
    s.add_structures(
        [{"hash": "h0", "formula": "Al", "natoms": 1, "kind": "crystal", "source": "Al.cif",
          "spacegroup": "Fm-3m (225)", "extxyz": buf.getvalue()}]
    )  # fmt: skip
    calcs = [_calc(0), {**_calc(1), "task": "ins"}, {**_calc(2), "task": "predict", "engine": "sevennet"}]
    s.plan(calcs)
    run = s.start_run()
    s.claim([c["key"] for c in calcs], run)
    s.finish("k00000", run, "done", omega_max_thz=9.9, has_imaginary=False, energy_ev=-3.5, seconds=1.5)
    s.finish("k00001", run, "done", seconds=0.7)
    s.finish("k00002", run, "done", seconds=0.1)
    s.end_run(run)
    return db


def test_db_list_and_exports_read_plainly(tmp_path, capsys):
    import json

    import pandas as pd

    from atomvib.cli.main import main

    db = str(_db_with_mixed_rows(tmp_path))
    assert main(["db", "list", "--db", db]) == 0
    table = capsys.readouterr().out
    assert "NaN" not in table and "<NA>" not in table and "sevennet" not in table
    lines = table.splitlines()
    assert "predictor" in lines[3] and "9.900" in lines[1] and " no " in lines[1]

    out = tmp_path / "c.csv"
    assert main(["db", "export", "--db", db, "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote 3 calculations (csv) to {out}\n"
    csv = pd.read_csv(out)
    assert csv["energy_ev"].tolist()[0] == -3.5 and csv["energy_ev"].isna().tolist()[1:] == [True, True]
    assert csv["engine"].tolist() == ["emt", "emt", "predictor"]
    for t in csv["finished"]:  # ISO 8601, UTC with its offset
        assert pd.Timestamp(t).utcoffset() == pd.Timedelta(0) and t.endswith("+00:00") and "T" in t
    assert main(["db", "export", "--db", db, "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1]["omega_max_thz"] is None and rows[1]["finished"].endswith("+00:00")

    out = tmp_path / "s.extxyz"
    assert main(["db", "export", "--db", db, "--format", "extxyz", "--out", str(out)]) == 0
    assert "wrote 3 structures of 3 calculations" in capsys.readouterr().out
    from ase.io import read

    frames = read(out, index=":")
    assert frames[0].info["omega_max_thz"] == 9.9 and frames[0].info["has_imaginary"] is False
    assert "omega_max_thz" not in frames[1].info and frames[2].info["engine"] == "predictor"


def test_db_errors_are_one_line(tmp_path, capsys):
    from atomvib.cli.main import main

    db = str(_db_with_mixed_rows(tmp_path))
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    newer = tmp_path / "newer.db"
    Store(newer).close()
    con = sqlite3.connect(newer)
    con.execute("update alembic_version set version_num='9999'")
    con.commit()
    con.close()
    cases = [
        (["db", "export", "--db", db, "--out", str(tmp_path / "no" / "x.csv")], "does not exist"),
        (["db", "export", "--db", db, "--out", str(tmp_path)], "is a directory"),
        (["db", "list", "--db", str(tmp_path / "notes.db")], "is not an SQLite database"),
        (["db", "list", "--db", str(newer)], "upgrade atomvib"),
        (["db", "list", "--db", str(tmp_path / "none.db")], "no database at"),
        (["db", "show", "zzz", "--db", db], "nothing in"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "(fix:" in err, (argv, err)
    with pytest.raises(SystemExit) as exc:  # argparse: a bad --format names the choices, exit 2
        main(["db", "export", "--db", db, "--format", "xlsx"])
    assert exc.value.code == 2 and "choose from 'csv', 'json', 'extxyz'" in capsys.readouterr().err


# -- PostgreSQL ------------------------------------------------------------------------------------


def _pg_bin():
    for d in [
        os.environ.get("PG_BIN", ""),
        "/usr/lib/postgresql/15/bin",
        "/usr/lib/postgresql/16/bin",
        "/usr/local/bin",
    ]:
        if d and Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    w = shutil.which("initdb")
    return Path(w).parent if w and shutil.which("pg_ctl") else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on a free port (skipped where the binaries or the driver are absent)."""
    import importlib.util

    if not any(importlib.util.find_spec(m) for m in ("psycopg", "psycopg2")):
        pytest.skip("no PostgreSQL driver (psycopg or psycopg2) installed")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    import tempfile

    # directly under /tmp: pytest's tmp dirs are private to root, which the 'postgres' user cannot enter
    base = Path(tempfile.mkdtemp(prefix="atomvib-pg-"))
    data = base / "data"
    pre = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the 'postgres' user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        os.chmod(base, 0o755)
        pre = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        [*pre, str(bindir / "initdb"), "-D", str(data), "-U", "atomvib", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *pre,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                str(bindir / "createdb") if (bindir / "createdb").exists() else "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "atomvib",
                "atomvib",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://atomvib@127.0.0.1:{port}/atomvib"  # Store picks the installed driver
    finally:
        subprocess.run(
            [*pre, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-W", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_store(postgres):
    s = Store(postgres)
    assert s.revision() == Store.head_revision()
    s.add_structures(
        [
            {
                "hash": "h0",
                "formula": "Al",
                "natoms": 1,
                "kind": "crystal",
                "source": "Al.cif",
                "spacegroup": "Fm-3m (225)",
                "extxyz": "",
            }
        ]
        * 2
    )
    s.plan([_calc(i) for i in range(5)])
    s.plan([_calc(i) for i in range(5)])
    run = s.start_run()
    assert len(s.claim([f"k{i:05d}" for i in range(5)], run)) == 5
    assert s.claim([f"k{i:05d}" for i in range(5)], s.start_run()) == []
    s.finish("k00000", run, "done", omega_max_thz=9.1, has_imaginary=False, seconds=0.5)
    s.end_run(run)
    df = Store(postgres).calculations(formula="Al")
    assert len(df) == 5
    assert df.set_index("key").loc["k00000", "omega_max_thz"] == 9.1
    assert s.counts() == {"done": 1, "pending": 4}
    assert len(s.calculations(has_imaginary=False)) == 1
