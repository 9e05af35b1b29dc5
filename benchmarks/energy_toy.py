"""What the one-step sampler draws under each target loss, on a toy room a CPU trains in a minute.

    python benchmarks/energy_toy.py --steps 300 --seeds 0,1

The room (8x8 latents, 4 channels) stays put; after the action, one quadrant changes unpredictably, in one of two
ways: "independent" (each 2x2 patch of the quadrant shows +u or -u by a coin of its own) or "one coin" (the whole
quadrant shows +u or -u together, like a wall that turns into view or not). A tiny dynamics model is trained by
each target loss, then its one-step samples are measured:

- spurious: RMS change where the next frame is certain (the room): 0 is right, noise there is wrong;
- detail: RMS change in the quadrant, against |u| (the truth's);
- aligned: how well each patch's change lines up with u (1: a clean +u or -u; noise scores low);
- agree (one coin): the share of samples whose four patches chose the same sign (the truth: 1; chance: 1/8).

Why: the squared error draws the mean (no detail); the energy score with whole-frame distances is met by spread of
the right total size anywhere; per-patch distances ask each region for its own spread but score only each patch's
marginal. Prints a markdown table (means over --seeds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from odyssey_gym.model.dynamics import Dynamics, DynamicsConfig

T, C, SIDE, Q = 4, 4, 8, 4  # window frames, latent channels, latent side, side of the changing quadrant
# name -> (dynamics.target_loss, dynamics.energy_patch, dynamics.energy_lambda)
VARIANTS = {"mse": ("mse", 0, 1.0), "energy-whole": ("energy", 0, 1.0), "energy-patch2": ("energy", 2, 1.0),
            "energy-patch4": ("energy", 4, 1.0), "energy-patch2+whole": ("energy", (2, 0), 1.0),
            "energy-patch2+4+whole": ("energy", (2, 4, 0), 1.0),
            "energy-half-patch2+4+whole": ("energy", (2, 4, 0), 0.5)}


def windows(room, u, b, gen, one_coin: bool):
    z = room.expand(b, T, C, SIDE, SIDE).clone()
    shape = (b, 1, 1) if one_coin else (b, 2, 2)
    coins = (torch.randint(0, 2, shape, generator=gen).float() * 2 - 1).expand(b, 2, 2)
    z[:, -1, :, :Q, :Q] += (coins[:, None, :, None, :, None] * u[None, :, None, :, None, :]).reshape(b, C, Q, Q)
    actions = torch.zeros(b, T, 2)
    actions[:, :-1, 1] = 1.0
    actions[:, -1, 0] = 1.0
    return z, actions


def measure(loss: str, patch, lam: float, one_coin: bool, steps: int, seed: int, samples: int = 512) -> dict[str, float]:
    cfg = DynamicsConfig(latent_channels=C, latent_size=(SIDE, SIDE), patch_size=2, n_layer=2, n_head=2, n_embd=96,
                         action_dim=2, context_frames=T - 1, max_frames=T, objective="teacher_forcing",
                         start_from="previous", sigma_max=1.0, p_sigma_max=1.0, p_context_aug=0.0,
                         target_loss=loss, energy_patch=patch, energy_lambda=lam)
    g_room = torch.Generator().manual_seed(1000 + seed)
    room, u = torch.randn(C, SIDE, SIDE, generator=g_room), torch.randn(C, 2, 2, generator=g_room)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dyn = Dynamics(cfg)
    opt = torch.optim.AdamW(dyn.parameters(), lr=2e-3, weight_decay=0.0)
    for _ in range(steps):
        z, actions = windows(room, u, 32, gen, one_coin)
        loss_value, _ = dyn.loss(z, actions, generator=gen)
        opt.zero_grad()
        loss_value.backward()
        opt.step()
    dyn.eval()
    z, actions = windows(room, u, samples, gen, one_coin)
    with torch.no_grad():
        x = dyn.generate_next(z[:, :-1], actions[:, :-1], actions[:, -1], steps=1,
                              noise=torch.randn(samples, C, SIDE, SIDE, generator=gen))
    d = x - room
    certain = torch.ones(SIDE, SIDE, dtype=torch.bool)
    certain[:Q, :Q] = False
    patches = d[:, :, :Q, :Q].reshape(samples, C, 2, 2, 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(samples, 4, -1)
    along = patches @ u.flatten()
    sign = torch.sign(along)
    return {"spurious": float(d[:, :, certain].pow(2).mean().sqrt()),
            "detail": float(patches.pow(2).mean().sqrt()), "truth": float(u.pow(2).mean().sqrt()),
            "aligned": float((along.abs() / (patches.norm(dim=-1) * u.norm() + 1e-8)).mean()),
            "agree": float((sign == sign[:, :1]).all(1).float().mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of: " + ", ".join(VARIANTS))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown --variants {unknown}; known: {', '.join(VARIANTS)}")
    print(f"{args.steps} steps, batch 32, seeds {seeds}; means over seeds\n")
    print("| next frame | target loss | spurious (0) | detail (truth) | aligned (1) | agree (one coin: 1) |")
    print("|---|---|---|---|---|---|")
    for one_coin in (False, True):
        for name in names:
            loss, patch, lam = VARIANTS[name]
            t = time.time()
            runs = [measure(loss, patch, lam, one_coin, args.steps, s) for s in seeds]
            m = {k: statistics.mean(r[k] for r in runs) for k in runs[0]}
            agree = f"{m['agree']:.3f}" if one_coin else "-"
            print(f"| {'one coin' if one_coin else 'independent'} | {name} | {m['spurious']:.3f} | "
                  f"{m['detail']:.3f} ({m['truth']:.3f}) | {m['aligned']:.3f} | {agree} |", flush=True)
            print(f"  ({time.time() - t:.0f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
