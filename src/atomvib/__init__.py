"""atomvib: atomic vibrations and vibrational spectra of crystals and molecules.

Public API (frozen results; see ``docs/``)::

    import atomvib
    r = atomvib.phonons("Si.cif")              # SevenNet-0 for crystals, GFN2-xTB for molecules
    r.dos(), r.band_structure(), r.thermal([300]), r.to_phonopy(), r.summary()
    r.save("Si_result"); r2 = atomvib.load("Si_result")   # any saved result, as its typed object
"""

from importlib.metadata import PackageNotFoundError, version

from .engines import get_engine, list_engines
from .errors import AtomvibError, ConvergenceError, EngineError, EngineUnavailable, InputError
from .harmonic.qha import quasi_harmonic as qha
from .results import load
from .settings import PhononSettings
from .structure import Structure, read_structure, read_structures
from .workflow import kappa, phonons, phonons_from_phonopy

try:
    __version__ = version("atomvib")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = [
    "phonons",
    "kappa",
    "qha",
    "load",
    "phonons_from_phonopy",
    "read_structure",
    "read_structures",
    "Structure",
    "PhononSettings",
    "get_engine",
    "list_engines",
    "AtomvibError",
    "InputError",
    "EngineError",
    "EngineUnavailable",
    "ConvergenceError",
]
