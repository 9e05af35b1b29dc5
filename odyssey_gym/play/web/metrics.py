"""Rolling timing samples for the server's latency breakdown (queue wait, model step, encode, send)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["Timings"]


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

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {mean_ms, p50_ms, p99_ms, n}} over the window."""
        with self._lock:
            snap = {k: np.asarray(v, np.float64) for k, v in self._samples.items()}
        out = {}
        for k, v in snap.items():
            if v.size:
                out[k] = {"mean_ms": round(1e3 * float(v.mean()), 3), "p50_ms": round(1e3 * float(np.percentile(v, 50)), 3),
                          "p99_ms": round(1e3 * float(np.percentile(v, 99)), 3), "n": int(v.size)}
        return out
