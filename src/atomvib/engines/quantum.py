"""Quantum-chemistry engines for molecules: GFN2-xTB (tblite) and DFT/HF (PySCF).

PySCF has no ASE calculator of its own, so :class:`PySCFCalculator` is a small one here: energy and
analytic gradients of an RKS/UKS (or HF) calculation, plus the dipole moment needed for IR.

Both use public API only (``tblite.ase.TBLite``; ``pyscf.gto.M``, ``scf``/``dft`` objects, their
``nuc_grad_method()`` and ``dip_moment()``), so there is no speed path to guard here.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .. import units
from ..errors import EngineError, EngineUnavailable
from ..runtime import configure_threads
from .base import Engine, EngineInfo, package_version, package_versions

#: tblite's methods by the short names of the ``xtb:`` spec
XTB_METHODS = {"gfn2": "GFN2-xTB", "gfn1": "GFN1-xTB", "ipea1": "IPEA1-xTB"}


class XTBEngine(Engine):
    """GFN2-xTB through tblite: molecules (default) and small periodic cells. Elements H–Rn.

    ``xtb`` / ``xtb:gfn2`` (GFN2-xTB), ``xtb:gfn1`` (GFN1-xTB), ``xtb:ipea1`` (IPEA1-xTB); tblite's own
    names ("GFN1-xTB") are accepted too.
    """

    elements = frozenset(range(1, 87))
    #: tblite's numerical accuracy (smaller is tighter): SCC convergence and integral cutoffs
    accuracy = 0.1

    def __init__(self, method: str | None = None):
        super().__init__()
        key = (method or "gfn2").strip().lower()
        key = key[: -len("-xtb")] if key.endswith("-xtb") else key
        if key not in XTB_METHODS:
            raise EngineError(
                f"unknown xTB method '{method}'", fix=f"use one of {', '.join('xtb:' + k for k in XTB_METHODS)}"
            )
        self.method_key = key
        self.method = XTB_METHODS[key]
        try:
            import tblite.ase  # noqa: F401
        except ImportError:
            raise EngineUnavailable("the 'tblite' package is not installed", fix="pip install tblite") from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name="xtb",
            version=package_version("tblite"),
            spec=f"xtb:{self.method_key}",
            model=self.method,
            packages=package_versions("tblite"),
            settings={"method": self.method, "accuracy": self.accuracy},
        )

    def _make_calculator(self):
        configure_threads()
        from tblite.ase import TBLite

        return TBLite(method=self.method, verbosity=0, accuracy=self.accuracy)


class PySCFCalculator(Calculator):
    """ASE calculator over PySCF for molecules: energy, forces, dipole (Debye-free: e·Å)."""

    implemented_properties = ["energy", "forces", "dipole"]

    def __init__(self, xc: str = "b3lyp", basis: str = "def2-svp", charge: int = 0, spin: int = 0, **kw):
        super().__init__(**kw)
        self.xc, self.basis, self.charge, self.spin = xc, basis, charge, spin

    def build_scf(self, atoms):
        from pyscf import dft, gto, scf

        mol = gto.M(
            atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            basis=self.basis,
            charge=self.charge,
            spin=self.spin,
            unit="Angstrom",
            verbose=0,
        )
        if self.xc.lower() in ("hf", "rhf", "uhf"):
            mf = scf.RHF(mol) if self.spin == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if self.spin == 0 else dft.UKS(mol)
            mf.xc = self.xc
        mf.conv_tol = 1e-10
        return mf

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        mf = self.build_scf(self.atoms)
        e = mf.kernel()
        if not mf.converged:
            raise EngineError("PySCF SCF did not converge", fix="try another basis/functional or check the geometry")
        grad = mf.nuc_grad_method().kernel()
        self.results["energy"] = float(e) * units.HARTREE_EV
        self.results["forces"] = -np.asarray(grad) * units.HARTREE_EV / units.BOHR_A
        # dipole in e·Å (PySCF returns Debye)
        self.results["dipole"] = np.asarray(mf.dip_moment(unit="AU", verbose=0)) * units.BOHR_A


class PySCFEngine(Engine):
    """DFT or HF for small molecules through PySCF: ``pyscf`` (B3LYP/def2-SVP) or ``pyscf:XC/BASIS``."""

    periodic = False
    elements = frozenset(range(1, 87))

    def __init__(self, spec: str | None = None):
        super().__init__()
        xc, basis = "b3lyp", "def2-svp"
        if spec:
            if "/" not in spec:
                raise EngineError(f"pyscf:{spec} is not of the form XC/BASIS", fix="e.g. --engine pyscf:pbe/def2-svp or pyscf:hf/sto-3g")
            xc, basis = spec.split("/", 1)
        self.xc, self.basis = xc, basis
        try:
            import pyscf  # noqa: F401
        except ImportError:
            raise EngineUnavailable("the 'pyscf' package is not installed", fix="pip install 'atomvib[pyscf]'") from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            name="pyscf",
            version=package_version("pyscf"),
            spec=f"pyscf:{self.xc}/{self.basis}",
            model=f"{self.xc}/{self.basis}",
            packages=package_versions("pyscf"),
            settings={"xc": self.xc, "basis": self.basis, "conv_tol": 1e-10},
        )

    def _make_calculator(self):
        configure_threads()
        return PySCFCalculator(xc=self.xc, basis=self.basis)
