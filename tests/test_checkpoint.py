"""Forces computed before an interruption are kept and reused; a checkpoint for other inputs is ignored."""

import numpy as np
from ase.build import bulk

from atomvib.engines.ase_calc import EMTEngine
from atomvib.workflow import evaluate_forces


class CountingEMT(EMTEngine):
    def __init__(self, fail_after=None):
        super().__init__()
        self.calls, self.fail_after = 0, fail_after

    def evaluate(self, atoms_list, progress=None):
        if self.fail_after is not None and self.calls + len(atoms_list) > self.fail_after:
            raise KeyboardInterrupt  # the user pressed Ctrl-C
        self.calls += len(atoms_list)
        return super().evaluate(atoms_list, progress)


def _cells(n=6):
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6).repeat(2)
        a.positions[k % len(a), k % 3] += 0.01
        out.append(a)
    return out


def test_resume_after_interrupt_reuses_forces(tmp_path):
    cells = _cells()
    first = CountingEMT(fail_after=4)
    try:
        evaluate_forces(first, cells, "key-1", tmp_path, progress=False, chunk=2)
    except KeyboardInterrupt:
        pass
    assert first.calls == 4 and (tmp_path / "forces_checkpoint.npz").exists()
    second = CountingEMT()
    forces = evaluate_forces(second, cells, "key-1", tmp_path, progress=False, chunk=2)
    assert second.calls == 2  # only what was missing
    reference = evaluate_forces(CountingEMT(), cells, "other", None, progress=False)
    assert np.allclose(forces, reference, atol=1e-12)


def test_checkpoint_of_other_inputs_is_not_used(tmp_path):
    cells = _cells()
    evaluate_forces(CountingEMT(), cells, "key-1", tmp_path, progress=False)
    fresh = CountingEMT()
    evaluate_forces(fresh, cells, "key-2", tmp_path, progress=False)
    assert fresh.calls == len(cells)


def test_checkpoint_folder_is_created_when_missing(tmp_path):
    """A checkpoint folder that does not exist yet is made (not a FileNotFoundError after the forces are done)."""
    folder = tmp_path / "not" / "yet"
    forces = evaluate_forces(CountingEMT(), _cells(2), "key-1", folder, progress=False, chunk=2)
    assert forces.shape == (2, 8, 3) and (folder / "forces_checkpoint.npz").is_file()
