"""`odyssey-gym collect`: record episodes from a real engine into a dataset directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--world", required=True, help="world name (doom-explore, doom-takecover, doom-health) or gym:<EnvId>")
    p.add_argument("--steps", type=int, required=True, help="total env steps to record (over all workers)")
    p.add_argument("--workers", type=int, default=1, help="recording processes, one engine each (default 1)")
    p.add_argument("--out", required=True, help="dataset directory (created, or appended to if it holds the same world)")
    p.add_argument("--seed", type=int, default=0, help="base seed; episode seeds derive from (seed, run, worker, episode)")
    p.add_argument("--policy", default="sticky", help="sticky (held random keys) | walker | human (human-like play: long walks, turns while walking, strafes, stops; human is the eval yardstick) | random | path to an SB3 model .zip (default sticky)")
    p.add_argument("--chunk-frames", type=int, default=None, help="frames per compressed chunk file (default 64; fixed per dataset)")
    p.add_argument("--level", type=int, default=None, help="zstd level (default 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export-minari", metavar="DATASET_ID", default=None,
                   help="after recording, also export the whole dataset to Minari (MINARI_DATASETS_PATH)")


ZSTD_LEVELS = (1, 22)  # the levels zstandard compresses at


def check_arguments(args: argparse.Namespace) -> str | None:
    """The one-line problem with the arguments, checked before any worker starts (so it is said once)."""
    if args.steps < 1:
        return f"--steps must be >= 1, got {args.steps}"
    if args.workers < 1:
        return f"--workers must be >= 1, got {args.workers}"
    if args.chunk_frames is not None and args.chunk_frames < 1:
        return f"--chunk-frames must be >= 1, got {args.chunk_frames}"
    if args.level is not None and not ZSTD_LEVELS[0] <= args.level <= ZSTD_LEVELS[1]:
        return f"--level must be a zstd level in [{ZSTD_LEVELS[0]}, {ZSTD_LEVELS[1]}], got {args.level}"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"--out {args.out!r} is a file; give a dataset directory (new, or one to append to)"
    return None


def run(args: argparse.Namespace) -> int:
    from .dataset import DEFAULT_CHUNK_FRAMES, DEFAULT_LEVEL, DatasetError
    from .recorder import collect

    problem = check_arguments(args)
    if problem:
        print(f"odyssey-gym collect: {problem}", file=sys.stderr)
        return 2

    import signal

    # Ctrl-C must reach us even when started with SIGINT ignored (e.g. from a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = collect(
            args.world, args.out, steps=args.steps, workers=args.workers, seed=args.seed, policy=args.policy,
            chunk_frames=DEFAULT_CHUNK_FRAMES if args.chunk_frames is None else args.chunk_frames, level=DEFAULT_LEVEL if args.level is None else args.level,
            progress=not args.no_progress,
        )
    except (DatasetError, KeyError, ValueError, FileNotFoundError) as e:
        print(f"odyssey-gym collect: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(res.summary())
    if res.error:
        print(f"odyssey-gym collect: {res.error}", file=sys.stderr)
        return 1
    if res.interrupted:
        return 130
    if args.export_minari:
        from .dataset import Dataset
        from .minari_io import export_minari

        path = export_minari(Dataset(args.out), args.export_minari)
        print(f"exported to Minari dataset {args.export_minari!r} at {path}")
    return 0
