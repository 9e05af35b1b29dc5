"""`odyssey-gym collect`: record episodes from a real engine into a dataset directory."""

from __future__ import annotations

import argparse
import sys


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


def run(args: argparse.Namespace) -> int:
    from .dataset import DEFAULT_CHUNK_FRAMES, DEFAULT_LEVEL, DatasetError
    from .recorder import collect

    import signal

    # Ctrl-C must reach us even when started with SIGINT ignored (e.g. from a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = collect(
            args.world, args.out, steps=args.steps, workers=args.workers, seed=args.seed, policy=args.policy,
            chunk_frames=args.chunk_frames or DEFAULT_CHUNK_FRAMES, level=DEFAULT_LEVEL if args.level is None else args.level,
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
