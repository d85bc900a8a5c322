"""The rotational sum rule on the first moment of MLIP force constants (harmonic/displacements.py).

An MLIP's force constants reach beyond a 10 Å supercell and fold onto the shortest image vectors; in crystals
whose point group allows it (polar ones: wurtzite here) the first moment ``Σ Φ d`` then gets an antisymmetric part,
and one acoustic branch goes imaginary (ω² ∝ −|q|) next to Γ. Measured on wurtzite AlAs (Petretto valid mp-8881)
with SevenNet-0: −0.16 THz at the first band-path point; after the projection the branch is real and linear.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from atomvib.harmonic.displacements import (
    _mean_shortest_vectors,
    impose_rotational_sum_rule,
    plan_displacements,
    produce_symmetrized_fc,
    rotational_violation,
)
from atomvib.settings import PhononSettings
from atomvib.structure import Structure

pytest.importorskip("sevenn")


@pytest.fixture(scope="module")
def wurtzite():
    """(plan, forces) of wurtzite AlAs near its SevenNet-0 equilibrium, default 10 Å supercell (72 atoms)."""
    from atomvib.engines import get_engine

    atoms = bulk("AlAs", "wurtzite", a=4.03, c=6.63, u=0.375)
    plan = plan_displacements(Structure.from_ase(atoms), PhononSettings(relax=False))
    forces = np.stack([e.forces for e in get_engine("sevennet").evaluate(plan.supercells())])
    return plan, forces


def _phonopy_only(plan, forces):
    ph = plan._phonopy()
    ph.forces = forces - forces.mean(axis=1, keepdims=True)
    produce_symmetrized_fc(ph)
    return ph


def _acoustic_near_gamma(ph):
    qs = [t * np.array(d) for d in ((1, 0, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1)) for t in (0.002, 0.01)]
    ph.run_qpoints(qs)
    return np.array(ph.qpoints.frequencies)


def test_violation_present_before_and_removed(wurtzite):
    plan, forces = wurtzite
    ph = _phonopy_only(plan, forces)
    dbar = _mean_shortest_vectors(ph.primitive)
    before = np.abs(rotational_violation(np.array(ph.force_constants), dbar)).max()
    assert before > 0.1  # eV/Å: the folded long-range interactions (measured ~4)
    assert _acoustic_near_gamma(ph).min() < -0.01  # an imaginary acoustic branch next to Γ
    fc = plan.force_constants(forces)
    after = np.abs(rotational_violation(fc.force_constants, dbar)).max()
    assert after < 1e-5 * before


def test_acoustic_branches_real_and_rest_unchanged(wurtzite):
    plan, forces = wurtzite
    ph0 = _phonopy_only(plan, forces)
    ph1 = plan.force_constants(forces).phonopy()
    near = _acoustic_near_gamma(ph1)
    assert near.min() > -1e-4
    # away from Γ the spectrum is the one phonopy's own force constants give (the change is in the first moment)
    qs = [[0, 0, 0], [0.5, 0, 0], [1 / 3, 1 / 3, 0], [0, 0, 0.5], [0.2, 0.1, 0.3]]
    ph0.run_qpoints(qs)
    ph1.run_qpoints(qs)
    f0, f1 = np.array(ph0.qpoints.frequencies), np.array(ph1.qpoints.frequencies)
    assert np.abs(f1 - f0).max() < 0.01
    assert np.abs(f1[0, :3]).max() < 1e-5  # translational sum rule kept
    # degeneracies of the space group kept: the E modes at Γ stay pairs
    for a, b in zip(np.sort(f0[0]), np.sort(f1[0])):
        assert abs(a - b) < 0.01


def test_permutation_symmetry_kept(wurtzite):
    from phonopy.harmonic.force_constants import symmetrize_compact_force_constants

    plan, forces = wurtzite
    ph = plan.force_constants(forces).phonopy()
    fc = np.array(ph.force_constants)
    again = fc.copy()
    symmetrize_compact_force_constants(again, ph.primitive)
    assert np.abs(again - fc).max() < 1e-6 * np.abs(fc).max()


def test_centrosymmetric_force_constants_untouched():
    """Rock salt has no first-moment violation by symmetry: the force constants are phonopy's, unchanged."""
    from atomvib.engines.springs import SpringEngine

    atoms = bulk("NaCl", "rocksalt", a=5.64)
    plan = plan_displacements(Structure.from_ase(atoms), PhononSettings(relax=False, min_supercell_length_a=8.0))
    forces = np.stack([e.forces for e in SpringEngine(k=1.0, r0=2.82, cutoff=4.5).evaluate(plan.supercells())])
    ph = _phonopy_only(plan, forces)
    fc0 = np.array(ph.force_constants)
    assert impose_rotational_sum_rule(ph) < 1e-8
    assert np.array_equal(np.array(ph.force_constants), fc0)
