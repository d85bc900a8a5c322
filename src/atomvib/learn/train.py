"""Training the DOS predictor: a seeded deep ensemble, calibrated and with an out-of-distribution gate.

PyTorch does the optimisation; we wrote the loop because it is short and must be reproducible on
2 CPU cores (one thread per member, members optionally in parallel processes). Graphs are built once
and kept in memory. Model selection (best epoch) and calibration use only the ``valid`` split.

Loss per crystal, on the DOS normalised per atom (p sums to 1):
Wasserstein-1 distance (|CDF difference| integrated, in units of 100 cm^-1)
+ 10 × squared error of the binned p + 10 × |error of Cv(300 K)/3Nk_B|. Non-negativity and the 3N
normalisation need no loss term: the network enforces them by construction.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..units import GAS_CONSTANT_J_PER_K_PER_MOL
from .data import CUTOFF_A, DosGrid, DosSample, build_graph, read_dataset
from .ensemble import Z90, disagreement, nn_distance, thermal_kernels

#: temperature of the Cv loss term and the headline metric, K
T_CV_K = 300.0


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one ensemble member (the shipped model uses the defaults)."""

    hidden: str = "128x0e + 32x1o"
    ninteractions: int = 4
    cutoff_a: float = CUTOFF_A
    nscalars_out: int = 128
    emb_dim: int = 64
    nbasis: int = 16
    bin_cm1: float = 5.0
    fmax_cm1: float = 4000.0
    epochs: int = 70
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-5
    w_mse: float = 10.0
    w_cv: float = 10.0
    #: exponential moving average of the weights (per step); the averaged weights are validated and kept
    ema_decay: float = 0.995

    def grid(self) -> DosGrid:
        return DosGrid(self.bin_cm1, self.fmax_cm1)


def cv_per_state(centers_cm1, temperature_k=T_CV_K) -> np.ndarray:
    """Heat capacity (J/K/mol) contributed by one state at each frequency, shape (nbins,).

    The Cv row of :func:`atomvib.learn.ensemble.thermal_kernels` (the kernels the predictor uses), so
    ``states @ cv`` equals what ``thermal_from_dos`` gives on the bin centres.
    """
    return thermal_kernels(centers_cm1, [temperature_k])[0][0]


def _tensors(samples, cfg):
    import torch

    graphs = [build_graph(s.structure, cfg.cutoff_a) for s in samples]
    y = torch.as_tensor(np.stack([s.states_per_bin for s in samples]), dtype=torch.float32)
    return graphs, y


def _loss(pred, y, natoms, cvvec, cfg):
    import torch

    p = pred / (3.0 * natoms[:, None])
    t = y / (3.0 * natoms[:, None])
    d = p - t
    # W1 as in atomvib.spectra.compare.wasserstein, written in torch for the gradient
    w = torch.cumsum(d, dim=1).abs().sum(1) * cfg.bin_cm1 / 100.0
    mse = (d**2).sum(1)
    cv = (d @ cvvec).abs() / (3.0 * GAS_CONSTANT_J_PER_K_PER_MOL)
    return (w + cfg.w_mse * mse + cfg.w_cv * cv).mean(), w.mean() * 100.0


def train_member(train, valid, cfg: TrainConfig, seed: int, out_path=None, progress=True, log=None) -> dict:
    """Train one ensemble member; keep the epoch with the lowest valid Wasserstein distance.

    Returns a dict with ``state_dict``, ``config`` (model), ``seed``, ``best_epoch``, ``history``.
    """
    import torch

    from ..spectra.compare import wasserstein
    from .model import DosNet, collate, predict_states

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    grid = cfg.grid()
    gtr, ytr = train if isinstance(train, tuple) else _tensors(train, cfg)
    gva, yva = valid if isinstance(valid, tuple) else _tensors(valid, cfg)
    ntr = torch.as_tensor([len(g.numbers) for g in gtr], dtype=torch.float32)
    avg_nb = float(np.mean([len(g.src) / len(g.numbers) for g in gtr]))
    model = DosNet(
        grid.nbins,
        hidden=cfg.hidden,
        ninteractions=cfg.ninteractions,
        cutoff_a=cfg.cutoff_a,
        nscalars_out=cfg.nscalars_out,
        avg_neighbors=avg_nb,
        emb_dim=cfg.emb_dim,
        nbasis=cfg.nbasis,
    )
    cvvec = torch.as_tensor(cv_per_state(grid.centers_cm1), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    nsteps = cfg.epochs * math.ceil(len(gtr) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=nsteps, pct_start=0.05, final_div_factor=200.0
    )
    ema = None
    if cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    kept = ema.module if ema is not None else model
    best = (math.inf, None, -1)
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, desc=f"member seed {seed}", unit="epoch")
    cvv = cvvec.numpy().astype(float)
    yv = yva.numpy().astype(float)
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.time()
        order = rng.permutation(len(gtr))
        tot = 0.0
        for k in range(0, len(order), cfg.batch_size):
            idx = order[k : k + cfg.batch_size]
            b = collate([gtr[i] for i in idx])
            loss, _ = _loss(model(b), ytr[idx], ntr[idx], cvvec, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            tot += float(loss.detach()) * len(idx)
        pv = predict_states(kept, gva)
        w = wasserstein(grid.centers_cm1, pv, yv)  # cm^-1, per crystal
        cv_err = np.abs((pv - yv) @ cvv)  # per cell, J/K/mol
        rec = {
            "epoch": epoch + 1,
            "train_loss": tot / len(gtr),
            "valid_wasserstein_cm1": float(w.mean()),
            "valid_cv300_mae_per_cell": float(cv_err.mean()),
            "seconds": time.time() - t0,
        }
        history.append(rec)
        if rec["valid_wasserstein_cm1"] < best[0]:
            best = (
                rec["valid_wasserstein_cm1"],
                {k: v.clone() for k, v in kept.state_dict().items()},
                epoch + 1,
            )
        msg = f"W {rec['valid_wasserstein_cm1']:.1f} cm-1, Cv err {rec['valid_cv300_mae_per_cell']:.2f} J/K/mol/cell"
        if bar is not None:
            bar.set_postfix_str(msg)
            bar.update(1)
        if log is not None:
            print(json.dumps({"seed": seed, **rec}), file=log, flush=True)
    if bar is not None:
        bar.close()
    res = {
        "state_dict": best[1],
        "config": kept.config,
        "seed": seed,
        "best_epoch": best[2],
        "history": history,
        "train_config": cfg.__dict__,
    }
    if out_path is not None:
        from .modelfile import save_torch_file

        save_torch_file(res, out_path)  # plain tensors and values: loads with weights_only=True
    return res


def _member_job(args):
    data, out, cfg_dict, seed, k = args
    import torch

    torch.set_num_threads(1)
    cfg = TrainConfig(**cfg_dict)
    grid = cfg.grid()
    tr = read_dataset(data, "train", grid)
    va = read_dataset(data, "valid", grid)
    with open(Path(out) / f"member_{k}.log", "a") as log:
        train_member(tr, va, cfg, seed, Path(out) / f"member_{k}.pt", progress=False, log=log)
    return k


def train(
    data,
    out,
    members: int = 5,
    seed: int = 0,
    cfg: TrainConfig | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> Path:
    """Train an ensemble on ``data`` (Petretto-style directory or atomvib results) and write ``out/model.pt``.

    Members already present in ``out`` (``member_K.pt`` with the same config) are reused, so an
    interrupted run resumes. Member k uses seed ``seed + k``. With ``jobs > 1`` members train in
    parallel processes (one thread each).
    """
    cfg = cfg or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = cfg.grid()
    todo = []
    for k in range(members):
        p = out / f"member_{k}.pt"
        if p.exists():
            old = _load_member(p)
            if old.get("train_config") == cfg.__dict__ and old.get("seed") == seed + k:
                continue
        todo.append(k)
    train_s = read_dataset(data, "train", grid)
    valid_s = _valid_or_split(data, grid, train_s)
    if isinstance(valid_s, tuple):  # own results without a valid split: hold out every 10th
        train_s, valid_s = valid_s
    if jobs > 1 and todo and (Path(data) / "train.jsonl.gz").exists():
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(jobs, len(todo))) as pool:
            it = pool.imap_unordered(
                _member_job, [(str(data), str(out), cfg.__dict__, seed + k, k) for k in todo]
            )
            if progress:
                from tqdm.auto import tqdm

                it = tqdm(it, total=len(todo), desc="ensemble members")
            for _ in it:
                pass
    else:
        trt, vat = _tensors(train_s, cfg), _tensors(valid_s, cfg)
        for k in todo:
            with open(out / f"member_{k}.log", "a") as log:
                train_member(trt, vat, cfg, seed + k, out / f"member_{k}.pt", progress=progress, log=log)
    return assemble(out, members, train_s, valid_s, cfg)


def _valid_or_split(data, grid, train_s):
    p = Path(data)
    if (p / "valid.jsonl.gz").exists():
        return read_dataset(p, "valid", grid)
    if len(train_s) < 2:
        raise InputError(
            f"{data}: need at least 2 results to train", fix="add more `atomvib phonons` results"
        )
    va = train_s[::10]
    tr = [s for k, s in enumerate(train_s) if k % 10]
    return tr, va


def _load_member(path: Path) -> dict:
    """A member checkpoint, read with ``torch.load(weights_only=True)``: a file that needs pickle (planted, or
    written by an older atomvib) is refused with one line instead of being unpickled (which can run code)."""
    from ..errors import InputError
    from .modelfile import load_torch_file

    try:
        m = load_torch_file(path, what="ensemble member")
    except InputError as exc:
        raise InputError(
            exc.problem,
            fix=f"delete {path} (the member is trained again), or train into a new --out directory",
        ) from None
    if not isinstance(m, dict) or not isinstance(m.get("state_dict"), dict):
        raise InputError(
            f"{path}: not an ensemble member written by `atomvib train`",
            fix=f"delete {path} (the member is trained again), or train into a new --out directory",
        )
    return m


def assemble(out, members, train_s: list[DosSample], valid_s: list[DosSample], cfg: TrainConfig) -> Path:
    """Combine trained members into ``model.pt``: calibration and OOD thresholds from ``valid``."""
    from .model import DosNet, predict_states
    from .modelfile import save_model

    out = Path(out)
    states, cfgs = [], []
    for k in range(members):
        m = _load_member(out / f"member_{k}.pt")
        states.append(m["state_dict"])
        cfgs.append({k2: m[k2] for k2 in ("config", "seed", "best_epoch")})
    nets = []
    for st, c in zip(states, cfgs):
        net = DosNet(**c["config"])
        net.load_state_dict(st)
        nets.append(net)
    gtr = [build_graph(s.structure, cfg.cutoff_a) for s in train_s]
    gva = [build_graph(s.structure, cfg.cutoff_a) for s in valid_s]
    _, emb_tr = predict_states(nets[0], gtr, return_embedding=True)
    pv, emb_va = zip(*[predict_states(n, gva, return_embedding=True) for n in nets])
    pv = np.stack(pv)  # (members, nvalid, nbins)
    emb_va = emb_va[0]
    mu, sd = emb_tr.mean(0), emb_tr.std(0) + 1e-6
    d_va = nn_distance((emb_va - mu) / sd, (emb_tr - mu) / sd)
    dis_va = disagreement(pv)
    calib = calibrate(pv, valid_s, cfg.grid())
    elements = sorted({int(z) for s in train_s for z in s.structure.numbers})
    blob = {
        "members": [{"state_dict": st, **c} for st, c in zip(states, cfgs)],
        "grid": {"width_cm1": cfg.bin_cm1, "fmax_cm1": cfg.fmax_cm1},
        "cutoff_a": cfg.cutoff_a,
        "elements": elements,
        "train_embedding": ((emb_tr - mu) / sd).astype(np.float32),
        "embedding_mean": mu,
        "embedding_std": sd,
        # OOD gate: thresholds at the 97.5th percentile of valid, so ~95 % of valid passes both
        "ood": {
            "distance_threshold": float(np.percentile(d_va, 97.5)),
            "disagreement_threshold": float(np.percentile(dis_va, 97.5)),
        },
        "calibration": calib,
        "train_config": cfg.__dict__,
        "n_train": len(train_s),
        "n_valid": len(valid_s),
    }
    return save_model(blob, out / "model.pt")  # weights_only-loadable (modelfile.MODEL_FORMAT)


def calibrate(pv, valid_s, grid: DosGrid) -> dict:
    """Scale factors for the ensemble std so that 90 % intervals cover 90 % of valid points.

    DOS points: every bin of every valid crystal up to its highest DFT frequency + 50 cm^-1 (beyond
    that both are zero and would inflate the coverage). Cv: one point per crystal. The coverage of
    the chosen scale is also estimated by 2-fold cross-validation on valid (fit on even, test on odd
    crystals and vice versa), which is the number to quote.
    """
    mean, std = pv.mean(0), pv.std(0, ddof=1)
    y = np.stack([s.states_per_bin for s in valid_s])
    fmax = np.array([s.dos_freqs_cm1[s.dos_per_cm1 > 1e-6 * s.dos_per_cm1.max()].max() for s in valid_s])
    mask = grid.centers_cm1[None, :] <= fmax[:, None] + 50.0
    ratio = np.abs(mean - y) / np.maximum(std, 1e-9)
    cvv = cv_per_state(grid.centers_cm1)
    cv_m = pv @ cvv  # (members, n)
    cv_ratio = np.abs(cv_m.mean(0) - y @ cvv) / np.maximum(cv_m.std(0, ddof=1), 1e-9)

    def scale(r):
        return float(np.quantile(r, 0.9) / Z90)

    def cv2(r, rows):  # 2-fold CV coverage
        even, odd = rows % 2 == 0, rows % 2 == 1
        cov = []
        for a, b in ((even, odd), (odd, even)):
            if not a.any() or not b.any():  # too few crystals for cross-validation
                continue
            s = scale(r[a])
            cov.append(np.mean(r[b] <= Z90 * s))
        return float(np.mean(cov)) if cov else float("nan")

    rows = np.broadcast_to(np.arange(len(valid_s))[:, None], mask.shape)
    return {
        "dos_std_scale": scale(ratio[mask]),
        "dos_coverage_90_cv": cv2(ratio[mask], rows[mask]),
        "dos_coverage_90_uncalibrated": float(np.mean(ratio[mask] <= Z90)),
        "cv_std_scale": scale(cv_ratio),
        "cv_coverage_90_cv": cv2(cv_ratio, np.arange(len(valid_s))),
        "cv_coverage_90_uncalibrated": float(np.mean(cv_ratio <= Z90)),
    }
