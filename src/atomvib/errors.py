"""A small exception hierarchy. Every message names the problem and, in ``fix``, what to do.

The CLI turns any :class:`AtomvibError` into one line on stderr and exit code ``exit_code``
(2 for user errors, 1 for failures of the computation itself), without a traceback.
"""

from __future__ import annotations


class AtomvibError(Exception):
    """Base class. ``str(err)`` is one line: ``problem (fix: ...)``."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} (fix: {fix})")


class InputError(AtomvibError):
    """The user's input (file, structure, option) cannot be used."""


class EngineError(AtomvibError):
    """The chosen force engine cannot be used for this structure or is misconfigured."""


class EngineUnavailable(EngineError):
    """The engine's package or model file is not installed on this machine."""


class ConvergenceError(AtomvibError):
    """An iterative step (relaxation) did not converge; partial results were kept.

    Exit code 2: the remedy (more steps, looser threshold, better start) is the user's to apply."""


class UnstableError(AtomvibError):
    """The harmonic phonons are dynamically unstable (imaginary modes) where the quantity asked for needs them
    stable (lattice thermal conductivity, quasi-harmonic free energies)."""


class ResourceError(AtomvibError):
    """The requested calculation would not fit in memory or time."""


class OutputExistsError(AtomvibError):
    """The output directory already holds results and ``force`` was not given."""


class StoreError(AtomvibError):
    """The provenance database failed while a batch used it (disk full, I/O error, lost server).

    Exit code 1. The store is left consistent: recorded rows stay recorded; rows the run held are given back
    (or, when not even that can be written, taken up by the next run, which also records the results finished
    on disk but not in the database)."""

    exit_code = 1
