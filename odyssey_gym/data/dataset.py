"""The on-disk dataset format (see docs/DATASET.md).

A dataset is a directory::

    manifest.json                 the only index: format, world, shapes, one entry per episode
    episodes/e000000/f0000.zst    frames [0, 64) of episode 0: zstd of raw uint8 (n, H, W, 3)
    episodes/e000000/f0001.zst    frames [64, 128) ...
    episodes/e000000/steps.zst    zstd of an .npz: actions, rewards, terminations, truncations

Episodes are append-only. Every file is written to a temp name and `os.replace`d into place,
the manifest last, so a crash, kill or full disk at any point leaves every episode listed in
the manifest valid; files not listed in the manifest (a half-written episode, temp files) are
ignored on open and cleaned up by the next writer. One writer at a time (an flock on `.lock`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ..fsutil import fsync_dir

FORMAT_NAME = "odyssey-gym-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_CHUNK_FRAMES = 64
DEFAULT_LEVEL = 3
_TMP_MARK = ".tmp-"


class DatasetError(Exception):
    """A dataset that cannot be read or written as asked (corrupt, truncated, missing, mismatched)."""


# --------------------------------------------------------------------------- episodes
@dataclass
class Episode:
    """One recorded episode of L steps (Minari's alignment: actions[i] taken at frames[i] led to frames[i+1])."""

    frames: np.ndarray  # (L+1, H, W, 3) uint8
    actions: np.ndarray  # (L, *action_shape)
    rewards: np.ndarray  # (L,) float32
    terminations: np.ndarray  # (L,) bool
    truncations: np.ndarray  # (L,) bool
    seed: int | None = None
    worker: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rewards)

    def validate(self, frame_shape: tuple[int, ...] | None = None, action_shape: tuple[int, ...] | None = None) -> None:
        L = len(self.rewards)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise DatasetError(f"episode frames must be uint8 (L+1, H, W, 3), got {self.frames.dtype} {self.frames.shape}")
        if len(self.frames) != L + 1:
            raise DatasetError(f"episode of {L} steps needs {L + 1} frames, got {len(self.frames)}")
        for name in ("actions", "terminations", "truncations"):
            if len(getattr(self, name)) != L:
                raise DatasetError(f"episode {name} has length {len(getattr(self, name))}, expected {L}")
        if frame_shape is not None and tuple(self.frames.shape[1:]) != tuple(frame_shape):
            raise DatasetError(f"frame shape {tuple(self.frames.shape[1:])} does not match the dataset's {tuple(frame_shape)}")
        if action_shape is not None and tuple(np.shape(self.actions)[1:]) != tuple(action_shape):
            raise DatasetError(f"action shape {tuple(np.shape(self.actions)[1:])} does not match the dataset's {tuple(action_shape)}")


@dataclass
class EncodedEpisode:
    """An episode already compressed (done in recording workers, so the writer only writes bytes)."""

    length: int
    frame_chunks: list  # [(start, count, bytes)]
    steps: bytes
    seed: int | None = None
    worker: int = 0
    ret: float = 0.0
    terminated: bool = False
    truncated: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for _, _, b in self.frame_chunks) + len(self.steps)


def _compressor(level: int):
    import zstandard

    return zstandard.ZstdCompressor(level=level)


def encode_steps(actions, rewards, terminations, truncations, level: int = DEFAULT_LEVEL) -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf,
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminations=np.asarray(terminations, dtype=bool),
        truncations=np.asarray(truncations, dtype=bool),
    )
    return _compressor(level).compress(buf.getvalue())


class EpisodeEncoder:
    """Streams one episode into compressed chunks as frames arrive (so a worker never holds raw long episodes).

    `add(frame)` for the first frame, then `add(frame, action, reward, terminated, truncated)` per step.
    With `threaded=True` chunk compression runs on a helper thread (zstd releases the GIL) and
    overlaps with the engine.
    """

    def __init__(self, frame_shape, action_shape=(), action_dtype=np.int64, chunk_frames=DEFAULT_CHUNK_FRAMES,
                 level=DEFAULT_LEVEL, executor=None):
        self.frame_shape = tuple(frame_shape)
        self.chunk_frames = int(chunk_frames)
        self.level = level
        self._cctx = _compressor(level)
        self._executor = executor
        self._buf = np.empty((self.chunk_frames, *self.frame_shape), np.uint8)
        self._n_in_buf = 0
        self._n_frames = 0
        self._chunks: list = []  # (start, count, bytes | Future)
        self.actions: list = []
        self.rewards: list = []
        self.terminations: list = []
        self.truncations: list = []
        self.action_shape = tuple(action_shape)
        self.action_dtype = np.dtype(action_dtype)

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, frame, action=None, reward=0.0, terminated=False, truncated=False) -> None:
        if self._n_frames > 0:
            self.actions.append(action)
            self.rewards.append(reward)
            self.terminations.append(terminated)
            self.truncations.append(truncated)
        elif action is not None:
            raise ValueError("the first frame of an episode has no action")
        self._buf[self._n_in_buf] = frame
        self._n_in_buf += 1
        self._n_frames += 1
        if self._n_in_buf == self.chunk_frames:
            self._flush()

    def _flush(self) -> None:
        if self._n_in_buf == 0:
            return
        start = self._n_frames - self._n_in_buf
        block = self._buf[: self._n_in_buf]
        if self._executor is not None:
            data = block.copy()
            self._chunks.append((start, len(data), self._executor.submit(_compress_level, data, self.level)))
        else:
            self._chunks.append((start, self._n_in_buf, self._cctx.compress(block)))
        self._n_in_buf = 0

    def finish(self, seed=None, worker=0, meta=None) -> EncodedEpisode:
        self._flush()
        chunks = [(s, n, b if isinstance(b, bytes) else b.result()) for s, n, b in self._chunks]
        L = len(self.rewards)
        actions = np.asarray(self.actions, dtype=self.action_dtype).reshape((L, *self.action_shape))
        steps = encode_steps(actions, self.rewards, self.terminations, self.truncations, self.level)
        return EncodedEpisode(
            length=L, frame_chunks=chunks, steps=steps, seed=seed, worker=worker,
            ret=float(np.sum(np.asarray(self.rewards, np.float64))),
            terminated=bool(self.terminations[-1]) if L else False,
            truncated=bool(self.truncations[-1]) if L else False,
            meta=dict(meta or {}),
        )


_LOCAL_CCTX: dict = {}


def _compress_level(data: np.ndarray, level: int) -> bytes:
    import threading

    key = (threading.get_ident(), level)
    if key not in _LOCAL_CCTX:
        _LOCAL_CCTX[key] = _compressor(level)
    return _LOCAL_CCTX[key].compress(data)


def encode_episode(ep: Episode, chunk_frames: int = DEFAULT_CHUNK_FRAMES, level: int = DEFAULT_LEVEL) -> EncodedEpisode:
    actions = np.asarray(ep.actions)
    enc = EpisodeEncoder(ep.frames.shape[1:], actions.shape[1:], actions.dtype, chunk_frames, level)
    enc.add(ep.frames[0])
    for i in range(len(ep.rewards)):
        enc.add(ep.frames[i + 1], actions[i], float(ep.rewards[i]), bool(ep.terminations[i]), bool(ep.truncations[i]))
    return enc.finish(seed=ep.seed, worker=ep.worker, meta=ep.meta)


# --------------------------------------------------------------------------- helpers
def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()




def _atomic_write(path: Path, data, fsync: bool = False) -> None:
    """Write to a temp name beside `path`, then os.replace: readers see the old file or the whole new one."""
    tmp = path.with_name(f"{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _world_info(spec) -> dict:
    return {"name": spec.name, "version": spec.version, "engine": spec.engine, "scenario": spec.scenario,
            "frame_skip": spec.frame_skip}


# --------------------------------------------------------------------------- writer
class DatasetWriter:
    """Appends episodes to a dataset directory (created if needed) of one world.

    `commit_interval_s` batches manifest rewrites (0 = after every episode). Episodes added since
    the last commit are lost if the process dies before the next one; `close()` always commits.
    `fsync=True` makes each commit durable against power loss: one `os.sync()` before the manifest
    is replaced (so the manifest never lists a file still only in the page cache), then an fsync of
    the manifest; a killed process needs none of this (renames are atomic).
    """

    def __init__(self, path, spec, chunk_frames: int = DEFAULT_CHUNK_FRAMES, level: int = DEFAULT_LEVEL,
                 commit_interval_s: float = 0.0, fsync: bool = True):
        from ..worlds import get_world

        self.spec = get_world(spec)
        self.path = Path(path)
        self.level = level
        self.commit_interval_s = commit_interval_s
        self.fsync = fsync
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise DatasetError(f"{self.path}: another process is writing this dataset (lock held on {self.path / '.lock'})")
        try:
            manifest_path = self.path / MANIFEST
            if manifest_path.exists():
                self.manifest = _load_manifest(self.path)
                self._check_compatible(self.manifest)
                self.chunk_frames = int(self.manifest["chunk_frames"])
            else:
                self.chunk_frames = int(chunk_frames)
                self.manifest = {
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "world": _world_info(self.spec),
                    "frame_shape": list(self.spec.frame_shape),
                    "action_shape": list(self.spec.action_shape),
                    "action_dtype": self.spec.action_dtype.name,
                    "action_dim": self.spec.action_dim,
                    "chunk_frames": self.chunk_frames,
                    "compression": {"codec": "zstd", "level": level},
                    "runs": [],
                    "episodes": [],
                    "totals": {"episodes": 0, "steps": 0, "frames": 0, "bytes": 0},
                }
            self._clean_strays()
            self._dirty = not manifest_path.exists()
            self._last_commit = 0.0
            if self._dirty:
                self.commit()
        except BaseException:
            self._release()
            raise

    def _check_compatible(self, m: dict) -> None:
        w = m["world"]
        spec = self.spec
        if w["name"] != spec.name:
            raise DatasetError(f"{self.path}: dataset holds world {w['name']!r}; refusing to append episodes of world {spec.name!r}")
        if int(w["version"]) != spec.version:
            raise DatasetError(f"{self.path}: dataset holds {w['name']!r} version {w['version']}, this code records version {spec.version}; use a new directory")
        if tuple(m["frame_shape"]) != spec.frame_shape:
            raise DatasetError(f"{self.path}: dataset frame shape {tuple(m['frame_shape'])} != world frame shape {spec.frame_shape}")
        if tuple(m["action_shape"]) != spec.action_shape or m["action_dtype"] != spec.action_dtype.name:
            raise DatasetError(f"{self.path}: dataset actions {tuple(m['action_shape'])} {m['action_dtype']} != world actions {spec.action_shape} {spec.action_dtype.name}")

    def _clean_strays(self) -> None:
        """Remove temp files and episode directories the manifest does not list (left by a crash)."""
        listed = {e["dir"] for e in self.manifest["episodes"]}
        for p in self.path.glob(f"*{_TMP_MARK}*"):
            p.unlink(missing_ok=True)
        ep_root = self.path / "episodes"
        if ep_root.is_dir():
            for d in ep_root.iterdir():
                rel = f"episodes/{d.name}"
                if rel not in listed:
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    for p in d.glob(f"*{_TMP_MARK}*"):
                        p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ API
    @property
    def num_episodes(self) -> int:
        return len(self.manifest["episodes"])

    @property
    def totals(self) -> dict:
        return dict(self.manifest["totals"])

    def begin_run(self, **info) -> int:
        """Record a collection run (seed, workers, policy...); returns its index (used to derive fresh seeds)."""
        self.manifest.setdefault("runs", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})
        self._dirty = True
        self.commit()
        return len(self.manifest["runs"]) - 1

    def add_episode(self, episode: Episode | EncodedEpisode, worker: int | None = None, **meta) -> int:
        """Write one episode's files, then list it in the manifest. Returns its index. On OSError
        (e.g. ENOSPC) the episode's files are removed, the manifest is untouched, and the error re-raised."""
        if isinstance(episode, Episode):
            episode.validate(self.spec.frame_shape, self.spec.action_shape)
            episode = encode_episode(episode, self.chunk_frames, self.level)
        if episode.length < 1:
            raise DatasetError("refusing to write an episode of 0 steps")
        counts = [n for _, n, _ in episode.frame_chunks]
        if sum(counts) != episode.length + 1:
            raise DatasetError(f"encoded episode has {sum(counts)} frames for {episode.length} steps")
        ep_id = (max((e["id"] for e in self.manifest["episodes"]), default=-1) + 1)
        rel = f"episodes/e{ep_id:06d}"
        d = self.path / rel
        entry = {
            "id": ep_id, "dir": rel, "length": episode.length, "seed": episode.seed,
            "worker": int(episode.worker if worker is None else worker),
            "return": episode.ret, "terminated": episode.terminated, "truncated": episode.truncated,
            "frames": [], "steps": None,
        }
        entry.update(episode.meta)
        entry.update(meta)
        try:
            if d.exists():  # an unlisted leftover of a crash
                shutil.rmtree(d)
            d.mkdir(parents=True)
            nbytes = 0
            for k, (start, count, data) in enumerate(episode.frame_chunks):
                name = f"f{k:04d}.zst"
                _atomic_write(d / name, data)
                entry["frames"].append({"file": name, "start": int(start), "count": int(count),
                                        "sha256": _sha256(data), "bytes": len(data)})
                nbytes += len(data)
            _atomic_write(d / "steps.zst", episode.steps)
            entry["steps"] = {"file": "steps.zst", "sha256": _sha256(episode.steps), "bytes": len(episode.steps)}
            nbytes += len(episode.steps)
        except OSError as e:
            shutil.rmtree(d, ignore_errors=True)
            reason = "disk full" if e.errno == errno.ENOSPC else e.strerror or str(e)
            raise OSError(e.errno, f"{self.path}: could not write episode {ep_id} ({reason}); "
                          f"the dataset keeps its {self.num_episodes} earlier episodes: {e}") from e
        self.manifest["episodes"].append(entry)
        t = self.manifest["totals"]
        t["episodes"] += 1
        t["steps"] += episode.length
        t["frames"] += episode.length + 1
        t["bytes"] += nbytes
        self._dirty = True
        if time.monotonic() - self._last_commit >= self.commit_interval_s:
            self.commit()
        return len(self.manifest["episodes"]) - 1

    def commit(self) -> None:
        """Atomically rewrite manifest.json. On OSError the previous manifest stays in place."""
        if not self._dirty:
            return
        data = json.dumps(self.manifest, separators=(",", ":")).encode()
        if self.fsync:
            os.sync()  # every episode file reaches the disk before a manifest that lists it (one call per commit)
        _atomic_write(self.path / MANIFEST, data, self.fsync)
        if self.fsync:
            fsync_dir(self.path)
        self._dirty = False
        self._last_commit = time.monotonic()

    def _release(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def close(self) -> None:
        try:
            if self._lock_fd is not None:
                self.commit()
        finally:
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- reader
def _load_manifest(path: Path) -> dict:
    p = Path(path) / MANIFEST
    if not p.exists():
        raise DatasetError(f"{path}: not a dataset (no {MANIFEST})")
    try:
        m = json.loads(p.read_bytes())
    except (ValueError, OSError) as e:
        raise DatasetError(f"{p}: unreadable manifest: {e}") from e
    if m.get("format") != FORMAT_NAME:
        raise DatasetError(f"{p}: not an {FORMAT_NAME} manifest (format={m.get('format')!r})")
    if int(m.get("format_version", -1)) > FORMAT_VERSION:
        raise DatasetError(f"{p}: format version {m['format_version']} is newer than this code's {FORMAT_VERSION}")
    return m


class Dataset:
    """A recorded dataset directory, read-only. Frames are decoded chunk by chunk on demand.

    Every read checks the file's sha256 against the manifest; a missing, truncated or corrupt file
    raises `DatasetError` naming the file and the episode, and never affects other episodes.
    """

    def __init__(self, path, world=None):
        self.path = Path(path)
        self.manifest = _load_manifest(self.path)
        m = self.manifest
        self.world_name: str = m["world"]["name"]
        self.world_version: int = int(m["world"]["version"])
        self.frame_shape = tuple(m["frame_shape"])
        self.action_shape = tuple(m["action_shape"])
        self.action_dtype = np.dtype(m["action_dtype"])
        self.action_dim = int(m["action_dim"])
        self.chunk_frames = int(m["chunk_frames"])
        self.episodes: list[dict] = m["episodes"]
        self._dctx = None
        if world is not None:
            self.check_world(world)

    def check_world(self, world) -> None:
        from ..worlds import get_world

        spec = get_world(world)
        if spec.name != self.world_name or spec.version != self.world_version:
            raise DatasetError(f"{self.path}: dataset holds world {self.world_name!r} v{self.world_version}, "
                               f"not {spec.name!r} v{spec.version}")
        if spec.frame_shape != self.frame_shape or spec.action_shape != self.action_shape:
            raise DatasetError(f"{self.path}: dataset shapes frames {self.frame_shape} actions {self.action_shape} "
                               f"!= world {spec.name!r} frames {spec.frame_shape} actions {spec.action_shape}")

    @property
    def spec(self):
        from ..worlds import get_world

        return get_world(self.world_name)

    def __len__(self) -> int:
        return len(self.episodes)

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, world={self.world_name!r}, episodes={len(self)}, steps={self.num_steps})"

    @property
    def num_steps(self) -> int:
        return sum(e["length"] for e in self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(e["length"] + 1 for e in self.episodes)

    @property
    def nbytes(self) -> int:
        return sum(sum(f["bytes"] for f in e["frames"]) + e["steps"]["bytes"] for e in self.episodes)

    # ---------------------------------------------------------------- raw reads
    def _read(self, i: int, info: dict) -> bytes:
        e = self.episodes[i]
        p = self.path / e["dir"] / info["file"]
        where = f"episode {i} (id {e['id']}), file {p}"
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise DatasetError(f"{where}: missing") from None
        except OSError as err:
            raise DatasetError(f"{where}: unreadable: {err}") from err
        if len(data) != info["bytes"]:
            raise DatasetError(f"{where}: truncated or altered ({len(data)} bytes, manifest says {info['bytes']})")
        if _sha256(data) != info["sha256"]:
            raise DatasetError(f"{where}: checksum mismatch (corrupt)")
        return data

    def _decompress(self, i: int, info: dict, data: bytes, expected: int | None) -> bytes:
        import zstandard

        if self._dctx is None:
            self._dctx = zstandard.ZstdDecompressor()
        try:
            raw = self._dctx.decompress(data, max_output_size=expected or 0)
        except zstandard.ZstdError as err:
            p = self.path / self.episodes[i]["dir"] / info["file"]
            raise DatasetError(f"episode {i} (id {self.episodes[i]['id']}), file {p}: corrupt zstd data: {err}") from err
        if expected is not None and len(raw) != expected:
            p = self.path / self.episodes[i]["dir"] / info["file"]
            raise DatasetError(f"episode {i} (id {self.episodes[i]['id']}), file {p}: decoded {len(raw)} bytes, expected {expected}")
        return raw

    def chunk_layout(self, i: int) -> list[tuple[int, int]]:
        """[(start, count)] of episode i's frame chunks."""
        return [(f["start"], f["count"]) for f in self.episodes[i]["frames"]]

    def read_chunk(self, i: int, c: int) -> np.ndarray:
        """Frames of chunk c of episode i: uint8 (count, H, W, 3), read-only view of fresh memory."""
        info = self.episodes[i]["frames"][c]
        n = info["count"]
        raw = self._decompress(i, info, self._read(i, info), n * int(np.prod(self.frame_shape)))
        return np.frombuffer(raw, np.uint8).reshape((n, *self.frame_shape))

    def load_steps(self, i: int) -> dict[str, np.ndarray]:
        """actions, rewards, terminations, truncations of episode i (no frames)."""
        e = self.episodes[i]
        info = e["steps"]
        raw = self._decompress(i, info, self._read(i, info), None)
        try:
            with np.load(io.BytesIO(raw)) as z:
                out = {k: z[k] for k in ("actions", "rewards", "terminations", "truncations")}
        except Exception as err:
            raise DatasetError(f"episode {i} (id {e['id']}), file {self.path / e['dir'] / info['file']}: bad steps data: {err}") from err
        L = e["length"]
        if any(len(v) != L for v in out.values()):
            raise DatasetError(f"episode {i} (id {e['id']}), file {self.path / e['dir'] / info['file']}: step arrays do not have length {L}")
        return out

    def load_frames(self, i: int) -> np.ndarray:
        e = self.episodes[i]
        frames = np.empty((e["length"] + 1, *self.frame_shape), np.uint8)
        for c, f in enumerate(e["frames"]):
            frames[f["start"]: f["start"] + f["count"]] = self.read_chunk(i, c)
        if sum(f["count"] for f in e["frames"]) != e["length"] + 1:
            raise DatasetError(f"episode {i} (id {e['id']}) in {self.path}: chunks hold the wrong number of frames")
        return frames

    def load_episode(self, i: int) -> Episode:
        if not -len(self) <= i < len(self):
            raise IndexError(f"episode {i} out of range for {len(self)} episodes")
        i %= len(self)
        e = self.episodes[i]
        s = self.load_steps(i)
        return Episode(frames=self.load_frames(i), actions=s["actions"], rewards=s["rewards"],
                       terminations=s["terminations"], truncations=s["truncations"],
                       seed=e.get("seed"), worker=e.get("worker", 0),
                       meta={k: e[k] for k in ("id", "run") if k in e})

    def __iter__(self):
        for i in range(len(self)):
            yield self.load_episode(i)

    def verify(self, raise_on_error: bool = False) -> list[DatasetError]:
        """Read and check every file of every episode. Returns the problems found (empty when sound)."""
        problems: list[DatasetError] = []
        for i in range(len(self)):
            try:
                self.load_steps(i)
                for c in range(len(self.episodes[i]["frames"])):
                    self.read_chunk(i, c)
            except DatasetError as err:
                problems.append(err)
        if problems and raise_on_error:
            raise DatasetError(f"{self.path}: {len(problems)} bad episode(s):\n" + "\n".join(map(str, problems)))
        return problems

    def flat(self, spec=None, skip_corrupt: bool = False, load_frames: bool = True):
        """All episodes concatenated and aligned into the frame (docs/ARCHITECTURE.md).

        `skip_corrupt=True` leaves out episodes that fail to read (with a warning) instead of raising.
        `load_frames=False` gives `frames=None` (the index for lazy window sampling).
        """
        return _flat([self], spec, skip_corrupt, load_frames)


class MultiDataset:
    """Several dataset directories of one world read as one (episodes concatenated in order)."""

    def __init__(self, paths: Sequence, world=None):
        if not paths:
            raise DatasetError("MultiDataset needs at least one path")
        self.datasets = [p if isinstance(p, Dataset) else Dataset(p) for p in paths]
        d0 = self.datasets[0]
        for d in self.datasets[1:]:
            if (d.world_name, d.world_version, d.frame_shape, d.action_shape) != (d0.world_name, d0.world_version, d0.frame_shape, d0.action_shape):
                raise DatasetError(f"cannot read {d.path} ({d.world_name} v{d.world_version} {d.frame_shape}) together with "
                                   f"{d0.path} ({d0.world_name} v{d0.world_version} {d0.frame_shape})")
        if world is not None:
            d0.check_world(world)
        self.world_name, self.world_version = d0.world_name, d0.world_version
        self.frame_shape, self.action_shape, self.action_dtype, self.action_dim = d0.frame_shape, d0.action_shape, d0.action_dtype, d0.action_dim
        self._index = [(k, j) for k, d in enumerate(self.datasets) for j in range(len(d))]
        self.episodes = [d.episodes[j] for k, d in enumerate(self.datasets) for j in range(len(d))]

    spec = Dataset.spec
    num_steps = Dataset.num_steps
    num_frames = Dataset.num_frames

    def __len__(self) -> int:
        return len(self._index)

    def _go(self, i):
        k, j = self._index[i]
        return self.datasets[k], j

    def chunk_layout(self, i):
        d, j = self._go(i)
        return d.chunk_layout(j)

    def read_chunk(self, i, c):
        d, j = self._go(i)
        return d.read_chunk(j, c)

    def load_steps(self, i):
        d, j = self._go(i)
        return d.load_steps(j)

    def load_episode(self, i):
        d, j = self._go(i % len(self))
        return d.load_episode(j)

    def verify(self, raise_on_error: bool = False):
        problems = [p for d in self.datasets for p in d.verify()]
        if problems and raise_on_error:
            raise DatasetError(f"{len(problems)} bad episode(s):\n" + "\n".join(map(str, problems)))
        return problems

    def flat(self, spec=None, skip_corrupt: bool = False, load_frames: bool = True):
        return _flat(self.datasets, spec, skip_corrupt, load_frames)


def open_dataset(path_or_paths, world=None) -> Dataset | MultiDataset:
    """One directory -> Dataset; a list of directories of the same world -> MultiDataset."""
    if isinstance(path_or_paths, (str, os.PathLike)):
        return Dataset(path_or_paths, world)
    paths = list(path_or_paths)
    return Dataset(paths[0], world) if len(paths) == 1 else MultiDataset(paths, world)


def _flat(datasets: Iterable[Dataset], spec, skip_corrupt: bool, load_frames: bool):
    from ..worlds import get_world
    from .windows import FlatData

    datasets = list(datasets)
    d0 = datasets[0]
    if spec is None:
        spec = get_world(d0.world_name)
    for d in datasets:
        d.check_world(spec)
    A = spec.action_dim
    parts = []  # (frames | None, actions_vec, rewards, terminated, n)
    layout = []  # (dataset, local index) per kept episode
    for d in datasets:
        for i in range(len(d)):
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
            parts.append((frames, av, rw, te, L + 1))
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
    )
