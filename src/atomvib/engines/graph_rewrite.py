"""Faster CPU execution of e3nn-based potentials (SevenNet, MACE) with the same arithmetic.

Profiling SevenNet-0 on a 144-atom supercell on one CPU thread showed that a third of a force call
went into work that produces nothing:

* e3nn's generated tensor-product code slices its per-edge inputs column by column
  (``w[:, a:b]`` once per path, 15 times per convolution). Autograd turns each slice into a
  zero-filled tensor of the full width plus an addition, so the backward pass wrote the (edges × 960)
  weight gradient 15 times over (``aten::fill_`` was 22 % of the call).
* The same generated code computes some outer products it never uses (fx keeps them).
* SevenNet's message aggregation (``scatter_reduce`` with a broadcast int64 index) has a ``gather``
  as its backward, and neighbour features are taken with advanced indexing (``index_put_`` as its
  backward); ``index_add_`` / ``index_select`` are each other's backward and read one index per row.

We rewrite the generated fx graphs at model load — one ``torch.split`` per sliced tensor (its backward
is a single concatenation) and dead-code elimination — and give SevenNet's convolution modules a
forward with ``index_select``/``index_add_``. Nothing else changes: same operations, same dtype, so
forces agree with the stock model to float32 round-off (tests/test_engine_speedpaths.py). This is
ours because neither e3nn nor SevenNet offers a CPU-side optimisation (their fast paths, cuEquivariance
and FlashTP, are CUDA-only), and torch.compile crashed on SevenNet-0 here (torch 2.13, CPU).

On CPU with numba installed, :func:`optimise_model` goes one step further for SevenNet's convolutions
and the DOS predictor's interactions: they run in the fused kernels of engines/fused_tp.py (tensor
product and sum over neighbours in one pass; 6.2× per SevenNet-0 force call against the stock model,
where the rewrite alone gives 1.3×). The rewrite still serves e3nn's linear layers, CUDA, and MACE.

Only the model instance passed in is changed; other instances in the process (an ASE calculator a
user built) keep the stock code. This relies on e3nn's and SevenNet's internals (the generated modules'
names and slices, ``IrrepsConvolution``'s attributes): the engines apply it only where
engines/guards.py allows (tested versions, and the same forces as the stock model on a probe cell).
"""

from __future__ import annotations

import operator
import types
from collections import defaultdict


def _split_columns(x, sizes: tuple):
    """``torch.split`` of ``x`` along dim 1 into ``sizes`` plus whatever remains at the end."""
    import torch

    tail = x.shape[1] - sum(sizes)
    return torch.split(x, list(sizes) + ([tail] if tail else []), dim=1)


def _column_slice(node):
    """(source node, start, stop) when ``node`` is ``src[:, start:stop]``, else None."""
    import torch.fx as fx

    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    src, idx = node.args
    if not isinstance(src, fx.Node) or not isinstance(idx, tuple) or len(idx) != 2:
        return None
    rows, cols = idx
    if rows != slice(None, None, None) or not isinstance(cols, slice) or cols.step not in (None, 1):
        return None
    if not isinstance(cols.start, int) or not isinstance(cols.stop, int) or cols.stop <= cols.start:
        return None
    return src, cols.start, cols.stop


def rewrite_graph(gm) -> int:
    """Column slices of one tensor → one split; unused nodes removed. Returns the number of splits."""
    graph = gm.graph
    groups = defaultdict(list)
    for node in graph.nodes:
        s = _column_slice(node)
        if s is not None:
            groups[s[0]].append((s[1], s[2], node))
    nsplit = 0
    for src, items in groups.items():
        if len(items) < 2:
            continue
        items.sort(key=lambda t: (t[0], t[1]))
        sizes, piece_of, pos = [], [], 0
        for start, stop, _ in items:
            if start < pos:  # overlapping slices cannot come from one split
                break
            if start > pos:
                sizes.append(start - pos)  # a gap: a piece nobody uses
            piece_of.append(len(sizes))
            sizes.append(stop - start)
            pos = stop
        else:
            with graph.inserting_after(src):
                split = graph.call_function(_split_columns, (src, tuple(sizes)))
            for (_, _, node), k in zip(items, piece_of):
                with graph.inserting_after(split):
                    piece = graph.call_function(operator.getitem, (split, k))
                node.replace_all_uses_with(piece)
                graph.erase_node(node)
            nsplit += 1
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    return nsplit


def _sevennet_convolution_forward(self, data):
    """SevenNet ``IrrepsConvolution.forward`` (serial case) with index_select / index_add_."""
    weight = self.weight_nn(data[self.key_weight_input])
    x = data[self.key_x]
    edge_src = data[self.key_edge_idx][1]
    edge_dst = data[self.key_edge_idx][0]
    message = self.convolution(x.index_select(0, edge_src), data[self.key_filter], weight)
    out = x.new_zeros((x.shape[0],) + tuple(message.shape[1:])).index_add_(0, edge_dst, message)
    data[self.key_x] = out.div(self.denominator)
    return data


def _sevennet_fused_forward(self, data):
    """SevenNet ``IrrepsConvolution.forward`` through the fused CPU kernels (engines/fused_tp.py)."""
    x = data[self.key_x]
    if x.device.type != "cpu":
        return _sevennet_convolution_forward(self, data)
    from .fused_tp import fused_convolution

    weight = self.weight_nn(data[self.key_weight_input])
    edge_idx = data[self.key_edge_idx]
    out = fused_convolution(x, data[self.key_filter], weight, edge_idx[1], edge_idx[0], self._uvu_plan)
    data[self.key_x] = out.div(self.denominator)
    return data


def optimise_model(model, fused: bool = True) -> dict:
    """Rewrite ``model`` in place for CPU speed. Returns counts: {"graphs", "splits", "convolutions",
    "fused"}. ``fused``: run SevenNet's convolutions and the DOS predictor's interactions through the
    fused kernels where numba is installed (engines/fused_tp.py); otherwise SevenNet's get the
    index_select/index_add_ forward."""
    import torch.fx as fx

    from . import fused_tp

    counts = {"graphs": 0, "splits": 0, "convolutions": 0, "fused": 0}
    for name, mod in model.named_modules():
        # e3nn's code-generated kernels (TensorProduct, Linear) are GraphModules named _compiled_main*
        if isinstance(mod, fx.GraphModule) and name.rsplit(".", 1)[-1].startswith("_compiled_main"):
            counts["splits"] += rewrite_graph(mod)
            counts["graphs"] += 1
        if (
            type(mod).__name__ == "IrrepsConvolution"
            and type(mod).__module__.startswith("sevenn.")
            and not getattr(mod, "is_parallel", False)
            and hasattr(mod, "key_edge_idx")
        ):
            if fused and fused_tp.HAVE_NUMBA and fused_tp.supports(mod.convolution):
                mod._uvu_plan = fused_tp.uvu_plan(mod.convolution)
                mod.forward = types.MethodType(_sevennet_fused_forward, mod)
                counts["fused"] += 1
            else:
                mod.forward = types.MethodType(_sevennet_convolution_forward, mod)
            counts["convolutions"] += 1
        if (  # atomvib's DOS predictor: the same tensor product + sum over neighbours
            fused
            and fused_tp.HAVE_NUMBA
            and type(mod).__name__ == "Interaction"
            and type(mod).__module__ == "atomvib.learn.model"
            and fused_tp.supports(mod.tp)
        ):
            mod._uvu_plan = fused_tp.uvu_plan(mod.tp)
            counts["fused"] += 1
    return counts
