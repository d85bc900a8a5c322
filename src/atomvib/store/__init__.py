"""Provenance store for batches: structures, calculations and runs in SQLite or PostgreSQL.

>>> from atomvib.store import Store
>>> Store("atomvib.db").calculations(status="done", has_imaginary=False)  # a pandas DataFrame
"""

from .db import CSV_COLUMNS, DEFAULT_DB, Store, database_url
from .hashing import canonical_form, canonical_hash
from .models import STATUSES

__all__ = [
    "Store",
    "database_url",
    "canonical_hash",
    "canonical_form",
    "CSV_COLUMNS",
    "DEFAULT_DB",
    "STATUSES",
]
