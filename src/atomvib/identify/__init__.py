"""Which structure did I measure? Ranking candidate structures against a measured spectrum (``atomvib identify``),
and generating the usual candidate sets (``atomvib candidates``).

:func:`identify` screens every candidate with the DOS predictor, refines the best with full phonons and the
instrument's spectrum, fits each to the measurement with :func:`atomvib.spectra.compare.compare` and turns the
fits into relative probabilities (:mod:`atomvib.identify.core`). Candidate generators are in
:mod:`atomvib.identify.candidates`.
"""

from __future__ import annotations

from .candidates import (
    Candidate,
    Configuration,
    enumerate_configurations,
    from_disordered_cif,
    hydrogen_placements,
    ordered_configurations,
    read_candidates,
    write_candidates,
)
from .core import Identification, identify, model_spread, pool_probabilities, probabilities

__all__ = [
    "Candidate",
    "Configuration",
    "Identification",
    "enumerate_configurations",
    "from_disordered_cif",
    "hydrogen_placements",
    "identify",
    "model_spread",
    "ordered_configurations",
    "pool_probabilities",
    "probabilities",
    "read_candidates",
    "write_candidates",
]
