"""Data-layer benchmark: can recording keep up with the engine, and how fast do windows come off disk?

    python benchmarks/bench_data.py --workers 16 --steps 50000 --out BENCHMARKS.md

For each world: (a) raw engine steps/s with K worker processes stepping random actions, recording
nothing; (b) `collect` frames/s with the same K workers (sticky policy, compression, writing);
(b)/(a) (target >= 0.8); (c) window sampling throughput from disk (T=16, B=32, frames/s, median of
several runs after warmup), with the default chunk cache and with no cache (every window decodes its
chunks: the datasets-larger-than-RAM case); (d) bytes per frame on disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def bench_world(world, steps, workers, tmp, T=16, B=32, runs=5, threaded=True):
    from odyssey_gym.data.dataset import Dataset
    from odyssey_gym.data.recorder import collect, engine_only
    from odyssey_gym.data.windows import WindowSampler

    raw = engine_only(world, steps, workers, seed=0, policy="random")
    out = Path(tmp) / world
    shutil.rmtree(out, ignore_errors=True)
    res = collect(world, out, steps=steps, workers=workers, seed=0, progress=False, threaded_compress=threaded)
    if res.error:
        raise RuntimeError(res.error)
    ds = Dataset(out)
    row = {"world": world, "workers": workers, "steps": steps, "engine_fps": raw["steps_per_s"],
           "collect_fps": res.frames_per_s_running, "bytes_per_frame": res.bytes_per_frame,
           "raw_bytes_per_frame": 3 * ds.frame_shape[0] * ds.frame_shape[1], "frame": f"{ds.frame_shape[1]}x{ds.frame_shape[0]}"}
    row["ratio"] = row["collect_fps"] / row["engine_fps"]
    for name, cache in (("sample_fps", 1 << 30), ("sample_fps_nocache", 0)):
        s = WindowSampler(ds, T=T, seed=0, cache_bytes=cache)
        for _ in range(3):
            s.sample(B)  # warmup
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            n = 0
            while time.perf_counter() - t < 0.5:
                s.sample(B)
                n += 1
            times.append(n * B * T / (time.perf_counter() - t))
        row[name] = statistics.median(times)
    return row


def table(rows) -> str:
    head = ("| world | frame | workers | engine steps/s (a) | collect frames/s (b) | b/a | "
            "windows frames/s, cached (c) | windows frames/s, no cache | bytes/frame (d) | compression |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['world']} | {r['frame']} | {r['workers']} | {r['engine_fps']:,.0f} | {r['collect_fps']:,.0f} | "
                     f"{r['ratio']:.2f} | {r['sample_fps']:,.0f} | {r['sample_fps_nocache']:,.0f} | {r['bytes_per_frame']:,.0f} | "
                     f"{r['raw_bytes_per_frame'] / r['bytes_per_frame']:.1f}x |")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the '## Data' section of a markdown file (or append it)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pat = re.compile(r"^## Data\n.*?(?=^## |\Z)", re.S | re.M)
    new = pat.sub(text + "\n", old) if pat.search(old) else old.rstrip() + "\n\n" + text + "\n"
    path.write_text(new)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", nargs="+", default=["doom-explore", "doom-takecover", "doom-health"])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--steps", type=int, default=20000, help="env steps per world (per measurement)")
    p.add_argument("--out", default=None, help="markdown file to write the 'Data' section to (e.g. BENCHMARKS.md)")
    p.add_argument("--tmp", default=None, help="where to record the datasets (default: a temp dir, removed after)")
    p.add_argument("--no-threaded-compress", action="store_true", help="compress on the worker's main thread")
    args = p.parse_args(argv)
    tmp = args.tmp or tempfile.mkdtemp(prefix="bench_data_")
    rows = []
    try:
        for w in args.worlds:
            rows.append(bench_world(w, args.steps, args.workers, tmp, threaded=not args.no_threaded_compress))
            print(f"{w}: done", file=sys.stderr)
    finally:
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    text = (f"## Data\n\n`python benchmarks/bench_data.py --workers {args.workers} --steps {args.steps}` on "
            f"{platform.machine()} with {os.cpu_count()} CPUs ({time.strftime('%Y-%m-%d')}). "
            "(a) engine alone, random actions; (b) `collect` (sticky policy, zstd chunks, manifest); "
            "(c) `WindowSampler` T=16 B=32 from disk, median of 5 runs after warmup; (d) on-disk bytes per frame.\n\n"
            + table(rows) + "\n")
    print(text)
    if args.out:
        write_section(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
