"""Dataset layer of the DOS predictor: crystals + target DOS on one fixed frequency grid.

Two sources end in the same in-memory form (:class:`DosSample`): the Petretto DFPT set
(``petretto-dfpt/{train,valid}.jsonl.gz``, DOS in states per cm^-1 per cell on a 1 cm^-1 grid) and a
directory of ``atomvib phonons`` results (``dos.csv`` in states per THz per primitive cell,
``structure.cif``, ``summary.json``). Periodic neighbour lists come from ASE (``neighbor_list``); we
only wrote the binning, which must conserve the number of states exactly (3N per cell).

The frequency grid covers the whole range of the data (0–4000 cm^-1 in 5 cm^-1 bins): 13 % of the
Petretto materials have modes above 1000 cm^-1 (O–H, N–H, C–H stretches up to ~3700 cm^-1).
"""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import units
from ..errors import InputError
from ..structure import Structure

#: default bin width of the model's frequency grid, cm^-1
BIN_CM1 = 5.0
#: default upper edge of the grid, cm^-1 (above the highest DFPT mode in the data, 3674 cm^-1)
FMAX_CM1 = 4000.0
#: neighbour cutoff radius of the graph, Å
CUTOFF_A = 5.0


@dataclass(frozen=True, eq=False)
class DosGrid:
    """Uniform frequency bins ``[k·width, (k+1)·width)``, k = 0..nbins-1, in cm^-1."""

    width_cm1: float = BIN_CM1
    fmax_cm1: float = FMAX_CM1

    @property
    def nbins(self) -> int:
        return int(round(self.fmax_cm1 / self.width_cm1))

    @property
    def edges_cm1(self) -> np.ndarray:
        """Bin edges, shape (nbins+1,), cm^-1."""
        return np.arange(self.nbins + 1) * self.width_cm1

    @property
    def centers_cm1(self) -> np.ndarray:
        """Bin centres, shape (nbins,), cm^-1."""
        return (np.arange(self.nbins) + 0.5) * self.width_cm1

    def bin_states(self, freqs_cm1, dos_per_cm1) -> np.ndarray:
        """States per bin, shape (nbins,), from a DOS on a uniform axis (states per cm^-1).

        The cumulative number of states is interpolated at the bin edges, so the total is conserved
        exactly. States at negative frequency (imaginary modes, numerical noise of acoustic modes)
        are moved into the first bin and states above ``fmax_cm1`` into the last one: the count 3N
        is a physical fact, the position of a handful of unstable modes is not learnable here.
        """
        f = np.asarray(freqs_cm1, float)
        g = np.clip(np.asarray(dos_per_cm1, float), 0.0, None)
        step = f[1] - f[0]
        # cumulative states at the upper edge of each sample cell [f - step/2, f + step/2]
        cum = np.concatenate([[0.0], np.cumsum(g) * step])
        x = np.concatenate([[f[0] - 0.5 * step], f + 0.5 * step])
        c_edges = np.interp(self.edges_cm1, x, cum, left=0.0, right=cum[-1])
        c_edges[0] = 0.0  # everything below 0 goes into bin 0
        c_edges[-1] = cum[-1]  # everything above fmax into the last bin
        return np.diff(c_edges)

    def density_on(self, states_per_bin, freqs_cm1) -> np.ndarray:
        """Piecewise-linear density (states per cm^-1) through the bin centres, evaluated at ``freqs_cm1``.

        ``states_per_bin`` may have leading batch dimensions: shape (..., nbins) → (..., len(freqs)).
        Renormalised so that it integrates (rectangle rule on the given uniform axis) to the same
        number of states as the bins.
        """
        s = np.asarray(states_per_bin, float)
        f = np.asarray(freqs_cm1, float)
        c = np.concatenate([[0.0], self.centers_cm1, [self.fmax_cm1]])
        d = s / self.width_cm1
        d = np.concatenate([np.zeros(s.shape[:-1] + (1,)), d, d[..., -1:]], axis=-1)
        flat = d.reshape(-1, d.shape[-1])
        out = np.stack([np.interp(f, c, row, left=0.0, right=0.0) for row in flat]).reshape(
            s.shape[:-1] + f.shape
        )
        step = f[1] - f[0]
        tot = out.sum(-1, keepdims=True) * step
        want = s.sum(-1, keepdims=True)
        return np.where(tot > 0, out * want / np.where(tot > 0, tot, 1.0), 0.0)


@dataclass(frozen=True, eq=False)
class DosSample:
    """One crystal with its reference DOS.

    Attributes
    ----------
    id : str
    structure : Structure
        The cell the DOS refers to.
    states_per_bin : ndarray, shape (nbins,)
        States per bin of the model grid, per cell; sums to 3·natoms.
    formula_units : int
        Formula units Z in the cell (thermo per mole of formula units = per cell / Z).
    dos_freqs_cm1, dos_per_cm1 : ndarray, shape (nf,), cm^-1 and states per cm^-1 per cell
        The reference DOS on its own axis (for metrics), renormalised to 3·natoms on positive frequencies.
    thermo : dict or None
        Reference thermodynamics per mole of formula units (Petretto keys), None when unstable/absent.
    """

    id: str
    structure: Structure
    states_per_bin: np.ndarray
    formula_units: int
    dos_freqs_cm1: np.ndarray
    dos_per_cm1: np.ndarray
    thermo: dict | None = None


def _z_from_cif(cif: str) -> int:
    m = re.search(r"_cell_formula_units_Z\s+(\d+)", cif)
    if not m:
        raise InputError("CIF has no _cell_formula_units_Z", fix="add the number of formula units to the CIF")
    return int(m.group(1))


def _structure_from_cif(cif: str, source: str) -> Structure:
    import warnings

    from ase.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = read(io.StringIO(cif), format="cif")
    return Structure.from_ase(atoms, source=source)


def _normalised_positive_dos(freqs, dos, natoms):
    """Keep f >= 0 and rescale so the DOS integrates (rectangle rule) to 3·natoms, shape (nf,)."""
    f = np.asarray(freqs, float)
    g = np.clip(np.asarray(dos, float), 0.0, None)
    keep = f >= 0
    f, g = f[keep], g[keep]
    step = f[1] - f[0]
    tot = g.sum() * step
    return f, g * (3.0 * natoms / tot)


def read_petretto(path, grid: DosGrid | None = None, limit: int | None = None) -> list[DosSample]:
    """Read a Petretto DFPT JSON-lines file (gzip) into samples on ``grid``.

    The DOS is renormalised to exactly 3·nsites states per cell (the stored DOS does within ~0.1 %).
    """
    grid = grid or DosGrid()
    out = []
    for name, r in petretto_records(path):
        if limit is not None and len(out) >= limit:
            break
        s = _structure_from_cif(r["cif"], source=f"{name}:{r['material_id']}")
        d = r["dos"]
        g = np.asarray(d["states_per_cm1_per_cell"], float)
        f = d["freq_start_cm1"] + d["freq_step_cm1"] * np.arange(len(g))
        n = s.natoms
        g = g * (3.0 * n / (np.clip(g, 0, None).sum() * d["freq_step_cm1"]))
        bins = grid.bin_states(f, g)
        fpos, gpos = _normalised_positive_dos(f, g, n)
        out.append(
            DosSample(
                id=r["material_id"],
                structure=s,
                states_per_bin=bins,
                formula_units=_z_from_cif(r["cif"]),
                dos_freqs_cm1=fpos,
                dos_per_cm1=gpos,
                thermo=r.get("thermo_per_mol_formula_unit"),
            )
        )
    return out


def petretto_records(path):
    """(file name, record dict) for every line of a Petretto DFPT JSON-lines file (gzip or plain)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file", fix="give the path of petretto-dfpt/train.jsonl.gz")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt") as fh:
        for line in fh:
            yield p.name, json.loads(line)


def read_results_dir(path, grid: DosGrid | None = None) -> list[DosSample]:
    """Crystal phonon results saved under ``path`` (searched recursively), as training samples.

    Each result is read with :func:`atomvib.load`; its DOS (states per THz per primitive cell) is
    put on a uniform 1 cm^-1 axis and normalised to the primitive cell's 3·natoms states.
    """
    from ..harmonic.crystal import CrystalPhonons
    from ..results import is_result_dir, load, read_summary

    grid = grid or DosGrid()
    root = Path(path)
    if not root.exists():
        raise InputError(f"{path}: no such directory", fix="give a directory of `atomvib phonons` outputs")
    dirs = sorted({p.parent for p in root.rglob("summary.json") if is_result_dir(p.parent)})
    out = []
    for d in dirs:
        if read_summary(d).get("kind") != "crystal":
            continue
        r = load(d, expect=CrystalPhonons)
        s = r.primitive
        dos = r.dos()
        f_cm1 = units.convert_frequency(dos.frequencies_thz, "THz", "cm-1")
        g_cm1 = np.asarray(dos.total, float) / units.THZ_TO_CM1  # states/THz → states/cm^-1
        # resample on a uniform 1 cm^-1 axis starting at 0 (the phonopy axis is in THz steps)
        f1 = np.arange(0.0, max(f_cm1.max(), 1.0) + 1.0, 1.0)
        g1 = np.interp(f1, f_cm1, g_cm1, left=0.0, right=0.0)
        fpos, gpos = _normalised_positive_dos(f1, g1, s.natoms)
        out.append(
            DosSample(
                id=str(d.relative_to(root)) if d != root else d.name,
                structure=s,
                states_per_bin=grid.bin_states(fpos, gpos),
                formula_units=s.formula_units,
                dos_freqs_cm1=fpos,
                dos_per_cm1=gpos,
                thermo=None,
            )
        )
    if not out:
        raise InputError(
            f"{path}: no crystal phonon results found", fix="run `atomvib phonons ... --out DIR` first"
        )
    return out


def read_dataset(
    path, split: str = "train", grid: DosGrid | None = None, limit: int | None = None
) -> list[DosSample]:
    """Samples from a Petretto-style data directory (``{split}.jsonl.gz``) or a directory of atomvib results."""
    p = Path(path)
    cand = p / f"{split}.jsonl.gz"
    if cand.exists():
        return read_petretto(cand, grid, limit)
    if p.is_file() and p.name.endswith((".jsonl.gz", ".jsonl")):
        return read_petretto(p, grid, limit)
    return read_results_dir(p, grid)


# ---- graphs -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Graph:
    """Periodic radius graph of one cell.

    Attributes
    ----------
    numbers : ndarray, shape (n,), int
    masses : ndarray, shape (n,), amu
    src, dst : ndarray, shape (ne,), int — edge j→i means src=j, dst=i
    vectors : ndarray, shape (ne, 3), Å — r_j + S·cell − r_i
    """

    numbers: np.ndarray
    masses: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    vectors: np.ndarray


def build_graph(structure: Structure, cutoff_a: float = CUTOFF_A) -> Graph:
    from ase.neighborlist import neighbor_list

    atoms = structure.to_ase()
    i, j, S = neighbor_list("ijS", atoms, cutoff_a)
    pos = atoms.get_positions()
    vec = pos[j] + S @ atoms.get_cell().array - pos[i]
    return Graph(
        numbers=np.asarray(structure.numbers, int),
        masses=np.asarray(structure.masses, float),
        src=j.astype(np.int64),
        dst=i.astype(np.int64),
        vectors=vec,
    )
