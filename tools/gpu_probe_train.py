"""Measure training steps/s of the base configs on this GPU, so step budgets fit the time we have.

Usage: python tools/gpu_probe_train.py OUT_DIR WALL_MINUTES EXPLORE_SHARE
Writes OUT_DIR/doom-<world>.yaml: the repo's config with ae_steps/dyn_steps sized to the measured rates.
Both runs train side by side for WALL_MINUTES; doom-explore is budgeted EXPLORE_SHARE of the GPU and
doom-takecover the rest (whichever ends first leaves the whole GPU to the other).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import yaml

from odyssey_gym.train import steps
from odyssey_gym.worlds import get_world


def rate(fn, warmup=5, iters=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return iters / (time.perf_counter() - t)


def probe(world_name: str, cfg: dict) -> tuple[float, float]:
    world = get_world(world_name)
    tc = cfg["train"]
    model = steps.build_model(cfg["model"], world).cuda()
    amp = torch.autocast("cuda", dtype=torch.bfloat16)
    H, W = world.frame_size
    x = torch.rand(tc["ae_batch_size"], 3, H, W, device="cuda") * 2 - 1
    opt = torch.optim.AdamW(model.ae.parameters(), lr=1e-4, fused=True)

    def ae_step():
        with amp:
            loss, _ = steps.ae_loss(model.ae, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ae_rate = rate(ae_step)
    d = model.dynamics
    c, (h, w) = model.config.ae.latent_channels, model.config.ae.latent_size
    B, T = tc["dyn_batch_size"], tc["dyn_window"]
    b = {
        "z": torch.randn(B, T, c, h, w, device="cuda"),
        "actions": torch.rand(B, T, world.action_dim, device="cuda").round(),
        "rewards": torch.zeros(B, T, device="cuda"),
        "terminated": torch.zeros(B, T, dtype=torch.bool, device="cuda"),
        "first": torch.zeros(B, T, dtype=torch.bool, device="cuda"),
    }
    opt2 = torch.optim.AdamW(d.parameters(), lr=1e-4, fused=True)

    def dyn_step():
        with amp:
            loss, _ = steps.dyn_loss(d, b, loss_mask=None)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        opt2.step()

    dyn_rate = rate(dyn_step)
    print(f"{world_name}: params {model.num_params()}; ae {ae_rate:.1f} steps/s (batch {tc['ae_batch_size']}), "
          f"dyn {dyn_rate:.1f} steps/s (batch {B}x{T})", flush=True)
    return ae_rate, dyn_rate


def main():
    out = Path(sys.argv[1])
    wall, share_e = float(sys.argv[2]), float(sys.argv[3])
    shares = {"doom-explore": share_e, "doom-takecover": 1 - share_e}
    out.mkdir(parents=True, exist_ok=True)
    for world, share in shares.items():
        cfg = yaml.safe_load(open(f"configs/{world}.yaml"))
        ae_rate, dyn_rate = probe(world, cfg)
        budget_s = wall * 60 * share * 0.85  # headroom for data loading, encoding, logging, export
        ae_frac = cfg["train"].get("ae_time_frac", 0.25)
        tc = cfg["train"]
        tc.pop("ae_time_frac", None)
        tc["ae_steps"] = int(ae_rate * budget_s * ae_frac)
        tc["dyn_steps"] = int(dyn_rate * budget_s * (1 - ae_frac) * 0.9)  # the unroll phase costs a bit more
        tc["dyn_warmup_steps"] = min(tc["dyn_warmup_steps"], tc["dyn_steps"] // 10)
        tc["ae_warmup_steps"] = min(tc["ae_warmup_steps"], tc["ae_steps"] // 10)
        print(f"{world}: {wall} min at a {share:.2f} share -> ae_steps {tc['ae_steps']}, dyn_steps {tc['dyn_steps']}")
        yaml.safe_dump(cfg, open(out / f"{world}.yaml", "w"), sort_keys=False)


if __name__ == "__main__":
    main()
