"""Long rollouts: does the world stay a world for 5+ minutes? (docs/ARCHITECTURE.md, eval/)

The statistics accumulate on the device and are read once per minute, so the rollout itself runs
at full sampler speed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .actions import held_key_actions


@torch.no_grad()
def long_rollout(sampler, spec, context_frames, context_actions, steps: int = 10_500, seed: int = 0,
                 keep_every: int = 0, flat_std: float = 3.0, features=None, features_per_minute: int = 2048) -> dict:
    """Roll out `steps` frames under held-key actions; per-minute pixel stats, NaN/flat counts, memory.

    context_frames (B, K, H, W, 3) uint8 and context_actions (B, K, A) seed every env. `keep_every`>0
    keeps env 0's frame every that many steps (for a strip or video). `features`, a function of the
    device frames (B, H, W, 3) uint8 -> (B, D) tensor (the probe trunk), is applied to every env's
    frame about `features_per_minute` times per minute; the rows stay on the device until the minute
    ends, so realism per minute is measured on thousands of frames, not a handful.
    """
    device = sampler.device
    b = sampler.B
    raw = held_key_actions(spec, steps, b, seed=seed)
    act = torch.from_numpy(spec.action_to_vector(raw)).to(device)
    sampler.reset(context_frames.to(device), context_actions.to(device), torch.ones(b, dtype=torch.bool, device=device))
    per_min = max(1, int(round(spec.fps * 60)))
    minutes = math.ceil(steps / per_min)
    s1 = torch.zeros(minutes, device=device, dtype=torch.float64)
    s2 = torch.zeros_like(s1)
    fstd = torch.zeros_like(s1)
    flat = torch.zeros(minutes, device=device, dtype=torch.long)
    bad = torch.zeros(minutes, device=device, dtype=torch.long)
    cuda = device.type == "cuda" if isinstance(device, torch.device) else str(device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    mem, kept = [], []
    feat_every = max(1, (per_min * b) // max(1, features_per_minute))
    feats_now, minute_feats = [], []
    for t in tqdm(range(steps), desc=f"{spec.name} {steps}-frame rollout", mininterval=5):
        frames, reward, term = sampler.step(act[t])
        m = t // per_min
        x = frames.float()
        s1[m] += x.mean()
        s2[m] += (x * x).mean()
        per_frame_std = x.flatten(1).std(dim=1)
        fstd[m] += per_frame_std.mean()
        flat[m] += (per_frame_std < flat_std).sum()
        bad[m] += (~torch.isfinite(reward)).sum()
        if keep_every and t % keep_every == 0:
            kept.append(frames[0].cpu().numpy())
        if features is not None and t % feat_every == 0:
            feats_now.append(features(frames))
        if (t + 1) % per_min == 0 or t + 1 == steps:
            mem.append(torch.cuda.memory_allocated(device) / 2**20 if cuda else 0.0)
            if features is not None:
                minute_feats.append(torch.cat(feats_now).double().cpu().numpy() if feats_now else None)
                feats_now = []
    counts = torch.tensor([min(per_min, steps - i * per_min) for i in range(minutes)], device=device, dtype=torch.float64)
    mean = (s1 / counts).cpu().numpy()
    std = np.sqrt(np.maximum((s2 / counts).cpu().numpy() - mean**2, 0))
    return {
        "steps": steps,
        "num_envs": b,
        "frames_per_minute": per_min,
        "minute_pixel_mean": mean.round(3).tolist(),
        "minute_pixel_std": std.round(3).tolist(),
        "minute_frame_std_mean": (fstd / counts).cpu().numpy().round(3).tolist(),
        "minute_flat_frames": flat.cpu().tolist(),
        "minute_nonfinite_rewards": bad.cpu().tolist(),
        "minute_gpu_memory_mib": [round(v, 1) for v in mem],
        "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else 0.0,
        "kept_frames": np.stack(kept) if kept else None,
        "minute_features": minute_feats if features is not None else None,
    }


def engine_held_key_frames(spec, steps: int, num_envs: int, seed: int = 0, every: int = 1, max_frames: int = 0):
    """Real frames of the world's engine under the same held-key actions a `long_rollout` with this seed plays.

    The like-for-like reference of a rollout's realism: held keys walk into walls and spin in place where people
    do not, so frames of human play are not what a perfect world model would show under them. Env e starts from
    the engine's reset with seed `seed + e` (the rollout's held-out contexts cannot be restored in an engine) and
    resets when an episode ends. Keeps every `every`-th step of each env, at most `max_frames` (0: no cap);
    returns uint8 (N, H, W, 3). Needs the engine (vizdoom for the Doom worlds)."""
    from ..worlds import make_real_env

    raw = held_key_actions(spec, steps, num_envs, seed=seed)
    kept = []
    for e in range(num_envs):
        env = make_real_env(spec)
        try:
            obs, _ = env.reset(seed=seed + e)
            for t in range(steps):
                obs, _, term, trunc, _ = env.step(raw[t, e])
                if term or trunc:
                    obs, _ = env.reset()
                if t % every == 0:
                    kept.append(obs)
        finally:
            env.close()
    frames = np.stack(kept)
    if max_frames and len(frames) > max_frames:
        frames = frames[np.sort(np.random.default_rng(seed).choice(len(frames), max_frames, replace=False))]
    return frames
