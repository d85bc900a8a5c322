"""engines/graph_rewrite.py: e3nn's generated kernels rewritten for speed give the same numbers.

Exact layer: a per-edge-weighted tensor product (the kind SevenNet's convolutions use), its output and
the gradients autograd gives for all three inputs, before and after the rewrite. The rewrite only
regroups slices into one split and drops unused nodes, so float32 results agree to round-off of the
gradient accumulation order (1e-6 relative on O(1) numbers).
"""

from __future__ import annotations

import copy

import pytest
import torch

o3 = pytest.importorskip("e3nn.o3")

from atomvib.engines.graph_rewrite import optimise_model  # noqa: E402


def _tensor_product():
    irreps_in = o3.Irreps("16x0e + 8x1e + 4x2e")
    irreps_sh = o3.Irreps.spherical_harmonics(2)
    out, instr = [], []
    for i1, (mul, ir1) in enumerate(irreps_in):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir in ir1 * ir2:
                if ir.l <= 2:
                    instr.append((i1, i2, len(out), "uvu", True))
                    out.append((mul, ir))
    return o3.TensorProduct(irreps_in, irreps_sh, o3.Irreps(out), instr, shared_weights=False, internal_weights=False)


def _run(tp, x, sh, w):
    x, sh, w = (t.clone().requires_grad_(True) for t in (x, sh, w))
    y = tp(x, sh, w)
    g = torch.autograd.grad((y * torch.linspace(-1, 1, y.shape[1])).sum(), (x, sh, w))
    return y.detach(), g


def test_rewritten_tensor_product_same_values_and_gradients():
    torch.manual_seed(0)
    tp = _tensor_product()
    fast = copy.deepcopy(tp)
    counts = optimise_model(fast)
    assert counts["graphs"] >= 1 and counts["splits"] >= 2  # weights and inputs are column-sliced
    nedge = 50
    x = torch.randn(nedge, tp.irreps_in1.dim)
    sh = torch.randn(nedge, tp.irreps_in2.dim)
    w = torch.randn(nedge, tp.weight_numel)
    y0, g0 = _run(tp, x, sh, w)
    y1, g1 = _run(fast, x, sh, w)
    assert torch.allclose(y0, y1, rtol=1e-6, atol=1e-6)
    for a, b in zip(g0, g1):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)


def test_rewrite_leaves_other_instances_alone():
    tp = _tensor_product()
    fast = copy.deepcopy(tp)
    optimise_model(fast)
    assert "_split_columns" in fast._compiled_main_left_right.code
    assert "_split_columns" not in tp._compiled_main_left_right.code
