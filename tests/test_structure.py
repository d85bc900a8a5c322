import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import write

from atomvib import InputError, read_structure, read_structures
from atomvib.harmonic.displacements import auto_supercell_matrix, perpendicular_widths
from atomvib.structure import Structure


@pytest.mark.parametrize("fmt,ext", [("cif", "cif"), ("vasp", "POSCAR"), ("extxyz", "extxyz")])
def test_read_crystal_formats(tmp_path, fmt, ext):
    p = tmp_path / (f"x.{ext}" if ext != "POSCAR" else "POSCAR")
    write(p, bulk("NaCl", "rocksalt", a=5.64, cubic=True), format=fmt)
    s = read_structure(p)
    assert s.kind == "crystal" and s.natoms == 8 and s.formula == "NaCl" and s.formula_units == 4
    assert s.spacegroup() == "Fm-3m (225)"
    prim = s.primitive()
    assert prim.natoms == 2 and prim.cell_formula == "NaCl"


def test_xyz_is_a_molecule(tmp_path):
    p = tmp_path / "w.xyz"
    write(p, molecule("H2O"))
    s = read_structure(p)
    assert s.is_molecule and s.kind == "molecule" and s.spacegroup() == ""


def test_extxyz_many_structures(tmp_path):
    p = tmp_path / "many.extxyz"
    write(p, [bulk("Cu", a=3.6), bulk("Al", a=4.05), bulk("Si", "diamond", a=5.43)])
    assert [s.formula for s in read_structures(p)] == ["Cu", "Al", "Si"]


def test_structure_is_frozen():
    s = Structure.from_ase(bulk("Cu", a=3.6))
    with pytest.raises(ValueError):
        s.positions[0, 0] = 1.0
    with pytest.raises(AttributeError):
        s.numbers = np.array([1])


def test_close_atoms_across_periodic_boundary():
    a = Atoms("Cu2", scaled_positions=[[0, 0, 0], [0.99, 0, 0]], cell=[3, 3, 3], pbc=True)
    with pytest.raises(InputError, match="0.030 Å apart"):
        Structure.from_ase(a).validate()


def test_zero_volume_periodic_cell():
    with pytest.raises(InputError, match="zero volume"):
        Structure.from_ase(Atoms("Cu", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True))


def test_auto_supercell_is_conventional_multiple():
    si = Structure.from_ase(bulk("Si", "diamond", a=5.43))  # primitive, 2 atoms
    m = auto_supercell_matrix(si, 10.0)
    assert round(abs(np.linalg.det(m))) * 2 == 64  # 2×2×2 of the 8-atom conventional cell, as phonopy's examples
    widths = perpendicular_widths(m.T @ si.cell)
    assert np.all(widths >= 10.0)
    hexa = Structure.from_ase(bulk("Mg", "hcp", a=3.21, c=5.21))
    mh = auto_supercell_matrix(hexa, 10.0)
    assert np.all(perpendicular_widths(mh.T @ hexa.cell) >= 10.0)
