"""What detail carry shows: real frames beside the same model's frames without and with it, on held-out play.

    odyssey-gym collect --world doom-explore --policy human --seed 900001 --steps 8000 --workers 2 --out HELDOUT
    python benchmarks/detail_carry_frames.py --data HELDOUT --out detail-carry.png

Three windows of the held-out recording, chosen by how much of the first target frame changed (about 5%, 30% and
70% of its pixels): each is reset on its 16 real context frames and stepped on the true actions. Rows: the first
and the last of `--steps` generated frames per window; columns: the real frame, the frame with `detail_carry` 0,
and with the weights' own `detail_carry` (or `--carry`). Prints each column's PSNR against the real frames.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

CHANGED_SHARES = (0.05, 0.3, 0.7)  # fraction of pixels the first target frame changed, one window each


def main(argv=None) -> int:
    from PIL import Image

    from odyssey_gym.data.dataset import open_dataset
    from odyssey_gym.eval.metrics import psnr
    from odyssey_gym.model import Sampler, load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="doom-explore")
    p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights)")
    p.add_argument("--data", required=True, help="held-out dataset dir")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--steps", type=int, default=8, help="generated frames per window (>= 1)")
    p.add_argument("--carry", type=float, default=None, help="detail_carry of the last column (default: the weights')")
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error("--steps must be >= 1")

    model = load(a.world, weights_dir=a.weights)
    carry = float(model.config.detail_carry if a.carry is None else a.carry)
    if carry <= 0:
        p.error("the last column needs detail_carry > 0: these weights have none, pass --carry")
    flat = open_dataset(a.data, world=a.world).flat()
    K, f = model.config.context_frames, flat.frames
    changed = (f[1:] != f[:-1]).any(-1).reshape(len(f) - 1, -1).mean(1)
    starts = flat.pick_windows(K + a.steps, 400, np.random.default_rng(a.seed))
    if len(starts) == 0:
        raise SystemExit(f"{a.data}: no episode holds {K + a.steps} frames")
    share = changed[starts + K - 1]
    rows, scores = [], {0.0: [], carry: []}
    for target in CHANGED_SHARES:
        st = starts[np.argmin(np.abs(share - target))]
        frames = torch.from_numpy(f[st: st + K + a.steps][None])
        actions = torch.from_numpy(flat.actions[st: st + K + a.steps][None])
        made = {}
        for c in (0.0, carry):
            s = Sampler(model, 1, "cpu", detail_carry=c)
            s.reset(frames[:, :K], actions[:, :K], seeds=torch.tensor([0]))
            made[c] = torch.stack([s.step(actions[:, K + i])[0][0] for i in range(a.steps)])
            scores[c].append(psnr(made[c], frames[0, K:]).mean().item())
        for i in (0, a.steps - 1):
            rows.append(np.concatenate([f[st + K + i], made[0.0][i].numpy(), made[carry][i].numpy()], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(a.out, optimize=True)
    print(f"PSNR over the windows' generated frames: detail_carry 0: {np.mean(scores[0.0]):.2f} dB, "
          f"{carry:g}: {np.mean(scores[carry]):.2f} dB; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
