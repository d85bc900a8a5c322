"""Dask plugins of the batch driver (imported only when it starts its own cluster: imports distributed)."""

from __future__ import annotations

import signal
import threading

from distributed.diagnostics.plugin import WorkerPlugin


class IgnoreSigint(WorkerPlugin):
    """Worker processes ignore SIGINT: Ctrl-C in the terminal reaches the whole process group, and only the
    driver should act on it (it cancels the tasks, gives back its rows and closes the cluster)."""

    idempotent = True

    def setup(self, worker):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
