"""The E(3)-equivariant graph network that maps a crystal to its phonon DOS.

e3nn does the equivariant algebra (spherical harmonics, tensor products, gated nonlinearities); we
wrote the small message-passing network around it (NequIP-like, scalars + vectors, lmax 1) because
no maintained package ships a DOS head with the physics we need built in:

* each atom emits a non-negative spectrum (softplus) normalised to exactly 3 states, so the cell DOS
  integrates to 3N by construction and Cv, S, F follow from it without any fitting;
* the atom embedding carries chemistry (a learned vector per element) and mass (log mass as an
  input scalar), since phonon frequencies scale as 1/sqrt(mass).

The output is invariant under rotations, translations, inversion and permutations of atoms: only
scalars (0e) reach the readout.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn


class Bessel(nn.Module):
    """Bessel radial basis sin(nπr/rc)/r times a smooth polynomial cutoff envelope, shape (ne, nbasis)."""

    def __init__(self, cutoff_a: float, nbasis: int = 8):
        super().__init__()
        self.cutoff = cutoff_a
        self.register_buffer(
            "freqs", torch.arange(1, nbasis + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff_a
        )

    def forward(self, r):
        x = r / self.cutoff
        env = torch.where(x < 1, 1 - 10 * x**3 + 15 * x**4 - 6 * x**5, torch.zeros_like(x))  # C2-smooth to 0
        return (torch.sin(self.freqs * r[:, None]) / r[:, None]) * env[:, None]


class Interaction(nn.Module):
    """One message-passing step: tensor product of neighbour features with edge harmonics, radial weights."""

    def __init__(self, irreps_in, irreps_out, irreps_sh, nbasis, avg_neighbors):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        irreps_out = o3.Irreps(irreps_out)
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
        self.gate = Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid] * len(gates), gated)
        mid = self.gate.irreps_in
        # depthwise ("uvu") tensor product: one radial weight per channel and path, then a linear
        # mix; ~20x cheaper per edge than a fully connected product, which matters on 2 CPU cores
        irreps_tp, instr = [], []
        for i1, (mul, ir1) in enumerate(self.irreps_in):
            for i2, (_, ir2) in enumerate(o3.Irreps(irreps_sh)):
                for ir in ir1 * ir2:
                    if ir in mid:
                        instr.append((i1, i2, len(irreps_tp), "uvu", True))
                        irreps_tp.append((mul, ir))
        irreps_tp = o3.Irreps(irreps_tp)
        irreps_tp_sorted, perm, _ = irreps_tp.sort()
        instr = [(a, b, perm[c], m, t) for a, b, c, m, t in instr]
        self.tp = o3.TensorProduct(
            self.irreps_in, irreps_sh, irreps_tp_sorted, instr, shared_weights=False, internal_weights=False
        )
        self.post = o3.Linear(irreps_tp_sorted.simplify(), mid)
        self.radial = nn.Sequential(nn.Linear(nbasis, 32), nn.SiLU(), nn.Linear(32, self.tp.weight_numel))
        self.self_linear = o3.Linear(self.irreps_in, mid)
        self.norm = 1.0 / math.sqrt(avg_neighbors)
        self.irreps_out = self.gate.irreps_out

    #: tables for the fused CPU kernels (engines/fused_tp.py), set by engines.graph_rewrite.optimise_model
    _uvu_plan = None

    def forward(self, x, src, dst, sh, rbf):
        w = self.radial(rbf)
        if self._uvu_plan is not None and x.device.type == "cpu":
            from ..engines.fused_tp import fused_convolution

            agg = fused_convolution(x, sh, w, src, dst, self._uvu_plan) * self.norm
        else:
            msg = self.tp(x[src], sh, w)
            agg = torch.zeros(x.shape[0], msg.shape[1], dtype=msg.dtype).index_add_(0, dst, msg) * self.norm
        return self.gate(self.post(agg) + self.self_linear(x))


class DosNet(nn.Module):
    """Crystal → states per bin on a fixed grid (per cell, sums to 3·natoms).

    Parameters
    ----------
    nbins : int
        Number of frequency bins of the output.
    hidden : str
        Irreps of the hidden layers, e.g. ``"32x0e + 8x1o"``.
    ninteractions : int
    cutoff_a : float
        Neighbour cutoff, Å (must match the graphs).
    """

    def __init__(
        self,
        nbins,
        hidden="32x0e + 8x1o",
        ninteractions=3,
        cutoff_a=5.0,
        nbasis=8,
        nscalars_out=64,
        avg_neighbors=40.0,
        emb_dim=32,
    ):
        super().__init__()
        self.config = dict(
            nbins=nbins,
            hidden=hidden,
            ninteractions=ninteractions,
            cutoff_a=cutoff_a,
            nbasis=nbasis,
            nscalars_out=nscalars_out,
            avg_neighbors=avg_neighbors,
            emb_dim=emb_dim,
        )
        self.embed = nn.Embedding(119, emb_dim)
        self.mass_in = nn.Linear(1, emb_dim)
        self.irreps_sh = o3.Irreps.spherical_harmonics(1)
        self.rbf = Bessel(cutoff_a, nbasis)
        layers = []
        irreps = o3.Irreps(f"{emb_dim}x0e")
        for k in range(ninteractions):
            out = f"{nscalars_out}x0e" if k == ninteractions - 1 else hidden
            layer = Interaction(irreps, out, self.irreps_sh, nbasis, avg_neighbors)
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.readout = nn.Sequential(nn.Linear(nscalars_out, 128), nn.SiLU(), nn.Linear(128, nbins))

    def atom_features(self, batch):
        z, logm = batch["numbers"], batch["log_mass"]
        x = self.embed(z) + self.mass_in(logm[:, None])
        vec = batch["vectors"]
        r = vec.norm(dim=1)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        rbf = self.rbf(r)
        for layer in self.layers:
            x = layer(x, batch["src"], batch["dst"], sh, rbf)
        return x  # (natoms_total, nscalars_out) invariant scalars

    def atom_spectra(self, h):
        """Per-atom spectra from invariant atom features, shape (natoms, nbins), each summing to 3 states."""
        p = torch.nn.functional.softplus(self.readout(h))
        return 3.0 * p / p.sum(dim=1, keepdim=True)

    def forward(self, batch, return_embedding: bool = False):
        h = self.atom_features(batch)
        p = self.atom_spectra(h)
        ng = int(batch["ngraphs"])
        dos = torch.zeros(ng, p.shape[1], dtype=p.dtype).index_add_(0, batch["graph"], p)
        if not return_embedding:
            return dos
        counts = torch.zeros(ng, dtype=h.dtype).index_add_(0, batch["graph"], torch.ones_like(h[:, 0]))
        emb = torch.zeros(ng, h.shape[1], dtype=h.dtype).index_add_(0, batch["graph"], h) / counts[:, None]
        return dos, emb


def collate(graphs) -> dict:
    """Concatenate :class:`~atomvib.learn.data.Graph` objects into one batch of tensors."""
    numbers, logm, src, dst, vec, gidx = [], [], [], [], [], []
    off = 0
    for k, g in enumerate(graphs):
        n = len(g.numbers)
        numbers.append(g.numbers)
        logm.append(np.log(g.masses))
        src.append(g.src + off)
        dst.append(g.dst + off)
        vec.append(g.vectors)
        gidx.append(np.full(n, k))
        off += n
    dt = torch.get_default_dtype()
    return {
        "numbers": torch.as_tensor(np.concatenate(numbers), dtype=torch.long),
        "log_mass": torch.as_tensor(np.concatenate(logm) / 3.0 - 1.0, dtype=dt),  # ~[-1, 1]
        "src": torch.as_tensor(np.concatenate(src), dtype=torch.long),
        "dst": torch.as_tensor(np.concatenate(dst), dtype=torch.long),
        "vectors": torch.as_tensor(np.concatenate(vec), dtype=dt),
        "graph": torch.as_tensor(np.concatenate(gidx), dtype=torch.long),
        "ngraphs": len(graphs),
    }


def predict_states(model, graphs, batch_size=64, return_embedding=False):
    """Run one model on graphs. Returns states per bin, shape (n, nbins) (and embeddings (n, d))."""
    model.eval()
    outs, embs = [], []
    with torch.no_grad():
        for k in range(0, len(graphs), batch_size):
            b = collate(graphs[k : k + batch_size])
            dos, emb = model(b, return_embedding=True)
            outs.append(dos.numpy().astype(float))
            embs.append(emb.numpy().astype(float))
    dos = np.concatenate(outs) if outs else np.zeros((0, model.config["nbins"]))
    if return_embedding:
        return dos, np.concatenate(embs) if embs else np.zeros((0, model.config["nscalars_out"]))
    return dos
