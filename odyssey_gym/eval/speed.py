"""Action-to-frame latency and batched throughput of the sampler, timed so that numbers compare:
warm up first, CUDA events around each step (host clock after synchronize on CPU), medians and p99.
"""

from __future__ import annotations

import time

import torch

from .actions import random_actions
from .metrics import percentiles


def _random_model_actions(steps: int, batch: int, action_dim: int, device, discrete: bool, seed: int = 0):
    """Random actions as the sampler takes them: float vectors, one-hot for discrete worlds."""
    raw = torch.from_numpy(random_actions(steps, batch, action_dim, discrete, seed))
    vec = torch.nn.functional.one_hot(raw, action_dim) if discrete else raw
    return vec.float().to(device)


@torch.no_grad()
def time_sampler(sampler, context_frames, context_actions, steps: int = 300, warmup: int = 30,
                 discrete: bool = False) -> dict:
    """Per-step latency (ms) of `sampler.step`, action in -> uint8 RGB out, plus frames/s."""
    device = sampler.device
    b = sampler.B
    a_dim = context_actions.shape[-1]
    acts = _random_model_actions(steps + warmup, b, a_dim, device, discrete)
    sampler.reset(context_frames.to(device), context_actions.to(device), torch.ones(b, dtype=torch.bool, device=device))
    cuda = torch.device(device).type == "cuda"
    for t in range(warmup):
        sampler.step(acts[t])
    times = []
    if cuda:
        torch.cuda.synchronize(device)
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        wall0 = time.perf_counter()
        for t in range(steps):
            ev[t][0].record()
            sampler.step(acts[warmup + t])
            ev[t][1].record()
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - wall0
        times = [s.elapsed_time(e) for s, e in ev]
    else:
        wall0 = time.perf_counter()
        for t in range(steps):
            t0 = time.perf_counter()
            sampler.step(acts[warmup + t])
            times.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - wall0
    pct = percentiles(times)
    return {
        "batch_size": b,
        "steps": steps,
        "latency_ms_p50": round(pct["p50"], 3),
        "latency_ms_p99": round(pct["p99"], 3),
        "frames_per_s": round(b * steps / wall, 1),
    }
