"""Force engines behind one interface; see :func:`get_engine` and ``atomvib engines``."""

from .base import Engine, EngineInfo, Evaluation
from .registry import ENGINES, default_engine_spec, get_engine, list_engines

__all__ = ["Engine", "EngineInfo", "Evaluation", "ENGINES", "get_engine", "list_engines", "default_engine_spec"]
