"""engines/fused_tp.py: the fused convolution kernels compute what e3nn's tensor product + scatter does.

Exact layer: random node features, spherical-harmonic inputs and per-edge weights through an e3nn
"uvu" tensor product and an index_add into destination nodes, against the fused kernels; values and
the gradients for all three inputs. Edges are unsorted, some nodes receive no edge, and one tensor
product has odd-parity irreps, so the coefficient tables read off by probing are tested beyond the
SevenNet-0 case. Both sides are float32 sums of ~40 terms of O(1): relative agreement 1e-5 is a
round-off bound with margin (observed ~4e-7).

Model layer: SevenNet-0's own convolutions, and stress through the rewritten ASE calculator (the
relaxation path) against SevenNet's stock calculator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

o3 = pytest.importorskip("e3nn.o3")
fused_tp = pytest.importorskip("atomvib.engines.fused_tp")
if not fused_tp.HAVE_NUMBA:
    pytest.skip("numba not installed", allow_module_level=True)

RTOL = 1e-5  # float32 round-off of sums of ~40 O(1) terms, with margin (module docstring)


def _tensor_product(irreps_in: str, lmax: int, parity: bool):
    irreps_in = o3.Irreps(irreps_in)
    irreps_sh = o3.Irreps.spherical_harmonics(lmax, p=-1 if parity else 1)
    out, instr = [], []
    for i1, (mul, ir1) in enumerate(irreps_in):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir in ir1 * ir2:
                if ir.l <= lmax:
                    instr.append((i1, i2, len(out), "uvu", True))
                    out.append((mul, ir))
    return o3.TensorProduct(irreps_in, irreps_sh, o3.Irreps(out), instr, shared_weights=False, internal_weights=False)


def _compare(tp, n_nodes=30, n_edges=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_nodes, tp.irreps_in1.dim, generator=g, requires_grad=True)
    y = torch.randn(n_edges, tp.irreps_in2.dim, generator=g, requires_grad=True)
    w = torch.randn(n_edges, tp.weight_numel, generator=g, requires_grad=True)
    src = torch.randint(0, n_nodes, (n_edges,), generator=g)
    dst = torch.randint(0, n_nodes - 3, (n_edges,), generator=g)  # the last 3 nodes receive nothing
    ref = torch.zeros(n_nodes, tp.irreps_out.dim).index_add_(0, dst, tp(x[src], y, w))
    out = fused_tp.fused_convolution(x, y, w, src, dst, fused_tp.uvu_plan(tp))
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=0, atol=RTOL * float(ref.detach().abs().max()))
    assert torch.all(out[-3:] == 0)
    grad_out = torch.randn(ref.shape, generator=g)
    for a, b in zip(torch.autograd.grad(ref, (x, y, w), grad_out), torch.autograd.grad(out, (x, y, w), grad_out)):
        assert torch.allclose(a, b, rtol=0, atol=RTOL * float(a.detach().abs().max()))


@pytest.mark.parametrize(
    "irreps,lmax,parity",
    [("16x0e + 8x1e + 4x2e", 2, False), ("6x0e + 5x1o", 1, True), ("4x0e + 3x1e + 2x2e + 2x3e", 3, False)],
)
def test_fused_equals_e3nn_tensor_product(irreps, lmax, parity):
    tp = _tensor_product(irreps, lmax, parity)
    assert fused_tp.supports(tp)
    _compare(tp)


def test_unsupported_tensor_product_is_refused():
    tp = o3.FullyConnectedTensorProduct("4x0e + 2x1e", "1x0e + 1x1e", "3x0e + 2x1e")  # uvw, shared weights
    assert not fused_tp.supports(tp)
    with pytest.raises(ValueError):
        fused_tp.uvu_plan(tp)


@pytest.fixture(scope="module")
def sevennet_calculators():
    pytest.importorskip("sevenn")
    import warnings

    from sevenn.calculator import SevenNetCalculator

    from atomvib.engines import get_engine

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = SevenNetCalculator("7net-0", device="cpu")
    return stock, get_engine("sevennet").calculator()


def test_sevennet_convolutions_are_fused(sevennet_calculators):
    stock, fast = sevennet_calculators
    convs = [m for m in fast.model.modules() if type(m).__name__ == "IrrepsConvolution"]
    assert len(convs) == 5 and all(hasattr(m, "_uvu_plan") for m in convs)
    for name in ("0_convolution", "1_convolution", "4_convolution"):  # the three kinds of layer
        _compare(stock.model._modules[name].convolution, n_nodes=20, n_edges=300, seed=1)


def test_sevennet_stress_and_forces_match_stock(sevennet_calculators):
    """The relaxation path (ASE calculator with the rewritten model): energy, forces and stress."""
    from ase.build import bulk

    stock, fast = sevennet_calculators
    rng = np.random.default_rng(3)
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    atoms.set_cell(atoms.cell @ (np.eye(3) + 0.01 * rng.normal(size=(3, 3))), scale_atoms=True)
    res = []
    for calc in (stock, fast):
        a = atoms.copy()
        a.calc = calc
        res.append((a.get_potential_energy(), a.get_forces(), a.get_stress()))
    (e0, f0, s0), (e1, f1, s1) = res
    assert np.abs(s0).max() > 1e-3  # a strained cell: stress is not vanishing
    assert e1 == pytest.approx(e0, abs=1e-4)
    assert np.abs(f1 - f0).max() < 1e-4  # eV/Å, float32 round-off (tests/test_engine_speedpaths.py)
    assert np.abs(s1 - s0).max() < 1e-5  # eV/Å^3 (~2 MPa)


def test_sevennet_without_fused_kernels_matches_stock(sevennet_calculators):
    """The fallback where numba is missing (graph rewrite + index_select/index_add_ convolutions)."""
    from ase.build import bulk

    from atomvib.engines.mlip import SevenNetEngine

    stock, _ = sevennet_calculators
    engine = SevenNetEngine()
    engine.fused_kernels = False
    convs = [m for m in engine.calculator().model.modules() if type(m).__name__ == "IrrepsConvolution"]
    assert convs and not any(hasattr(m, "_uvu_plan") for m in convs)
    rng = np.random.default_rng(5)
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    f = engine.evaluate([atoms])[0].forces
    a = atoms.copy()
    a.calc = stock
    assert np.abs(f - a.get_forces()).max() < 1e-4  # float32 round-off (tests/test_engine_speedpaths.py)


def test_fused_kernels_keep_the_pinned_torch_threads():
    """Bug: the first fused call started numba's OpenMP layer, which reset torch to every core (ATOMVIB_THREADS=1
    became 2 on this machine): torch keeps the pinned count through model load and force calls (fresh process)."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from atomvib.runtime import configure_threads\n"
        "configure_threads(1)\n"
        "from ase.build import bulk\n"
        "from atomvib.engines import get_engine\n"
        "e = get_engine('sevennet'); e.load()\n"
        "e.evaluate([bulk('Si', 'diamond', a=5.43) * (2, 2, 2)])\n"
        "print(e.info.kernel_path, torch.get_num_threads())\n"
    )
    env = {**os.environ, "ATOMVIB_THREADS": "1", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    path, threads = out.stdout.split()[-2:]
    assert threads == "1", out.stdout
