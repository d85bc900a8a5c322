"""Batches of structures on Dask with every result in the provenance store (:mod:`atomvib.store`).

>>> from atomvib.batch import run_batch
>>> summary = run_batch(["structures/*.cif"], tasks=["relax", "phonons"], db="atomvib.db", workers=2)
"""

from .runner import BatchSummary, SlurmOptions, expand_inputs, make_client, run_batch
from .tasks import TASKS, TaskContext, TaskOutput, discover_tasks, register_task

__all__ = [
    "run_batch",
    "BatchSummary",
    "SlurmOptions",
    "make_client",
    "expand_inputs",
    "register_task",
    "discover_tasks",
    "TASKS",
    "TaskContext",
    "TaskOutput",
]
