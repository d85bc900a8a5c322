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

The speed paths that rely on other packages' internals (SevenNet's kernel rewrite and fused kernels, its
hand-built input graph, CHGNet's graph reuse) are guarded (engines/guards.py): used only with tested
package versions and after the fast path reproduced the stock forces on a probe cell at model load;
otherwise the stock code runs, with one :class:`~atomvib.engines.guards.SpeedPathFallback` warning, and
``info.kernel_path`` says which path ran.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np

from .. import units
from ..errors import EngineError, EngineUnavailable
from ..runtime import configure_threads
from . import guards
from .base import Engine, EngineInfo, Evaluation, file_sha256, package_version, package_versions
from .parallel import WorkerPool, pool_size, share_cells

#: environment variable holding the model files (resolved paths, ``os.pathsep``-separated) the user trusts in this
#: run; set by :func:`add_trusted_model_file` so that worker processes started afterwards (engine pools, Dask's local
#: workers) inherit the trust. Nothing else sets it.
TRUST_ENV = "ATOMVIB_TRUSTED_MODEL_FILES"
#: engines whose ``name:PATH`` is a model file loaded with pickle (torch.load(weights_only=False) inside
#: sevenn, chgnet, mace): loaded only when trusted. Their bundled models (SevenNet-0, CHGNet 0.3.0) are trusted.
PICKLED_MODEL_ENGINES = ("sevennet", "chgnet", "mace")


def _resolved(path) -> str:
    return str(Path(path).expanduser().resolve())


def add_trusted_model_file(path) -> None:
    """Trust the model file ``path`` for the rest of this process and the worker processes it starts: engines then
    load it although that unpickles it (which can run any code the file holds). CLI: ``--trust-model-file``."""
    p = _resolved(path)
    trusted = [t for t in os.environ.get(TRUST_ENV, "").split(os.pathsep) if t]
    if p not in trusted:
        os.environ[TRUST_ENV] = os.pathsep.join([*trusted, p])


def model_file_trusted(path) -> bool:
    """Whether the user said to trust the model file ``path`` (:func:`add_trusted_model_file`)."""
    return _resolved(path) in os.environ.get(TRUST_ENV, "").split(os.pathsep)


def untrusted_model_file_error(engine: str, path) -> EngineError:
    """The one-line refusal of a user model file that was not trusted."""
    return EngineError(
        f"{engine}:{path}: loading this model file unpickles it, which can run any code the file holds; "
        "not loaded without --trust-model-file",
        fix=f"add --trust-model-file (API: get_engine('{engine}:PATH', trust_model_file=True)) if you trust "
        "where the file came from",
    )


#: CHGNet versions whose weights ship inside the chgnet package (trusted, loaded from there, never from a file of
#: that name in the working directory)
BUNDLED_CHGNET = ("0.3.0", "0.2.0")

#: SevenNet models shipped inside the sevenn package (trusted; loaded by their absolute path inside the package, so
#: a file named like them in the working directory is never read)
_BUNDLED_SEVENNET = {
    "7net-0": "SevenNet_0__11Jul2024",
    "sevennet-0": "SevenNet_0__11Jul2024",
    "7net-0_11july2024": "SevenNet_0__11Jul2024",
    "7net-l3i5": "SevenNet_l3i5",
    "sevennet-l3i5": "SevenNet_l3i5",
    "7net-mf-0": "SevenNet_MF_0",
    "sevennet-mf-0": "SevenNet_MF_0",
}

#: Multi-fidelity bundled models: their heads (``modal`` of sevenn's calculator, spelled as in the checkpoint's
#: modal map) and the head used when the spec names none. SevenNet-MF-0 was trained on MPtrj (PBE/PBE+U) and
#: MP-r2SCAN with one output head per functional; PBE is the default because SevenNet-0, l3i5 and CHGNet are
#: trained on PBE data, so the default compares like with like (``sevennet:7net-mf-0:r2scan`` for the other).
SEVENNET_HEADS: dict[str, tuple[tuple[str, ...], str]] = {"SevenNet_MF_0": (("PBE", "R2SCAN"), "PBE")}


def parse_sevennet_model(arg: str | None) -> tuple[str, str | None]:
    """``(model, head)`` of the argument of a ``sevennet:`` spec: ``7net-mf-0:r2scan`` → ``('7net-mf-0',
    'r2scan')``, ``7net-0`` → ``('7net-0', None)``, ``/path/ckpt.pth:pbe`` → ``('/path/ckpt.pth', 'pbe')`` (a head
    is split off only where what precedes it is a bundled name or an existing file)."""
    arg = (arg or "7net-0").strip()
    base, sep, head = arg.rpartition(":")
    # bundled names first: a file named like one in the working directory is never what they mean
    if arg.lower() in _BUNDLED_SEVENNET:
        return arg, None
    if sep and head and base.lower() in _BUNDLED_SEVENNET:
        return base, head
    if Path(arg).expanduser().is_file():
        return arg, None
    if sep and head and Path(base).expanduser().is_file():
        return base, head
    return arg, None


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


def _probe_cell(available=None):
    """The guards' probe (engines/guards.py): a 2-atom rock-salt cell, atoms off their sites so that
    forces are O(0.1) eV/Å; Na/Cl, or the first two elements of ``available`` (atomic numbers) when a
    model lacks them. Same cell every time: the probe is deterministic."""
    from ase import Atoms

    zs = sorted({int(z) for z in available}) if available is not None else [11, 17]
    pair = (11, 17) if {11, 17} <= set(zs) else (zs[0], zs[min(1, len(zs) - 1)])
    a = 5.64
    cell = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    pos = np.array([[0.03, -0.02, 0.01], [0.5 * a - 0.01, 0.02, 0.04]])
    return Atoms(numbers=list(pair), positions=pos, cell=cell, pbc=True)


class _PooledMixin:
    """Worker-pool support (engines/parallel.py): on CPU with ≥ 2 cores and enough cells, ``evaluate``
    shares the cells between this process and spawned workers, one torch thread each; the workers are
    kept on the engine for later calls. Engines implement ``_evaluate_here`` and ``_worker_factory``."""

    uses_worker_pool = True
    _pool: WorkerPool | None = None
    #: atoms × cells that pay for starting a worker pool; None = engines/parallel.py's default
    pool_min_cell_atoms: int | None = None

    def resolved_device(self) -> str:
        """Where this engine's model runs (or will run): "cpu" or "cuda[:n]"."""
        if self._calc is not None:
            return str(next(self._calc.model.parameters()).device)
        return _torch_device(self.device)

    def _worker_factory(self):
        """A picklable callable that builds this engine (same model and code path) in a worker process."""
        raise NotImplementedError

    def evaluate(self, atoms_list, progress=None, batch_size: int | None = None):
        """Energies and forces of ``atoms_list``: through the worker pool where it pays (CPU, large jobs),
        else in this process (:meth:`_evaluate_here`), ``batch_size`` cells per forward pass (default
        1 on CPU, 8 on CUDA)."""
        if atoms_list:
            warm = self._pool is not None and self._pool.alive
            lanes = pool_size(
                len(atoms_list), max(len(a) for a in atoms_list), self.resolved_device(), warm,
                self.pool_min_cell_atoms,
            )  # fmt: skip
            if lanes:
                if not warm or self._pool.workers != lanes - 1:  # this process is one of the lanes
                    self.close_pool()
                    self._pool = WorkerPool(self._worker_factory(), lanes - 1, threads=1, name=self.spec)
                return share_cells(
                    self._pool, atoms_list, progress, local=self._evaluate_here,
                    prime=getattr(self, "prime_graph", None),
                )  # fmt: skip
        return self._evaluate_here(atoms_list, progress, batch_size)

    def close_pool(self) -> None:
        """Stop the worker processes, if any (they also stop at interpreter exit)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class SevenNetEngine(_PooledMixin, Engine):
    """SevenNet: ``sevennet`` (SevenNet-0, bundled), ``sevennet:7net-l3i5`` (bundled) or ``sevennet:PATH``.

    ``rewrite_graphs`` / ``fused_kernels`` (default: the class attributes) switch atomvib's speed paths
    off; where they are on, the load decides (engines/guards.py) and ``info.kernel_path`` records
    'fused', 'rewritten' (numba missing or outside its tested range), 'cuda-batched' (rewritten kernels on
    a GPU, several cells per forward pass) or 'stock'.
    """

    molecular = False
    #: atoms × cells that pay for starting a worker pool (engines/parallel.py): measured on 2 cores, 144-atom
    #: cells, with the fused kernels (which scale 1.76× from 1 to 2 threads) 2 lanes of 1 thread gain 12 %
    #: per cell (0.223 / 2 vs 0.127 s) over one process with 2 threads; a cold start costs 2–3 s
    pool_min_cell_atoms = 23000

    #: rewrite e3nn's generated kernels for CPU speed at load (engines/graph_rewrite.py; same arithmetic)
    rewrite_graphs = True
    #: run the convolutions in atomvib's fused CPU kernels where numba is installed (engines/fused_tp.py)
    fused_kernels = True

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        *,
        rewrite_graphs: bool | None = None,
        fused_kernels: bool | None = None,
        trust_model_file: bool = False,
    ):
        super().__init__()
        self.model_arg, head = parse_sevennet_model(model)
        self.device = device
        if rewrite_graphs is not None:
            self.rewrite_graphs = rewrite_graphs
        if fused_kernels is not None:
            self.fused_kernels = fused_kernels
        #: cells per forward pass; None = 1 on CPU, CUDA_BATCH_SIZE on CUDA
        self.batch_size: int | None = None
        self._verlet: _VerletList | None = None
        self._kernel_path = ""  # decided at load
        self._hand_built_graph = True  # Verlet-list input dicts; off when sevenn is outside the tested range
        self._sha256: str | None = None
        key = self.model_arg.lower()
        if key in _BUNDLED_SEVENNET:
            self._model_id = _BUNDLED_SEVENNET[key]
            self._source = key
            self._file: str | None = None  # resolved by sevenn (_weights_file)
        else:
            p = Path(self.model_arg).expanduser()
            if not p.is_file():
                raise EngineUnavailable(
                    f"SevenNet model '{self.model_arg}' is neither a bundled model nor a file",
                    fix="use 'sevennet' (SevenNet-0, bundled) or download the checkpoint yourself and pass sevennet:/path/to/checkpoint.pth",
                )
            if not (trust_model_file or model_file_trusted(p)):  # sevenn unpickles checkpoints (code can run)
                raise untrusted_model_file_error("sevennet", self.model_arg)
            self._model_id = str(p.resolve())
            self._source = str(p.resolve())
            self._file = self._source
        #: the model's output head (sevenn's ``modal``) for multi-fidelity models, as the checkpoint spells it; None
        #: for single-head models. Bundled: checked here; a user's file: checked against its modal map at load.
        self.head: str | None = None
        heads, default_head = SEVENNET_HEADS.get(self._model_id, ((), None))
        if heads:
            want = head or default_head
            match = [h for h in heads if h.lower() == want.lower()]
            if not match:
                raise EngineError(
                    f"SevenNet model '{self.model_arg}' has no head '{want}'",
                    fix=f"use one of {', '.join(f'sevennet:{self.model_arg}:{h.lower()}' for h in heads)}",
                )
            self.head = match[0]
        elif head is not None:
            if self._file is None:  # a bundled single-head model
                raise EngineError(
                    f"SevenNet model '{self.model_arg}' has a single head; ':{head}' does not apply",
                    fix=f"use sevennet:{self.model_arg}",
                )
            self.head = head  # a user's checkpoint: resolved against its modal map at load
        #: the spec's argument that recreates this engine (model and head)
        self._source_arg = self._source + (f":{self.head.lower()}" if self.head else "")
        #: registry spec that recreates this engine (``get_engine(spec)``; also names its worker pool)
        self.spec = f"sevennet:{self._source_arg}"
        try:
            import sevenn  # noqa: F401
        except ImportError:
            raise EngineUnavailable(
                "the 'sevenn' package is not installed", fix="pip install sevenn"
            ) from None

    def _weights_file(self) -> str:
        """The checkpoint sevenn loads for this model (bundled: inside the sevenn package)."""
        if self._file is None:
            from sevenn.util import pretrained_name_to_path

            self._file = str(Path(pretrained_name_to_path(self._source)).resolve())
        return self._file

    def model_sha256(self) -> str:
        """sha256 of the checkpoint file (computed once per engine, ~30 ms for SevenNet-0's 10 MB)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self._weights_file())
        return self._sha256

    @property
    def info(self) -> EngineInfo:
        packages = ["torch", "e3nn", "sevenn"] + (["numba"] if self._kernel_path == "fused" else [])
        settings = {"dtype": "float32"}
        if self.head:
            settings["head"] = self.head
        return EngineInfo(
            name="sevennet",
            version=package_version("sevenn"),
            spec=self.spec,
            model=self._model_id + (f":{self.head}" if self.head else ""),
            model_sha256=self.model_sha256(),
            packages=package_versions(*packages),
            kernel_path=self._kernel_path,
            settings=settings,
        )

    def _worker_factory(self):
        # a user's model file was trusted when this engine was made (else it would not exist): so in the workers
        if not self._kernel_path:  # not loaded yet: the workers' guards decide as this process's will
            return functools.partial(SevenNetEngine, self._source_arg, "cpu", trust_model_file=True)
        return functools.partial(
            SevenNetEngine, self._source_arg, "cpu",
            rewrite_graphs=self._kernel_path != "stock", fused_kernels=self._kernel_path == "fused",
            trust_model_file=True,
        )  # fmt: skip

    def _stock_calculator(self):
        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sevenn's notice that no CUDA accelerator is enabled
            # the checkpoint's absolute path, never the model's name: sevenn would take a file of that name in the
            # working directory first (and unpickle it)
            try:
                return SevenNetCalculator(self._weights_file(), device=_torch_device(self.device), modal=self.head)
            except ValueError as exc:  # a user's multi-head checkpoint without a head, or with an unknown one
                if "modal" not in str(exc):
                    raise
                raise EngineError(
                    f"SevenNet model {self.model_arg}: {exc}", fix=f"name the head: sevennet:{self.model_arg}:HEAD"
                ) from None

    def _make_calculator(self):
        configure_threads()
        calc = self._stock_calculator()
        self.elements = frozenset(_atomic_numbers(calc.type_map))
        want = self._wanted_path(calc)
        graph_problems = guards.version_problems("sevennet-graph")
        self._hand_built_graph = not graph_problems
        calc, self._kernel_path, reasons = self._choose_kernels(calc, want)
        reasons = list(dict.fromkeys(reasons + graph_problems))  # one warning, each reason once
        if reasons:
            used = "rewritten" if self._kernel_path == "cuda-batched" else self._kernel_path
            guards.warn_fallback("sevennet", want if want != "stock" else "input-graph", reasons, used)
        return calc

    def _wanted_path(self, calc) -> str:
        """The fastest kernel path this engine would use: 'fused', 'rewritten' or 'stock'."""
        import torch

        from . import fused_tp

        if not self.rewrite_graphs or not isinstance(calc.model, torch.nn.Module):
            return "stock"
        on_cpu = next(calc.model.parameters()).device.type == "cpu"
        return "fused" if self.fused_kernels and fused_tp.HAVE_NUMBA and on_cpu else "rewritten"

    def _choose_kernels(self, calc, want: str):
        """(calculator, kernel path, reasons for not taking the wanted path): the guards of
        engines/guards.py around engines/graph_rewrite.py.

        Cost of the probe (SevenNet-0, 1 thread, 2-atom cell, 50 edges), measured: 17 ms for the stock
        call and 8 ms for the fast one, plus ~0.13 s on the first fused call to load the kernels from
        numba's on-disk cache (~4 s to compile them the first time on a machine), which the first
        evaluation would pay anyway. On disagreement the stock model is loaded again (~1 s).
        """
        from .graph_rewrite import optimise_model

        if want == "stock":
            return calc, "stock", []
        reasons = guards.version_problems("rewritten")
        if reasons:
            return calc, "stock", reasons
        if want == "fused":
            reasons = guards.version_problems("fused")  # what remains: numba
            if reasons:
                want = "rewritten"
        probe = _probe_cell(_atomic_numbers(calc.type_map))
        stock = self._probe_forces(calc, probe)  # before the model is changed in place
        counts = optimise_model(calc.model, fused=want == "fused")
        if want == "fused" and counts["fused"] == 0:  # no convolution the fused kernels support
            want = "rewritten"
        disagreement = guards.force_disagreement(lambda: stock, lambda: self._probe_forces(calc, probe))
        if disagreement:
            return self._stock_calculator(), "stock", reasons + [disagreement]
        on_cuda = next(calc.model.parameters()).device.type == "cuda"
        return calc, "cuda-batched" if on_cuda else want, reasons

    @staticmethod
    def _probe_forces(calc, atoms) -> np.ndarray:
        """Forces of ``calc.model`` on ``atoms`` through sevenn's own graph builder (the public route)."""
        from sevenn import _keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        device = next(calc.model.parameters()).device
        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, calc.cutoff))
        if calc.modal:  # a multi-fidelity model's head, as sevenn's calculator sets it
            data[KEY.DATA_MODALITY] = calc.modal
        return calc.model(data.to(device))[KEY.PRED_FORCE].detach().cpu().numpy()

    def check(self, structure) -> None:
        self.calculator()  # element coverage is known once the model is loaded
        super().check(structure)

    #: Verlet skin (Å): reused while no atom moved more than half of it from the perfect cell
    skin_a = 0.5

    def _graph(self, atoms, cutoff):
        """SevenNet's input dict for ``atoms``, from the cached Verlet list where it applies."""
        from sevenn import _keys as KEY
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        if not self._hand_built_graph:  # sevenn outside the tested range: its own graph builder
            return unlabeled_atoms_to_graph(atoms, cutoff)
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
            KEY.CELL_VOLUME: np.array(atoms.cell.volume),  # 0-d arrays, as unlabeled_atoms_to_graph gives
            KEY.NUM_ATOMS: np.array(len(z)),
            KEY.INFO: {},
        }

    def _evaluate_here(self, atoms_list, progress=None, batch_size: int | None = None):
        """Energies and forces in this process, calling the model directly (no ASE results dict, no
        calculator round trip), with the neighbour graph reused across displaced copies of one cell."""
        from sevenn import _keys as KEY
        from sevenn.atom_graph_data import AtomGraphData

        calc = self.calculator()
        model, cutoff = calc.model, calc.cutoff
        device = next(model.parameters()).device
        bs = max(1, batch_size or self.batch_size or _default_batch_size(device))
        out = []
        for start in range(0, len(atoms_list), bs):
            chunk = atoms_list[start : start + bs]
            graphs = [AtomGraphData.from_numpy_dict(self._graph(a, cutoff)) for a in chunk]
            if calc.modal:  # a multi-fidelity model's head (a list of them once batched), as sevenn's calculator
                for g in graphs:
                    g[KEY.DATA_MODALITY] = calc.modal
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
    """CHGNet (version 0.3.0 weights, bundled in the ``chgnet`` package). float32 only.

    The model's code is CHGNet's own (``info.kernel_path`` 'stock'); the speed path is the reuse of the
    perfect cell's graph for its displaced copies, guarded at load (engines/guards.py) and recorded in
    ``info.settings['graph_reuse']``.
    """

    molecular = False
    elements = frozenset(range(1, 95))
    #: atoms × cells that pay for starting a worker pool (engines/parallel.py): measured on 2 cores, 144-atom
    #: cells, 2 lanes of 1 thread gain 19 % per cell over one process with 2 threads, start-up costs ~2.2 s
    pool_min_cell_atoms = 5500
    #: reuse the perfect cell's graph for displaced copies (if the guards allow it at load)
    reuse_graphs = True

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        *,
        reuse_graphs: bool | None = None,
        trust_model_file: bool = False,
    ):
        super().__init__()
        self.model_arg = model or "0.3.0"
        self.device = device
        if reuse_graphs is not None:
            self.reuse_graphs = reuse_graphs
        #: cells per forward pass; None = 1 on CPU, CUDA_BATCH_SIZE on CUDA
        self.batch_size: int | None = None
        self._ref: tuple[_GraphCache, object] | None = None
        self._graph_reuse: bool | None = None  # decided at load
        self._sha256: str | None = None
        # a bundled version's name is never taken for a file of that name in the working directory
        is_file = self.model_arg not in BUNDLED_CHGNET and Path(self.model_arg).expanduser().is_file()
        if is_file and not (trust_model_file or model_file_trusted(self.model_arg)):
            raise untrusted_model_file_error("chgnet", self.model_arg)  # CHGNet.from_file unpickles it
        #: the user's model file, resolved (None for the bundled models)
        self.model_file: str | None = str(Path(self.model_arg).expanduser().resolve()) if is_file else None
        self._weights: str | None = self.model_file  # the weights file loaded (bundled: found on demand)
        #: registry spec that recreates this engine (``get_engine(spec)``; also names its worker pool)
        self.spec = "chgnet:" + (self.model_file or self.model_arg)
        if self.model_arg not in BUNDLED_CHGNET and not is_file:
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

    def _weights_file(self) -> str:
        """The weights file: the user's, or the one ``CHGNet.load`` takes from ``chgnet/pretrained/<version>/``."""
        if self._weights is None:
            import chgnet

            found = sorted((Path(chgnet.__file__).parent / "pretrained" / self.model_arg).glob("*.pth.tar"))
            self._weights = str(found[0].resolve()) if len(found) == 1 else ""
        return self._weights

    def model_sha256(self) -> str:
        """sha256 of the weights file (computed once per engine); "" if it cannot be told which file."""
        if self._sha256 is None:
            path = self._weights_file()
            self._sha256 = file_sha256(path) if path else ""
        return self._sha256

    @property
    def info(self) -> EngineInfo:
        settings: dict = {"dtype": "float32"}
        if self._graph_reuse is not None:
            settings["graph_reuse"] = self._graph_reuse
        return EngineInfo(
            name="chgnet",
            version=package_version("chgnet"),
            spec=self.spec,
            model=self.model_file or f"CHGNet {self.model_arg}",
            model_sha256=self.model_sha256(),
            packages=package_versions("torch", "chgnet", "pymatgen"),
            kernel_path="stock" if self.loaded else "",
            settings=settings,
        )

    def _worker_factory(self):
        # not loaded yet (None): the workers' guards decide as this process's will
        # (a user's model file was trusted when this engine was made, else it would not exist)
        return functools.partial(
            CHGNetEngine, self.spec.partition(":")[2], "cpu", reuse_graphs=self._graph_reuse, trust_model_file=True
        )

    def _make_calculator(self):
        import contextlib
        import io

        import torch  # noqa: F401

        configure_threads()
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if self.model_file:
                model = CHGNet.from_file(self.model_file)
            else:
                model = CHGNet.load(model_name=self.model_arg, use_device="cpu", verbose=False)
            # loaded in training mode; its own predict_graph switches to eval, our direct calls must too
            model.eval()
            calc = CHGNetCalculator(
                model=model, use_device=_torch_device(self.device), stress_weight=1 / units.EV_PER_A3_TO_GPA
            )
        self._graph_reuse = False
        if self.reuse_graphs:
            reasons = guards.version_problems("chgnet-graph-reuse") or self._probe_graph_reuse(calc.model)
            self._graph_reuse = not reasons
            if reasons:
                guards.warn_fallback("chgnet", "graph-reuse", reasons, "stock")
        return calc

    def _probe_graph_reuse(self, model) -> list[str]:
        """[] if a displaced copy of the probe cell gets the forces of a fresh graph through the reused
        graph, else why not. Cost: two 2-atom CHGNet calls and two graph builds, measured 11 ms."""
        import contextlib
        import io

        probe = _probe_cell()
        moved = probe.copy()
        moved.positions += np.array([[0.01, 0.0, 0.0], [0.0, -0.006, 0.008]])  # a phonon-like 0.01 Å step

        def forces(graph):
            with contextlib.redirect_stdout(io.StringIO()):
                device = next(model.parameters()).device
                return model([graph.to(device)], task="ef")["f"][0].detach().cpu().numpy()

        def reused():
            self._ref = None
            self._graph(model, probe, reuse=True)  # the reference
            return forces(self._graph(model, moved, reuse=True))

        try:
            why = guards.force_disagreement(lambda: forces(self._graph(model, moved, reuse=False)), reused)
        finally:
            self._ref = None
        return [why] if why else []

    #: reuse the perfect cell's graph while no atom moved more than this (Å); phonon displacements are 0.01 Å
    max_reuse_shift_a = 0.05

    def _graph(self, model, atoms, reuse: bool | None = None):
        """CHGNet CrystalGraph for ``atoms``: the reference cell's graph with new coordinates when
        ``atoms`` is a slightly displaced copy of it, else a fresh graph (which becomes the reference).
        ``reuse``: default whether the load's guards allowed it; False = always CHGNet's own converter."""
        import torch
        from chgnet.graph.crystalgraph import CrystalGraph
        from pymatgen.io.ase import AseAtomsAdaptor

        if reuse is None:
            reuse = bool(self._graph_reuse)
        if not reuse:
            return model.graph_converter(AseAtomsAdaptor.get_structure(atoms), graph_id="atomvib")
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
        model = self.calculator().model
        if not self._graph_reuse or (self._ref is not None and self._ref[0].usable(atoms) is not None):
            return
        self._graph(model, atoms)

    def _evaluate_here(self, atoms_list, progress=None, batch_size: int | None = None):
        """Energies and forces in this process from ``model(graphs, task="ef")``: no stress or magnetic
        moments, the perfect cell's graph reused for its displaced copies."""
        # CHGNet prints its device choice in some versions; keep stdout clean
        import contextlib
        import io

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

    def __init__(self, model: str | None = None, device: str | None = None, *, trust_model_file: bool = False):
        super().__init__()
        if not model:
            raise EngineError("MACE needs a model file", fix="use mace:/path/to/model.model")
        p = Path(model).expanduser()
        if not p.is_file():
            raise EngineUnavailable(
                f"MACE model file '{model}' not found",
                fix="download a MACE model (e.g. MACE-MP-0 from its GitHub releases) and pass mace:/path/to/file.model",
            )
        if not (trust_model_file or model_file_trusted(p)):  # MACE model files are pickled torch modules
            raise untrusted_model_file_error("mace", model)
        self.path = str(p.resolve())
        self.device = device
        self._kernel_path = ""  # decided at load
        self._sha256: str | None = None
        try:
            import mace  # noqa: F401
        except ImportError:
            raise EngineUnavailable(
                "the 'mace-torch' package is not installed",
                fix="pip install 'atomvib[mace]' in a separate environment (mace-torch pins e3nn 0.4.4, sevenn needs >=0.5)",
            ) from None

    @property
    def info(self) -> EngineInfo:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return EngineInfo(
            name="mace",
            version=package_version("mace-torch"),
            spec=f"mace:{self.path}",
            model=self.path,
            model_sha256=self._sha256,
            packages=package_versions("torch", "e3nn", "mace-torch"),
            kernel_path=self._kernel_path,
            settings={"dtype": "float64"},
        )

    def _new_calculator(self):
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=self.path, device=_torch_device(self.device), default_dtype="float64")

    def _make_calculator(self):
        """The MACE calculator, its e3nn kernels rewritten (engines/graph_rewrite.py) where the guards
        allow: tested e3nn/torch versions, and the same forces as the stock model on a probe cell of the
        model's own elements."""
        import torch  # noqa: F401

        configure_threads()
        calc = self._new_calculator()
        self._kernel_path = "stock"
        reasons = guards.version_problems("mace-rewritten")
        if not reasons:
            from .graph_rewrite import optimise_model

            try:
                zs = [int(z) for z in calc.z_table.zs]
                probe = _probe_cell(zs)
            except (AttributeError, TypeError, ValueError, IndexError) as exc:
                probe, reasons = None, [f"no probe cell for this model ({type(exc).__name__}: {exc})"]
            if probe is not None:
                stock = _calculator_forces(calc, probe)
                for model in getattr(calc, "models", []):  # e3nn kernels inside MACE get the same rewrite
                    optimise_model(model)
                why = guards.force_disagreement(lambda: stock, lambda: _calculator_forces(calc, probe))
                if why:
                    reasons, calc = [why], self._new_calculator()
                else:
                    self._kernel_path = "rewritten"
        if reasons:
            guards.warn_fallback("mace", "rewritten", reasons, "stock")
        return calc


def _calculator_forces(calc, atoms) -> np.ndarray:
    a = atoms.copy()
    calc.reset()
    a.calc = calc
    forces = np.array(a.get_forces(), dtype=np.float64)
    calc.reset()
    return forces
