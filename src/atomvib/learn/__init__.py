"""Direct prediction of the phonon DOS (and Cv, S, F) from structure with a deep ensemble of e3nn networks.

``predict(structures)`` uses the model shipped in ``learn/weights/model.pt``; ``train_ensemble``
(``atomvib train``) reproduces it from the Petretto DFPT data or trains on a user's own
``atomvib phonons`` results. Heavy imports (torch, e3nn) happen on first use.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "predict": "predictor",
    "load_model": "predictor",
    "Predictor": "predictor",
    "DosPrediction": "predictor",
    "read_petretto": "data",
    "read_results_dir": "data",
    "read_dataset": "data",
    "DosGrid": "data",
    "DosSample": "data",
    "build_graph": "data",
    "TrainConfig": "train",
}


def __getattr__(name):
    if name == "train_ensemble":
        return importlib.import_module(".train", __name__).train
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)


__all__ = [*_WHERE, "train_ensemble"]
