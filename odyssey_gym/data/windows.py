"""Flat, into-frame aligned data for the model (`flatten`, behind `Dataset.flat`), and random windows of T
consecutive frames. The data layer runs one way: dataset.py (storage) imports this module, never the reverse.

`WindowSampler` reads frames lazily from disk (chunk by chunk, through an LRU cache of decoded
chunks bounded in bytes), so it works on datasets larger than RAM; given a seed it is deterministic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import warnings

import numpy as np

from .errors import DatasetError


@dataclass
class FlatData:
    """All episodes concatenated; every field aligned into frame i (docs/ARCHITECTURE.md)."""

    frames: np.ndarray | None  # (N, H, W, 3) uint8 (None: index only, frames stay on disk)
    actions: np.ndarray  # (N, A) float32: action that led INTO frame i (zeros at an episode's first frame)
    rewards: np.ndarray  # (N,) float32: reward received on arriving at frame i (0 at the first frame)
    terminated: np.ndarray  # (N,) bool: arriving at frame i ended the episode in a terminal state
    first: np.ndarray  # (N,) bool: frame i starts an episode
    episode: np.ndarray  # (N,) int32
    source: list = field(default_factory=list, repr=False)  # [(dataset, local episode index)] per episode
    offsets: np.ndarray | None = None  # (E,) int64 flat index of each episode's first frame
    state: np.ndarray | None = None  # (N, S) float32: the game variables at frame i (None: not recorded)
    state_variables: tuple = ()  # their names, e.g. ("HEALTH",)

    def __post_init__(self):
        if self.offsets is None:
            self.offsets = np.flatnonzero(self.first).astype(np.int64)

    def __len__(self) -> int:
        return len(self.first)

    @property
    def num_episodes(self) -> int:
        return len(self.offsets)

    def window_starts(self, T: int) -> np.ndarray:
        """int64 indices i with frames i..i+T-1 all inside one episode."""
        N = len(self.episode)
        if T < 1:
            raise ValueError(f"window length must be >= 1, got {T}")
        if N < T:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.episode[: N - T + 1] == self.episode[T - 1:]).astype(np.int64)

    def pick_windows(self, T: int, count: int, rng: np.random.Generator, repeat: bool = False,
                     episode_start: bool = False) -> np.ndarray:
        """Start indices of `count` random windows of T frames, distinct while the data has that many.

        The one way eval, the probe, the strip and the start bank draw windows from data in memory, so the same
        seed picks the same windows in each. With fewer starts than `count`, every start once in random order, or
        (`repeat`) `count` drawn with replacement, for a caller that needs exactly `count`. `episode_start`: only
        windows that begin at an episode's first frame (a reset state), one per episode. No start at all: an
        empty array."""
        starts = self.window_starts(T)
        if episode_start:
            starts = starts[self.first[starts]]
        if len(starts) == 0:
            return starts
        if len(starts) >= count:
            return rng.choice(starts, size=count, replace=False)
        return rng.choice(starts, size=count, replace=True) if repeat else rng.permutation(starts)


@dataclass
class WindowBatch:
    """B windows of T consecutive frames; the same fields as FlatData with a leading (B, T)."""

    frames: np.ndarray  # (B, T, H, W, 3) uint8
    actions: np.ndarray  # (B, T, A) float32
    rewards: np.ndarray  # (B, T) float32
    terminated: np.ndarray  # (B, T) bool
    first: np.ndarray  # (B, T) bool
    episode: np.ndarray  # (B, T) int32
    starts: np.ndarray  # (B,) int64 flat index of each window's first frame


class _ChunkCache:
    """LRU of decoded chunks keyed (episode, chunk), bounded by bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._d: OrderedDict = OrderedDict()

    def get(self, key, load):
        arr = self._d.get(key)
        if arr is not None:
            self._d.move_to_end(key)
            self.hits += 1
            return arr
        self.misses += 1
        arr = load()
        self._d[key] = arr
        self.bytes += arr.nbytes
        while self.bytes > self.max_bytes and len(self._d) > 1:
            _, old = self._d.popitem(last=False)
            self.bytes -= old.nbytes
        return arr


class WindowSampler:
    """Random windows of T frames inside one episode: `WindowSampler(dataset, T=16, seed=0).sample(32)`.

    The way to read windows lazily from disk, chunk by chunk through a bounded cache, for data larger than RAM
    (benchmarks/bench_data.py times it); draws from data in memory go through `FlatData.pick_windows`.
    `source` is a `Dataset` / `MultiDataset` (frames read lazily from disk) or a `FlatData`
    (in memory, or with frames=None and `source` set by `Dataset.flat(load_frames=False)`).
    """

    def __init__(self, source, T: int, seed: int = 0, cache_bytes: int = 1 << 30, skip_corrupt: bool = False):
        if isinstance(source, FlatData):
            self.flat = source
        else:
            self.flat = source.flat(skip_corrupt=skip_corrupt, load_frames=False)
        self.T = int(T)
        self.skip_corrupt = skip_corrupt
        self.bad_episodes: set[int] = set()
        self.starts = self.flat.window_starts(self.T)
        if len(self.starts) == 0:
            raise ValueError(f"no window of {T} frames fits inside any episode ({self.flat.num_episodes} episodes, {len(self.flat)} frames)")
        self.rng = np.random.default_rng(seed)
        self.cache = _ChunkCache(cache_bytes)
        self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        """Number of distinct windows."""
        return len(self.starts)

    def _frames(self, e: int, j0: int, T: int) -> np.ndarray:
        ds, i = self.flat.source[e]
        lay = self._layouts.get(e)
        if lay is None:
            layout = ds.chunk_layout(i)
            lay = (np.array([s for s, _ in layout], np.int64), np.array([n for _, n in layout], np.int64))
            self._layouts[e] = lay
        starts, counts = lay
        out = np.empty((T, *ds.frame_shape), np.uint8)
        c = int(np.searchsorted(starts, j0, side="right") - 1)
        k = 0
        while k < T:
            try:
                chunk = self.cache.get((e, c), lambda: ds.read_chunk(i, c))
            except DatasetError as err:
                err.flat_episode = e
                raise
            lo = j0 + k - int(starts[c])
            take = min(T - k, int(counts[c]) - lo)
            out[k: k + take] = chunk[lo: lo + take]
            k += take
            c += 1
        return out

    def sample(self, B: int) -> WindowBatch:
        idx = self.starts[self.rng.integers(0, len(self.starts), size=B)]
        if not self.skip_corrupt:
            return self.get(idx)
        while True:  # an episode whose chunk fails to read is dropped (with a warning) and its windows redrawn
            try:
                return self.get(idx)
            except DatasetError as err:
                e = getattr(err, "flat_episode", None)
                if e is None:
                    raise
                warnings.warn(f"skipping corrupt episode: {err}", stacklevel=2)
                self.bad_episodes.add(e)
                self.starts = self.starts[self.flat.episode[self.starts] != e]
                if len(self.starts) == 0:
                    raise DatasetError("every episode with a window is corrupt") from err
                bad = self.flat.episode[idx] == e
                idx = idx.copy()
                idx[bad] = self.starts[self.rng.integers(0, len(self.starts), size=int(bad.sum()))]

    def get(self, starts: np.ndarray) -> WindowBatch:
        """The windows beginning at the given flat indices (each must be in `self.starts`)."""
        f = self.flat
        starts = np.asarray(starts, np.int64)
        rows = starts[:, None] + np.arange(self.T)[None, :]
        if f.frames is not None:
            frames = f.frames[rows]
        else:
            ep = f.episode[starts]
            frames = np.stack([self._frames(int(e), int(s - f.offsets[e]), self.T) for e, s in zip(ep, starts)])
        return WindowBatch(frames=frames, actions=f.actions[rows], rewards=f.rewards[rows], terminated=f.terminated[rows],
                           first=f.first[rows], episode=f.episode[rows], starts=starts)


def canonical_order(d) -> list[int]:
    """A dataset's episode indices by seed (then id). Several recording processes list their episodes in
    the order they finish, which varies from run to run; reading them by seed makes the same recording
    give the same flat data, so a seeded window draw (eval, training) picks the same windows every time."""
    eps = d.manifest["episodes"]

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def key(i):  # a malformed entry sorts last; reading it then names the problem
        seed, ident = eps[i].get("seed"), eps[i].get("id")
        return (not is_int(seed), seed if is_int(seed) else 0, ident if is_int(ident) else 0, i)

    return sorted(range(len(eps)), key=key)


def flatten(datasets: Iterable, spec, skip_corrupt: bool, load_frames: bool) -> FlatData:
    """Datasets (anything with a manifest, `load_steps` and `load_frames`: `Dataset.flat` passes itself) as one
    FlatData, episodes in `canonical_order`; `skip_corrupt` leaves out unreadable episodes with a warning."""
    from ..worlds import get_world

    datasets = list(datasets)
    d0 = datasets[0]
    if spec is None:
        spec = get_world(d0.world_name)
    for d in datasets:
        d.check_world(spec)
    A = spec.action_dim
    names = d0.state_variables
    with_state = bool(names) and all(d.state_variables == names for d in datasets)
    parts = []  # (frames | None, actions_vec, rewards, terminated, n, state | None)
    layout = []  # (dataset, local index) per kept episode
    for d in datasets:
        for i in canonical_order(d):
            try:
                s = d.load_steps(i)
                frames = d.load_frames(i) if load_frames else None
            except DatasetError as err:
                if not skip_corrupt:
                    raise
                warnings.warn(f"skipping corrupt episode: {err}", stacklevel=3)
                continue
            L = len(s["rewards"])
            av = np.zeros((L + 1, A), np.float32)
            av[1:] = spec.action_to_vector(s["actions"])
            rw = np.zeros(L + 1, np.float32)
            rw[1:] = s["rewards"]
            te = np.zeros(L + 1, bool)
            te[1:] = s["terminations"]
            parts.append((frames, av, rw, te, L + 1, s.get("state") if with_state else None))
            layout.append((d, i))
    n = [p[4] for p in parts]
    N = int(sum(n))
    first = np.zeros(N, bool)
    offsets = np.cumsum([0] + n[:-1]).astype(np.int64) if n else np.zeros(0, np.int64)
    first[offsets] = True
    episode = np.repeat(np.arange(len(parts), dtype=np.int32), n) if n else np.zeros(0, np.int32)
    if load_frames:
        frames = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, *d0.frame_shape), np.uint8)
    else:
        frames = None
    cat = (lambda k, shape, dt: np.concatenate([p[k] for p in parts]) if parts else np.zeros(shape, dt))
    return FlatData(
        frames=frames,
        actions=cat(1, (0, A), np.float32),
        rewards=cat(2, (0,), np.float32),
        terminated=cat(3, (0,), bool),
        first=first,
        episode=episode,
        source=layout,
        offsets=offsets,
        state=cat(5, (0, len(names)), np.float32) if with_state else None,
        state_variables=tuple(names) if with_state else (),
    )
