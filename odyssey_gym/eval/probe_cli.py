"""`odyssey-gym train-probe`: train the inverse-dynamics probe of a world on real frames only, and ship it.

    odyssey-gym train-probe --world doom-takecover --data data/takecover-probe --val-data data/takecover-heldout \
        --out odyssey_gym/weights/doom-takecover/probe

The probe is the fixed yardstick of `odyssey-gym eval` (controllability and realism), so it must never see
the world model's training episodes: when the target weights carry a train_summary.json, any shared episode
seed is an error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def add_arguments(p) -> None:
    from odyssey_gym.cli import add_device_argument

    p.add_argument("--world", required=True, help="world name, e.g. doom-takecover")
    p.add_argument("--data", required=True, nargs="+", help="real dataset dir(s), recorded with seeds the world model never saw")
    p.add_argument("--val-data", nargs="+", default=None, help="held-out real dataset dir(s) to report the probe's accuracy on")
    p.add_argument("--weights", default=None,
                   help="the world model the probe will judge (default: the shipped one); its training seeds are checked")
    p.add_argument("--out", default=None, help="probe dir (default: WEIGHTS/probe)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar over the training steps")


def _fail(msg: str) -> int:
    print(f"odyssey-gym train-probe: error: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    import numpy as np
    import torch

    from ..data.dataset import open_dataset
    from ..envs.vector_env import resolve_device
    from ..model import weights_dir
    from ..worlds import get_world
    from .probe import probe_accuracy, real_pairs, train_probe

    try:
        spec = get_world(args.world)
    except KeyError as e:
        return _fail(str(e.args[0]))
    if args.steps < 1 or args.batch < 1:
        return _fail(f"--steps and --batch must be >= 1 (got {args.steps}, {args.batch})")
    wdir = Path(args.weights) if args.weights else weights_dir(spec.name)
    out = Path(args.out) if args.out else wdir / "probe"
    device = resolve_device(args.device)
    data = open_dataset(args.data, world=spec)
    seeds = {int(e["seed"]) for e in data.episodes}
    summary = wdir / "train_summary.json"
    if summary.is_file():
        trained = set(json.loads(summary.read_text()).get("data", {}).get("seeds", []))
        shared = sorted(seeds & trained)
        if shared:
            return _fail(f"{len(shared)} episode seed(s) of --data were used to train {wdir} (e.g. {shared[:3]}): "
                         "record probe data with another base seed")
    flat = data.flat(spec)
    t0 = time.time()
    probe = train_probe(flat, spec, steps=args.steps, batch=args.batch, seed=args.seed, device=device, lr=args.lr,
                        progress=not args.no_progress)
    probe.config.extra = {"data_frames": int(len(flat.frames)), "data_episodes": int(len(data.episodes)),
                          "data_seed_min": min(seeds), "data_seed_max": max(seeds),
                          "train_seconds": round(time.time() - t0, 1),
                          "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if args.val_data:
        val = open_dataset(args.val_data, world=spec).flat(spec)
        pick = val.pick_windows(2, 4096, np.random.default_rng(args.seed))
        acc = probe_accuracy(probe, *real_pairs(val, np.sort(pick)))
        probe.config.extra["val_mean_accuracy"] = round(acc["mean"], 4)
        probe.config.extra["val_chance"] = round(acc["mean_chance"], 4)
        probe.config.extra["val_per_action"] = {k: round(v, 4) for k, v in acc["per_action"].items()}
        print(f"held-out real accuracy {acc['mean']:.3f} (chance {acc['mean_chance']:.3f}) on {acc['transitions']} "
              f"transitions: " + ", ".join(f"{k} {v:.3f}" for k, v in acc["per_action"].items()))
    probe.to("cpu").save(out)
    print(f"probe written to {out} ({args.steps} steps, {probe.config.train_transitions} real transitions)")
    return 0
