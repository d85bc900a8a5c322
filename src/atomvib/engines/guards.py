"""Guards for the speed paths that depend on other packages' internals.

atomvib's fast force paths reach into code that is not those packages' public API:

* ``rewritten`` (engines/graph_rewrite.py): e3nn's code-generated fx graphs (``_compiled_main*``) and
  SevenNet's ``IrrepsConvolution`` attributes (``weight_nn``, ``key_*``, ``denominator``);
* ``fused`` (engines/fused_tp.py): the above, e3nn's ``TensorProduct.instructions`` layout, and numba;
* ``sevennet-graph`` (engines/mlip.py): SevenNet's input-dict layout, built by hand from a Verlet list;
* ``chgnet-graph-reuse`` (engines/mlip.py): CHGNet's ``CrystalGraph`` constructed from a reference
  graph with new coordinates (CHGNet documents it as "not intended to be created manually").

Each is used only where (a) the installed versions lie in :data:`TESTED_VERSIONS`, and (b) at model
load, the fast path and the stock code give the same forces on a small probe cell (max |ΔF| ≤
:data:`PROBE_TOL_EV_A`). Otherwise the engine runs the stock code (public API), issues one
:class:`SpeedPathFallback` warning that says why, and records ``kernel_path='stock'`` in its
:class:`~atomvib.engines.EngineInfo`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import numpy as np

from .base import package_version

#: Versions each speed path was tested on: path -> {distribution: (lowest tested, first untested)}.
#: Lower bounds are the oldest versions the engine tests (tests/test_engine_guards.py,
#: test_engine_speedpaths.py, test_fused_tp.py) passed with: e3nn 0.5.0 / 0.5.9 / 0.6.0 with sevenn
#: 0.11.0 / 0.12.1 / 0.13.0, numba 0.64.0 / 0.68.1, chgnet 0.3.5 / 0.3.8 / 0.4.2, and MACE (mace-torch
#: 0.3.16, e3nn 0.4.4) on a small random model (sevenn 0.10 lacks ``sevenn.calculator``; chgnet 0.3.2
#: imports a class ase 3.23 removed). Upper bounds: the next minor release of these 0.x packages, which
#: may change the internals. torch is used through its public fx API only: not listed, the probe covers it.
TESTED_VERSIONS: dict[str, dict[str, tuple[str, str]]] = {
    "rewritten": {"e3nn": ("0.5.0", "0.7"), "sevenn": ("0.11.0", "0.14")},
    "fused": {"e3nn": ("0.5.0", "0.7"), "sevenn": ("0.11.0", "0.14"), "numba": ("0.64", "0.69")},
    "sevennet-graph": {"sevenn": ("0.11.0", "0.14")},
    "chgnet-graph-reuse": {"chgnet": ("0.3.5", "0.5")},
    "mace-rewritten": {"e3nn": ("0.4.4", "0.7"), "mace-torch": ("0.3.16", "0.4")},
    # spectra/raman.py: a uniform field handed to tblite's C interface through tblite.library.ffi
    "tblite-field": {"tblite": ("0.4", "0.9")},
    # spectra/coherent.py: Euphonic's private sphere points and Bose-corrected binning (tested 2.1.1)
    "euphonic-sphere": {"euphonic": ("2.1", "2.2")},
    # harmonic/displacements.py: phonopy.cui.load_helper.produce_force_constants, exactly what phonopy.load
    # does (tested 4.10.0); the public Phonopy methods are the fallback
    "phonopy-load-helper": {"phonopy": ("4.0", "5")},
    # anharmonic/: phono3py.cui.load's dataset readers and compute_force_constants_from_datasets, exactly what
    # phono3py.load does (tested 4.10.0); the public Phono3py.produce_fc3/produce_fc2 are the fallback
    "phono3py-load-helper": {"phono3py": ("4.10", "5")},
}

#: a fast path must reproduce the stock forces on the probe cell to this (eV/Å): float32 round-off
#: of O(1) eV/Å forces is ~1e-7 relative, the paths measured 1e-7 apart (tests/test_engine_speedpaths.py)
PROBE_TOL_EV_A = 1e-4


class SpeedPathFallback(UserWarning):
    """A speed path was not used (untested package version, or its forces disagreed with the stock
    code on the probe cell); the engine runs the stock code instead."""


def installed_version(dist: str) -> str:
    """Installed version of ``dist`` ("unknown" if not installed); the one lookup the guards use."""
    return package_version(dist)


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, micro) of a version string, e.g. '2.13.0+cpu' -> (2, 13, 0); () if unparsable.
    Pre-releases count as their release ('0.14.0rc1' -> (0, 14, 0))."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if not m:
        return ()
    parts = tuple(int(x) for x in m.group(1).split("."))
    return (parts + (0, 0, 0))[:3]


def version_problems(path: str) -> list[str]:
    """Why ``path`` cannot be trusted with the installed packages: one phrase per package outside its
    tested range ([] when all are inside)."""
    out = []
    for dist, (lo, hi) in TESTED_VERSIONS[path].items():
        have = installed_version(dist)
        v = _release(have)
        if not v or not (_release(lo) <= v < _release(hi)):
            out.append(f"{dist} {have} is outside the tested range >={lo},<{hi}")
    return out


def force_disagreement(
    stock: Callable[[], np.ndarray], fast: Callable[[], np.ndarray], tol: float = PROBE_TOL_EV_A
) -> str | None:
    """Run ``stock()`` then ``fast()`` (forces on the probe cell, (natoms, 3) eV/Å): None when they agree
    to ``tol``, else why not (the measured max |ΔF|, or the exception the fast path raised)."""
    f0 = np.asarray(stock(), dtype=np.float64)
    try:
        f1 = np.asarray(fast(), dtype=np.float64)
    except Exception as exc:  # the fast path broke on this version: that is what the probe is for
        return f"the fast path failed on the probe cell ({type(exc).__name__}: {exc})"
    if f1.shape != f0.shape:
        return f"the fast path gave forces of shape {f1.shape} instead of {f0.shape} on the probe cell"
    d = float(np.max(np.abs(f1 - f0), initial=0.0))
    if not np.isfinite(d) or d > tol:
        return f"max |ΔF| = {d:.2e} eV/Å against the stock model on the probe cell (limit {tol:g})"
    return None


def warn_fallback(engine: str, path: str, reasons: list[str], used: str = "stock") -> None:
    """The one warning of a model load that could not use ``path``."""
    warnings.warn(
        SpeedPathFallback(
            f"{engine}: not using the {path} speed path ({'; '.join(reasons)}); running the {used} code "
            f"instead (same forces, slower)"
        ),
        stacklevel=3,
    )
