"""Vibrational spectra from phonon results: inelastic neutron scattering (incoherent approximation,
VISION/TOSCA and direct-geometry maps), coherent S(Q,E) through Euphonic, and (partial,
neutron-weighted) densities of states."""

from .coherent import coherent_path, coherent_powder_map, euphonic_force_constants
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
from .neutron_data import cross_section

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
]
