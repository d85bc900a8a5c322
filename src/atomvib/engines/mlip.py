"""Universal machine-learning interatomic potentials: SevenNet, CHGNet, MACE.

SevenNet-0 and CHGNet ship their weights inside their PyPI packages; MACE and other SevenNet models
are accepted as model files by path. Nothing is downloaded: a name that would need a download is
refused at once with the way to get the file.

Precision: SevenNet and CHGNet compute in float32 (SevenNet's e3nn kernels are compiled for the
dtype they were built with, so the model cannot simply be cast). Forces are returned as float64 and all
phonon algebra is float64. SevenNet-0's float32 forces are clean enough for 0.01 Å displacements
(Si optical mode stable to 0.01 THz over 0.003–0.06 Å, see docs/validation.md); CHGNet's are not,
which is why its frequencies drift with the amplitude. MACE runs in float64.

Speed (see benchmarks/phonons.py, docs/benchmarks/phonons.md): the displaced supercells of a phonon
calculation differ from the perfect one by ~0.01 Å, so the neighbour graph is built once per perfect
cell and reused. SevenNet gets a Verlet list (cutoff + skin) from which the edges inside the cutoff
are selected per cell — the same edge set a fresh build gives, so forces agree to float32 round-off.
SevenNet's e3nn kernels are rewritten at load to skip work autograd wasted (engines/graph_rewrite.py).
CHGNet's graph (atom graph, bond graph, angle list) is reused as a whole with the new coordinates: its
cutoffs are smooth polynomial envelopes, so a bond crossing a cutoff by 0.01 Å contributes ~nothing
(measured < 1e-5 eV/Å). The models are called directly, with energy and forces only (no stress, no
magnetic moments, no ASE results dict), and several cells go through one forward pass where a GPU is
there (``batch_size``; 1 on CPU, where batching brings nothing but memory). On a multi-core CPU,
enough cells go to a pool of worker processes, one torch thread each (engines/parallel.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EngineError, EngineUnavailable
from ..runtime import configure_threads
from .base import Engine, EngineInfo, package_version

_BUNDLED_SEVENNET = {
    "7net-0": "SevenNet_0__11Jul2024",
    "sevennet-0": "SevenNet_0__11Jul2024",
    "7net-0_11july2024": "SevenNet_0__11Jul2024",
    "7net-l3i5": "SevenNet_l3i5",
    "sevennet-l3i5": "SevenNet_l3i5",
}


#: default cells per forward pass: batching pays on a GPU; on CPU it only adds memory
CUDA_BATCH_SIZE = 8


def _default_batch_size(device) -> int:
    return CUDA_BATCH_SIZE if str(device).startswith("cuda") else 1


def _displacement_from(ref_frac: np.ndarray, atoms) -> np.ndarray | None:
    """Fractional shift of each atom from a reference cell, minimum image, shape (natoms, 3); None if
    ``atoms`` is not a periodic copy of the reference's cell."""
    if not all(atoms.pbc):
        return None
    d = atoms.get_scaled_positions(wrap=False) - ref_frac
    return d - np.round(d)


class _GraphCache:
    """A reference cell (numbers, cell) with its neighbour data, for displaced copies of it.

    ``usable(atoms)`` returns the minimum-image Cartesian displacement (natoms, 3) Å from the reference
    when ``atoms`` has the same species and cell and no atom moved more than ``max_shift_a``; else None.
    """

    def __init__(self, atoms, max_shift_a: float):
        self.numbers = atoms.numbers.copy()
        self.cell = np.array(atoms.cell, dtype=np.float64)
        self.frac = atoms.get_scaled_positions(wrap=False)
        self.positions = self.frac @ self.cell
        self.max_shift_a = max_shift_a

    def usable(self, atoms) -> np.ndarray | None:
        if len(atoms) != len(self.numbers) or not np.array_equal(atoms.numbers, self.numbers):
            return None
        if not np.allclose(np.array(atoms.cell), self.cell, rtol=0, atol=1e-9):
            return None
        d = _displacement_from(self.frac, atoms)
        if d is None:
            return None
        disp = d @ self.cell
        if np.max(np.linalg.norm(disp, axis=1), initial=0.0) > self.max_shift_a:
            return None
        return disp


class _VerletList(_GraphCache):
    """Edges within ``cutoff + skin`` of the reference cell: src, dst (nedge,), integer cell shifts
    (nedge, 3). For a cell whose atoms moved less than skin/2, every pair within ``cutoff`` is among
    them, so selecting ``|r| < cutoff`` reproduces a fresh neighbour search exactly."""

    def __init__(self, atoms, cutoff: float, skin: float):
        super().__init__(atoms, max_shift_a=0.5 * skin)
        from ase.neighborlist import primitive_neighbor_list

        i, j, shift = primitive_neighbor_list(
            "ijS", atoms.pbc, self.cell, self.positions, cutoff + skin, self_interaction=False
        )
        self.cutoff = cutoff
        self.src, self.dst, self.shift = i, j, shift.astype(np.float64)
        self.shift_cart = self.shift @ self.cell

    def edges(self, disp: np.ndarray):
        """(edge_index (2, n), edge_vec (n, 3) Å, cell_shift (n, 3)) of the displaced cell."""
        pos = self.positions + disp
        vec = pos[self.dst] - pos[self.src] + self.shift_cart
        keep = np.einsum("ij,ij->i", vec, vec) < self.cutoff**2
        return np.array([self.src[keep], self.dst[keep]]), vec[keep], self.shift[keep], pos


def _torch_device(device: str | None) -> str:
    import torch

    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class _PooledMixin:
    """Worker-pool support (engines/parallel.py): on CPU with ≥ 2 cores and enough cells, ``evaluate``
    shares the cells between this process and spawned workers, one torch thread each; the workers are
    kept for later calls. Engines implement ``_evaluate_here``."""

    def resolved_device(self) -> str:
        """Where this engine's model runs (or will run): "cpu" or "cuda[:n]"."""
        if self._calc is not None:
            return str(next(self._calc.model.parameters()).device)
        return _torch_device(self.device)

    def evaluate(self, atoms_list, progress=None, batch_size: int | None = None):
        """Energies and forces of ``atoms_list``: through the worker pool where it pays (CPU, large jobs),
        else in this process (:meth:`_evaluate_here`), ``batch_size`` cells per forward pass (default
        1 on CPU, 8 on CUDA)."""
        from .parallel import pooled_evaluate

        pooled = pooled_evaluate(self, atoms_list, progress)
        if pooled is not None:
            return pooled
        return self._evaluate_here(atoms_list, progress, batch_size)

    def close_pool(self) -> None:
        """Stop the worker processes, if any (they also stop at interpreter exit)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class SevenNetEngine(_PooledMixin, Engine):
    """SevenNet: ``sevennet`` (SevenNet-0, bundled), ``sevennet:7net-l3i5`` (bundled) or ``sevennet:PATH``."""

    molecular = False
    #: atoms × cells that pay for starting a worker pool (engines/parallel.py): measured on 2 cores, 144-atom
    #: cells, with the fused kernels (which scale 1.76× from 1 to 2 threads) 2 lanes of 1 thread gain 12 %
    #: per cell (0.223 / 2 vs 0.127 s) over one process with 2 threads; a cold start costs 2–3 s
    pool_min_cell_atoms = 23000

    def __init__(self, model: str | None = None, device: str | None = None):
        super().__init__()
        self.model_arg = model or "7net-0"
        self.device = device
        #: cells per forward pass; None = 1 on CPU, CUDA_BATCH_SIZE on CUDA
        self.batch_size: int | None = None
        self._verlet: _VerletList | None = None
        key = self.model_arg.lower()
        if key in _BUNDLED_SEVENNET:
            self._model_id = _BUNDLED_SEVENNET[key]
            self._source = key
        else:
            p = Path(self.model_arg).expanduser()
            if not p.is_file():
                raise EngineUnavailable(
                    f"SevenNet model '{self.model_arg}' is neither a bundled model nor a file",
                    fix="use 'sevennet' (SevenNet-0, bundled) or download the checkpoint yourself and pass sevennet:/path/to/checkpoint.pth",
                )
            self._model_id = str(p.resolve())
            self._source = str(p.resolve())
        #: registry spec that rebuilds this engine in a worker process (engines/parallel.py)
        self.spec = f"sevennet:{self._source}"
        self._pool = None
        try:
            import sevenn  # noqa: F401
        except ImportError:
            raise EngineUnavailable(
                "the 'sevenn' package is not installed", fix="pip install sevenn"
            ) from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            "sevennet",
            package_version("sevenn"),
            self._model_id,
            {"dtype": "float32"},
        )

    #: rewrite e3nn's generated kernels for CPU speed at load (engines/graph_rewrite.py; same arithmetic)
    rewrite_graphs = True
    #: run the convolutions in atomvib's fused CPU kernels where numba is installed (engines/fused_tp.py)
    fused_kernels = True

    def _make_calculator(self):
        import warnings

        import torch

        configure_threads()
        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calc = SevenNetCalculator(self._source, device=_torch_device(self.device))
        self.elements = frozenset(_atomic_numbers(calc.type_map))
        if self.rewrite_graphs and isinstance(calc.model, torch.nn.Module):
            from .graph_rewrite import optimise_model

            optimise_model(calc.model, fused=self.fused_kernels)
        return calc

    def check(self, structure) -> None:
        self.calculator()  # element coverage is known once the model is loaded
        super().check(structure)

    #: Verlet skin (Å): reused while no atom moved more than half of it from the perfect cell
    skin_a = 0.5

    def _graph(self, atoms, cutoff):
        """SevenNet's input dict for ``atoms``, from the cached Verlet list where it applies."""
        from sevenn import _keys as KEY
        from sevenn.train.dataload import _correct_scalar, unlabeled_atoms_to_graph

        disp = self._verlet.usable(atoms) if self._verlet is not None else None
        if disp is None and all(atoms.pbc):
            self._verlet = _VerletList(atoms, cutoff, self.skin_a)
            disp = self._verlet.usable(atoms)
        if disp is None:  # not periodic: plain build
            return unlabeled_atoms_to_graph(atoms, cutoff)
        edge_idx, edge_vec, _shift, pos = self._verlet.edges(disp)
        z = atoms.get_atomic_numbers()
        return {
            KEY.NODE_FEATURE: z,
            KEY.ATOMIC_NUMBERS: z,
            KEY.POS: pos,
            KEY.EDGE_IDX: edge_idx,
            KEY.EDGE_VEC: edge_vec,
            KEY.CELL_VOLUME: _correct_scalar(atoms.cell.volume),
            KEY.NUM_ATOMS: _correct_scalar(len(z)),
            KEY.INFO: {},
        }

    def _evaluate_here(self, atoms_list, progress=None, batch_size: int | None = None):
        """Energies and forces in this process, calling the model directly (no ASE results dict, no
        calculator round trip), with the neighbour graph reused across displaced copies of one cell."""
        from sevenn import _keys as KEY
        from sevenn.atom_graph_data import AtomGraphData

        from .base import Evaluation

        calc = self.calculator()
        model, cutoff = calc.model, calc.cutoff
        device = next(model.parameters()).device
        bs = max(1, batch_size or self.batch_size or _default_batch_size(device))
        out = []
        for start in range(0, len(atoms_list), bs):
            chunk = atoms_list[start : start + bs]
            graphs = [AtomGraphData.from_numpy_dict(self._graph(a, cutoff)) for a in chunk]
            if len(graphs) == 1:
                data = graphs[0].to(device)
                res = model(data)
                forces = [res[KEY.PRED_FORCE]]
                energies = res[KEY.PRED_TOTAL_ENERGY].reshape(1)
            else:
                from torch_geometric.data import Batch

                for g in graphs:
                    del g[KEY.INFO]  # a dict: the collater cannot stack it, and the model does not read it
                data = Batch.from_data_list(graphs).to(device)
                model.set_is_batch_data(True)
                try:
                    res = model(data)
                finally:
                    model.set_is_batch_data(False)  # the calculator shares this model
                forces = res[KEY.PRED_FORCE].split([len(a) for a in chunk])
                energies = res[KEY.PRED_TOTAL_ENERGY].reshape(-1)
            e_np = energies.detach().cpu().numpy().astype(np.float64)
            f_np = [f.detach().cpu().numpy().astype(np.float64) for f in forces]
            del res, data, graphs, forces, energies  # no tensor outlives its call (see CHGNetEngine)
            for a, f, e in zip(chunk, f_np, e_np):
                out.append(Evaluation(energy=float(e), forces=f[: len(a)]))
            if progress:
                progress(len(chunk))
        return out


def _atomic_numbers(type_map) -> list[int]:
    return [int(z) for z in type_map]


class CHGNetEngine(_PooledMixin, Engine):
    """CHGNet (version 0.3.0 weights, bundled in the ``chgnet`` package). float32 only."""

    molecular = False
    elements = frozenset(range(1, 95))
    #: atoms × cells that pay for starting a worker pool (engines/parallel.py): measured on 2 cores, 144-atom
    #: cells, 2 lanes of 1 thread gain 19 % per cell over one process with 2 threads, start-up costs ~2.2 s
    pool_min_cell_atoms = 5500

    def __init__(self, model: str | None = None, device: str | None = None):
        super().__init__()
        self.model_arg = model or "0.3.0"
        self.device = device
        #: cells per forward pass; None = 1 on CPU, CUDA_BATCH_SIZE on CUDA
        self.batch_size: int | None = None
        self._ref: tuple[_GraphCache, object] | None = None
        #: registry spec that rebuilds this engine in a worker process (engines/parallel.py)
        self.spec = "chgnet:" + (
            str(Path(self.model_arg).resolve()) if Path(self.model_arg).is_file() else self.model_arg
        )
        self._pool = None
        if self.model_arg not in ("0.3.0", "0.2.0") and not Path(self.model_arg).is_file():
            raise EngineUnavailable(
                f"CHGNet model '{self.model_arg}' is not bundled",
                fix="use 'chgnet' (0.3.0, bundled), 'chgnet:0.2.0', or chgnet:/path/to/model.pth.tar",
            )
        try:
            import chgnet  # noqa: F401
        except ImportError:
            raise EngineUnavailable(
                "the 'chgnet' package is not installed", fix="pip install chgnet"
            ) from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            "chgnet", package_version("chgnet"), f"CHGNet {self.model_arg}", {"dtype": "float32"}
        )

    def _make_calculator(self):
        import contextlib
        import io
        import warnings

        import torch  # noqa: F401

        configure_threads()
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if Path(self.model_arg).is_file():
                model = CHGNet.from_file(self.model_arg)
            else:
                model = CHGNet.load(model_name=self.model_arg, use_device="cpu", verbose=False)
            # loaded in training mode; its own predict_graph switches to eval, our direct calls must too
            model.eval()
            return CHGNetCalculator(
                model=model, use_device=_torch_device(self.device), stress_weight=1 / 160.21766208
            )

    #: reuse the perfect cell's graph while no atom moved more than this (Å); phonon displacements are 0.01 Å
    max_reuse_shift_a = 0.05

    def _graph(self, model, atoms):
        """CHGNet CrystalGraph for ``atoms``: the reference cell's graph with new coordinates when
        ``atoms`` is a slightly displaced copy of it, else a fresh graph (which becomes the reference)."""
        import torch
        from chgnet.graph.crystalgraph import CrystalGraph
        from pymatgen.io.ase import AseAtomsAdaptor

        if self._ref is not None:
            cache, ref = self._ref
            disp = cache.usable(atoms)
            if disp is not None:
                frac = cache.frac + disp @ np.linalg.inv(cache.cell)
                return CrystalGraph(
                    atomic_number=ref.atomic_number,
                    atom_frac_coord=torch.tensor(
                        frac, dtype=ref.atom_frac_coord.dtype, device=ref.atom_frac_coord.device
                    ),
                    atom_graph=ref.atom_graph,
                    atom_graph_cutoff=ref.atom_graph_cutoff,
                    neighbor_image=ref.neighbor_image,
                    directed2undirected=ref.directed2undirected,
                    undirected2directed=ref.undirected2directed,
                    bond_graph=ref.bond_graph,
                    bond_graph_cutoff=ref.bond_graph_cutoff,
                    lattice=ref.lattice,
                )
        graph = model.graph_converter(AseAtomsAdaptor.get_structure(atoms), graph_id="atomvib")
        if all(atoms.pbc):
            self._ref = (_GraphCache(atoms, self.max_reuse_shift_a), graph)
        return graph

    def prime_graph(self, atoms) -> None:
        """Make ``atoms`` the graph-reuse reference unless the current one already covers it: worker
        processes (engines/parallel.py) then reuse the graph this process would have, and give its forces."""
        if self._ref is not None and self._ref[0].usable(atoms) is not None:
            return
        self._graph(self.calculator().model, atoms)

    def _evaluate_here(self, atoms_list, progress=None, batch_size: int | None = None):
        """Energies and forces in this process from ``model(graphs, task="ef")``: no stress or magnetic
        moments, the perfect cell's graph reused for its displaced copies."""
        # CHGNet prints its device choice in some versions; keep stdout clean
        import contextlib
        import io

        from .base import Evaluation

        calc = self.calculator()
        model = calc.model
        device = next(model.parameters()).device
        bs = max(1, batch_size or self.batch_size or _default_batch_size(device))
        out = []
        with contextlib.redirect_stdout(io.StringIO()):
            for start in range(0, len(atoms_list), bs):
                chunk = atoms_list[start : start + bs]
                graphs = [self._graph(model, a).to(device) for a in chunk]
                pred = model(graphs, task="ef")
                energy = pred["e"].detach().cpu().numpy().astype(np.float64)
                # CHGNet's forces come with create_graph=True: a tensor left alive (even a loop variable)
                # keeps that call's whole autograd graph, and the next call's peak would hold two
                forces = [f.detach().cpu().numpy().astype(np.float64) for f in pred["f"]]
                del pred, graphs
                for a, f, e in zip(chunk, forces, energy):
                    # CHGNet's energy is per atom (intensive model); ours is per cell
                    e_cell = e * len(a) if model.is_intensive else e
                    out.append(Evaluation(energy=float(e_cell), forces=f))
                if progress:
                    progress(len(chunk))
        return out


class MACEEngine(Engine):
    """MACE from a model file the user has: ``mace:PATH`` (optional extra, float64)."""

    molecular = True

    def __init__(self, model: str | None = None, device: str | None = None):
        super().__init__()
        if not model:
            raise EngineError("MACE needs a model file", fix="use mace:/path/to/model.model")
        p = Path(model).expanduser()
        if not p.is_file():
            raise EngineUnavailable(
                f"MACE model file '{model}' not found",
                fix="download a MACE model (e.g. MACE-MP-0 from its GitHub releases) and pass mace:/path/to/file.model",
            )
        self.path = str(p.resolve())
        self.device = device
        try:
            import mace  # noqa: F401
        except ImportError:
            raise EngineUnavailable(
                "the 'mace-torch' package is not installed",
                fix="pip install 'atomvib[mace]' in a separate environment (mace-torch pins e3nn 0.4.4, sevenn needs >=0.5)",
            ) from None

    @property
    def info(self) -> EngineInfo:
        return EngineInfo("mace", package_version("mace-torch"), self.path, {"dtype": "float64"})

    def _make_calculator(self):
        import torch  # noqa: F401

        configure_threads()
        from mace.calculators import MACECalculator

        calc = MACECalculator(
            model_paths=self.path, device=_torch_device(self.device), default_dtype="float64"
        )
        from .graph_rewrite import optimise_model

        for model in getattr(calc, "models", []):  # e3nn kernels inside MACE get the same rewrite
            optimise_model(model)
        return calc
