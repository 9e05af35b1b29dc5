"""Training-speed benchmark of the dynamics: steps/s, frames per GPU-second and MFU, per objective and batch.

    python benchmarks/bench_train.py --device cuda --batches 32,64 --objectives diffusion_forcing,teacher_forcing \
        --attention sdpa,flex

One optimiser step = the trainer's own: bf16 autocast forward of `Dynamics.loss`, backward, grad clip, fused
AdamW. Latents are random tensors on the device (the data is GPU-resident in training, so the step is the
cost). `--attention` times each of the window's attention implementations (`DynamicsConfig.attention`);
`--target-losses mse,energy` the squared error and the energy score (two target streams a step).
FLOPs per step come from torch's FLOP counter on one step (matmuls and attention, as executed:
a dense attention mask counts its masked-out entries too); MFU = achieved FLOP/s / --peak-tflops.
Times are CUDA-event medians after warm-up. Prints a markdown table (and --json).
"""

from __future__ import annotations

import argparse
import json
import statistics


def bench(objective: str, batch: int, window: int, device, steps: int, warmup: int, compile_: bool, world: str,
          attention: str = "sdpa", target_loss: str = "mse"):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    dyn = _dynamics(world, objective, attention, device, target_loss)
    cfg = dyn.config
    opt = torch.optim.AdamW(dyn.parameters(), lr=1e-4, fused=device.type == "cuda")
    z = torch.randn(batch, window, cfg.latent_channels, *cfg.latent_size, device=device)
    a = (torch.rand(batch, window, cfg.action_dim, device=device) > 0.5).float()
    r = torch.randn(batch, window, device=device)
    t = torch.zeros(batch, window, dtype=torch.bool, device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    loss_fn = dyn.loss
    if compile_ == "loss":
        loss_fn = torch.compile(dyn.loss)
    elif compile_ == "forward":  # the transformer only; the loss's reductions stay eager
        dyn.forward_teacher_forcing = torch.compile(dyn.forward_teacher_forcing)
        dyn.forward = torch.compile(dyn.forward)

    def step():
        with amp:
            loss, _ = loss_fn(z, a, r, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dyn.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    if attention == "sdpa":
        with FlopCounterMode(display=False) as fc:
            step()
        flops = float(fc.get_total_flops())
    else:  # the counter cannot trace a compiled FlexAttention: count the same function as SDPA executes it
        flops = _sdpa_flops(objective, batch, window, device, world, target_loss)
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            step()
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) / 1e3)
        else:
            import time

            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    targets = batch * (window - 1) if objective == "teacher_forcing" else batch * window * (1 - cfg.p_context)
    return {"objective": objective, "target_loss": target_loss, "attention": attention, "batch": batch, "window": window, "compile": compile_,
            "step_ms": round(sec * 1e3, 2), "steps_per_s": round(1 / sec, 2),
            "window_frames_per_s": round(batch * window / sec), "target_frames_per_s": round(targets / sec),
            "tflop_per_step": round(flops / 1e12, 3), "achieved_tflops": round(flops / sec / 1e12, 1),
            "params_m": round(sum(p.numel() for p in dyn.parameters()) / 1e6, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None}


def _dynamics(world: str, objective: str, attention: str, device, target_loss: str = "mse"):
    """The base dynamics model of `world` in training mode, on `device`."""
    from odyssey_gym.model import Dynamics, WorldModelConfig
    from odyssey_gym.worlds import get_world

    spec = get_world(world)
    cfg = WorldModelConfig.base(frame_size=spec.frame_size, action_dim=spec.action_dim, world=spec.name,
                                dynamics={"objective": objective, "attention": attention,
                                          "target_loss": target_loss}).dynamics
    return Dynamics(cfg).to(device).train()


def _sdpa_flops(objective: str, batch: int, window: int, device, world: str, target_loss: str = "mse") -> float:
    """FLOPs of one step of the same model with SDPA attention (a dense mask: masked entries counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    dyn = _dynamics(world, objective, "sdpa", device, target_loss)
    cfg = dyn.config
    z = torch.randn(batch, window, cfg.latent_channels, *cfg.latent_size, device=device)
    a = (torch.rand(batch, window, cfg.action_dim, device=device) > 0.5).float()
    with FlopCounterMode(display=False) as fc, torch.autocast(device.type, dtype=torch.bfloat16,
                                                              enabled=device.type == "cuda"):
        dyn.loss(z, a)[0].backward()
    return float(fc.get_total_flops())


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--world", default="doom-explore")
    p.add_argument("--objectives", default="diffusion_forcing,teacher_forcing")
    p.add_argument("--batches", default="32")
    p.add_argument("--attention", default="sdpa", help="comma list of DynamicsConfig.attention values: sdpa,flex")
    p.add_argument("--target-losses", default="mse",
                   help="comma list of DynamicsConfig.target_loss values: mse,energy (energy: teacher forcing only)")
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of the forward and of the whole loss (failures are reported)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    variants = [(obj, tl, att, b, comp) for obj in args.objectives.split(",")
                for tl in args.target_losses.split(",") if tl == "mse" or obj == "teacher_forcing"
                for att in args.attention.split(",") for b in (int(x) for x in args.batches.split(","))
                for comp in ([False, "forward", "loss"] if args.compile else [False])]
    for obj, tl, att, b, comp in variants:
        try:
            rows.append(bench(obj, b, args.window, device, args.steps, args.warmup, comp, args.world, att, tl))
        except Exception as e:  # noqa: BLE001 (a failing variant is a result, not a crash)
            rows.append({"objective": obj, "target_loss": tl, "attention": att, "batch": b, "compile": comp,
                         "error": f"{type(e).__name__}: {e}"[:300]})
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.world} dynamics training step on {name} (bf16 autocast, fused AdamW, window {args.window}):\n")
    print("| objective | target loss | attention | batch | compile | step ms | steps/s | window frames/s | target frames/s | TFLOP/step | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['objective']} | {r['target_loss']} | {r['attention']} | {r['batch']} | {r['compile']} | failed: {r['error']} |")
            continue
        mfu = r["achieved_tflops"] / args.peak_tflops
        print(f"| {r['objective']} | {r['target_loss']} | {r['attention']} | {r['batch']} | {r['compile']} | {r['step_ms']} | {r['steps_per_s']} | "
              f"{r['window_frames_per_s']} | {r['target_frames_per_s']} | {r['tflop_per_step']} | "
              f"{r['achieved_tflops']} | {mfu:.1%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
