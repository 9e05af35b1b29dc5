"""`odyssey-gym bench`: world-model env speed beside the real ViZDoom engine, on one machine, in one run.

    odyssey-gym bench                                    # both worlds, num_envs 1..1024, device auto
    odyssey-gym bench --device cpu --num-envs 1,16 --steps 3 --engine-seconds 5 --main-job

For each world:
  * world-model env steps/s at each num_envs (torch backend on CUDA, numpy backend elsewhere): warm up, then
    time `--steps` env steps (CUDA synchronized before reading the clock), median of `--repeats`; a
    num_envs that runs out of memory is reported as such and larger ones are skipped;
  * action-to-frame latency p50/p99 at num_envs 1 (CUDA events around each step, synchronized per step;
    host clock on CPU);
  * the real engine's steps/s with K processes (one engine each, random actions, the world's config,
    frame skip and resolution), and with one process, measured in this same run;
  * ratios: best world-model steps/s / engine (K processes), and num_envs 1 / one engine process.

Prints a `## Speed: <machine>` section; with `--out FILE` (e.g. BENCHMARKS.md) it also writes (replaces) that
section there, and with `--json` a JSON file.
Failures are reported in the table and the exit code (1), never hidden.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .actions import random_actions

DEFAULT_WORLDS = "doom-explore,doom-takecover"
MAIN_JOB = ["record", "--world", "doom-explore", "--steps", "100"]  # the README's quick start, less its --out
DEFAULT_NUM_ENVS = "1,16,64,256,1024"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    from odyssey_gym.cli import add_device_argument

    p.add_argument("--worlds", default=DEFAULT_WORLDS, help=f"comma-separated worlds (default {DEFAULT_WORLDS})")
    p.add_argument("--num-envs", default=DEFAULT_NUM_ENVS, help=f"comma-separated batch sizes (default {DEFAULT_NUM_ENVS})")
    add_device_argument(p)
    p.add_argument("--steps", type=int, default=100, help="timed env steps per repeat (default 100)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: min(10, steps))")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    p.add_argument("--latency-steps", type=int, default=None, help="steps timed one by one at num_envs 1 (default: --steps)")
    p.add_argument("--engine-workers", type=int, default=None, help=f"engine processes (default: all CPU cores, here {_cpu_count()})")
    p.add_argument("--engine-seconds", type=float, default=10.0, help="seconds each engine measurement runs (default 10)")
    p.add_argument("--weights-root", default=None, help="dir holding <world>/ weight dirs (default: the shipped weights)")
    p.add_argument("--sampling-steps", type=int, default=None, help="denoising steps per frame (default: the model's)")
    p.add_argument("--eager", action="store_true", help="no CUDA graph (default on CUDA: CUDA graph, eager fallback)")
    p.add_argument("--compile-decoder", action="store_true",
                   help="CUDA graph with the frame decoder compiled (env compile='decoder'; CUDA only)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="markdown file to write (replace) the section in, e.g. BENCHMARKS.md (default: print it only)")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar over the measurements")
    p.add_argument("--main-job", action="store_true",
                   help=f"also time the README main job: odyssey-gym {' '.join(MAIN_JOB)}")


# ---------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {_cpu_count()} cores"


# ---------------------------------------------------------------------------------------------- world model


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, MemoryError) or isinstance(e, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                            or "failed to allocate" in msg)


def _random_actions(spec, n: int, batch: int, device, torch_backend: bool, seed: int = 0):
    """`random_actions` in the world's action dtype, as torch tensors on `device` for a torch-backend env."""
    a = random_actions(n, batch, spec.action_dim, spec.action_kind == "discrete", seed)
    if spec.action_kind != "discrete":
        a = a.astype(spec.action_dtype)
    if torch_backend:
        import torch

        return torch.from_numpy(a).to(device)
    return a


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """How `bench` times the env, read once from the command line (the timing code never sees argparse)."""

    steps: int = 100
    repeats: int = 3
    warmup: int | None = None  # None: min(10, steps)
    latency_steps: int | None = None  # None: steps
    sampling_steps: int | None = None
    compile: bool | str | None = None  # the env's `compile`: None (CUDA graph on CUDA), False (eager), "decoder"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Timing":
        return cls(steps=args.steps, repeats=args.repeats, warmup=args.warmup, latency_steps=args.latency_steps,
                   sampling_steps=args.sampling_steps,
                   compile=False if args.eager else "decoder" if args.compile_decoder else None)

    def warmup_for(self, n: int) -> int:
        return self.warmup if self.warmup is not None else min(10, n)


def _make_env(world, num_envs, device, weights, timing: Timing):
    from odyssey_gym.envs.vector_env import WorldModelVectorEnv

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = WorldModelVectorEnv(
            world, num_envs=num_envs, device=device, weights=weights,
            backend="torch" if device.type == "cuda" else "numpy",
            sampling_steps=timing.sampling_steps, compile=timing.compile,
        )
    for w in caught:
        print(f"  warning: {w.message}", file=sys.stderr)
    return env, [str(w.message) for w in caught]


def _mode(env) -> str:
    mode = getattr(env, "step_mode", "eager")
    err = getattr(env, "graph_error", None)
    return f"{mode} (CUDA graph failed: {err})" if err else mode


def time_env(world, num_envs: int, device, weights, timing: Timing) -> dict:
    """Steps/s of the vector env at `num_envs` (median of repeats); dict with 'error'/'oom' on failure."""
    import torch

    spec = _spec(world)
    steps, repeats = timing.steps, timing.repeats
    warmup = timing.warmup_for(steps)
    env = None
    try:
        env, warns = _make_env(world, num_envs, device, weights, timing)
        torch_backend = env.backend == "torch"
        acts = _random_actions(spec, warmup + steps, num_envs, device, torch_backend, seed=num_envs)
        with torch.no_grad():
            env.reset(seed=0)
            for t in range(warmup):
                env.step(acts[t])
            mode = _mode(env)  # after the first step: a first-step fallback shows here
            _sync(device)
            rates = []
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                for t in range(steps):
                    env.step(acts[warmup + t])
                _sync(device)
                rates.append(num_envs * steps / (time.perf_counter() - t0))
        if torch_backend:
            env.check_errors()
        mem = None
        if device.type == "cuda":
            mem = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        return {"num_envs": num_envs, "steps_per_s": float(np.median(rates)), "repeats": [round(r, 3) for r in rates],
                "ms_per_step": 1e3 * num_envs / float(np.median(rates)), "mode": mode, "dtype": str(env.dtype).replace("torch.", ""),
                "peak_gib": mem, "warnings": warns}
    except Exception as e:  # noqa: BLE001 (reported in the table)
        oom = _is_oom(e)
        if not oom:
            traceback.print_exc()
        return {"num_envs": num_envs, "oom": oom, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
    finally:
        _release(env, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)


def time_latency(world, device, weights, timing: Timing) -> dict:
    """Action-to-frame latency at num_envs 1: each step timed alone (CUDA events, synchronized per step)."""
    import torch

    spec = _spec(world)
    n = timing.latency_steps or timing.steps
    warmup = timing.warmup_for(n)
    env = None
    try:
        env, _ = _make_env(world, 1, device, weights, timing)
        acts = _random_actions(spec, warmup + n, 1, device, env.backend == "torch", seed=7)
        cuda = device.type == "cuda"
        gpu_ms, host_ms = [], []
        with torch.no_grad():
            env.reset(seed=0)
            for t in range(warmup):
                env.step(acts[t])
            _sync(device)
            for t in range(n):
                if cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    h0 = time.perf_counter()
                    start.record()
                    env.step(acts[warmup + t])
                    end.record()
                    end.synchronize()
                    host_ms.append((time.perf_counter() - h0) * 1e3)
                    gpu_ms.append(start.elapsed_time(end))
                else:
                    h0 = time.perf_counter()
                    env.step(acts[warmup + t])
                    host_ms.append((time.perf_counter() - h0) * 1e3)
        src = gpu_ms if cuda else host_ms
        out = {"steps": n, "p50_ms": float(np.percentile(src, 50)), "p99_ms": float(np.percentile(src, 99)),
               "clock": "cuda events" if cuda else "host clock", "mode": _mode(env)}
        if cuda:
            out["host_p50_ms"] = float(np.percentile(host_ms, 50))
            out["host_p99_ms"] = float(np.percentile(host_ms, 99))
        return out
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"[:300], "oom": _is_oom(e)}
    finally:
        _release(env, device)


def _spec(world):
    from odyssey_gym.worlds import get_world

    return get_world(world)


# ---------------------------------------------------------------------------------------------- real engine


def engine_speed(world: str, workers: int, seconds: float) -> dict:
    """Aggregate steps/s of `workers` engine processes stepping random actions together for `seconds`
    (start-up not timed): the data layer's `engine_only`, with a failure reported in the result, not raised."""
    from odyssey_gym.data.recorder import engine_only

    try:
        res = engine_only(world, workers=workers, seconds=seconds, policy="random")
    except RuntimeError as e:
        return {"workers": workers, "error": str(e).strip().splitlines()[-1][:300], "details": [str(e)]}
    return {**res, "seconds": seconds}


# ---------------------------------------------------------------------------------------------- main job


def main_job(weights_root: str | None, device: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "main_job.mp4"
        cmd = [sys.executable, "-m", "odyssey_gym.cli", *MAIN_JOB, "--out", str(out)]
        if device != "auto":
            cmd += ["--device", device]
        if weights_root:
            cmd += ["--weights", str(Path(weights_root) / "doom-explore")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        res = {"command": f"odyssey-gym {' '.join(MAIN_JOB)} --out <tmp>.mp4"
                          + (f" --device {device}" if device != "auto" else "")
                          + (" --weights <weights-root>/doom-explore" if weights_root else ""),
               "wall_s": wall, "returncode": proc.returncode, "mp4_bytes": out.stat().st_size if out.exists() else 0}
        if proc.returncode != 0:
            res["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            res["error"] = res["error"][0][:300]
            print(proc.stderr, file=sys.stderr)
        return res


# ---------------------------------------------------------------------------------------------- markdown


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    r = a / b
    return f"{r:.3g}x"


def render_section(res: dict) -> str:
    m = res["machine"]
    lines = [f"## Speed: {m['name']}", ""]
    lines.append(
        f"{res['date']}, torch {m['torch']}, device `{m['device']}`, CPU: {m['cpu']} ({m['cpu_cores']} cores), "
        f"vizdoom {m.get('vizdoom', 'n/a')}, load average at start {m['loadavg']}."
    )
    lines.append("")
    lines.append(f"Command: `{res['command']}`")
    lines.append("")
    for w in res["worlds"]:
        lines.append(f"### {w['world']} ({w['frame']} frames, frame skip {w['frame_skip']}; weights `{w['weights']}`)")
        lines.append("")
        eng, eng1 = w.get("engine") or {}, w.get("engine_1") or {}
        eng_rate = eng.get("steps_per_s")
        lines.append(f"| num_envs | world-model steps/s | ms per batched step | mode | ÷ engine ({eng.get('workers', '?')} proc) |")
        lines.append("|---:|---:|---:|---|---:|")
        for r in w["env"]:
            if "error" in r:
                what = "out of memory, skipped" if r.get("oom") else f"FAILED: {r['error']}"
                lines.append(f"| {r['num_envs']} | {what} | | | |")
            elif r.get("skipped"):
                lines.append(f"| {r['num_envs']} | skipped ({r['skipped']}) | | | |")
            else:
                mode = f"{r['mode']}, {r['dtype']}" + (f", peak {r['peak_gib']} GiB" if r.get("peak_gib") is not None else "")
                lines.append(f"| {r['num_envs']} | {_fmt(r['steps_per_s'])} | {_fmt(r['ms_per_step'])} | {mode} | "
                             f"{_ratio(r['steps_per_s'], eng_rate)} |")
        lines.append("")
        lat = w.get("latency") or {}
        if "error" in lat:
            lines.append(f"- Action-to-frame latency, num_envs 1: FAILED: {lat['error']}")
        elif lat:
            extra = f"; host clock p50 {lat['host_p50_ms']:.2f} ms, p99 {lat['host_p99_ms']:.2f} ms" if "host_p50_ms" in lat else ""
            lines.append(f"- Action-to-frame latency, num_envs 1 ({lat['clock']}, {lat['steps']} steps): "
                         f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms{extra}")
        for label, e in ((f"{eng.get('workers', '?')} processes", eng), ("1 process", eng1)):
            if not e:
                continue
            if "error" in e:
                lines.append(f"- Real engine (ViZDoom), {label}: FAILED: {e['error']}")
            else:
                lines.append(f"- Real engine (ViZDoom), {label}, {e['seconds']:g} s, random actions: "
                             f"{_fmt(e['steps_per_s'])} steps/s ({_fmt(e['per_process'])} per process)")
        best = w.get("best")
        if best:
            lines.append(f"- World model ÷ engine: best (num_envs {best['num_envs']}) {_fmt(best['steps_per_s'])} ÷ "
                         f"{_fmt(eng_rate) if eng_rate else 'n/a'} = **{_ratio(best['steps_per_s'], eng_rate)}**; "
                         f"num_envs 1 ÷ one engine process = **{_ratio(w.get('env1_rate'), eng1.get('steps_per_s'))}**")
        lines.append("")
    mj = res.get("main_job")
    if mj:
        status = "ok" if mj["returncode"] == 0 else f"FAILED (exit {mj['returncode']}: {mj.get('error', '')})"
        lines.append(f"Main job (`{mj['command']}`): **{mj['wall_s']:.1f} s** wall, start-up included, {status}.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_section(path: str | Path, section: str) -> None:
    """Insert `section` (starting with a '## ' heading) into the markdown file, replacing a same-heading one."""
    path = Path(path)
    heading = section.splitlines()[0].strip()
    text = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `odyssey-gym bench`; one section per machine.\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == heading), None)
    if start is None:
        new = text.rstrip() + "\n\n" + section
    else:
        end = next((j for j in range(start + 1, len(lines)) if re.match(r"^#{1,2} ", lines[j])), len(lines))
        before = "\n".join(lines[:start]).rstrip()
        after = "\n".join(lines[end:]).strip()
        new = (before + "\n\n" if before else "") + section + ("\n" + after + "\n" if after else "")
    path.write_text(new)


# ---------------------------------------------------------------------------------------------- run


def _parse_ints(s: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--{what} must be comma-separated integers, got {s!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise ValueError(f"--{what} must be positive integers, got {s!r}")
    return vals


@dataclass(frozen=True)
class BenchConfig:
    """What `bench` measures and where it writes, checked once from the command line (`bench` never sees argparse)."""

    worlds: tuple[str, ...]
    num_envs: tuple[int, ...]
    device: str = "auto"
    timing: Timing = Timing()
    engine_workers: int | None = None  # None: all CPU cores
    engine_seconds: float = 10.0
    weights_root: str | None = None  # a dir of <world>/ weight dirs; None: the shipped weights
    main_job: bool = False
    out: str | None = None  # BENCHMARKS.md-style file the section goes into
    json: str | None = None
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BenchConfig":
        """The command line's values, each bad one a ValueError that names its option."""
        if args.steps < 1 or args.repeats < 1:
            raise ValueError("--steps and --repeats must be >= 1")
        worlds = tuple(w.strip() for w in args.worlds.split(",") if w.strip())
        if not worlds:
            raise ValueError(f"--worlds names no world: {args.worlds!r}")
        return cls(worlds=worlds, num_envs=_parse_ints(args.num_envs, "num-envs"), device=args.device,
                   timing=Timing.from_args(args), engine_workers=args.engine_workers,
                   engine_seconds=args.engine_seconds, weights_root=args.weights_root, main_job=args.main_job,
                   out=args.out, json=args.json, progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = BenchConfig.from_args(args)
    except ValueError as e:
        print(f"odyssey-gym bench: {e}", file=sys.stderr)
        return 2
    return bench(cfg)


def bench(cfg: BenchConfig) -> int:
    """Time every world's env at every batch size, its batch-1 latency and the real engine; write the section."""
    import torch

    from odyssey_gym.envs.vector_env import resolve_device

    timing, num_envs = cfg.timing, list(cfg.num_envs)
    try:
        device = resolve_device(cfg.device)
        specs = [_spec(w) for w in cfg.worlds]
    except (ValueError, KeyError) as e:
        print(f"odyssey-gym bench: {e}", file=sys.stderr)
        return 2
    workers = cfg.engine_workers or _cpu_count()
    weights = {}
    for s in specs:
        if cfg.weights_root:
            d = Path(cfg.weights_root) / s.name
            if not (d / "config.json").is_file():
                print(f"odyssey-gym bench: no weights for {s.name!r} at {d}", file=sys.stderr)
                return 2
            weights[s.name] = str(d)
        else:
            weights[s.name] = None

    try:
        import vizdoom

        vz = getattr(vizdoom, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        vz = f"not importable ({type(e).__name__})"
    machine = {
        "name": machine_name(device), "device": str(device), "torch": torch.__version__, "cpu": cpu_model(),
        "cpu_cores": _cpu_count(), "vizdoom": vz,
        "loadavg": ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        machine["cuda"] = torch.version.cuda
    cmd = "odyssey-gym bench " + " ".join(a for a in sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == "bench" else "odyssey-gym bench"
    res = {"date": _dt.date.today().isoformat(), "machine": machine, "command": cmd, "worlds": []}
    failed = False
    print(f"bench on {machine['name']} (device {device}, torch {torch.__version__}, engine workers {workers})", file=sys.stderr)

    from tqdm import tqdm

    # one bar (ETA) over the measurements, each one's result line printed above it
    bar = tqdm(total=len(specs) * (len(num_envs) + 2), desc="bench", unit="part", file=sys.stderr,
               disable=not cfg.progress, dynamic_ncols=True)

    def say(line: str) -> None:
        bar.write(line, file=sys.stderr)

    for spec in specs:
        w = {"world": spec.name, "frame": f"{spec.frame_size[0]}x{spec.frame_size[1]}", "frame_skip": spec.frame_skip,
             "weights": weights[spec.name] or f"shipped ({spec.name})", "env": []}
        stop_reason = None
        for n in num_envs:
            if stop_reason:
                w["env"].append({"num_envs": n, "skipped": stop_reason})
                bar.update(1)
                continue
            r = time_env(spec.name, n, device, weights[spec.name], timing)
            w["env"].append(r)
            if "error" in r:
                if r.get("oom"):
                    stop_reason = f"out of memory at num_envs {n}"
                else:
                    failed = True
                say(f"  {spec.name} num_envs {n}: {'OOM' if r.get('oom') else 'FAILED'} {r['error']}")
            else:
                say(f"  {spec.name} num_envs {n}: {r['steps_per_s']:.3f} steps/s ({r['mode']})")
            bar.update(1)
        w["latency"] = time_latency(spec.name, device, weights[spec.name], timing)
        failed |= "error" in w["latency"]
        say(f"  {spec.name} latency: {w['latency']}")
        bar.update(1)
        w["engine"] = engine_speed(spec.name, workers, cfg.engine_seconds)
        w["engine_1"] = w["engine"] if workers == 1 else engine_speed(spec.name, 1, cfg.engine_seconds)
        for e in (w["engine"], w["engine_1"]):
            if "error" in e:
                failed = True
                say(f"  {spec.name} engine x{e['workers']} FAILED:\n" + "\n".join(e.get("details", [])))
        say(f"  {spec.name} engine: x{workers} {w['engine'].get('steps_per_s')}, x1 {w['engine_1'].get('steps_per_s')} steps/s")
        bar.update(1)
        ok = [r for r in w["env"] if "steps_per_s" in r]
        if ok:
            best = max(ok, key=lambda r: r["steps_per_s"])
            w["best"] = {"num_envs": best["num_envs"], "steps_per_s": best["steps_per_s"]}
            one = [r for r in ok if r["num_envs"] == 1]
            w["env1_rate"] = one[0]["steps_per_s"] if one else None
            w["ratio_best_vs_engine"] = (best["steps_per_s"] / w["engine"]["steps_per_s"]
                                         if w["engine"].get("steps_per_s") else None)
            w["ratio_1_vs_1_engine"] = (w["env1_rate"] / w["engine_1"]["steps_per_s"]
                                        if w["env1_rate"] and w["engine_1"].get("steps_per_s") else None)
        res["worlds"].append(w)

    bar.close()

    if cfg.main_job:
        res["main_job"] = main_job(cfg.weights_root, cfg.device)
        failed |= res["main_job"]["returncode"] != 0
        print(f"  main job: {res['main_job']['wall_s']:.1f} s (exit {res['main_job']['returncode']})", file=sys.stderr)

    section = render_section(res)
    if cfg.out:
        write_section(cfg.out, section)
    print(section)
    if cfg.json:
        Path(cfg.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 1 if failed else 0


def _release(env, device) -> None:
    """Close an env and hand its device memory back before the next measurement."""
    if env is not None:
        env.close()
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
