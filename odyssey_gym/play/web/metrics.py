"""Rolling timing samples for the server's latency breakdown (queue wait, model step, encode, send, and the
interpreter's full garbage collections, which stall every thread of the process)."""

from __future__ import annotations

import gc
import threading
import time
from collections import deque

import numpy as np

__all__ = ["Timings", "FullCollections"]


class Timings:
    """The last `window` samples (seconds) of each named stage; summaries in milliseconds.

    Samples come from the event loop and from worker threads, hence the lock.
    """

    def __init__(self, window: int = 2048):
        self.window = window
        self._samples: dict[str, deque] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._samples.setdefault(name, deque(maxlen=self.window)).append(float(seconds))

    def extend(self, name: str, seconds) -> None:
        with self._lock:
            self._samples.setdefault(name, deque(maxlen=self.window)).extend(float(s) for s in seconds)

    def clear(self) -> None:
        """Forget every sample (a benchmark measures from here); whoever holds this object keeps adding to it."""
        with self._lock:
            self._samples.clear()

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {mean_ms, p50_ms, p99_ms, max_ms, n}} over the window."""
        with self._lock:
            snap = {k: np.asarray(v, np.float64) for k, v in self._samples.items()}
        out = {}
        for k, v in snap.items():
            if v.size:
                out[k] = {"mean_ms": round(1e3 * float(v.mean()), 3), "p50_ms": round(1e3 * float(np.percentile(v, 50)), 3),
                          "p99_ms": round(1e3 * float(np.percentile(v, 99)), 3),
                          "max_ms": round(1e3 * float(v.max()), 3), "n": int(v.size)}
        return out


class FullCollections:
    """Times the interpreter's full (generation 2) garbage collections into `timings` under "gc_full".

    A full collection walks every live container object while holding the interpreter lock: with a world model
    loaded, about 177k objects and 80 ms on a 2-core CPU, a pause for the step thread and the event loop alike.
    `gc.callbacks` is process-wide, so `close()` takes the callback out again.
    """

    def __init__(self, timings: Timings):
        self.timings = timings
        self._t0: float | None = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.timings.add("gc_full", time.perf_counter() - self._t0)
            self._t0 = None

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
