"""Where a tick's JPEGs should be encoded: the web server's three encoders on the same frames, in one run.

    python benchmarks/bench_jpeg.py --world doom-explore --counts 16,64,128 --repeats 30

Each count encodes that many of the shipped start bank's frames (real game frames, so the JPEG's entropy is the
game's), through the same `encode(frames, slots)` the server awaits: `CpuJpegEncoder` (PIL in a thread pool, the
frames copied to the host first), `ProcessJpegEncoder` (PIL in worker processes over shared memory, from host
frames as the server's numpy-backend env gives them) and, where CUDA and torchvision's nvJPEG are there,
`CudaJpegEncoder` (one batched call on the device frames). Prints the median and p90 milliseconds per tick for
each, and their ratios to the threads.

Why: a sweep of `bench_web.py` measured nvJPEG at 7.3 / 21.5 / 46.3 ms for 16 / 64 / 128 players, and CPU threads
4.5 ms for 16 in another run; a default needs both on one machine, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="doom-explore")
    p.add_argument("--weights", default=None, help="weights dir whose start bank gives the frames (default: shipped)")
    p.add_argument("--counts", default="16,64,128", help="frames per tick (players), comma-separated")
    p.add_argument("--repeats", type=int, default=30, help="timed ticks per count and encoder, after 3 of warm-up")
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--workers", type=int, default=0,
                   help="CPU encoder threads and processes (0: min(8, CPUs), as the server)")
    p.add_argument("--json-out", default=None)
    a = p.parse_args(argv)
    try:
        a.counts = sorted({int(c) for c in a.counts.split(",") if c.strip()})
    except ValueError:
        p.error(f"--counts must be comma-separated integers, got {a.counts!r}")
    if not a.counts or a.counts[0] < 1:
        p.error("--counts must list frame counts >= 1")
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    return a


def bank_frames(world: str, weights: str | None) -> np.ndarray:
    """(N, H, W, 3) uint8: every frame of the weights' start bank (`load_start_bank` reads and checks it)."""
    from odyssey_gym.model import load_start_bank

    bank = load_start_bank(weights or world)
    if bank is None:
        raise SystemExit(f"bench_jpeg: no start_bank.npz for {weights or world} (pass --weights DIR holding one)")
    return bank[0].reshape(-1, *bank[0].shape[-3:])


def time_encoder(encoder, frames, count: int, repeats: int) -> list[float]:
    """Milliseconds per `encode` of `count` frames, `repeats` times after 3 of warm-up."""
    slots = list(range(count))

    async def run() -> list[float]:
        out = []
        for i in range(3 + repeats):
            t = time.perf_counter()
            jpegs = await encoder.encode(frames, slots)
            dt = (time.perf_counter() - t) * 1e3
            if len(jpegs) != count or not all(j[:2] == b"\xff\xd8" for j in jpegs):
                raise RuntimeError(f"{encoder.name}: {len(jpegs)} outputs for {count} frames, or not JPEG")
            if i >= 3:
                out.append(dt)
        return out

    return asyncio.run(run())


def main(argv=None) -> int:
    import os

    import torch

    from odyssey_gym.play.web.jpeg import CpuJpegEncoder, CudaJpegEncoder, ProcessJpegEncoder, cuda_jpeg_problem

    args = parse_args(argv)
    pool = bank_frames(args.world, args.weights)
    workers = args.workers or min(8, os.cpu_count() or 1)
    problem = cuda_jpeg_problem()
    rows = []
    processes = ProcessJpegEncoder(args.quality, workers)
    processes.warm_up()
    for n in args.counts:
        host = pool[np.arange(n) % len(pool)]
        times = {"cpu": time_encoder(CpuJpegEncoder(args.quality, workers), torch.from_numpy(host), n, args.repeats),
                 "process": time_encoder(processes, host, n, args.repeats)}
        if problem is None:
            dev = torch.from_numpy(host).cuda()
            times["cuda"] = time_encoder(CudaJpegEncoder(args.quality), dev, n, args.repeats)
        row = {"frames": n}
        for name, ts in times.items():
            row[name] = {"p50_ms": statistics.median(ts), "p90_ms": float(np.percentile(ts, 90))}
        rows.append(row)
        print(f"[bench_jpeg] {n} frames: " + ", ".join(f"{k} {v['p50_ms']:.2f} ms" for k, v in row.items()
                                                        if k != "frames"), file=sys.stderr, flush=True)
    processes.close()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"## JPEG encoding per tick: {args.world} frames {pool.shape[1]}x{pool.shape[2]}, quality {args.quality}, "
          f"{workers} CPU threads / processes{', ' + gpu if gpu else ''}\n")
    print("| frames | CPU threads p50 / p90 ms | processes p50 / p90 ms | nvJPEG p50 / p90 ms | processes / threads "
          "| nvJPEG / threads |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c, q, g = r["cpu"], r["process"], r.get("cuda")
        gpu_cell = f"{g['p50_ms']:.2f} / {g['p90_ms']:.2f}" if g else f"n/a ({problem})"
        ratio = f"{g['p50_ms'] / c['p50_ms']:.2f}x" if g else "n/a"
        print(f"| {r['frames']} | {c['p50_ms']:.2f} / {c['p90_ms']:.2f} | {q['p50_ms']:.2f} / {q['p90_ms']:.2f} "
              f"| {gpu_cell} | {q['p50_ms'] / c['p50_ms']:.2f}x | {ratio} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"world": args.world, "quality": args.quality, "cpu_threads": workers,
                                                   "gpu": gpu, "cuda_problem": problem, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
