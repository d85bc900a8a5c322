"""Engines that wrap an ASE calculator: EMT, Lennard-Jones, and any ``ase:module:Class``."""

from __future__ import annotations

import importlib

from ..errors import EngineError, EngineUnavailable
from .base import Engine, EngineInfo, package_version, package_versions

# ASE's EMT parameters exist for these elements only.
_EMT_ELEMENTS = frozenset([1, 6, 7, 8, 13, 28, 29, 46, 47, 78, 79])


class EMTEngine(Engine):
    """ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O): fast, for tests and demos."""

    elements = _EMT_ELEMENTS

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(
            "emt", package_version("ase"), spec="emt", model="ase.calculators.emt.EMT",
            packages=package_versions("ase"),
        )  # fmt: skip

    def _make_calculator(self):
        from ase.calculators.emt import EMT

        return EMT()


class LJEngine(Engine):
    """ASE's Lennard-Jones calculator (ε = 1 eV, σ = 1 Å scaled by the user via ``ase:`` if needed)."""

    def __init__(self, sigma: float = 2.5, epsilon: float = 0.01, rc: float = 7.5):
        super().__init__()
        self.params = {"sigma": sigma, "epsilon": epsilon, "rc": rc}

    @property
    def info(self) -> EngineInfo:
        p = self.params
        # "lj" gives the defaults, "lj:sigma,epsilon" sets rc = 2.5 sigma; other cutoffs have no spec
        if p == LJEngine().params:
            spec = "lj"
        elif abs(p["rc"] - 2.5 * p["sigma"]) < 1e-12:
            spec = f"lj:{float(p['sigma'])!r},{float(p['epsilon'])!r}"
        else:
            spec = ""
        return EngineInfo(
            "lj", package_version("ase"), spec=spec, model="ase.calculators.lj.LennardJones",
            packages=package_versions("ase"), settings=dict(p, smooth=True),
        )  # fmt: skip

    def _make_calculator(self):
        from ase.calculators.lj import LennardJones

        return LennardJones(**self.params, smooth=True)


class ASECalculatorEngine(Engine):
    """Any ASE calculator, named ``ase:module:Class`` (constructed without arguments) or given as an object."""

    def __init__(self, target: str | None = None, calculator=None, name: str | None = None):
        super().__init__()
        if (target is None) == (calculator is None):
            raise EngineError("give either a 'module:Class' target or a calculator object", fix="see `atomvib engines`")
        self.target = target
        self._given = calculator
        self._name = name or (f"ase:{target}" if target else f"ase:{type(calculator).__module__}.{type(calculator).__name__}")

    @property
    def info(self) -> EngineInfo:
        mod = (self.target or type(self._given).__module__).split(":")[0]
        dist = mod.split(".")[0]
        return EngineInfo(
            self._name, package_version(dist),
            spec=f"ase:{self.target}" if self.target else "",  # a calculator object cannot be rebuilt by name
            model=self.target or type(self._given).__name__,
            packages=package_versions(dist),
        )  # fmt: skip

    def _make_calculator(self):
        if self._given is not None:
            return self._given
        try:
            mod_name, cls_name = self.target.rsplit(":", 1)
        except ValueError:
            raise EngineError(
                f"'ase:{self.target}' is not of the form ase:module:Class",
                fix="e.g. --engine ase:ase.calculators.emt:EMT",
            ) from None
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            raise EngineUnavailable(f"cannot import module {mod_name} ({exc})", fix=f"pip install the package that provides {mod_name}") from None
        cls = getattr(mod, cls_name, None)
        if cls is None:
            raise EngineError(f"module {mod_name} has no class {cls_name}", fix="check the spelling of the class name")
        return cls()
