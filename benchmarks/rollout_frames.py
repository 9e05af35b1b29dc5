"""Where long open-loop play goes: the last frames of held-key rollouts of several weights, side by side.

    python benchmarks/rollout_frames.py --world doom-explore --weights shipped DIR --context-noise 0,0.25 \
        --steps 700 --envs 4 --out rollouts.png

Each row is one (weights, context noise) pair; its columns are the envs, each started from the weights' own
start-bank context i and driven by the eval's held-key process (`held_key_actions`, the same actions for every
row). It prints each row's pixel mean and per-frame std every second of game time. A metric a blur or a texture
soup can pass never stands alone: this shows what the rollout turned into.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def load_weights(spec, weights: str, envs: int):
    """The model and its start bank (frames, actions) for 'shipped' or a weights dir, loaded once per weights."""
    from odyssey_gym import model as om

    d = None if weights == "shipped" else weights
    model = om.load(spec, device="cpu", weights_dir=d)
    bank = om.load_start_bank(d or spec.name)
    if bank is None or bank[1] is None:
        raise SystemExit(f"{weights}: no start bank with actions (start_bank.npz) to start the rollouts from")
    if len(bank[0]) < envs:
        raise SystemExit(f"{weights}: the start bank holds {len(bank[0])} contexts, fewer than --envs {envs}")
    return model, bank


def rollout(spec, model, bank, context_noise: float, steps: int, envs: int, seed: int, device: str):
    """The last frames (envs, H, W, 3) uint8 and the per-second pixel mean / per-frame std of one rollout."""
    from odyssey_gym.eval.actions import held_key_actions
    from odyssey_gym.model.sampler import Sampler

    frames, actions = bank
    dev = torch.device(device)
    act = torch.from_numpy(spec.action_to_vector(held_key_actions(spec, steps, envs, seed=seed))).to(dev)
    sampler = Sampler(model, batch_size=envs, device=dev, context_noise=context_noise)
    torch.manual_seed(seed)
    sampler.reset(torch.as_tensor(frames[:envs]).to(dev), torch.as_tensor(actions[:envs]).to(dev),
                  torch.ones(envs, dtype=torch.bool, device=dev))
    per_second = max(1, int(round(spec.fps)))
    means, stds = [], []
    with torch.no_grad():
        for t in range(steps):
            out, _, _ = sampler.step(act[t])
            if (t + 1) % per_second == 0:
                x = out.float()
                means.append(round(x.mean().item(), 1))
                stds.append(round(x.flatten(1).std(dim=1).mean().item(), 1))
    return out.cpu().numpy(), means, stds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="doom-explore")
    p.add_argument("--weights", nargs="+", default=["shipped"], help="weights dirs, or 'shipped'")
    p.add_argument("--context-noise", default="0", help="comma-separated sigmas at which frames enter the context")
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="rollouts.png")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    noises = [float(x) for x in args.context_noise.split(",")]
    if args.steps < 1 or args.envs < 1 or any(not np.isfinite(x) or x < 0 for x in noises):
        raise SystemExit("--steps and --envs must be >= 1 and --context-noise finite and >= 0")

    from odyssey_gym.worlds import get_world

    spec = get_world(args.world)
    rows, report = [], {}
    for w in args.weights:
        model, bank = load_weights(spec, w, args.envs)
        for cn in noises:
            t0 = time.time()
            last, means, stds = rollout(spec, model, bank, cn, args.steps, args.envs, args.seed, args.device)
            rows.append(np.concatenate(list(last), axis=1))
            report[f"{w} context_noise={cn}"] = {"pixel_mean_per_second": means, "frame_std_per_second": stds}
            print(f"{w} context_noise={cn} ({time.time() - t0:.0f} s): last second pixel mean "
                  f"{means[-1] if means else 'n/a'}, per-frame std {stds[-1] if stds else 'n/a'}", flush=True)
    from PIL import Image

    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}: rows {list(report)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
