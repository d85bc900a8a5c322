"""The provenance store: SQLAlchemy 2 over SQLite (default) or PostgreSQL (by URL).

SQLAlchemy does the SQL, alembic the schema versions (upgraded to head on every open, so an old
database file keeps working after an atomvib update). What we add is the concurrency discipline:

* SQLite runs in WAL mode with a 30 s busy timeout, and every transaction starts with
  ``BEGIN IMMEDIATE`` (SQLAlchemy's documented pysqlite recipe), so two batches writing to the same
  file queue for the write lock instead of failing half-way; writes are retried on a lock error.
* A calculation is *claimed* by one run with one conditional ``UPDATE`` (status not done, not held by
  a live run), so two batches over the same inputs never compute the same row twice.
* ``running`` rows belong to a run with a heartbeat; a run that died (its process is gone on this
  host, or its heartbeat is stale) has its rows reset to ``pending`` by the next batch.

And the hygiene of a tool that is pointed at files and servers: the password of a URL never appears in a
message or a record (:func:`mask_credentials`); a file that is not atomvib's database is refused before
anything is written to it; a failure of the database under a running batch (disk full, I/O error, lost
server) becomes one :class:`StoreError` that says what to do, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import socket
import sqlite3
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, event, func, inspect, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from ..errors import AtomvibError, InputError, StoreError  # noqa: F401  (StoreError re-exported)
from .models import CalculationRow, RunRow, SourceRow, StructureRow

DEFAULT_DB = "atomvib.db"
#: a run whose heartbeat is older than this (s) is considered dead (other hosts)
STALE_AFTER_S = 600.0
_LOCK_RETRIES = 20
#: seconds to wait for a PostgreSQL server to answer (PGCONNECT_TIMEOUT or connect_timeout in the URL win)
CONNECT_TIMEOUT_S = 10
#: the tables of an atomvib database; a database holding other tables is someone else's
OUR_TABLES = frozenset({"alembic_version", "structures", "sources", "calculations", "runs"})
#: runs of this process that are executing now (a run of this pid not in here died: its driver raised)
_LIVE_RUNS: set[str] = set()
#: what a running calculation's progress report holds (columns ``progress_<field>`` of ``calculations``)
PROGRESS_FIELDS = ("stage", "unit", "done", "total", "eta_s", "updated")
_NO_PROGRESS = {f"progress_{k}": None for k in PROGRESS_FIELDS}

_DAMAGED_FIX = (
    "restore it from a backup, or save what is readable (sqlite3 FILE .recover | sqlite3 NEW.db); "
    "or give a new --db"
)

# scheme://user:PASSWORD@ (greedy to the last @ of the token: an unescaped @ in the password is masked too)
_URL_SECRET = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s'\"]*@")
# password=... in a query string or a libpq key=value string
_KV_SECRET = re.compile(r"(?i)\b(password|passwd|pwd)=([^\s&'\"]+)")


def mask_credentials(text) -> str:
    """``text`` with every password of a URL (``scheme://user:***@host``) or ``password=...`` masked."""
    return _KV_SECRET.sub(r"\1=***", _URL_SECRET.sub(r"\1***@", str(text)))


def display_url(url) -> str:
    """The URL as it may be shown or stored: its password masked (``postgresql://me:***@db/x``)."""
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(str(url)).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: mask what looks like one
        shown = str(url)
    return mask_credentials(shown)

CSV_COLUMNS = [
    "structure_hash",
    "formula",
    "source",
    "engine",
    "engine_version",
    "task",
    "status",
    "error",
    "omega_max_thz",
    "has_imaginary",
    "energy_ev",
    "kappa_300k_w_per_mk",
    "thermal_expansion_300k_per_k",
    "seconds",
    "attempts",
    "settings_digest",
    "key",
    "result_dir",
    "spacegroup",
    "natoms",
    "host",
    "atomvib_version",
    "finished",
]


def database_url(db: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL from a URL or a path (a path means SQLite; default ``./atomvib.db``)."""
    db = str(db) if db is not None else DEFAULT_DB
    if db.startswith(("postgresql://", "postgres://")):
        # SQLAlchemy's default PostgreSQL driver is psycopg2; use psycopg 3 where only that is installed
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + db.split("://", 1)[1]
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def _atomvib_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atomvib")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _reduced(formula: str) -> dict:
    """Element counts of the reduced formula, independent of element order (``ClNa`` == ``NaCl`` == ``Na2Cl2``)."""
    from ase.formula import Formula

    try:
        return Formula(formula).reduce()[0].count()
    except ValueError:
        raise InputError(f"cannot parse formula '{formula}'", fix="write it like NaCl or Al2O3") from None


def iso_time(t) -> str | None:
    """ISO 8601 in UTC with its offset (``2025-06-01T12:34:56+00:00``) of a Unix time; None for none."""
    from datetime import datetime, timezone

    if t is None or t != t:
        return None
    return datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="seconds")


def _reading(method):
    """A read of the store: a database failure becomes :meth:`Store.failure`'s one-line error."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        return self._guard("reading it", method, self, *args, **kwargs)

    return guarded


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """Structures, calculations and runs in one database.

    Parameters
    ----------
    url : str or path, optional
        SQLAlchemy URL (``postgresql+psycopg://user@host/db``) or a SQLite file path; default
        ``atomvib.db`` in the working directory.
    """

    def __init__(self, url: str | os.PathLike | None = None):
        self._url = database_url(url)  # with its password: for the driver only
        #: the URL without its password: what messages, summaries and records show
        self.url = display_url(self._url)
        self._secrets = self._url_secrets(self._url)
        self.is_sqlite = self._url.startswith("sqlite")
        if self.is_sqlite:
            path = Path(self._url.split("///", 1)[1])
            if not path.parent.is_dir():
                raise InputError(
                    f"database directory {path.parent} does not exist", fix="create it or give another --db"
                )
            self._refuse_foreign_file(path)
        try:
            self.engine = create_engine(self._url, **self._engine_options())
        except Exception as exc:  # bad URL, missing driver
            raise InputError(
                f"cannot open database {self.url}: {self.scrub(exc)}",
                fix="check --db (a file path or a SQLAlchemy URL)",
            ) from None
        if self.is_sqlite:
            self._sqlite_discipline()
        self._migrate()

    def _engine_options(self) -> dict:
        if self.is_sqlite:
            return {"connect_args": {"timeout": 30}}
        opts: dict = {"pool_pre_ping": True}
        # a server that does not answer fails in seconds, not after the TCP timeout (minutes)
        if (
            self._url.startswith("postgresql")
            and "connect_timeout" not in self._url
            and "PGCONNECT_TIMEOUT" not in os.environ
        ):
            opts["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        return opts

    @staticmethod
    def _url_secrets(url: str) -> list[str]:
        from urllib.parse import quote

        from sqlalchemy.engine import make_url

        try:
            pw = make_url(url).password
        except Exception:
            return []
        if not pw or len(str(pw)) < 4:  # a 1-3 character password is masked by the URL patterns only
            return []
        return list(dict.fromkeys([str(pw), quote(str(pw), safe="")]))

    def scrub(self, text) -> str:
        """``text`` (a message, an exception, a command line) without this database's password."""
        out = mask_credentials(text)
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return out

    @property
    def where(self) -> str:
        """The database as messages name it: the file of SQLite, the masked URL of a server."""
        return self._url.split("///", 1)[1] if self.is_sqlite else self.url

    def _refuse_foreign_file(self, path: Path) -> None:
        """Refuse an SQLite file that is not an atomvib database, before anything is written to it.

        Read-only look at its tables: an empty file is a new database; one holding atomvib's tables is ours;
        anything else belongs to someone else, and atomvib adds no table to it (nor switches it to WAL).
        """
        if not path.is_file() or path.stat().st_size == 0:
            return
        try:
            con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
            try:
                names = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise InputError(*self._open_error(str(exc))) from None
        self._check_tables(names)

    def _check_tables(self, names) -> None:
        names = {n for n in names if not n.startswith("sqlite_")}
        ours = "alembic_version" in names and {"calculations", "runs"} <= names
        if not names or ours:
            return
        if self.is_sqlite:
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            raise InputError(
                f"{self.where} is not an atomvib database (it holds the tables {shown}); "
                "atomvib adds no tables to another application's database",
                fix="give a new file name, or a .db file written by `atomvib batch`",
            )
        clash = sorted(names & OUR_TABLES)
        if clash:  # a server database may hold other applications' tables, but not under our names
            raise InputError(
                f"database {self.url} has tables named like atomvib's ({', '.join(clash)}) that are not "
                "an atomvib store",
                fix="use a database (or a schema, ?options=-csearch_path%3Datomvib) of its own for atomvib",
            )

    # -- connection setup -------------------------------------------------------------------------

    def _sqlite_discipline(self):
        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn, _rec):
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below control transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _migrate(self):
        from alembic import command
        from alembic.config import Config
        from alembic.util import CommandError

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        for attempt in range(_LOCK_RETRIES):
            try:
                with self.engine.begin() as conn:
                    self._check_tables(inspect(conn).get_table_names())  # in the lock: a racing creator
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except (DBAPIError, sqlite3.Error) as exc:
                msg = self.scrub(getattr(exc, "orig", None) or exc)
                # another process creating or migrating the same database right now: wait and see
                busy = isinstance(exc, IntegrityError) or any(
                    w in msg.lower() for w in ("locked", "busy", "deadlock", "already exists")
                )
                if busy and attempt < _LOCK_RETRIES - 1:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise InputError(*self._open_error(msg)) from None
            except CommandError as exc:  # alembic: a revision this atomvib does not know
                raise InputError(
                    f"database {self.where} has a schema this atomvib does not know ({self.scrub(exc)})",
                    fix="upgrade atomvib (pip install -U atomvib), or give another --db",
                ) from None

    def _open_error(self, msg: str) -> tuple[str, str]:
        """(problem, fix) for a database that cannot be opened."""
        msg = self.scrub(msg)
        first = msg.strip().splitlines()[0] if msg.strip() else "unknown error"
        if self.is_sqlite:
            path = self.where
            if "not a database" in msg or "file is encrypted" in msg:
                return (
                    f"{path} is not an SQLite database ({first})",
                    "give the .db file written by `atomvib batch`, or a new file name",
                )
            if "malformed" in msg:
                return (f"database {path} is damaged ({first})", _DAMAGED_FIX)
            return f"cannot open SQLite database {path}: {first}", "check the path and its permissions"
        return (
            f"cannot open database {self.url}: {first}",
            "check the URL, the server, the user and the password",
        )

    def failure(self, exc, doing: str = "using it") -> AtomvibError:
        """The error to raise for a database exception ``exc`` raised while ``doing``: one line, no password.

        A damaged file is the user's to replace (:class:`InputError`, exit 2); anything else (disk full,
        I/O error, read-only file, lost server) is a failure of the storage (:class:`StoreError`, exit 1).
        """
        orig = getattr(exc, "orig", None) or exc
        text = self.scrub(orig).strip()
        first = text.splitlines()[0] if text else type(orig).__name__
        low = first.lower()
        if any(w in low for w in ("malformed", "not a database", "file is encrypted")):
            return InputError(f"database {self.where} is damaged ({first})", fix=_DAMAGED_FIX)
        if any(w in low for w in ("disk is full", "no space left", "could not extend", "quota")):
            fix = "free space where the database is (or on the server), then run the same command again"
        elif "readonly" in low or "read-only" in low:
            fix = "make the database file and its directory writable, then run the same command again"
        else:
            fix = "check the disk or the server, then run the same command again"
        return StoreError(f"database {self.where} failed while {doing}: {first}", fix=fix)

    def _guard(self, doing: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DBAPIError, sqlite3.Error) as exc:
            raise self.failure(exc, doing) from exc

    @_reading
    def revision(self) -> str | None:
        """The alembic revision the database is at."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head_revision() -> str:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        return ScriptDirectory.from_config(cfg).get_current_head()

    def _write(self, fn, doing: str = "writing to it"):
        """Run ``fn(session)`` in one transaction, retrying on a lock error (SQLite under contention).

        Any other database error (disk full, I/O error, lost server) raises :meth:`failure`'s error; the
        transaction is rolled back, so a row is either fully recorded or not at all."""
        for attempt in range(_LOCK_RETRIES):
            try:
                with Session(self.engine) as s, s.begin():
                    return fn(s)
            except (DBAPIError, sqlite3.Error) as exc:
                low = str(exc).lower()
                if ("locked" in low or "deadlock" in low) and attempt < _LOCK_RETRIES - 1:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise self.failure(exc, doing) from exc

    def _insert_ignore(self, table):
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        elif self.url.startswith("postgresql"):
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover
            raise InputError(f"unsupported database {self.url}", fix="use SQLite or PostgreSQL")
        return lambda rows: insert(table).values(rows).on_conflict_do_nothing()

    # -- runs -------------------------------------------------------------------------------------

    def start_run(self, command: str = "") -> str:
        """Register a batch run of this process; returns its id. Resets rows of dead runs first.

        ``command`` (the command line, for the record) is stored with any password masked."""
        run_id = uuid.uuid4().hex[:16]
        now = time.time()
        self.reset_stale()
        command = self.scrub(command)

        def fn(s):
            s.add(
                RunRow(
                    id=run_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started=now,
                    heartbeat=now,
                    command=command,
                )
            )

        self._write(fn, "registering the run")
        _LIVE_RUNS.add(run_id)
        return run_id

    def heartbeat(self, run_id: str) -> None:
        self._write(
            lambda s: s.execute(update(RunRow).where(RunRow.id == run_id).values(heartbeat=time.time())),
            "recording the run's heartbeat",
        )

    def end_run(self, run_id: str) -> None:
        """Mark the run finished and give back the rows it still holds (interrupted → pending).

        The run counts as dead for this process from here on, even if this write fails (disk full): the
        next run then takes its rows up (:meth:`reset_stale`)."""
        _LIVE_RUNS.discard(run_id)
        now = time.time()

        def fn(s):
            s.execute(update(RunRow).where(RunRow.id == run_id).values(finished=now, heartbeat=now))
            s.execute(
                update(CalculationRow)
                .where(CalculationRow.run_id == run_id, CalculationRow.status == "running")
                .values(status="pending", run_id=None)
            )

        self._write(fn, "giving back the rows of the run")

    def _dead_runs(self, s) -> list[str]:
        host, now = socket.gethostname(), time.time()
        dead = []
        for r in s.scalars(select(RunRow).where(RunRow.finished.is_(None))):
            if r.host == host and r.pid == os.getpid():
                gone = r.id not in _LIVE_RUNS  # a run of this process that ended without recording it
            elif r.host == host:
                gone = not _pid_alive(r.pid)
            else:
                gone = now - r.heartbeat > STALE_AFTER_S
            if gone:
                dead.append(r.id)
        return dead

    def reset_stale(self) -> int:
        """Return ``running`` rows of dead runs (killed, power cut, a driver whose database failed) to
        ``pending``, and any ``running`` row without a recorded run; returns how many."""

        def fn(s):
            dead = self._dead_runs(s)
            n = s.execute(  # no owner at all (edited by hand, or written by a tool that skipped the runs table)
                update(CalculationRow)
                .where(
                    CalculationRow.status == "running",
                    or_(CalculationRow.run_id.is_(None), CalculationRow.run_id.not_in(select(RunRow.id))),
                )
                .values(status="pending", run_id=None)
            ).rowcount
            if not dead:
                return n
            n += s.execute(
                update(CalculationRow)
                .where(CalculationRow.status == "running", CalculationRow.run_id.in_(dead))
                .values(status="pending", run_id=None)
            ).rowcount
            s.execute(update(RunRow).where(RunRow.id.in_(dead)).values(finished=time.time()))
            return n

        return self._write(fn, "taking up the rows of dead runs")

    def holders(self, keys: list[str], run_id: str | None = None) -> list[dict]:
        """Who holds the ``running`` rows among ``keys`` (other than ``run_id``): one dict per run with
        ``run_id``, ``count`` and, where the run is recorded, ``host``, ``pid`` and ``heartbeat``."""

        def read():
            counts: dict[str, int] = {}
            with Session(self.engine) as s:
                for i in range(0, len(keys), 400):
                    chunk = keys[i : i + 400]
                    q = (
                        select(CalculationRow.run_id, func.count())
                        .where(CalculationRow.key.in_(chunk), CalculationRow.status == "running")
                        .group_by(CalculationRow.run_id)
                    )
                    for rid, n in s.execute(q).all():
                        if rid != run_id:
                            counts[rid] = counts.get(rid, 0) + n
                out = []
                for rid, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                    r = s.get(RunRow, rid) if rid else None
                    out.append(
                        {"run_id": rid, "count": n}
                        | ({"host": r.host, "pid": r.pid, "heartbeat": r.heartbeat} if r is not None else {})
                    )
                return out

        return self._guard("reading it", read)

    # -- structures and calculations --------------------------------------------------------------

    def add_structures(self, records: list[dict]) -> None:
        """Insert structures (dicts with the StructureRow fields) and their sources; existing ones are kept."""
        if not records:
            return
        ins_s, ins_src = self._insert_ignore(StructureRow.__table__), self._insert_ignore(SourceRow.__table__)
        now = time.time()
        first: dict[str, dict] = {}
        for r in records:  # the first input seen for a hash is the structure kept
            first.setdefault(r["hash"], {**r, "created": now})
        rows = list(first.values())
        srcs = list(
            {
                (r["hash"], r["source"]): {"structure_hash": r["hash"], "source": r["source"]}
                for r in records
            }.values()
        )

        def fn(s):
            for i in range(0, len(rows), 200):
                s.execute(ins_s(rows[i : i + 200]))
            for i in range(0, len(srcs), 200):
                s.execute(ins_src(srcs[i : i + 200]))

        self._write(fn, "recording the structures")

    def plan(self, calcs: list[dict]) -> None:
        """Make sure a row exists for each calculation (dicts with key, structure_hash, task, engine,
        engine_version, settings_digest, settings_json, source); existing rows are untouched."""
        if not calcs:
            return
        ins = self._insert_ignore(CalculationRow.__table__)
        now = time.time()
        rows = [
            {
                "status": "pending",
                "error": "",
                "attempts": 0,
                "created": now,
                "result_dir": "",
                "summary_json": "{}",
                "atomvib_version": "",
                "host": "",
                **c,
            }
            for c in calcs
        ]

        def fn(s):
            for i in range(0, len(rows), 200):
                s.execute(ins(rows[i : i + 200]))

        self._write(fn, "planning the calculations")

    def claim(self, keys: list[str], run_id: str, retry_failed: bool = False) -> list[str]:
        """Atomically take the calculations this run should compute: not done, not held by a live run
        (and not failed unless ``retry_failed``). Returns the claimed keys."""
        ok = ["pending", "failed"] if retry_failed else ["pending"]
        now = time.time()

        def fn(s):
            claimed = []
            for i in range(0, len(keys), 400):
                chunk = keys[i : i + 400]
                s.execute(
                    update(CalculationRow)
                    .where(CalculationRow.key.in_(chunk), CalculationRow.status.in_(ok))
                    .values(status="running", run_id=run_id, started=now, error="", **_NO_PROGRESS)
                )
                claimed += s.scalars(
                    select(CalculationRow.key).where(
                        CalculationRow.key.in_(chunk),
                        CalculationRow.run_id == run_id,
                        CalculationRow.status == "running",
                    )
                ).all()
            return claimed

        return self._write(fn, "claiming calculations")

    def finish(self, key: str, run_id: str, status: str, **fields) -> None:
        """Record the outcome of a calculation held by ``run_id`` (status done or failed)."""
        fields.setdefault("atomvib_version", _atomvib_version())
        fields.setdefault("host", platform.node())
        if isinstance(fields.get("summary_json"), dict):
            fields["summary_json"] = json.dumps(fields["summary_json"], default=str)

        def fn(s):
            s.execute(
                update(CalculationRow)
                .where(CalculationRow.key == key, CalculationRow.run_id == run_id)
                .values(status=status, finished=time.time(), attempts=CalculationRow.attempts + 1, **fields)
            )

        self._write(fn, "recording a result")

    def set_progress(self, run_id: str, reports: dict[str, dict]) -> int:
        """Record the progress of running calculations that ``run_id`` holds, in one transaction.

        ``reports``: ``{key: {"stage", "unit", "done", "total", "eta_s", "updated"}}`` (any may be missing or
        None). Rows not running under ``run_id`` are left alone. Returns the number of rows updated. The batch
        driver calls this at most once a second; any process reading the store sees it (:meth:`progress`)."""
        if not reports:
            return 0

        def fn(s):
            n = 0
            for key, r in reports.items():
                values = {f"progress_{k}": r.get(k) for k in PROGRESS_FIELDS}
                if values["progress_stage"] is not None:
                    values["progress_stage"] = str(values["progress_stage"])[:200]
                if values["progress_unit"] is not None:
                    values["progress_unit"] = str(values["progress_unit"])[:20]
                n += s.execute(
                    update(CalculationRow)
                    .where(CalculationRow.key == key, CalculationRow.run_id == run_id,
                           CalculationRow.status == "running")
                    .values(**values)
                ).rowcount
            return n

        return self._write(fn, "recording progress")

    @_reading
    def progress(self, keys: list[str]) -> dict[str, dict]:
        """``{key: {"status", "stage", "unit", "done", "total", "eta_s", "updated"}}`` of the given calculations
        that have reported progress (as the worker last reported it; ``eta_s`` counts from ``updated``)."""
        cols = [getattr(CalculationRow, f"progress_{k}") for k in PROGRESS_FIELDS]
        out = {}
        with Session(self.engine) as s:
            for i in range(0, len(keys), 400):
                chunk = keys[i : i + 400]
                q = select(CalculationRow.key, CalculationRow.status, *cols).where(
                    CalculationRow.key.in_(chunk), CalculationRow.progress_updated.is_not(None))
                for key, status, *vals in s.execute(q).all():
                    out[key] = {"status": status, **dict(zip(PROGRESS_FIELDS, vals))}
        return out

    def status_of(self, keys: list[str]) -> dict[str, str]:
        """``{key: status}`` of the given calculations (those that exist)."""
        return self._column_of(keys, CalculationRow.status)

    def result_dirs(self, keys: list[str]) -> dict[str, str]:
        """``{key: result_dir}`` of the given calculations (those that exist)."""
        return self._column_of(keys, CalculationRow.result_dir)

    @_reading
    def _column_of(self, keys: list[str], column) -> dict:
        out = {}
        with Session(self.engine) as s:
            for i in range(0, len(keys), 400):  # bounded IN lists (SQLite's variable limit)
                chunk = keys[i : i + 400]
                out.update(dict(s.execute(select(CalculationRow.key, column).where(CalculationRow.key.in_(chunk))).all()))
        return out

    @_reading
    def get_calculation(self, key: str) -> CalculationRow | None:
        with Session(self.engine) as s:
            return s.get(CalculationRow, key)

    # -- queries ----------------------------------------------------------------------------------

    @_reading
    def calculations(
        self,
        formula: str | None = None,
        engine: str | None = None,
        status: str | None = None,
        has_imaginary: bool | None = None,
        task: str | None = None,
        structure: str | None = None,
    ):
        """Calculations joined with their structure, as a pandas DataFrame (columns :data:`CSV_COLUMNS`;
        ``finished`` as ISO 8601 text in UTC, missing numbers as NaN/NA).

        Filters: ``formula`` (reduced formula in any element order, e.g. ``NaCl``), ``engine`` (name or spec prefix),
        ``status``, ``has_imaginary``, ``task``, ``structure`` (hash prefix).
        """
        import pandas as pd

        q = (
            select(
                CalculationRow.structure_hash,
                StructureRow.formula,
                CalculationRow.source,
                CalculationRow.engine,
                CalculationRow.engine_version,
                CalculationRow.task,
                CalculationRow.status,
                CalculationRow.error,
                CalculationRow.omega_max_thz,
                CalculationRow.has_imaginary,
                CalculationRow.energy_ev,
                CalculationRow.kappa_300k_w_per_mk,
                CalculationRow.thermal_expansion_300k_per_k,
                CalculationRow.seconds,
                CalculationRow.attempts,
                CalculationRow.settings_digest,
                CalculationRow.key,
                CalculationRow.result_dir,
                StructureRow.spacegroup,
                StructureRow.natoms,
                CalculationRow.host,
                CalculationRow.atomvib_version,
                CalculationRow.finished,
            )
            .select_from(CalculationRow)
            .outerjoin(StructureRow, StructureRow.hash == CalculationRow.structure_hash)
            .order_by(CalculationRow.created, CalculationRow.key)
        )
        if engine:
            q = q.where(or_(CalculationRow.engine == engine, CalculationRow.engine.like(f"{engine}:%")))
        if status:
            q = q.where(CalculationRow.status == status)
        if has_imaginary is not None:
            q = q.where(CalculationRow.has_imaginary.is_(bool(has_imaginary)))
        if task:
            q = q.where(CalculationRow.task == task)
        if structure:
            q = q.where(CalculationRow.structure_hash.like(f"{structure}%"))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        df = pd.DataFrame([tuple(r) for r in rows], columns=CSV_COLUMNS)
        df["has_imaginary"] = df["has_imaginary"].astype("boolean")
        df["finished"] = [iso_time(t) for t in df["finished"]]
        if formula:
            want = _reduced(formula)
            df = df[[isinstance(f, str) and _reduced(f) == want for f in df["formula"]]].reset_index(
                drop=True
            )
        return df

    @_reading
    def structures(self):
        """Structures with the number of sources seen for each, as a DataFrame."""
        import pandas as pd

        q = (
            select(
                StructureRow.hash,
                StructureRow.formula,
                StructureRow.natoms,
                StructureRow.spacegroup,
                StructureRow.kind,
                StructureRow.source,
                func.count(SourceRow.id).label("n_sources"),
            )
            .outerjoin(SourceRow, SourceRow.structure_hash == StructureRow.hash)
            .group_by(StructureRow.hash)
            .order_by(StructureRow.created)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return pd.DataFrame(
            [tuple(r) for r in rows],
            columns=["hash", "formula", "natoms", "spacegroup", "kind", "source", "n_sources"],
        )

    @_reading
    def sources_of(self, structure_hash: str) -> list[str]:
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(SourceRow.source)
                    .where(SourceRow.structure_hash == structure_hash)
                    .order_by(SourceRow.id)
                )
            )

    @_reading
    def structure_extxyz(self, structure_hash: str) -> str:
        with Session(self.engine) as s:
            row = s.get(StructureRow, structure_hash)
            return row.extxyz if row else ""

    @_reading
    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(
                conn.execute(
                    select(CalculationRow.status, func.count()).group_by(CalculationRow.status)
                ).all()
            )

    def close(self):
        self.engine.dispose()
