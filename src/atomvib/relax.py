"""Relaxation of positions (and cell, for crystals) that keeps the space group.

ASE's :class:`~ase.constraints.FixSymmetry` symmetrises forces and stress, and the Fréchet cell filter
lets the cell relax; BFGS drives both. Keeping the symmetry matters beyond aesthetics: a relaxed cell
that lost its symmetry at phonopy's tolerance needs up to 4× more displacements.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

from .engines.base import Engine
from .errors import ConvergenceError
from .settings import PhononSettings
from .structure import Structure


@dataclass(frozen=True, eq=False)
class Relaxation:
    """Outcome of a relaxation: the final structure and how it got there.

    Attributes
    ----------
    structure : Structure
    converged : bool
    steps : int
    fmax_ev_per_a : float
        Largest residual force (eV/Å) at the end.
    energy_ev : float
    spacegroup_before, spacegroup_after : str
    """

    structure: Structure
    converged: bool
    steps: int
    fmax_ev_per_a: float
    energy_ev: float
    spacegroup_before: str = ""
    spacegroup_after: str = ""

    def to_dict(self) -> dict:
        return {
            "converged": self.converged,
            "steps": self.steps,
            "fmax_eV_per_A": self.fmax_ev_per_a,
            "energy_eV": self.energy_ev,
            "spacegroup_before": self.spacegroup_before,
            "spacegroup_after": self.spacegroup_after,
        }


def relax(structure: Structure, engine: Engine, settings: PhononSettings, on_step=None) -> Relaxation:
    """Relax ``structure`` with ``engine``; raise :class:`ConvergenceError` (carrying the partial result) if not converged.

    ``on_step(fmax_ev_per_a)`` is called after each optimizer step (progress display).
    """
    from ase.optimize import BFGS

    atoms = structure.to_ase()
    atoms.calc = engine.calculator()
    sg_before = structure.spacegroup(settings.symprec)
    target = atoms
    if not structure.is_molecule:
        from ase.constraints import FixSymmetry

        atoms.set_constraint(FixSymmetry(atoms, symprec=settings.symprec))
        if settings.relax_cell:
            from ase.filters import FrechetCellFilter

            target = FrechetCellFilter(atoms)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        opt = BFGS(target, logfile=None, maxstep=0.1)
        if on_step is not None:
            opt.attach(lambda: on_step(float(np.sqrt((target.get_forces() ** 2).sum(axis=1)).max())))
        converged = bool(opt.run(fmax=settings.fmax_ev_per_a, steps=settings.relax_steps))
        forces = target.get_forces()
        energy = float(atoms.get_potential_energy())
    fmax = float(np.sqrt((forces**2).sum(axis=1)).max())
    atoms.set_constraint()
    relaxed = Structure.from_ase(atoms, source=structure.source)
    result = Relaxation(
        structure=relaxed,
        converged=converged,
        steps=int(opt.get_number_of_steps()),
        fmax_ev_per_a=fmax,
        energy_ev=energy,
        spacegroup_before=sg_before,
        spacegroup_after=relaxed.spacegroup(settings.symprec),
    )
    if not converged:
        err = ConvergenceError(
            f"relaxation did not converge in {settings.relax_steps} steps (max force {fmax:.2e} eV/Å > {settings.fmax_ev_per_a:g})",
            fix="raise --relax-steps, loosen --fmax, start from a better structure, or use --no-relax",
        )
        err.partial = {"relaxation": result}
        raise err
    return result
