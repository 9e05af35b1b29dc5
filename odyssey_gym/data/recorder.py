"""Multi-process recording from a real engine into a dataset.

Each worker process runs its own engine and behaviour policy, compresses frames into chunks as they
come (so the compression cost is spread over the workers) and sends each *finished* episode to the
parent. The parent alone writes episode files and the manifest (`DatasetWriter`), so the manifest
is always consistent. Ctrl-C stops the workers (their unfinished episodes are dropped), writes
every finished episode and commits. An OSError while writing (e.g. a full disk) stops the run and
leaves the dataset as it was after the last written episode.

Seeds: the episode seed is derived from (seed, run, worker, episode); `run` counts the collection
runs already in the dataset, so appending to a dataset never repeats the seeds of earlier runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from ..worlds import get_world
from .dataset import DEFAULT_CHUNK_FRAMES, DEFAULT_LEVEL, DatasetWriter, EpisodeEncoder
from .policies import POLICY_NAMES

PROGRESS_EVERY_S = 0.25


def episode_seed(seed: int, run: int, worker: int, episode: int) -> int:
    """The engine seed of one episode, a pure function of its coordinates (recorded per episode)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, run, worker, episode]).generate_state(1)[0] % (2**31))


def worker_budgets(steps: int, workers: int) -> list[int]:
    return [steps // workers + (1 if w < steps % workers else 0) for w in range(workers)]


@dataclass
class WorkerConfig:
    world: str
    worker: int
    steps: int
    seed: int
    run: int
    policy: str = "sticky"
    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    level: int = DEFAULT_LEVEL
    threaded_compress: bool = True
    record: bool = True  # False: step the engine and policy only (benchmark baseline)
    seconds: float | None = None  # also stop this long after the go signal (benchmarks time by seconds)


def _state(spec, info) -> np.ndarray | None:
    """The world's game variables from an engine step's info (None for a world that records none)."""
    if not spec.state_variables:
        return None
    st = (info or {}).get("state")
    if st is None or np.shape(st) != (len(spec.state_variables),):
        raise RuntimeError(f"world {spec.name!r} records {list(spec.state_variables)}, but its engine's info holds "
                           f"state {st!r}")
    return st


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


class _ParentGone(Exception):
    pass


def _put(q, msg, parent: int) -> None:
    """q.put that gives up when the parent process has died (a full queue nobody reads would block forever)."""
    while True:
        try:
            q.put(msg, timeout=1.0)
            return
        except queue_mod.Full:
            if os.getppid() != parent:
                raise _ParentGone from None


def worker_main(cfg: WorkerConfig, out_q, stop_event, go_event=None) -> None:
    """Record episodes until the step budget is spent or stop_event is set; send them to out_q."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, _raise_exit)  # terminate() still closes the engine (its process ignores SIGTERM)
    parent = os.getppid()
    env = None
    executor = None
    try:
        from ..worlds import make_real_env
        from .policies import make_policy

        spec = get_world(cfg.world)
        env = make_real_env(spec)
        policy = make_policy(cfg.policy, spec, np.random.SeedSequence([cfg.seed % 2**32, cfg.run, cfg.worker, 2**31]))
        if cfg.threaded_compress and cfg.record:
            from concurrent.futures import ThreadPoolExecutor

            executor = ThreadPoolExecutor(1)
        steps_done = 0
        reported = 0
        ep_index = 0
        env.reset(seed=0)  # engine fully started before we say ready
        _put(out_q, ("ready", cfg.worker, None), parent)
        while go_event is not None and not go_event.wait(0.1):  # all engines start stepping together
            if stop_event.is_set():
                break
            if os.getppid() != parent:
                raise _ParentGone
        last_report = time.monotonic()
        deadline = None if cfg.seconds is None else last_report + cfg.seconds

        def spent() -> bool:
            return steps_done >= cfg.steps or (deadline is not None and time.monotonic() >= deadline)

        while not spent() and not stop_event.is_set():
            seed = episode_seed(cfg.seed, cfg.run, cfg.worker, ep_index)
            obs, info = env.reset(seed=seed)
            policy.reset(obs)
            enc = None
            if cfg.record:
                enc = EpisodeEncoder(spec.frame_shape, spec.action_shape, spec.action_dtype, cfg.chunk_frames, cfg.level, executor)
                enc.add(obs, state=_state(spec, info))
            done = False
            while not done:
                if stop_event.is_set():
                    enc = None  # drop the unfinished episode
                    break
                action = policy.act(obs)
                obs, reward, terminated, truncated, info = env.step(action)
                steps_done += 1
                if spent() and not (terminated or truncated):
                    truncated = True  # the budget cuts this episode
                done = terminated or truncated
                if enc is not None:
                    enc.add(obs, np.asarray(action, dtype=spec.action_dtype), float(reward), bool(terminated), bool(truncated),
                            state=_state(spec, info))
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY_S:
                    if os.getppid() != parent:  # the parent was killed: nobody will read what we record
                        raise _ParentGone
                    _put(out_q, ("progress", cfg.worker, steps_done - reported), parent)
                    reported, last_report = steps_done, now
            if enc is not None:
                _put(out_q, ("episode", cfg.worker, enc.finish(seed=seed, worker=cfg.worker, meta={"run": cfg.run})), parent)
            elif not cfg.record and done:
                _put(out_q, ("episode", cfg.worker, None), parent)
            ep_index += 1
        _put(out_q, ("progress", cfg.worker, steps_done - reported), parent)
        _put(out_q, ("done", cfg.worker, steps_done), parent)
    except _ParentGone:
        out_q.cancel_join_thread()  # nobody will read the rest: exit without flushing
    except BaseException:
        try:
            _put(out_q, ("error", cfg.worker, traceback.format_exc()), parent)
        except _ParentGone:
            pass
    finally:
        if executor is not None:
            executor.shutdown(wait=False)
        if env is not None:
            env.close()


@dataclass
class CollectResult:
    out: str
    steps: int = 0  # env steps written this run
    frames: int = 0  # frames written this run (steps + one first frame per episode)
    episodes: int = 0
    bytes: int = 0
    seconds: float = 0.0  # wall time, worker start-up included
    seconds_running: float = 0.0  # from the moment every engine was up (the steady-state rate)
    interrupted: bool = False
    error: str | None = None
    total_episodes: int = 0
    total_frames: int = 0
    worker_steps: list = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    @property
    def frames_per_s_running(self) -> float:
        return self.steps / self.seconds_running if self.seconds_running > 0 else 0.0

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes / self.frames if self.frames else 0.0

    def summary(self) -> str:
        status = "interrupted, kept finished episodes" if self.interrupted else ("FAILED: " + self.error if self.error else "done")
        return (f"collect {status}: {self.episodes} episodes, {self.steps} steps, {self.frames} frames in {self.seconds:.1f}s "
                f"({self.frames_per_s:.0f} frames/s), {self.bytes / 2**20:.1f} MiB ({self.bytes_per_frame:.0f} bytes/frame); "
                f"dataset {self.out} now holds {self.total_episodes} episodes, {self.total_frames} frames")


def _start_workers(cfgs, start_method):
    ctx = mp.get_context(start_method)
    q = ctx.Queue(maxsize=256)
    stop = ctx.Event()
    go = ctx.Event()
    procs = [ctx.Process(target=worker_main, args=(c, q, stop, go), name=f"odyssey-collect-{c.worker}", daemon=True) for c in cfgs]
    for p in procs:
        p.start()
    return q, stop, go, procs


def _stop_workers(procs, stop, q, on_message, grace_s: float = 20.0) -> None:
    """Ask workers to stop, keep draining their messages until they exit, then kill stragglers."""
    stop.set()
    deadline = time.monotonic() + grace_s
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        try:
            on_message(q.get(timeout=0.1))
        except queue_mod.Empty:
            pass
    while True:  # messages flushed just before exit
        try:
            on_message(q.get_nowait())
        except (queue_mod.Empty, OSError, ValueError):
            break
    for p in procs:
        if p.is_alive():
            p.terminate()
        p.join(timeout=5)


def collect(world, out, steps: int, workers: int = 1, seed: int = 0, policy: str = "sticky",
            chunk_frames: int = DEFAULT_CHUNK_FRAMES, level: int = DEFAULT_LEVEL, progress: bool = True,
            threaded_compress: bool = True, start_method: str = "spawn", commit_interval_s: float = 1.0,
            writer_cls=DatasetWriter) -> CollectResult:
    """Record `steps` env steps of `world` with `workers` processes into the dataset dir `out`.

    Appends when `out` already holds a dataset of the same world. Returns a CollectResult (also on
    Ctrl-C, with interrupted=True, and on a write error, with error set).
    """
    spec = get_world(world)
    if steps < 1 or workers < 1:
        raise ValueError(f"need steps >= 1 and workers >= 1, got steps={steps} workers={workers}")
    if policy not in POLICY_NAMES and not os.path.exists(policy):
        raise FileNotFoundError(f"policy {policy!r} is neither one of {', '.join(POLICY_NAMES)} nor an existing SB3 .zip")
    workers = min(workers, steps)
    writer = writer_cls(out, spec, chunk_frames=chunk_frames, level=level, commit_interval_s=commit_interval_s)
    res = CollectResult(out=str(out))
    try:
        run = writer.begin_run(seed=seed, workers=workers, steps=steps, policy=policy)
        cfgs = [WorkerConfig(spec.name, w, b, seed, run, policy, writer.chunk_frames, level, threaded_compress)
                for w, b in enumerate(worker_budgets(steps, workers))]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, unit="frame", unit_scale=True, desc=f"collect {spec.name}", file=sys.stderr, dynamic_ncols=True)
        t0 = time.monotonic()
        # Ctrl-C only sets a flag: a KeyboardInterrupt inside Queue.get would corrupt the pipe mid-message
        sigints = [0]
        old_handler = None

        def on_sigint(signum, frame):
            sigints[0] += 1
            if sigints[0] >= 2:
                raise KeyboardInterrupt

        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, on_sigint)
        q, stop, go, procs = _start_workers(cfgs, start_method)
        finished: set[int] = set()
        ready: set[int] = set()
        t_ready = [None]
        worker_errors: list[str] = []
        write_error: list[OSError] = []

        def on_message(msg):
            kind, w, payload = msg
            if kind == "progress":
                if bar is not None:
                    bar.update(payload)
            elif kind == "episode":
                if write_error:
                    return  # after a failed write we write nothing more
                try:
                    writer.add_episode(payload)
                except OSError as e:
                    write_error.append(e)
                    return
                res.episodes += 1
                res.steps += payload.length
                res.frames += payload.length + 1
                res.bytes += payload.nbytes
            elif kind == "ready":
                ready.add(w)
                if len(ready) == len(procs):
                    t_ready[0] = time.monotonic()
                    go.set()
            elif kind == "done":
                finished.add(w)
            elif kind == "error":
                finished.add(w)
                worker_errors.append(f"worker {w}:\n{payload}")

        try:
            while len(finished) < len(procs) and not write_error and not worker_errors and not sigints[0]:
                try:
                    on_message(q.get(timeout=0.2))
                except queue_mod.Empty:
                    dead = [p for c, p in zip(cfgs, procs) if not p.is_alive() and c.worker not in finished]
                    if dead:
                        time.sleep(0.5)  # its last messages may still be in flight
                        while True:
                            try:
                                on_message(q.get_nowait())
                            except queue_mod.Empty:
                                break
                        for c, p in zip(cfgs, procs):
                            if not p.is_alive() and c.worker not in finished:
                                worker_errors.append(f"worker {c.worker} died (exit code {p.exitcode})")
                                finished.add(c.worker)
            if sigints[0]:
                res.interrupted = True
                print("interrupted: stopping workers, writing finished episodes (Ctrl-C again to abort)", file=sys.stderr)
            _stop_workers(procs, stop, q, on_message)
        except KeyboardInterrupt:  # a second Ctrl-C: abort now, keep what is written
            res.interrupted = True
            stop.set()
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            if bar is not None:
                bar.close()
        res.seconds = time.monotonic() - t0
        res.seconds_running = time.monotonic() - (t_ready[0] or t0)
        if write_error:
            e = write_error[0]
            res.error = f"write error, dataset kept consistent at its last good episode: {e}"
        elif worker_errors:
            res.error = "\n".join(worker_errors)
        try:
            writer.commit()
        except OSError as e:
            res.error = (res.error + "; " if res.error else "") + f"could not update the manifest ({e}); the previous manifest is intact"
    finally:
        try:
            writer.close()
        except OSError:
            writer._release()
    res.total_episodes = writer.num_episodes
    res.total_frames = writer.totals["frames"]
    return res


def engine_only(world, steps: int | None = None, workers: int = 1, seed: int = 0, policy: str = "random",
                start_method: str = "spawn", seconds: float | None = None) -> dict:
    """Step the engine with `workers` processes and a policy, recording nothing (the speed baseline).

    Give a step budget (split over the workers) or `seconds` each worker steps for (or both: the first
    reached stops). Returns {"steps", "seconds", "steps_per_s", "workers", "per_process"}; time runs from
    the moment every engine is up to the last worker done, the same span as `CollectResult.seconds_running`."""
    spec = get_world(world)
    if steps is None and seconds is None:
        raise ValueError("engine_only needs steps or seconds")
    if workers < 1 or (steps is not None and steps < workers) or (seconds is not None and seconds <= 0):
        raise ValueError(f"need workers >= 1, steps >= workers and seconds > 0 (got {workers}, {steps}, {seconds})")
    budgets = worker_budgets(steps, workers) if steps is not None else [2**62] * workers
    cfgs = [WorkerConfig(spec.name, w, b, seed, 0, policy, record=False, seconds=seconds) for w, b in enumerate(budgets)]
    t0 = time.monotonic()
    q, stop, go, procs = _start_workers(cfgs, start_method)
    done, ready, total, errors = set(), set(), 0, []
    while len(done) < len(procs):
        try:
            kind, w, payload = q.get(timeout=1.0)
        except queue_mod.Empty:
            if not any(p.is_alive() for p in procs):
                errors.append(f"workers exited without finishing (exit codes {[p.exitcode for p in procs]})")
                break
            continue
        if kind == "ready":
            ready.add(w)
            if len(ready) == len(procs):
                t0 = time.monotonic()
                go.set()
        elif kind == "done":
            done.add(w)
            total += payload
        elif kind == "error":
            done.add(w)
            errors.append(payload)
    elapsed = time.monotonic() - t0
    _stop_workers(procs, stop, q, lambda m: None, grace_s=5)
    if errors:
        raise RuntimeError("engine worker failed:\n" + "\n".join(errors))
    return {"steps": total, "seconds": elapsed, "steps_per_s": total / elapsed, "workers": workers,
            "per_process": total / elapsed / workers}
