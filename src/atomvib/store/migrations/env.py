"""Alembic environment: always driven programmatically by :class:`atomvib.store.Store` with a live connection."""

from alembic import context

from atomvib.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    raise RuntimeError("run migrations through atomvib.store.Store(url), which passes a connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
