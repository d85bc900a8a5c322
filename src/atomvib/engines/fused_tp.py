"""Fused CPU kernels for SevenNet's edge convolution (an e3nn "uvu" tensor product plus aggregation).

SevenNet's convolution computes, for every edge e = (src → dst) and every path p = (l1, l2, l3),

    message[e, p, u, k] = w[e, p, u] · Σ_ij K_p[i, j, k] · x[src, u, i] · Y[e, j]

and sums the messages into ``dst``. The stock code (e3nn's generated tensor product, then a scatter)
materialises the (edges × 3136) message tensor and several intermediates of that size, each written
and read again in the backward pass: on a 144-atom cell that is ~90 MB per tensor, and the force call
was bound by memory traffic (``aten::mul``/``sum``/``cat`` were 60 % of it, the arithmetic itself
~0.1 GFLOP). Here the same sum runs in two numba kernels that never build a per-edge message: the
forward loops over destination nodes (edges sorted by destination, so no write conflicts) and adds
each edge's contribution into the node's row; the backward loops over edges and writes each edge's
gradients for x, Y and w. Features are kept channel-innermost (``[k, u]`` instead of e3nn's
``[u, k]``) so the innermost loops run over contiguous channels and vectorise.

The coefficients K_p (Clebsch–Gordan × e3nn's path normalisation) are not rebuilt from formulas: they
are read off the e3nn module itself by probing it with unit inputs (:func:`uvu_plan`), so the kernel
computes exactly what the module computes, whatever e3nn's conventions. Values agree with the stock
module to float32 round-off (tests/test_fused_tp.py). Only first derivatives are provided (forces,
stress); the kernels refuse a double backward.

This is ours because no library offers it on CPU: e3nn has no fused kernels, and SevenNet's fast
paths (cuEquivariance, FlashTP) are CUDA-only.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import numpy as np
import torch

try:  # numba is a dependency; the engines fall back to the stock code if it is missing
    import numba
    from numba import prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is not installed
    HAVE_NUMBA = False

#: numba's fallback threading layer (workqueue, used where no OpenMP/TBB runtime is found) aborts the
#: process if two threads launch parallel kernels at once; calls from several threads take turns. (The
#: compiled kernels are module-level functions, as numba requires; they hold no per-model data: a
#: model's coefficient tables live on its own modules, ``_uvu_plan``.)
_KERNEL_LOCK = threading.Lock()


def _njit(**options):
    """numba.njit with an on-disk cache (compiling costs ~4 s once per machine); without one where no
    cache directory is writable (numba refuses ``cache=True`` there at decoration time)."""

    def wrap(fn):
        try:
            return numba.njit(cache=True, nogil=True, **options)(fn)
        except RuntimeError:  # pragma: no cover - read-only install and no user cache directory
            return numba.njit(nogil=True, **options)(fn)

    return wrap


@dataclass(frozen=True)
class UVUPlan:
    """Index tables of one uvu tensor product, in the channel-innermost layouts the kernels use.

    Per path p (arrays of shape (n_paths,)): ``mul`` channels, ``d1``/``d2``/``d3`` = 2l+1 of input 1,
    input 2 and output, ``off1`` (start of the l1 block in x), ``off2`` (in Y), ``offo`` (in the
    output), ``offw`` (in w), ``koff`` (in ``coeff``). ``coeff`` holds K_p[i, j, k] flattened
    (i, j, k)-major. ``perm_in``: x_t = x[:, perm_in]; ``perm_out``: out = out_t[:, perm_out].
    """

    mul: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    d3: np.ndarray
    off1: np.ndarray
    off2: np.ndarray
    offo: np.ndarray
    offw: np.ndarray
    koff: np.ndarray
    coeff: np.ndarray
    perm_in: np.ndarray
    perm_out: np.ndarray
    dim_in1: int
    dim_out: int

    def tables(self) -> tuple:
        return (self.mul, self.d1, self.d2, self.d3, self.off1, self.off2, self.offo, self.offw, self.koff)


def _block_starts(irreps) -> list[int]:
    starts, pos = [], 0
    for mul, ir in irreps:
        starts.append(pos)
        pos += mul * ir.dim
    return starts


def _transpose_perm(irreps) -> np.ndarray:
    """Column index such that x_t = x[:, perm] has each block as [component, channel]."""
    perm = []
    for start, (mul, ir) in zip(_block_starts(irreps), irreps):
        d = ir.dim
        perm.extend(start + u * d + i for i in range(d) for u in range(mul))
    return np.asarray(perm, dtype=np.int64)


def supports(tp) -> bool:
    """True when ``tp`` is an e3nn TensorProduct this module can run: all paths uvu with per-edge
    weights, second input of multiplicity one."""
    try:
        ins = tp.instructions
        return (
            len(ins) > 0
            and not tp.shared_weights
            and not tp.internal_weights
            and all(i.connection_mode == "uvu" and i.has_weight for i in ins)
            and all(mul == 1 for mul, _ in tp.irreps_in2)
            and all(tp.irreps_in1[i.i_in1].mul == tp.irreps_out[i.i_out].mul for i in ins)
        )
    except AttributeError:
        return False


def uvu_plan(tp) -> UVUPlan:
    """Read the coefficient tables off an e3nn uvu TensorProduct by probing it with unit inputs."""
    if not supports(tp):
        raise ValueError("not a uvu tensor product with per-edge weights")
    ir1, ir2, iro = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
    s1, s2, so = _block_starts(ir1), _block_starts(ir2), _block_starts(iro)
    # weight offset of each path: e3nn lays weights out path by path, (u, v) within a path, v of size 1
    woff, pos = [], 0
    for ins in tp.instructions:
        woff.append(pos)
        pos += int(np.prod(ins.path_shape))
    dtype = next((b.dtype for b in tp.buffers() if b.is_floating_point()), torch.get_default_dtype())
    rows = []  # (path, i, j) of each probe
    x1 = []
    x2 = []
    w = []
    for p, ins in enumerate(tp.instructions):
        d1, d2 = ir1[ins.i_in1].ir.dim, ir2[ins.i_in2].ir.dim
        for i in range(d1):
            for j in range(d2):
                a = torch.zeros(ir1.dim, dtype=torch.float64)
                a[s1[ins.i_in1] + i] = 1.0  # channel u = 0, component i
                b = torch.zeros(ir2.dim, dtype=torch.float64)
                b[s2[ins.i_in2] + j] = 1.0
                c = torch.zeros(tp.weight_numel, dtype=torch.float64)
                c[woff[p]] = 1.0  # weight of path p, channel 0
                rows.append((p, i, j))
                x1.append(a)
                x2.append(b)
                w.append(c)
    with torch.no_grad():
        out = tp(torch.stack(x1).to(dtype), torch.stack(x2).to(dtype), torch.stack(w).to(dtype))
    out = out.detach().to(torch.float64).cpu().numpy()

    n = len(tp.instructions)
    mul = np.zeros(n, np.int64)
    d1a, d2a, d3a = (np.zeros(n, np.int64) for _ in range(3))
    off1, off2, offo, offw, koff = (np.zeros(n, np.int64) for _ in range(5))
    coeff = []
    kpos = 0
    for p, ins in enumerate(tp.instructions):
        m = ir1[ins.i_in1].mul
        d1, d2, d3 = ir1[ins.i_in1].ir.dim, ir2[ins.i_in2].ir.dim, iro[ins.i_out].ir.dim
        mul[p], d1a[p], d2a[p], d3a[p] = m, d1, d2, d3
        off1[p], off2[p], offo[p], offw[p], koff[p] = s1[ins.i_in1], s2[ins.i_in2], so[ins.i_out], woff[p], kpos
        k_p = np.zeros((d1, d2, d3))
        for r, (q, i, j) in enumerate(rows):
            if q == p:
                k_p[i, j] = out[r, so[ins.i_out] : so[ins.i_out] + d3]  # channel 0 of the output block
        coeff.append(k_p.ravel())
        kpos += k_p.size
    perm_out_t = _transpose_perm(iro)  # out_t column c holds e3nn column perm_out_t[c]
    perm_out = np.empty_like(perm_out_t)
    perm_out[perm_out_t] = np.arange(len(perm_out_t))
    return UVUPlan(
        mul, d1a, d2a, d3a, off1, off2, offo, offw, koff,
        np.concatenate(coeff), _transpose_perm(ir1), perm_out, ir1.dim, iro.dim,
    )  # fmt: skip


if HAVE_NUMBA:

    @_njit(fastmath=True)
    def _path_matrix(coeff, koff, d1, d2, d3, Y, e, off2, my):
        """my[i, k] = Σ_j K_p[i, j, k] · Y[e, off2 + j]."""
        for i in range(d1):
            for k in range(d3):
                acc = 0.0
                for j in range(d2):
                    acc += coeff[koff + (i * d2 + j) * d3 + k] * Y[e, off2 + j]
                my[i * d3 + k] = acc

    @_njit()
    def _scratch_sizes(mul, d1, d3):
        n_my, n_xw = 1, 1
        for p in range(mul.shape[0]):
            n_my = max(n_my, d1[p] * d3[p])
            n_xw = max(n_xw, d1[p] * mul[p])
        return n_my, n_xw

    @_njit(parallel=True, fastmath=True)
    def _forward(xt, Y, W, src, order, rowptr, mul, d1, d2, d3, off1, off2, offo, offw, koff, coeff, out):
        n_nodes = out.shape[0]
        n_paths = mul.shape[0]
        n_my, n_xw = _scratch_sizes(mul, d1, d3)
        for n in prange(n_nodes):
            my = np.empty(n_my, dtype=out.dtype)
            xw = np.empty(n_xw, dtype=out.dtype)
            for t in range(rowptr[n], rowptr[n + 1]):
                e = order[t]
                s = src[e]
                for p in range(n_paths):
                    m, a, b, c = mul[p], d1[p], d2[p], d3[p]
                    _path_matrix(coeff, koff[p], a, b, c, Y, e, off2[p], my)
                    o1, oo, ow = off1[p], offo[p], offw[p]
                    # contiguous row slices indexed from range(): LLVM can then vectorise the channel
                    # loops (with computed indices numba's negative-index wraparound blocks it)
                    ws = W[e, ow : ow + m]
                    for i in range(a):
                        xs = xt[s, o1 + i * m : o1 + (i + 1) * m]
                        xwi = xw[i * m : (i + 1) * m]
                        for u in range(m):
                            xwi[u] = xs[u] * ws[u]
                    for k in range(c):
                        orow = out[n, oo + k * m : oo + (k + 1) * m]
                        for i in range(a):
                            cf = my[i * c + k]
                            xwi = xw[i * m : (i + 1) * m]
                            for u in range(m):
                                orow[u] += cf * xwi[u]

    @_njit(parallel=True, fastmath=True)
    def _backward(G, xt, Y, W, src, dst, mul, d1, d2, d3, off1, off2, offo, offw, koff, coeff, gx, gy, gw):
        n_edges = W.shape[0]
        n_paths = mul.shape[0]
        n_my, _ = _scratch_sizes(mul, d1, d3)
        n_t = mul.max()
        for e in prange(n_edges):
            my = np.empty(n_my, dtype=G.dtype)
            t = np.empty(n_t, dtype=G.dtype)
            wx = np.empty(n_t, dtype=G.dtype)
            s = src[e]
            r = dst[e]
            # the caller passes uninitialised arrays: zeroing here, per edge, is cache-hot and parallel
            gxe = gx[e]
            for q in range(gxe.shape[0]):
                gxe[q] = 0.0
            gye = gy[e]
            for q in range(gye.shape[0]):
                gye[q] = 0.0
            for p in range(n_paths):
                m, a, b, c = mul[p], d1[p], d2[p], d3[p]
                o1, o2, oo, ow, ko = off1[p], off2[p], offo[p], offw[p], koff[p]
                _path_matrix(coeff, ko, a, b, c, Y, e, o2, my)
                ws = W[e, ow : ow + m]
                gws = gw[e, ow : ow + m]  # each weight belongs to one path: zeroed here, summed over i
                for u in range(m):
                    gws[u] = 0.0
                for i in range(a):
                    xb = o1 + i * m
                    xs = xt[s, xb : xb + m]
                    gxs = gx[e, xb : xb + m]
                    for u in range(m):
                        wx[u] = ws[u] * xs[u]
                        t[u] = 0.0
                    for k in range(c):
                        # t[u] = Σ_k my[i, k] G[r, k, u];  dL/dmy[i, k] = Σ_u w[u] x[i, u] G[r, k, u]
                        cf = my[i * c + k]
                        gr = G[r, oo + k * m : oo + (k + 1) * m]
                        acc = 0.0
                        for u in range(m):
                            g = gr[u]
                            t[u] += cf * g
                            acc += wx[u] * g
                        for j in range(b):  # chain through my = K · Y
                            gy[e, o2 + j] += coeff[ko + (i * b + j) * c + k] * acc
                    for u in range(m):
                        gxs[u] += ws[u] * t[u]
                        gws[u] += xs[u] * t[u]


def _csr_by_destination(dst: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(dst, kind="stable")
    rowptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n_nodes), out=rowptr[1:])
    return order, rowptr


class FusedUVUConvolution(torch.autograd.Function):
    """out_t[n] = Σ_{e: dst[e] = n} message[e] in the channel-innermost layout (see module doc)."""

    @staticmethod
    def forward(ctx, xt, Y, W, src, dst, plan, n_nodes):
        xt_, y_, w_ = (t.detach().contiguous() for t in (xt, Y, W))
        src_np = src.cpu().numpy()
        dst_np = dst.cpu().numpy()
        order, rowptr = _csr_by_destination(dst_np, n_nodes)
        coeff = plan.coeff.astype(xt_.numpy().dtype)
        out = np.zeros((n_nodes, plan.dim_out), dtype=xt_.numpy().dtype)
        with _KERNEL_LOCK, _torch_threads_kept():
            _forward(xt_.numpy(), y_.numpy(), w_.numpy(), src_np, order, rowptr, *plan.tables(), coeff, out)
        ctx.save_for_backward(xt_, y_, w_)
        ctx.graph = (src_np, dst_np, plan, coeff)
        return torch.from_numpy(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        xt_, y_, w_ = ctx.saved_tensors
        src_np, dst_np, plan, coeff = ctx.graph
        g = grad_out.contiguous().numpy()
        n_edges = w_.shape[0]
        gx_e = np.empty((n_edges, plan.dim_in1), dtype=g.dtype)  # zeroed by the kernel, per edge
        gy = np.empty(y_.shape, dtype=g.dtype)
        gw = np.empty(w_.shape, dtype=g.dtype)
        with _KERNEL_LOCK, _torch_threads_kept():
            _backward(g, xt_.numpy(), y_.numpy(), w_.numpy(), src_np, dst_np, *plan.tables(), coeff, gx_e, gy, gw)
        gx = torch.zeros_like(xt_).index_add_(0, torch.from_numpy(src_np), torch.from_numpy(gx_e))
        return gx, torch.from_numpy(gy), torch.from_numpy(gw), None, None, None, None


@contextlib.contextmanager
def _torch_threads_kept():
    """Restore torch's intra-op thread count after a numba kernel: the first launch of numba's OpenMP layer
    resets the process's OpenMP threads to every core, which torch then uses (measured: ATOMVIB_THREADS=1 became 2
    after the first fused call), undoing the pinning of atomvib.runtime on a shared machine."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def fused_convolution(x, Y, W, src, dst, plan: UVUPlan):
    """Σ over edges into destination nodes of the uvu tensor product; ``x`` (n_nodes, dim_in1), ``Y``
    (n_edges, dim_in2), ``W`` (n_edges, weight_numel), all in e3nn layout; returns (n_nodes, dim_out)."""
    # the kernels use as many threads as torch is allowed here (1 in a worker-pool lane)
    with _torch_threads_kept():  # the first set_num_threads starts numba's OpenMP layer (see there)
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    perm_in = torch.from_numpy(plan.perm_in)
    perm_out = torch.from_numpy(plan.perm_out)
    xt = x.index_select(1, perm_in)
    out_t = FusedUVUConvolution.apply(xt, Y, W, src, dst, plan, x.shape[0])
    return out_t.index_select(1, perm_out)

