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
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, event, func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..errors import InputError
from .models import CalculationRow, RunRow, SourceRow, StructureRow

DEFAULT_DB = "atomvib.db"
#: a run whose heartbeat is older than this (s) is considered dead (other hosts)
STALE_AFTER_S = 600.0
_LOCK_RETRIES = 20

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
        self.url = database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = Path(self.url.split("///", 1)[1])
            if not path.parent.is_dir():
                raise InputError(
                    f"database directory {path.parent} does not exist", fix="create it or give another --db"
                )
        try:
            self.engine = create_engine(
                self.url, **({"connect_args": {"timeout": 30}} if self.is_sqlite else {"pool_pre_ping": True})
            )
        except Exception as exc:  # bad URL, missing driver
            raise InputError(
                f"cannot open database {self.url}: {exc}", fix="check --db (a file path or a SQLAlchemy URL)"
            ) from None
        if self.is_sqlite:
            self._sqlite_discipline()
        self._migrate()

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
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except DBAPIError as exc:
                msg = str(exc.orig or exc)
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
                    f"database {self.url} has a schema this atomvib does not know ({exc})",
                    fix="upgrade atomvib (pip install -U atomvib), or give another --db",
                ) from None

    def _open_error(self, msg: str) -> tuple[str, str]:
        """(problem, fix) for a database that cannot be opened."""
        first = msg.strip().splitlines()[0] if msg.strip() else "unknown error"
        if self.is_sqlite:
            path = self.url.split("///", 1)[1]
            if "not a database" in msg or "malformed" in msg:
                return (
                    f"{path} is not an SQLite database ({first})",
                    "give the .db file written by `atomvib batch`, or a new file name",
                )
            return f"cannot open SQLite database {path}: {first}", "check the path and its permissions"
        return (
            f"cannot open database {self.url}: {first}",
            "check the URL, the server, the user and the password",
        )

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

    def _write(self, fn):
        """Run ``fn(session)`` in one transaction, retrying on a lock error (SQLite under contention)."""
        for attempt in range(_LOCK_RETRIES):
            try:
                with Session(self.engine) as s, s.begin():
                    return fn(s)
            except OperationalError as exc:
                if (
                    "locked" not in str(exc).lower()
                    and "deadlock" not in str(exc).lower()
                    or attempt == _LOCK_RETRIES - 1
                ):
                    raise
                time.sleep(0.05 * (attempt + 1))

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
        """Register a batch run of this process; returns its id. Resets rows of dead runs first."""
        run_id = uuid.uuid4().hex[:16]
        now = time.time()
        self.reset_stale()

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

        self._write(fn)
        return run_id

    def heartbeat(self, run_id: str) -> None:
        self._write(
            lambda s: s.execute(update(RunRow).where(RunRow.id == run_id).values(heartbeat=time.time()))
        )

    def end_run(self, run_id: str) -> None:
        """Mark the run finished and give back the rows it still holds (interrupted → pending)."""
        now = time.time()

        def fn(s):
            s.execute(update(RunRow).where(RunRow.id == run_id).values(finished=now, heartbeat=now))
            s.execute(
                update(CalculationRow)
                .where(CalculationRow.run_id == run_id, CalculationRow.status == "running")
                .values(status="pending", run_id=None)
            )

        self._write(fn)

    def _dead_runs(self, s) -> list[str]:
        host, now = socket.gethostname(), time.time()
        dead = []
        for r in s.scalars(select(RunRow).where(RunRow.finished.is_(None))):
            if r.host == host and r.pid != os.getpid():
                gone = not _pid_alive(r.pid)
            else:
                gone = now - r.heartbeat > STALE_AFTER_S
            if gone:
                dead.append(r.id)
        return dead

    def reset_stale(self) -> int:
        """Return ``running`` rows of dead runs (killed, power cut) to ``pending``; returns how many."""

        def fn(s):
            dead = self._dead_runs(s)
            if not dead:
                return 0
            n = s.execute(
                update(CalculationRow)
                .where(CalculationRow.status == "running", CalculationRow.run_id.in_(dead))
                .values(status="pending", run_id=None)
            ).rowcount
            s.execute(update(RunRow).where(RunRow.id.in_(dead)).values(finished=time.time()))
            return n

        return self._write(fn)

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

        self._write(fn)

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

        self._write(fn)

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
                    .values(status="running", run_id=run_id, started=now, error="")
                )
                claimed += s.scalars(
                    select(CalculationRow.key).where(
                        CalculationRow.key.in_(chunk),
                        CalculationRow.run_id == run_id,
                        CalculationRow.status == "running",
                    )
                ).all()
            return claimed

        return self._write(fn)

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

        self._write(fn)

    def status_of(self, keys: list[str]) -> dict[str, str]:
        """``{key: status}`` of the given calculations (those that exist)."""
        return self._column_of(keys, CalculationRow.status)

    def result_dirs(self, keys: list[str]) -> dict[str, str]:
        """``{key: result_dir}`` of the given calculations (those that exist)."""
        return self._column_of(keys, CalculationRow.result_dir)

    def _column_of(self, keys: list[str], column) -> dict:
        out = {}
        with Session(self.engine) as s:
            for i in range(0, len(keys), 400):  # bounded IN lists (SQLite's variable limit)
                chunk = keys[i : i + 400]
                out.update(dict(s.execute(select(CalculationRow.key, column).where(CalculationRow.key.in_(chunk))).all()))
        return out

    def get_calculation(self, key: str) -> CalculationRow | None:
        with Session(self.engine) as s:
            return s.get(CalculationRow, key)

    # -- queries ----------------------------------------------------------------------------------

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

    def sources_of(self, structure_hash: str) -> list[str]:
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(SourceRow.source)
                    .where(SourceRow.structure_hash == structure_hash)
                    .order_by(SourceRow.id)
                )
            )

    def structure_extxyz(self, structure_hash: str) -> str:
        with Session(self.engine) as s:
            row = s.get(StructureRow, structure_hash)
            return row.extxyz if row else ""

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(
                conn.execute(
                    select(CalculationRow.status, func.count()).group_by(CalculationRow.status)
                ).all()
            )

    def close(self):
        self.engine.dispose()
