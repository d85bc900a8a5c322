"""Force engines behind one interface; see :func:`get_engine` and ``atomvib engines``."""

from .base import Engine, EngineInfo, Evaluation
from .guards import SpeedPathFallback
from .registry import ENGINES, clear_engine_cache, default_engine_spec, get_engine, list_engines

__all__ = [
    "Engine",
    "EngineInfo",
    "Evaluation",
    "ENGINES",
    "SpeedPathFallback",
    "clear_engine_cache",
    "get_engine",
    "list_engines",
    "default_engine_spec",
]
