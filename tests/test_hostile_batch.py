"""The batch and its store under hostile conditions: passwords in URLs, a database disk that fills up, damaged
and foreign database files, bad URLs, Ctrl-C, Dask's log lines, a second batch on the same rows, failed inputs.

Every CLI case goes through ``atomvib.cli.main.main`` in this process: exit code, one line on stderr, no traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from ase.build import bulk
from ase.io import write

from atomvib.batch import run_batch
from atomvib.batch import runner as batch_runner
from atomvib.cli.main import main
from atomvib.settings import PhononSettings
from atomvib.store import Store
from atomvib.store.db import display_url, mask_credentials
from atomvib.store.models import CalculationRow, RunRow
from test_store import postgres  # noqa: F401  (the throwaway server of test_store.py; skips where absent)

FAST = PhononSettings(engine="emt", relax=False, min_supercell_length_a=5.0, mesh_density=5.0)
FAST_CLI = ["--engine", "emt", "--no-relax", "--min-length", "5", "--mesh-density", "5"]
SECRET = "S3cr3t-pw"


@pytest.fixture(scope="module")
def inproc():
    """A one-worker Dask cluster inside this process (fast to start; monkeypatches reach the tasks)."""
    from distributed import Client, LocalCluster

    c = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    client = Client(c)
    yield client
    client.close()
    c.close()


def _metals(d: Path, elements=("Al", "Cu", "Ni")) -> list[str]:
    lattice = {"Al": 4.05, "Cu": 3.61, "Ni": 3.52, "Au": 4.08}
    files = []
    for el in elements:
        p = d / f"{el}.cif"
        write(p, bulk(el, "fcc", a=lattice[el]))
        files.append(str(p))
    return files


def _one_error(err: str, command: str = "batch") -> str:
    """The single ``atomvib COMMAND: error:`` line of ``err`` (and nothing else, no traceback)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"atomvib {command}: error: "), err
    assert "(fix:" in lines[0], err
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- 1. passwords -----------------------------------------------------------------------------------


def test_passwords_are_masked_in_messages_and_records(tmp_path, capsys):
    url = f"postgresql://me:{SECRET}@db.example.org:5432/atomvib"
    assert mask_credentials(f"atomvib batch x.cif --db {url} -q") == (
        "atomvib batch x.cif --db postgresql://me:***@db.example.org:5432/atomvib -q"
    )
    assert SECRET not in display_url(url) and "me:***@db.example.org" in display_url(url)
    assert display_url("postgresql://me:p@ss@h/db") == "postgresql://me:***@h/db"  # an unescaped @ in it
    assert mask_credentials("host=h password=hunter22 dbname=x") == "host=h password=*** dbname=x"

    # a server that refuses: the error names the URL, masked, and comes at once
    write(tmp_path / "Al.cif", bulk("Al"))
    bad = f"postgresql://me:{SECRET}@127.0.0.1:{_closed_port()}/atomvib"
    t0 = time.perf_counter()
    assert main(["batch", str(tmp_path / "Al.cif"), "--db", bad, *FAST_CLI, "-q"]) == 2
    assert time.perf_counter() - t0 < 10
    line = _one_error(capsys.readouterr().err)
    assert SECRET not in line and "me:***@127.0.0.1" in line

    # the command line stored with a run
    s = Store(tmp_path / "r.db")
    run = s.start_run(f"atomvib batch a.cif --db={url}")
    s.end_run(run)
    con = sqlite3.connect(tmp_path / "r.db")
    (command,) = con.execute("select command from runs").fetchone()
    assert SECRET not in command and "me:***@db.example.org" in command


def test_passwords_are_masked_against_a_postgresql_server(tmp_path, capsys, monkeypatch, postgres):  # noqa: F811
    """Summary, failure hint, runs.command and a server's error, with a real server (trust auth: any
    password is accepted); a service file works as the password-free --db."""
    url = postgres
    monkeypatch.chdir(tmp_path)  # the results directory of a server database is ./atomvib_results
    with_pw = url.replace("postgresql://atomvib@", f"postgresql://atomvib:{SECRET}@")
    (tmp_path / "bad.cif").write_text("not a structure\n")
    argv = ["batch", str(tmp_path / "bad.cif"), "--db", with_pw, *FAST_CLI, "-q"]
    monkeypatch.setattr("sys.argv", ["atomvib", *argv])
    assert main(argv) == 1  # the unreadable input is recorded as failed
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "atomvib:***@127.0.0.1" in out.out and "see the failures" in out.out
    store = Store(url)
    with store.engine.connect() as con:
        rows = con.exec_driver_sql("select command from runs").all()
    store.close()
    assert rows and all(SECRET not in r[0] and "***" in r[0] for r in rows)

    # an error from the server that names the database
    assert main(["db", "list", "--db", with_pw.rsplit("/", 1)[0] + "/nosuchdb"]) == 2
    line = _one_error(capsys.readouterr().err, "db")
    assert SECRET not in line and "nosuchdb" in line

    # a server database with someone else's table under one of atomvib's names: refused at once (was 38 s of
    # retries on 'relation "structures" already exists'), nothing added
    psycopg = pytest.importorskip("psycopg")

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("create database other")
    other = url.rsplit("/", 1)[0] + "/other"
    with psycopg.connect(other, autocommit=True) as con:
        con.execute("create table structures (x int)")
    t0 = time.perf_counter()
    assert main(["db", "list", "--db", other]) == 2 and time.perf_counter() - t0 < 10
    assert "tables named like atomvib's (structures)" in _one_error(capsys.readouterr().err, "db")
    with psycopg.connect(other) as con:
        assert [r[0] for r in con.execute("select tablename from pg_tables where schemaname='public'")] == [
            "structures"
        ]

    # docs/batch.md: a service file instead of a password on the command line
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    svc = tmp_path / "pg_service.conf"
    svc.write_text(f"[atomvib]\nhost={host}\nport={port}\nuser=atomvib\ndbname=atomvib\npassword={SECRET}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(svc))
    assert main(["db", "list", "--db", "postgresql+psycopg:///?service=atomvib"]) == 0
    assert SECRET not in capsys.readouterr().out


# -- 2. the database disk fills up mid-batch --------------------------------------------------------


def test_database_full_mid_batch_stops_cleanly_and_resumes(tmp_path, inproc, monkeypatch, capsys):
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    files = _metals(tmp_path)
    db = tmp_path / "full.db"
    argv = ["batch", *files, "--db", str(db), "--scheduler", inproc.scheduler.address, *FAST_CLI, "-q"]
    state = {"armed": False, "refused": 0}
    real_commit, real_finish = SQLiteDialect_pysqlite.do_commit, Store.finish

    def commit(self, dbapi_conn):
        if state["armed"]:
            state["refused"] += 1
            raise sqlite3.OperationalError("database or disk is full")
        return real_commit(self, dbapi_conn)

    def finish(self, *a, **k):  # the disk fills up after the first result is recorded
        real_finish(self, *a, **k)
        state["armed"] = True

    monkeypatch.setattr(SQLiteDialect_pysqlite, "do_commit", commit)
    monkeypatch.setattr(Store, "finish", finish)
    assert main(argv) == 1  # a failure of the storage
    line = _one_error(capsys.readouterr().err)
    assert "database or disk is full" in line and "batch stopped: 1 result recorded" in line
    assert "1 finished but kept on disk only" in line and state["refused"] >= 2  # the result, then end_run

    monkeypatch.undo()
    df = Store(db).calculations().set_index("source")
    assert sorted(df["status"]) == ["done", "running", "running"]  # end_run could not be written either
    # ... but nobody owns them: the next run takes them up, and records the finished one from its files
    summary = run_batch(files, settings=FAST, db=db, client=inproc)
    assert (summary.done, summary.failed, summary.already_done) == (2, 0, 1) and summary.recovered >= 1
    df = Store(db).calculations()
    assert set(df["status"]) == {"done"} and (df["attempts"] == 1).all()  # nothing computed twice
    assert "recorded from their files" in summary.describe()


def test_running_rows_without_an_owner_are_taken_up(tmp_path):
    """No row stays 'running' for ever: not one whose run died, nor one with no run at all."""
    db = _atomvib_db(tmp_path / "o.db")
    s = Store(db)
    s._write(lambda ses: ses.query(CalculationRow).filter(CalculationRow.key.in_(["k0", "k1"])).update(
        {"status": "running", "run_id": None}, synchronize_session=False))  # fmt: skip
    s._write(lambda ses: ses.query(CalculationRow).filter(CalculationRow.key == "k2").update(
        {"status": "running", "run_id": "never-registered"}, synchronize_session=False))  # fmt: skip
    assert s.reset_stale() == 3 and s.counts() == {"pending": 3}


# -- 3. damaged, foreign and unreachable databases --------------------------------------------------


def _atomvib_db(path: Path) -> Path:
    s = Store(path)
    s.add_structures([{"hash": "h0", "formula": "Al", "natoms": 1, "kind": "crystal", "source": "a.cif",
                       "spacegroup": "", "extxyz": ""}])  # fmt: skip
    s.plan([{"key": f"k{i}", "structure_hash": "h0", "task": "phonons", "engine": "emt", "engine_version": "1",
             "settings_digest": f"d{i}", "settings_json": "{}", "source": "a.cif"} for i in range(3)])  # fmt: skip
    s.close()
    con = sqlite3.connect(path)
    con.execute("pragma wal_checkpoint(TRUNCATE)")
    con.close()
    return path


def test_damaged_and_foreign_database_files_are_refused(tmp_path, capsys):
    write(tmp_path / "Al.cif", bulk("Al"))
    good = _atomvib_db(tmp_path / "good.db")
    page = 4096
    cases = {}
    (tmp_path / "random.db").write_bytes(os.urandom(3 * page))
    cases["random.db"] = "is not an SQLite database"
    (tmp_path / "truncated.db").write_bytes(good.read_bytes()[: 3 * page])
    cases["truncated.db"] = "is damaged"
    con = sqlite3.connect(good)
    root = con.execute("select rootpage from sqlite_master where name='calculations'").fetchone()[0]
    con.close()
    raw = bytearray(good.read_bytes())
    raw[(root - 1) * page : (root - 1) * page + 200] = b"\xff" * 200  # the calculations table's page
    (tmp_path / "damaged.db").write_bytes(bytes(raw))
    cases["damaged.db"] = "is damaged"
    for name, table in (("foreign.db", "people"), ("foreign_clash.db", "structures")):
        con = sqlite3.connect(tmp_path / name)
        con.execute(f"create table {table}(x)")
        con.commit()
        con.close()
        cases[name] = "is not an atomvib database"
    before = {n: (tmp_path / n).read_bytes() for n in ("foreign.db", "foreign_clash.db")}

    for name, message in cases.items():
        db = str(tmp_path / name)
        t0 = time.perf_counter()
        assert main(["batch", str(tmp_path / "Al.cif"), "--db", db, *FAST_CLI, "-q"]) == 2, name
        assert time.perf_counter() - t0 < 10, name  # 'table structures already exists' was retried for 38 s
        assert message in _one_error(capsys.readouterr().err), name
        assert main(["db", "list", "--db", db]) == 2, name
        assert message in _one_error(capsys.readouterr().err, "db"), name
        assert not (tmp_path / (Path(name).stem + "_results")).exists(), name
    for n, content in before.items():  # someone else's database is not touched: no table, no WAL switch
        assert (tmp_path / n).read_bytes() == content and not (tmp_path / (n + "-wal")).exists()
    (tmp_path / "empty.db").write_bytes(b"")
    assert Store(tmp_path / "empty.db").revision() == Store.head_revision()  # an empty file is a new database


def test_a_server_that_never_answers_fails_in_seconds(monkeypatch, capsys):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)  # accepts TCP, never speaks PostgreSQL
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    try:
        t0 = time.perf_counter()
        url = f"postgresql://me:{SECRET}@127.0.0.1:{srv.getsockname()[1]}/x"
        assert main(["db", "list", "--db", url]) == 2
        assert time.perf_counter() - t0 < 8
    finally:
        srv.close()
    line = _one_error(capsys.readouterr().err, "db")
    assert "timeout" in line and SECRET not in line


# -- Ctrl-C, Dask's log lines -----------------------------------------------------------------------


def test_ctrl_c_prints_one_line_and_gives_the_rows_back(tmp_path, monkeypatch, capfd):
    """A terminal's Ctrl-C reaches the driver and every worker process: one line, no worker traceback."""
    import psutil

    files = _metals(tmp_path, ("Al", "Cu"))
    db = tmp_path / "c.db"

    def interrupted(seconds):
        for child in psutil.Process().children(recursive=True):
            try:
                if "multiprocessing" in " ".join(child.cmdline()):
                    os.kill(child.pid, signal.SIGINT)
            except (psutil.Error, ProcessLookupError):
                pass
        time.sleep(1.0)  # let the workers react (a worker that did not ignore it prints its traceback)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_runner, "_pause", interrupted)
    assert main(["batch", *files, "--db", str(db), "-j", "1", *FAST_CLI, "-q"]) == 130
    err = capfd.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and "CancelledError" not in err, err
    assert lines == ["atomvib batch: interrupted; results written so far are kept"], err
    assert "running" not in set(Store(db).calculations()["status"])  # given back (or finished)


def test_quiet_silences_dask_log_lines_and_leaves_no_global_state(tmp_path, inproc, monkeypatch):
    files = _metals(tmp_path, ("Al",))
    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Catch(level=logging.DEBUG)
    dist = logging.getLogger("distributed")
    dist.addHandler(handler)
    names = [n for n in logging.root.manager.loggerDict if n.startswith("distributed")] + ["distributed"]
    levels = {n: logging.getLogger(n).level for n in names}

    logged = []

    def died_once(seconds):  # what the scheduler logs when a task's workers keep dying
        if not logged:
            logging.getLogger("distributed.scheduler").error(
                "Task x marked as failed because 4 workers died while trying to run it"
            )
            logged.append(True)
        time.sleep(seconds)

    monkeypatch.setattr(batch_runner, "_pause", died_once)
    try:
        for quiet, db in ((True, "q.db"), (False, "v.db")):
            seen.clear()
            logged.clear()
            argv = [
                "batch",
                *files,
                "--db",
                str(tmp_path / db),
                "--scheduler",
                inproc.scheduler.address,
                *FAST_CLI,
            ]
            assert main(argv + (["-q"] if quiet else [])) == 0
            assert logged and ("workers died" in " ".join(seen)) is not quiet, (quiet, seen)
    finally:
        dist.removeHandler(handler)
    assert {n: logging.getLogger(n).level for n in names} == levels  # put back after run_batch


# -- a second batch on rows another run holds -------------------------------------------------------


def _hold(db: Path, key: str, run_id: str, pid: int) -> None:
    """Mark ``key`` as held by a live run ``run_id`` (process ``pid`` on this host), as a batch does."""
    s = Store(db)
    now = time.time()

    def fn(ses):
        ses.add(RunRow(id=run_id, host=socket.gethostname(), pid=pid, started=now, heartbeat=now, command=""))
        ses.query(CalculationRow).filter(CalculationRow.key == key).update(
            {"status": "running", "run_id": run_id}
        )

    s._write(fn)


def test_second_batch_waits_for_rows_another_run_holds(tmp_path, inproc, monkeypatch, capsys):
    files = _metals(tmp_path, ("Al", "Cu"))
    db = tmp_path / "w.db"
    assert run_batch(files, settings=FAST, db=db, client=inproc).done == 2
    df = Store(db).calculations().set_index("formula")
    cu = df.loc["Cu", "key"]
    monkeypatch.setattr(batch_runner, "WAIT_POLL_S", 0.2)
    argv = ["batch", *files, "--db", str(db), "--scheduler", inproc.scheduler.address, *FAST_CLI, "-q"]

    # (a) the other run finishes the row while this one waits
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _hold(db, cu, "otherrunaaaa", sleeper.pid)

        def finish_it():
            time.sleep(1.0)
            Store(db)._write(
                lambda ses: (
                    ses.query(CalculationRow)
                    .filter(CalculationRow.key == cu)
                    .update({"status": "done", "run_id": "otherrunaaaa"})
                )
            )

        threading.Thread(target=finish_it).start()
        assert main(argv) == 0
        out = capsys.readouterr()
        host = socket.gethostname()
        assert (
            f"waiting for 1 calculation held by another batch run (run otherrunaaaa on {host}, pid {sleeper.pid})"
            in out.err
        ), out.err
        assert "1 already in the database, 1 finished by another run" in out.out
    finally:
        sleeper.kill()
        sleeper.wait()

    # (b) the other run dies: this one takes the row up and computes it
    sleeper = subprocess.Popen(["sleep", "60"])
    _hold(db, cu, "otherrunbbbb", sleeper.pid)
    (Path(df.loc["Cu", "result_dir"]) / batch_runner.ROW_FILE).unlink()
    threading.Timer(1.0, lambda: (sleeper.kill(), sleeper.wait())).start()  # dies (and is reaped)
    try:
        assert main(argv) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    out = capsys.readouterr()
    assert "waiting for 1 calculation" in out.err and "1 done, 0 failed, 1 already in the database" in out.out
    final = Store(db).calculations().set_index("formula")
    assert set(final["status"]) == {"done"} and final.loc["Cu", "attempts"] == 2


# -- failed inputs leave no empty directories -------------------------------------------------------


def test_failed_inputs_leave_no_empty_directories(tmp_path, inproc):
    write(tmp_path / "Si.cif", bulk("Si", "diamond", a=5.43))  # EMT has no Si: the calculation fails
    (tmp_path / "bad.cif").write_text("not a structure\n")
    db = tmp_path / "e.db"
    s = run_batch([tmp_path / "Si.cif", tmp_path / "bad.cif"], settings=FAST, db=db, client=inproc)
    assert (s.done, s.failed, s.n_unreadable) == (0, 1, 1)
    assert not (tmp_path / "e_results").exists()  # nothing was written: no results directory either
    files = _metals(tmp_path, ("Al",))
    s = run_batch([tmp_path / "Si.cif", *files], settings=FAST, db=tmp_path / "m.db", client=inproc)
    assert (s.done, s.failed) == (1, 1)
    empty = [d for d in (tmp_path / "m_results").rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert empty == []
