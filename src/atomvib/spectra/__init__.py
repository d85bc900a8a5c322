"""Vibrational spectra from phonon results: inelastic neutron scattering (incoherent approximation,
VISION/TOSCA and direct-geometry maps), coherent S(Q,E) through Euphonic, (partial,
neutron-weighted) densities of states, IR and Raman, and comparison/fits against measurements."""

from .coherent import coherent_path, coherent_powder_map, euphonic_force_constants
from .compare import CompareResult, FitResult, compare, fit_spectrum, similarity
from .dos import DosSpectrum, phonon_dos
from .ins import (
    IncoherentModes,
    InsMap,
    InsSpectrum,
    direct_powder_map,
    incoherent_modes,
    indirect_spectrum,
    tosca_spectrum,
    vision_spectrum,
)
from .instruments import KNOWN_INSTRUMENTS, get_instrument
from .ir import OpticalSpectrum, crystal_ir, ir_spectrum, molecule_ir
from .lineshape import broaden
from .measured import Spectrum1D, SQEMap, read_spectrum, read_sqe_map
from .neutron_data import cross_section
from .raman import molecule_raman, raman_spectrum

__all__ = [
    "vision_spectrum",
    "tosca_spectrum",
    "indirect_spectrum",
    "direct_powder_map",
    "incoherent_modes",
    "IncoherentModes",
    "InsSpectrum",
    "InsMap",
    "phonon_dos",
    "DosSpectrum",
    "coherent_path",
    "coherent_powder_map",
    "euphonic_force_constants",
    "get_instrument",
    "KNOWN_INSTRUMENTS",
    "cross_section",
    "ir_spectrum",
    "raman_spectrum",
    "OpticalSpectrum",
    "crystal_ir",
    "molecule_ir",
    "molecule_raman",
    "broaden",
    "compare",
    "CompareResult",
    "fit_spectrum",
    "FitResult",
    "similarity",
    "Spectrum1D",
    "SQEMap",
    "read_spectrum",
    "read_sqe_map",
]
