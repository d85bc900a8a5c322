"""SQLAlchemy 2 ORM tables of the provenance store (the schema itself lives in alembic migrations).

Three tables:

``structures``
    One row per distinct crystal/molecule, keyed by :func:`~atomvib.store.hashing.canonical_hash`.
``sources``
    Every input (path, or ``path@k`` inside a multi-structure file) that was seen for a structure,
    so duplicates in a batch are recorded rather than lost.
``calculations``
    One row per (structure, task, engine name+version, settings digest): status, timings, error,
    provenance, headline numbers, the directory with the large arrays, and while it runs its progress
    (stage, done/total, ETA; written by the batch driver at most once a second).
``runs``
    One row per batch run (host, pid, heartbeat), used to tell a dead run's ``running`` rows from a
    live one's.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("pending", "running", "done", "failed")


class Base(DeclarativeBase):
    pass


class StructureRow(Base):
    __tablename__ = "structures"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    formula: Mapped[str] = mapped_column(String(200), index=True)
    natoms: Mapped[int] = mapped_column(Integer)
    spacegroup: Mapped[str] = mapped_column(String(40), default="")
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text, default="")
    #: the input structure as extended XYZ text (small: a primitive or unit cell)
    extxyz: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[float] = mapped_column(Float)


class SourceRow(Base):
    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("structure_hash", "source", name="uq_source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    structure_hash: Mapped[str] = mapped_column(String(64), ForeignKey("structures.hash"), index=True)
    source: Mapped[str] = mapped_column(Text)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[float] = mapped_column(Float)
    heartbeat: Mapped[float] = mapped_column(Float)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    command: Mapped[str] = mapped_column(Text, default="")


class CalculationRow(Base):
    __tablename__ = "calculations"
    __table_args__ = (
        UniqueConstraint(
            "structure_hash", "task", "engine", "engine_version", "settings_digest", name="uq_calculation"
        ),
        Index("ix_calc_status", "status"),
    )

    #: sha256 of the unique tuple (16 hex chars); also names the result directory
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    structure_hash: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(40))
    engine: Mapped[str] = mapped_column(String(200))
    engine_version: Mapped[str] = mapped_column(String(80))
    settings_digest: Mapped[str] = mapped_column(String(64))
    settings_json: Mapped[str] = mapped_column(Text, default="{}")
    source: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created: Mapped[float] = mapped_column(Float)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    omega_max_thz: Mapped[float | None] = mapped_column(Float, nullable=True)
    has_imaginary: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    energy_ev: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: lattice thermal conductivity at 300 K, trace average (``kappa`` task), W/(m·K)
    kappa_300k_w_per_mk: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: volumetric thermal expansion coefficient at 300 K (``qha`` task), 1/K
    thermal_expansion_300k_per_k: Mapped[float | None] = mapped_column(Float, nullable=True)
    result_dir: Mapped[str] = mapped_column(Text, default="")
    summary_json: Mapped[str] = mapped_column(Text, default="{}")
    atomvib_version: Mapped[str] = mapped_column(String(40), default="")
    host: Mapped[str] = mapped_column(String(200), default="")
    #: progress of a running calculation, as its worker last reported it (``batch.runner``); kept afterwards
    #: what is being counted, e.g. "forces of 12 displaced supercells"
    progress_stage: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: what one count is ("calc": a displaced cell's forces, "step": a relaxation step)
    progress_unit: Mapped[str | None] = mapped_column(String(20), nullable=True)
    progress_done: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: seconds left in the stage when it was reported (from the stage's rate so far)
    progress_eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Unix time of the report
    progress_updated: Mapped[float | None] = mapped_column(Float, nullable=True)
