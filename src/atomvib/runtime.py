"""Thread pools, set deliberately.

On a small shared machine, default pools oversubscribe: torch's intra-op pool, OpenBLAS and OpenMP
each start one thread per core and spin against each other (measured on 2 cores: the same force
loop took 9.6–304 s with default pools, 9.4–10.2 s pinned). atomvib pins BLAS/OpenMP pools to one
thread (the heavy work is in torch or in many small matrices, where BLAS threads only add contention)
and gives torch ``ATOMVIB_THREADS`` threads (default: the cores this process may use).
"""

from __future__ import annotations

import os

_configured: int | None = None


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def torch_threads() -> int:
    """Threads for torch: ``ATOMVIB_THREADS`` if set, else the available cores."""
    env = os.environ.get("ATOMVIB_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            from .errors import InputError

            raise InputError(f"ATOMVIB_THREADS={env!r} is not an integer", fix="set it to e.g. 1 or 2") from None
    return available_cores()


def configure_threads(n_torch: int | None = None, blas_only: bool = False) -> int:
    """Pin BLAS/OpenMP pools to 1 thread and torch to ``n_torch`` threads; idempotent. Returns n_torch.

    ``blas_only`` skips torch (and its import, ~2 s) for engines that do not use it.
    """
    global _configured
    n = n_torch or torch_threads()
    if _configured == n:
        return n
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # threadpoolctl is a scikit-learn/phonopy dependency, but be safe
        pass
    if blas_only:
        return n
    try:
        import torch
    except ImportError:
        return n
    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # can only be set before the first parallel work
            pass
    _configured = n
    return n
