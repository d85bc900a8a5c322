"""Molecular dynamics and what comes from a trajectory: the VACF DOS and temperature-dependent effective
force constants (issue 14).

- :func:`run_md` (:mod:`.md`): MD with any atomvib engine through ASE's integrators; trajectories that resume.
- :func:`vacf_dos` (:mod:`.vacf`): vibrational DOS from the mass-weighted velocity autocorrelation.
- :func:`effective_phonons` (:mod:`.tdep`): effective harmonic force constants fitted (symfc) to MD
  displacements and forces → :class:`EffectivePhonons`, a :class:`~atomvib.harmonic.crystal.CrystalPhonons`.
"""

from .md import MDTrajectory, read_trajectory, run_md
from .settings import MDSettings
from .tdep import EffectivePhonons, effective_phonons
from .vacf import VibrationalDos, vacf_dos

__all__ = ["MDSettings", "MDTrajectory", "run_md", "read_trajectory", "VibrationalDos", "vacf_dos",
           "EffectivePhonons", "effective_phonons"]
