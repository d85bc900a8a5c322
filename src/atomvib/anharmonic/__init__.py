"""Beyond the harmonic approximation: third-order force constants and lattice thermal conductivity (phono3py).

Pipeline: structure → :mod:`.displacements3` (phono3py's displaced supercells) → forces (atomvib's engines) →
:mod:`.force_constants3` (fc2, fc3) → :mod:`.conductivity` (κ and the per-mode quantities). DFT forces a user
already has enter at the force constants (:mod:`.phono3py_files`). The runner is :func:`atomvib.workflow.kappa`.
"""
