"""The on-disk dataset format (see docs/DATASET.md).

A dataset is a directory::

    manifest.json                 the only index: format, world, shapes, one entry per episode
    episodes/e000000/f0000.zst    frames [0, 64) of episode 0: zstd of raw uint8 (n, H, W, 3)
    episodes/e000000/f0001.zst    frames [64, 128) ...
    episodes/e000000/steps.zst    zstd of an .npz: actions, rewards, terminations, truncations (and, from format
                                  version 2 when the world records any, state: its game variables per frame)

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ..fsutil import fsync_dir
from .errors import DatasetError
from .windows import flatten

FORMAT_NAME = "odyssey-gym-dataset"
FORMAT_VERSION = 2  # 2: the manifest names `state_variables`, steps.zst holds `state` per frame; 1 still reads
MANIFEST = "manifest.json"
DEFAULT_CHUNK_FRAMES = 64
DEFAULT_LEVEL = 3
_TMP_MARK = ".tmp-"


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
    state: np.ndarray | None = None  # (L+1, S) float32: the world's state_variables at each frame (None: none)

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

    def check_state(self, names: Sequence[str]) -> None:
        """The episode carries exactly the dataset's game variables `names`, finite (none: state is None)."""
        S = len(names)
        if self.state is None:
            if S:
                raise DatasetError(f"the dataset records game state {list(names)}; this episode has none")
            return
        problem = _state_problem(np.asarray(self.state), len(self.rewards) + 1, names)
        if problem:
            raise DatasetError(problem)


def _state_problem(st: np.ndarray, n_frames: int, names: Sequence[str]) -> str | None:
    """Why `st` is not the game state of an episode of `n_frames` frames with variables `names` (None: it is)."""
    if not names:
        return f"the dataset records no game state, but the episode holds state of shape {st.shape}"
    if st.shape != (n_frames, len(names)) or st.dtype.kind != "f":
        return f"state must be float ({n_frames}, {len(names)}) for {list(names)}, got {st.dtype} {st.shape}"
    off = np.flatnonzero(~np.isfinite(st).all(axis=1))
    if off.size:
        return f"state must be finite; frame {int(off[0])} holds {st[off[0]].tolist()} ({off.size} such frames)"
    return None


@dataclass
class EncodedEpisode:
    """An episode already compressed (done in recording workers, so the writer only writes bytes)."""

    length: int
    frame_chunks: list  # [(start, count, bytes)]
    steps: bytes
    state_dim: int = 0  # game variables per frame in `steps` (0: none)
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


def encode_steps(actions, rewards, terminations, truncations, level: int = DEFAULT_LEVEL, state=None) -> bytes:
    buf = io.BytesIO()
    extra = {} if state is None else {"state": np.asarray(state, dtype=np.float32)}
    np.savez(
        buf,
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminations=np.asarray(terminations, dtype=bool),
        truncations=np.asarray(truncations, dtype=bool),
        **extra,
    )
    return _compressor(level).compress(buf.getvalue())


class EpisodeEncoder:
    """Streams one episode into compressed chunks as frames arrive (so a worker never holds raw long episodes).

    `add(frame)` for the first frame, then `add(frame, action, reward, terminated, truncated)` per step; `state=`
    (the world's game variables at that frame) on every call or on none.
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
        self.states: list = []
        self.action_shape = tuple(action_shape)
        self.action_dtype = np.dtype(action_dtype)

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, frame, action=None, reward=0.0, terminated=False, truncated=False, state=None) -> None:
        if self._n_frames > 0 and (state is not None) != bool(self.states):
            raise ValueError("give the state with every frame of an episode or with none")
        if state is not None:
            self.states.append(np.asarray(state, np.float32))
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
        state = np.stack(self.states) if self.states else None
        steps = encode_steps(actions, self.rewards, self.terminations, self.truncations, self.level, state=state)
        return EncodedEpisode(
            length=L, frame_chunks=chunks, steps=steps, state_dim=0 if state is None else state.shape[1],
            seed=seed, worker=worker,
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
    st = None if ep.state is None else np.asarray(ep.state, np.float32)
    enc.add(ep.frames[0], state=None if st is None else st[0])
    for i in range(len(ep.rewards)):
        enc.add(ep.frames[i + 1], actions[i], float(ep.rewards[i]), bool(ep.terminations[i]), bool(ep.truncations[i]),
                state=None if st is None else st[i + 1])
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
                bad = _entry_problems(self.manifest["episodes"])  # appending would bury the damage
                if bad:
                    i = min(bad)
                    raise DatasetError(f"{manifest_path}: refusing to append: episode {i}: {bad[i]} "
                                       f"({len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'}; see Dataset.verify())")
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
                    "state_variables": list(self.spec.state_variables),
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
        have = tuple(m.get("state_variables", ()))
        if have != spec.state_variables:
            raise DatasetError(f"{self.path}: dataset records game state {list(have)} (format version "
                               f"{m['format_version']}), world {spec.name!r} records {list(spec.state_variables)}; "
                               f"record into a new directory (the old one still reads)")

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
    def state_variables(self) -> tuple[str, ...]:
        """The game variables each episode carries per frame: fixed when the dataset was created (none before
        format version 2)."""
        return tuple(self.manifest.get("state_variables", ()))

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
            try:
                episode.check_state(self.state_variables)
            except DatasetError as e:
                raise DatasetError(f"{self.path}: {e}") from None
            episode = encode_episode(episode, self.chunk_frames, self.level)
        if episode.length < 1:
            raise DatasetError("refusing to write an episode of 0 steps")
        if episode.state_dim != len(self.state_variables):
            raise DatasetError(f"{self.path}: the dataset records game state {list(self.state_variables)}; the episode "
                               f"carries {episode.state_dim} variables per frame")
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
    """Read manifest.json and check its top level: every key a reader relies on, with a usable type.

    Episode entries are checked one by one (`_entry_problem`) so that one bad entry spoils only its episode."""
    p = Path(path) / MANIFEST
    if not p.exists():
        raise DatasetError(f"{path}: not a dataset (no {MANIFEST})")
    try:
        m = json.loads(p.read_bytes())
    except (ValueError, OSError) as e:
        raise DatasetError(f"{p}: unreadable manifest: {e}") from e
    if not isinstance(m, dict):
        raise DatasetError(f"{p}: expected a JSON object, got a {type(m).__name__}")
    if m.get("format") != FORMAT_NAME:
        raise DatasetError(f"{p}: not an {FORMAT_NAME} manifest (format={m.get('format')!r})")
    if not _is_int(m.get("format_version")):
        raise DatasetError(f"{p}: 'format_version' must be an integer, got {m.get('format_version')!r}")
    if m["format_version"] > FORMAT_VERSION:
        raise DatasetError(f"{p}: format version {m['format_version']} is newer than this code's {FORMAT_VERSION}")
    missing = [k for k in _MANIFEST_KEYS if k not in m]
    if missing:
        raise DatasetError(f"{p}: missing key(s) {missing}")
    w = m["world"]
    if not isinstance(w, dict) or not isinstance(w.get("name"), str) or not _is_int(w.get("version")):
        raise DatasetError(f"{p}: 'world' must be an object with a string 'name' and an integer 'version', got {w!r}")
    fs = m["frame_shape"]
    if not (isinstance(fs, list) and len(fs) == 3 and all(_is_int(x) and x > 0 for x in fs) and fs[2] == 3):
        raise DatasetError(f"{p}: 'frame_shape' must be [H, W, 3] with positive integers, got {fs!r}")
    ash = m["action_shape"]
    if not (isinstance(ash, list) and len(ash) <= 1 and all(_is_int(x) and x > 0 for x in ash)):
        raise DatasetError(f"{p}: 'action_shape' must be [] (discrete) or [buttons] (multibinary), got {ash!r}")
    try:
        dt = np.dtype(m["action_dtype"])
    except (TypeError, ValueError):
        dt = None
    if dt is None or not isinstance(m["action_dtype"], str) or dt.kind not in "iu":
        raise DatasetError(f"{p}: 'action_dtype' must name an integer numpy dtype, got {m['action_dtype']!r}")
    sv = m.get("state_variables", [])
    if not (isinstance(sv, list) and all(isinstance(v, str) and v for v in sv) and len(set(sv)) == len(sv)):
        raise DatasetError(f"{p}: 'state_variables' must be a list of distinct game variable names, got {sv!r}")
    for k in ("action_dim", "chunk_frames"):
        if not _is_int(m[k]) or m[k] < 1:
            raise DatasetError(f"{p}: {k!r} must be a positive integer, got {m[k]!r}")
    if ash and ash[0] != m["action_dim"]:
        raise DatasetError(f"{p}: 'action_dim' {m['action_dim']} does not match 'action_shape' {ash} (multibinary)")
    if not isinstance(m["episodes"], list):
        raise DatasetError(f"{p}: 'episodes' must be a list, got a {type(m['episodes']).__name__}")
    return m


_MANIFEST_KEYS = ("world", "frame_shape", "action_shape", "action_dtype", "action_dim", "chunk_frames", "episodes")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _safe_rel_dir(d) -> bool:
    """A relative path of plain names below the dataset root (no '..', no absolute path, no backslashes)."""
    if not isinstance(d, str) or not d or d.startswith("/") or "\\" in d:
        return False
    return all(part not in ("", ".", "..") for part in d.split("/"))


def _safe_name(f) -> bool:
    return _safe_rel_dir(f) and "/" not in f


def _file_problem(info, what: str) -> str | None:
    if not isinstance(info, dict):
        return f"{what} entry is not an object: {info!r}"
    if not _safe_name(info.get("file")):
        return f"{what} file {info.get('file')!r} is not a file name inside the episode directory"
    if not _is_int(info.get("bytes")) or not isinstance(info.get("sha256"), str):
        return f"{what} file {info['file']!r} lacks an integer 'bytes' or a 'sha256'"
    return None


def _entry_problem(e) -> str | None:
    """Why an episode entry of the manifest cannot be read as listed (None when it can): its keys, its paths
    and its chunk layout (contiguous chunks from frame 0 covering all length + 1 frames, file names unique)."""
    if not isinstance(e, dict):
        return f"entry is not an object: {e!r}"
    missing = [k for k in ("id", "dir", "length", "frames", "steps") if k not in e]
    if missing:
        return f"entry lacks key(s) {missing}"
    if not _is_int(e["id"]):
        return f"id must be an integer, got {e['id']!r}"
    if not _safe_rel_dir(e["dir"]):
        return f"dir {e['dir']!r} is not a relative path inside the dataset"
    if not _is_int(e["length"]) or e["length"] < 1:
        return f"length must be a positive integer, got {e['length']!r}"
    if e.get("seed") is not None and not _is_int(e["seed"]):
        return f"seed must be an integer (or null), got {e['seed']!r}"
    if not isinstance(e["frames"], list) or not e["frames"]:
        return "'frames' must be a non-empty list of chunks"
    for info in e["frames"]:
        bad = _file_problem(info, "frame chunk")
        if bad:
            return bad
    bad = _file_problem(e["steps"], "steps")
    if bad:
        return bad
    names = [f["file"] for f in e["frames"]] + [e["steps"]["file"]]
    if len(set(names)) != len(names):
        return f"a file is listed twice: {names}"
    at = 0
    for f in e["frames"]:
        start, count = f.get("start"), f.get("count")
        if not (_is_int(start) and _is_int(count)) or count < 1:
            return f"chunk {f['file']!r} has start {start!r} / count {count!r} (a positive integer count)"
        if start != at:
            return f"chunk {f['file']!r} starts at frame {start}, expected {at} (chunks must be contiguous from 0)"
        at += count
    if at != e["length"] + 1:
        return f"chunks hold {at} frames, an episode of {e['length']} steps has {e['length'] + 1}"
    return None


def _entry_problems(episodes: list) -> dict[int, str]:
    """Episode index -> why its manifest entry is unusable (metadata only: no file is read)."""
    problems: dict[int, str] = {}
    first: dict[tuple[str, object], int] = {}
    for i, e in enumerate(episodes):
        bad = _entry_problem(e)
        if bad is None:
            for key in ("id", "dir"):
                j = first.setdefault((key, e[key]), i)
                if j != i:
                    bad = f"duplicates episode {j} (same {key} {e[key]!r})"
                    break
        if bad is not None:
            problems[i] = bad
    return problems


class Dataset:
    """A recorded dataset directory, read-only. Frames are decoded chunk by chunk on demand.

    Every read checks the file's sha256 against the manifest; a missing, truncated or corrupt file
    raises `DatasetError` naming the file and the episode, and never affects other episodes. So does a
    manifest entry that cannot be read as listed (bad paths or chunk layout, a duplicate of another entry)
    and steps whose values lie outside the world (non-finite rewards, actions outside the action space).
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
        self.state_variables: tuple[str, ...] = tuple(m.get("state_variables", ()))
        self.chunk_frames = int(m["chunk_frames"])
        self.episodes: list[dict] = m["episodes"]
        self._dctx = None
        self._problems = _entry_problems(self.episodes)
        if world is not None:
            self.check_world(world)

    def _check_entry(self, i: int) -> None:
        bad = self._problems.get(i + len(self) if i < 0 else i)
        if bad is not None:
            e = self.episodes[i]
            ident = e.get("id") if isinstance(e, dict) else None
            raise DatasetError(f"episode {i} (id {ident}) in {self.path / MANIFEST}: {bad}")

    def check_world(self, world) -> None:
        from ..worlds import get_world

        spec = get_world(world)
        if spec.name != self.world_name or spec.version != self.world_version:
            raise DatasetError(f"{self.path}: dataset holds world {self.world_name!r} v{self.world_version}, "
                               f"not {spec.name!r} v{spec.version}")
        if spec.frame_shape != self.frame_shape or spec.action_shape != self.action_shape:
            raise DatasetError(f"{self.path}: dataset shapes frames {self.frame_shape} actions {self.action_shape} "
                               f"!= world {spec.name!r} frames {spec.frame_shape} actions {spec.action_shape}")
        if spec.action_dim != self.action_dim or spec.action_dtype != self.action_dtype:
            raise DatasetError(f"{self.path}: dataset actions {self.action_dtype} of dim {self.action_dim} "
                               f"!= world {spec.name!r} actions {spec.action_dtype} of dim {spec.action_dim}")

    @property
    def spec(self):
        from ..worlds import get_world

        return get_world(self.world_name)

    def __len__(self) -> int:
        return len(self.episodes)

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, world={self.world_name!r}, episodes={len(self)}, steps={self.num_steps})"

    def _sound(self):
        return (e for i, e in enumerate(self.episodes) if i not in self._problems)

    @property
    def num_steps(self) -> int:
        """Steps of the episodes whose manifest entries are sound (`verify()` lists the others)."""
        return sum(e["length"] for e in self._sound())

    @property
    def num_frames(self) -> int:
        return sum(e["length"] + 1 for e in self._sound())

    @property
    def nbytes(self) -> int:
        return sum(sum(f["bytes"] for f in e["frames"]) + e["steps"]["bytes"] for e in self._sound())

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
        self._check_entry(i)
        return [(f["start"], f["count"]) for f in self.episodes[i]["frames"]]

    def read_chunk(self, i: int, c: int) -> np.ndarray:
        """Frames of chunk c of episode i: uint8 (count, H, W, 3), read-only view of fresh memory."""
        self._check_entry(i)
        info = self.episodes[i]["frames"][c]
        n = info["count"]
        raw = self._decompress(i, info, self._read(i, info), n * int(np.prod(self.frame_shape)))
        return np.frombuffer(raw, np.uint8).reshape((n, *self.frame_shape))

    def load_steps(self, i: int) -> dict[str, np.ndarray]:
        """actions, rewards, terminations, truncations of episode i (no frames), checked against the world; and
        `state` (L+1, S) float32 when the dataset records game state."""
        self._check_entry(i)
        e = self.episodes[i]
        info = e["steps"]
        where = f"episode {i} (id {e['id']}), file {self.path / e['dir'] / info['file']}"
        raw = self._decompress(i, info, self._read(i, info), None)
        try:
            with np.load(io.BytesIO(raw)) as z:
                out = {k: z[k] for k in ("actions", "rewards", "terminations", "truncations")}
                state = z["state"] if "state" in z.files else None
        except Exception as err:
            raise DatasetError(f"{where}: bad steps data: {err}") from err
        L = e["length"]
        if any(v.ndim < 1 or len(v) != L for v in out.values()):
            raise DatasetError(f"{where}: step arrays do not have length {L}")
        if self.state_variables or state is not None:
            if state is None:
                raise DatasetError(f"{where}: the manifest records game state {list(self.state_variables)}; "
                                   f"the steps hold none")
            bad = _state_problem(state, L + 1, self.state_variables)
            if bad:
                raise DatasetError(f"{where}: {bad}")
            out["state"] = state
        bad = self._steps_problem(e, out)
        if bad:
            raise DatasetError(f"{where}: {bad}")
        return out

    def _steps_problem(self, e: dict, s: dict[str, np.ndarray]) -> str | None:
        """Why the step values cannot be this world's (None when they can); O(L) vector checks, once per read."""
        a, r = s["actions"], s["rewards"]
        if a.dtype != self.action_dtype or a.shape[1:] != self.action_shape:
            return (f"actions are {a.dtype} {a.shape[1:]}, the manifest says {self.action_dtype} {self.action_shape}")
        if self.action_shape:  # multibinary: one 0/1 per button
            off = np.flatnonzero(((a != 0) & (a != 1)).any(axis=-1))
            if off.size:
                return f"actions must be 0/1 per button; step {int(off[0])} holds {a[off[0]].tolist()}"
        else:  # discrete: an index into the action_dim choices
            off = np.flatnonzero((a < 0) | (a >= self.action_dim))
            if off.size:
                return f"actions must lie in [0, {self.action_dim}); step {int(off[0])} holds {int(a[off[0]])}"
        if r.dtype.kind != "f":
            return f"rewards must be floats, got {r.dtype}"
        off = np.flatnonzero(~np.isfinite(r))
        if off.size:
            return f"rewards must be finite; step {int(off[0])} holds {float(r[off[0]])} ({off.size} such steps)"
        te, tr = s["terminations"], s["truncations"]
        if te.dtype != bool or tr.dtype != bool:
            return f"terminations/truncations must be bool, got {te.dtype} / {tr.dtype}"
        if (te[:-1] | tr[:-1]).any():
            return f"the episode ends before its last step (step {int(np.flatnonzero(te[:-1] | tr[:-1])[0])})"
        if not (te[-1] or tr[-1]):
            return "neither terminated nor truncated at its last step"
        ret, total = e.get("return"), float(np.sum(r, dtype=np.float64))
        if _is_number(ret) and abs(float(ret) - total) > 1e-4 * (1.0 + float(np.abs(r).sum(dtype=np.float64))):
            return f"rewards sum to {total}, the manifest's return is {ret}"
        for k, flags in (("terminated", te), ("truncated", tr)):
            if isinstance(e.get(k), bool) and e[k] != bool(flags[-1]):
                return f"the manifest says {k}={e[k]}, the steps say {bool(flags[-1])}"
        return None

    def load_frames(self, i: int) -> np.ndarray:
        self._check_entry(i)
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
                       meta={k: e[k] for k in ("id", "run") if k in e}, state=s.get("state"))

    def __iter__(self):
        for i in range(len(self)):
            yield self.load_episode(i)

    def verify(self, raise_on_error: bool = False) -> list[DatasetError]:
        """Read and check every episode: its manifest entry (paths, chunk layout, no duplicate), every file's
        size and sha256, and the step values (finite rewards, actions in the action space, the episode ending
        at its last step and nowhere before). Returns the problems found, one per episode (empty when sound)."""
        problems: list[DatasetError] = []
        for i in range(len(self)):
            try:
                self.load_steps(i)  # checks the entry first
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
        return flatten([self], spec, skip_corrupt, load_frames)


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
        # game state reads only when every part records the same variables (a format-1 part records none)
        same = all(d.state_variables == d0.state_variables for d in self.datasets)
        self.state_variables = d0.state_variables if same else ()
        self._index = [(k, j) for k, d in enumerate(self.datasets) for j in range(len(d))]
        self.episodes = [d.episodes[j] for k, d in enumerate(self.datasets) for j in range(len(d))]

    spec = Dataset.spec

    @property
    def num_steps(self) -> int:
        return sum(d.num_steps for d in self.datasets)

    @property
    def num_frames(self) -> int:
        return sum(d.num_frames for d in self.datasets)

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
        return flatten(self.datasets, spec, skip_corrupt, load_frames)


def open_dataset(path_or_paths, world=None) -> Dataset | MultiDataset:
    """One directory -> Dataset; a list of directories of the same world -> MultiDataset."""
    if isinstance(path_or_paths, (str, os.PathLike)):
        return Dataset(path_or_paths, world)
    paths = list(path_or_paths)
    return Dataset(paths[0], world) if len(paths) == 1 else MultiDataset(paths, world)
