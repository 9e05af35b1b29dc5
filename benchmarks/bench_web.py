"""Web serving benchmark: how many players can one GPU hold at full fps with p99 action-to-frame <= 40 ms?

    python benchmarks/bench_web.py --world doom-explore --device cuda --counts 1,8,32,64,128,256 \
        --seconds-per-count 10 --json-out bench_web.json

For each player count N a server (`odyssey_gym.play.web`, one vector env with num_envs = N) runs in
this process on loopback, and N synthetic websocket clients in separate processes hold keys at the
world's fps and time each key message to the first frame that carries it. A count passes when every
client connected, got >= 95% of the world's fps, the server ticked at >= 95% of it, and the pooled
p99 latency is <= --p99-ms. Prints a markdown table (with the server's latency breakdown: queue
wait, model step, JPEG encode, send) and the GPU cost per player-hour at the largest passing N;
writes everything to --json-out.

Note the latency includes waiting for the next tick (uniform over one tick, 28.6 ms at 35 fps):
the fixed-rate tick is what keeps every player in one batch.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="doom-explore")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights)")
    p.add_argument("--counts", default="1,8,32,64,128,256", help="player counts to try, comma-separated")
    p.add_argument("--seconds-per-count", type=float, default=10.0, help="measured seconds per count")
    p.add_argument("--warmup-s", type=float, default=3.0, help="seconds before measuring (connect, compile)")
    p.add_argument("--p99-ms", type=float, default=40.0, help="latency bound for a passing count")
    p.add_argument("--fps-ratio", type=float, default=0.95, help="fraction of the world's fps a passing count keeps")
    p.add_argument("--gpu-price", type=float, default=2.0, help="$ per GPU-hour (default 2.0, an H100)")
    p.add_argument("--client-procs", type=int, default=0, help="client processes (0: auto, ~32 clients each)")
    p.add_argument("--sampling-steps", type=int, default=None)
    p.add_argument("--jpeg-quality", type=int, default=85)
    p.add_argument("--encode-workers", type=int, default=0, help="JPEG threads (0: min(8, CPUs))")
    p.add_argument("--jpeg-encoder", default="auto", choices=("auto", "cpu", "process", "cuda"),
                   help="where frames are JPEG-encoded: auto (the GPU where the env steps on CUDA), cpu (threads), "
                        "process (worker processes), cuda")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="leave the server's long-lived objects in the garbage collector's full passes (for comparison)")
    p.add_argument("--keep-going", action="store_true", help="try every count (default: stop after two failing counts in a row)")
    p.add_argument("--json-out", default="bench_web.json")
    return p.parse_args(argv)


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else float("nan")


def run_count(args, n: int) -> dict:
    from odyssey_gym.play.web.loadgen import client_process
    from odyssey_gym.play.web.server import WebConfig, start_in_thread

    cfg = WebConfig(world=args.world, host="127.0.0.1", port=0, max_players=n, device=args.device,
                    weights=args.weights, sampling_steps=args.sampling_steps, jpeg_quality=args.jpeg_quality,
                    encode_workers=args.encode_workers, jpeg_encoder=args.jpeg_encoder, record_seconds=0,
                    gc_freeze=not args.no_gc_freeze)
    t_build = time.perf_counter()
    srv = start_in_thread(cfg, env=None)
    build_s = time.perf_counter() - t_build
    game = srv.game
    fps = game.fps
    procs_n = args.client_procs or max(1, min(n, math.ceil(n / 32), max(1, (os.cpu_count() or 2) // 2)))
    split = [n // procs_n + (i < n % procs_n) for i in range(procs_n)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    uri = srv.url.replace("http://", "ws://") + "/ws"
    keys = sorted(game.world.keys)
    procs = [ctx.Process(target=client_process, args=(uri, k, keys, fps, args.warmup_s, args.seconds_per_count,
                                                       1000 * i, q), daemon=True) for i, k in enumerate(split)]
    try:
        for p in procs:
            p.start()
        time.sleep(args.warmup_s + 1.0)  # spawn + warmup; then count only the measured window on the server
        game.timings.clear()
        late0, tick0, t0 = game.late_ticks, game.tick, time.perf_counter()
        results = []
        for _ in procs:
            results += q.get(timeout=args.warmup_s + args.seconds_per_count + 120)
        ticks, elapsed = game.tick - tick0, time.perf_counter() - t0
        late = game.late_ticks - late0
        server_stats = game.stats()
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        srv.stop()

    lat = np.concatenate([r["latencies_ms"] for r in results]) if results else np.zeros(0, np.float32)
    client_fps = np.array([r["frames"] / args.seconds_per_count for r in results])
    errors = [r["error"] for r in results if r["error"]]
    server_fps = ticks / elapsed if elapsed > 0 else 0.0
    tim = server_stats["timings"]
    row = {
        "players": n, "connected": sum(r["error"] is None for r in results), "full": sum(r["full"] for r in results),
        "world_fps": fps, "server_fps": round(server_fps, 2), "late_ticks": late,
        "client_fps_mean": round(float(client_fps.mean()), 2) if client_fps.size else 0.0,
        "client_fps_min": round(float(client_fps.min()), 2) if client_fps.size else 0.0,
        "latency_p50_ms": round(_pct(lat, 50), 2), "latency_p99_ms": round(_pct(lat, 99), 2),
        "latency_samples": int(lat.size), "server_timings_ms": tim, "env_build_s": round(build_s, 2),
        "device": server_stats["device"], "jpeg_encoder": server_stats.get("jpeg_encoder"), "errors": errors[:5],
    }
    row["ok"] = bool(row["connected"] == n and row["client_fps_min"] >= args.fps_ratio * fps
                     and server_fps >= args.fps_ratio * fps and row["latency_p99_ms"] <= args.p99_ms)
    row["usd_per_player_hour"] = round(args.gpu_price / n, 5)
    return row


def _t(row, stage, key="p50_ms") -> str:
    v = row["server_timings_ms"].get(stage, {}).get(key)
    return "-" if v is None else f"{v:.2f}"


def _gc(row) -> str:
    """How many full garbage-collector passes the server made, and the longest (they stop every thread)."""
    g = row["server_timings_ms"].get("gc_full")
    return "0" if not g else f"{g['n']} ({g['max_ms']:.1f})"


def table(rows, args) -> str:
    head = ("| players | ok | server fps | client fps mean/min | latency p50 / p99 ms | queue p50 ms | "
            "step p50 / p99 ms | encode p50 / p99 ms | send p50 ms | tick→sent p99 ms | full GC passes (max ms) | "
            "$/player-h |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['players']} | {'yes' if r['ok'] else 'no'} | {r['server_fps']:.1f} | "
            f"{r['client_fps_mean']:.1f} / {r['client_fps_min']:.1f} | {r['latency_p50_ms']:.1f} / "
            f"{r['latency_p99_ms']:.1f} | {_t(r, 'queue')} | {_t(r, 'step')} / {_t(r, 'step', 'p99_ms')} | "
            f"{_t(r, 'encode')} / {_t(r, 'encode', 'p99_ms')} | {_t(r, 'send')} | {_t(r, 'tick_to_sent', 'p99_ms')} | "
            f"{_gc(r)} | {r['usd_per_player_hour']:.4f} |")
    return "\n".join(lines)


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    except ValueError:
        print(f"--counts must be comma-separated integers, got {args.counts!r}", file=sys.stderr)
        return 2
    if not counts or counts[0] < 1:
        print("--counts must list player counts >= 1", file=sys.stderr)
        return 2
    rows = []
    for n in counts:
        print(f"[bench_web] {args.world} on {args.device}: {n} players ...", file=sys.stderr, flush=True)
        row = run_count(args, n)
        rows.append(row)
        print(f"[bench_web]   ok={row['ok']} p99={row['latency_p99_ms']} ms client fps min={row['client_fps_min']} "
              f"server fps={row['server_fps']}" + (f" errors={row['errors'][:2]}" if row["errors"] else ""),
              file=sys.stderr, flush=True)
        # one failing count can be bad luck (the tick phase of few clients); two in a row end the sweep
        if not args.keep_going and len(rows) >= 2 and not rows[-1]["ok"] and not rows[-2]["ok"]:
            break
    passing = [r["players"] for r in rows if r["ok"]]
    best = max(passing) if passing else 0
    summary = {
        "world": args.world, "device": rows[0]["device"] if rows else args.device, "machine": machine(),
        "p99_bound_ms": args.p99_ms, "fps_ratio": args.fps_ratio, "gpu_usd_per_hour": args.gpu_price,
        "max_players_at_full_fps": best,
        "usd_per_player_hour": round(args.gpu_price / best, 5) if best else None,
        "seconds_per_count": args.seconds_per_count, "rows": rows,
    }
    print(f"## Web serving: {args.world} on {summary['machine'].get('gpu', summary['device'])}\n")
    print(table(rows, args))
    print(f"\nMax players at full fps ({rows[0]['world_fps'] if rows else '?'} fps) with p99 <= {args.p99_ms:g} ms: "
          f"**{best}**" + (f"; at ${args.gpu_price:g}/GPU-hour that is **${summary['usd_per_player_hour']:.4f} per "
                           f"player-hour**" if best else ""))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
