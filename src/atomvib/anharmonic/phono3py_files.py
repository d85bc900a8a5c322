"""fc2 and fc3 from DFT forces a user already has: phono3py_disp.yaml + FORCES_FC3 (+ FORCES_FC2, BORN), or
phono3py_params.yaml with the forces inside.

``phono3py.load`` cannot be told to leave the working directory alone: it reads ``./fc3.hdf5``,
``./fc2.hdf5``, ``./FORCES_FC3``, ``./FORCES_FC2`` and ``./BORN`` whenever they are there and the call does not
name others, and it parses the yaml with PyYAML's unsafe loader. So the steps of ``phono3py.load`` are taken
here with phono3py's own functions (same arithmetic: its yaml parser on data read with the safe loader, its
dataset readers, its force-constant builder), each given the file the user named or nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import AtomvibError, InputError
from ..harmonic.force_constants import from_phonopy_atoms
from .displacements3 import produce_force_constants
from .force_constants3 import AnharmonicForceConstants


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_phono3py_files(yaml_path, forces=None, fc2_forces=None, born=None, fc_calculator: str = "traditional",
                        symprec: float = 1e-5) -> tuple[AnharmonicForceConstants, int]:
    """(force constants, number of displaced supercells) from phono3py files; only the files named are read."""
    from phono3py import Phono3py

    try:  # phono3py's own readers (what phono3py.load calls), tested with 4.10 (engines/guards.py)
        from phono3py.cui.load import select_and_load_dataset, select_and_load_phonon_dataset
        from phono3py.interface.phono3py_yaml import load_phono3py_yaml
    except ImportError:
        from ..engines.guards import installed_version

        raise InputError(f"phono3py {installed_version('phono3py')} has moved the file readers atomvib uses",
                         fix="install a tested phono3py: pip install 'phono3py>=4.10,<5'") from None
    from phonopy.file_IO import parse_BORN
    from phonopy.physical_units import get_calculator_physical_units
    from phonopy.structure.dataset import forces_in_dataset

    from ..workflow import safe_load_yaml

    yp = Path(yaml_path)
    for path, what in ((yp, "phono3py yaml"), (forces, "FORCES_FC3"), (fc2_forces, "FORCES_FC2"), (born, "BORN")):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: no such {what} file", fix="check the path")
    data = safe_load_yaml(yp)
    try:
        y = load_phono3py_yaml(data)
    except Exception as exc:  # phono3py raises several types for malformed files
        raise InputError(f"{yaml_path}: not a phono3py yaml ({_first_line(exc)})",
                         fix="give phono3py_disp.yaml (from phono3py -d) or phono3py_params.yaml") from None
    if y.unitcell is None or y.supercell_matrix is None:
        raise InputError(f"{yaml_path}: no unit cell or supercell matrix in it",
                         fix="give phono3py_disp.yaml (from phono3py -d) or phono3py_params.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph3 = Phono3py(y.unitcell, supercell_matrix=y.supercell_matrix,
                       primitive_matrix=y.primitive_matrix if y.primitive_matrix is not None else "auto",
                       phonon_supercell_matrix=y.phonon_supercell_matrix, calculator=y.calculator,
                       symprec=symprec, log_level=0)
    try:
        if forces_in_dataset(y.dataset) or forces is not None:
            # the yaml's own forces first, as phono3py.load; otherwise the named FORCES_FC3 (never ./FORCES_FC3)
            ph3.dataset = select_and_load_dataset(ph3, y, forces_fc3_filename=None if forces_in_dataset(y.dataset)
                                                  else str(forces), phono3py_yaml_filename=str(yp))
        else:
            raise InputError(f"{yaml_path} holds no fc3 forces",
                             fix="add --forces FORCES_FC3 (or give phono3py_params.yaml, which has them inside)")
        if ph3.phonon_supercell_matrix is not None:
            if forces_in_dataset(y.phonon_dataset) or fc2_forces is not None:
                ph3.phonon_dataset = select_and_load_phonon_dataset(
                    ph3, y, forces_fc2_filename=None if forces_in_dataset(y.phonon_dataset) else str(fc2_forces))
            else:
                raise InputError(f"{yaml_path} has a separate fc2 supercell but no fc2 forces",
                                 fix="add --fc2-forces FORCES_FC2")
    except AtomvibError:
        raise
    except Exception as exc:  # a FORCES file of another calculation: phono3py raises RuntimeError/ValueError/...
        raise InputError(f"cannot read the forces: {_first_line(exc)}",
                         fix="check that FORCES_FC3 (and FORCES_FC2) belong to this phono3py_disp.yaml") from None
    nac = None
    if born is not None:
        try:
            nac = parse_BORN(ph3.phonon_primitive, symprec=ph3.symmetry.tolerance, filename=str(born))
        except Exception as exc:
            raise InputError(f"{born}: cannot read BORN file ({_first_line(exc)})",
                             fix="check it matches the primitive cell") from None
    elif y.nac_params is not None:
        nac = dict(y.nac_params)
    if nac is not None:
        nac.setdefault("factor", get_calculator_physical_units(y.calculator).nac_factor)
        ph3.nac_params = nac
    try:
        produce_force_constants(ph3, fc_calculator)
    except Exception as exc:
        raise InputError(f"cannot build fc2/fc3: {_first_line(exc)}",
                         fix="check that the FORCES files belong to this phono3py_disp.yaml") from None
    n = sum(c is not None for c in ph3.supercells_with_displacements or [])
    if ph3.phonon_supercell_matrix is not None:
        n += len(ph3.phonon_supercells_with_displacements or [])
    unitcell = from_phonopy_atoms(ph3.unitcell, source=str(yp))
    return AnharmonicForceConstants.from_phono3py(ph3, unitcell=unitcell, symprec=symprec), n
