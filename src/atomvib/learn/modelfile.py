"""Model files of the DOS predictor: written and read as plain tensors, never unpickled without trust.

Format ``atomvib-dos-ensemble/2``: dicts (str keys), lists, tuples, str, int, float, bool, None and torch
tensors only, so ``torch.load(weights_only=True)`` reads it and reading cannot run code. Shared by
:mod:`atomvib.learn.predictor` (loading) and :mod:`atomvib.learn.train` (member checkpoints, the final model),
which therefore do not import each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

MODEL_FORMAT = "atomvib-dos-ensemble/2"
#: pickled models of atomvib before the plain-tensor format: loaded only when the user trusts the file
LEGACY_MODEL_FORMAT = "atomvib-dos-ensemble/1"


def plain_for_torch(obj, where: str = "model"):
    """``obj`` with numpy arrays as torch tensors (same dtype, same bits) and numpy scalars as Python numbers, so that
    ``torch.save`` writes a file ``torch.load(weights_only=True)`` reads: only dicts (str keys), lists, tuples, str,
    int, float, bool, None and tensors. Anything else is a TypeError (it would need pickle to load)."""
    import torch

    if isinstance(obj, np.generic):  # before float: np.float64 is a float, but pickles as a numpy scalar
        return obj.item()
    if obj is None or type(obj) in (str, bool, int, float) or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{where}: object arrays cannot be saved without pickle")
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a str")
            out[k] = plain_for_torch(v, f"{where}/{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain_for_torch(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be saved without pickle")


def save_torch_file(obj, path) -> None:
    """Write ``obj`` (a model or an ensemble member) as a torch file that loads with ``weights_only=True``; written to
    a temporary name first, then renamed, so an interrupted write leaves no half file under ``path``."""
    import os
    import uuid

    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(plain_for_torch(obj, path.name), tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(blob: dict, path) -> Path:
    """Write a model (``assemble``'s blob) in :data:`MODEL_FORMAT`."""
    save_torch_file({**blob, "format": MODEL_FORMAT}, path)
    return Path(path)


def load_torch_file(path, trust_model_file: bool = False, what: str = "model"):
    """The content of an atomvib torch file, read with ``torch.load(weights_only=True)``: tensors and plain Python
    values only, so reading it cannot run code. A file that needs pickle (written by an older atomvib, or by
    anything else) is refused with one line, unless ``trust_model_file`` (CLI ``--trust-model-file``) says the
    user trusts where it came from."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        if not trust_model_file:
            raise InputError(
                f"{path}: this {what} file needs pickle to load, and unpickling can run any code the file holds; "
                "not loaded",
                fix="pass --trust-model-file (API: trust_model_file=True) only if you trust where the file came from, "
                "or retrain it with this atomvib, which writes plain tensors",
            ) from None
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(
            f"{path}: cannot read {what} ({type(exc).__name__})",
            fix="give a model.pt written by `atomvib train`",
        ) from None
    try:  # trusted by the user: the full unpickler
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read {what} ({type(exc).__name__})",
            fix="give a model.pt written by `atomvib train`",
        ) from None
