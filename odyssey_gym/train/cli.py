"""`odyssey-gym train`: autoencoder, then dynamics, from recorded datasets; resumable, time-bounded.

    odyssey-gym train --config configs/doom-explore.yaml --data data/explore --out runs/explore \
        [--resume] [--max-minutes 9] [--phase ae|dyn|all|decoder] [--init-from WEIGHTS] [--export DIR] [--device cuda]

Multi-GPU: `torchrun --nproc_per_node=N -m odyssey_gym.cli train ...` (same flags).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from odyssey_gym.cli import add_device_argument

    parser.add_argument("--config", required=True, help="YAML with world/model/train sections (configs/*.yaml)")
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="dataset directory (repeat for several of the same world)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run directory: checkpoints/, tb/, logs")
    parser.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in RUN")
    parser.add_argument("--max-minutes", type=float, default=None, metavar="M",
                        help="stop cleanly with a checkpoint after M minutes (continue later with --resume)")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="stop the dynamics phase after step N with a checkpoint and export, its learning-rate "
                             "schedule still planned for the config's dyn_steps (a time-limited leg, replayed)")
    parser.add_argument("--phase", choices=("ae", "dyn", "all", "decoder"), default="all",
                        help="ae: autoencoder only; dyn: dynamics only (needs --init-from or --resume); all (default); "
                             "decoder: fine-tune only the frame decoder of --init-from weights for train.ae_steps "
                             "(the encoder and dynamics stay as loaded)")
    parser.add_argument("--init-from", default=None, metavar="WEIGHTS_DIR",
                        help="initialise from exported weights (WorldModel.from_pretrained), e.g. to skip the AE phase")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="when training finishes, write EMA weights + start_bank.npz + train_summary.json here")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs only)")


def run(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .config import ConfigError, load_config
    from .steps import DataError
    from .trainer import TrainArgs, TrainingError, train

    try:
        cfg = load_config(args.config)
        if args.max_minutes is not None and args.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be > 0, got {args.max_minutes}")
        if args.max_steps is not None and args.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {args.max_steps}")
        targs = TrainArgs(
            data=list(args.data), out=args.out, resume=args.resume, max_minutes=args.max_minutes, max_steps=args.max_steps,
            phase=args.phase, init_from=args.init_from, export=args.export, device=None if args.device == "auto" else args.device,
            progress=not args.no_progress,
        )
        return train(cfg, targs)
    except (ConfigError, CheckpointError, DataError, TrainingError) as e:
        print(f"odyssey-gym train: error: {e}", file=sys.stderr)
        return 2
