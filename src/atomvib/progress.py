"""What a long run shows while it works: one line per stage on stderr, bars where the work is counted.

Every stage of ``atomvib phonons`` that can take over a second (model loading, relaxation, the
displaced cells, the analysis) goes through :class:`Progress`, so a user never stares at a silent
terminal. ``Progress(enabled=False)`` is silent (API default, batch workers, tests).
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

#: per thread: a function ``wrap(bar, total, desc, unit) -> bar`` every bar opened in that thread passes through
_LISTENER = threading.local()


@contextmanager
def bar_listener(wrap):
    """While the block runs, every :meth:`Progress.bar` opened in this thread (silent ones too) is handed to
    ``wrap(bar, total, desc, unit)``, whose return value the caller gets: how the batch runner counts the
    progress of library calls made with ``progress=False``. Other threads are untouched; listeners nest."""
    previous = getattr(_LISTENER, "wrap", None)
    _LISTENER.wrap = wrap
    try:
        yield
    finally:
        _LISTENER.wrap = previous


class Progress:
    """Stage messages and progress bars on stderr.

    Parameters
    ----------
    enabled : bool
        Print anything at all.
    stream : file, optional
        Where to print (default ``sys.stderr``).
    """

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = bool(enabled)
        self.stream = stream

    @property
    def _out(self):
        return self.stream if self.stream is not None else sys.stderr

    def message(self, text: str) -> None:
        if self.enabled:
            print(f"  {text}", file=self._out, flush=True)

    @contextmanager
    def stage(self, text: str):
        """Say what is being done; on exit, say how long it took."""
        t0 = time.perf_counter()
        if self.enabled:
            print(f"  {text} ...", end="", file=self._out, flush=True)
        try:
            yield
        except BaseException:
            if self.enabled:
                print(file=self._out, flush=True)  # end the line; the error says what went wrong
            raise
        if self.enabled:
            print(f" {time.perf_counter() - t0:.1f} s", file=self._out, flush=True)

    def bar(self, total: int | None, desc: str, unit: str = "calc"):
        """A tqdm bar (or a no-op stand-in when disabled); call it with the count done, close it at the end."""
        b = _Bar(total, desc, unit, self.enabled and (total is None or total > 0), self._out)
        wrap = getattr(_LISTENER, "wrap", None)
        return b if wrap is None else wrap(b, total, desc, unit)


class _Bar:
    def __init__(self, total, desc, unit, enabled, stream):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"  {desc}", unit=unit, leave=False, file=stream)

    def __call__(self, n: int = 1, **postfix):
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def as_progress(progress) -> Progress:
    """A :class:`Progress` from a bool or a Progress."""
    return progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
