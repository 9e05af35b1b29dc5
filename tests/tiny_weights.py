"""Test helper: a tiny random-init world model saved with a synthetic start bank (weights in seconds, on a CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odyssey_gym.worlds import WorldSpec, get_world

__all__ = ["make_tiny_weights", "synthetic_start_bank"]


def synthetic_start_bank(world: str | WorldSpec, n: int, context_length: int, seed: int = 0):
    """(frames (n,K,H,W,3) uint8, actions (n,K,A) float32): smooth random images, distinct per start."""
    spec = get_world(world)
    H, W, _ = spec.frame_shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = np.empty((n, context_length, H, W, 3), np.uint8)
    for i in range(n):
        base = rng.uniform(0, 1, (3, 3)).astype(np.float32)
        for k in range(context_length):
            ph = 0.3 * k
            img = np.stack([
                127 + 100 * np.sin(xx * base[c, 0] * 0.2 + yy * base[c, 1] * 0.2 + ph + base[c, 2] * 6)
                for c in range(3)
            ], -1)
            frames[i, k] = np.clip(img, 0, 255).astype(np.uint8)
    raw = np.stack([[np.asarray(spec.action_space().sample()) for _ in range(context_length)] for _ in range(n)])
    actions = spec.action_to_vector(raw).astype(np.float32)
    return frames, actions


def make_tiny_weights(world: str | WorldSpec, out_dir: str | Path, n_starts: int = 4, seed: int = 0,
                      never_terminate: bool = True, state: float | None = None):
    """Build `WorldModelConfig.tiny` with random init, save it to `out_dir` with a start bank; returns the dir.

    never_terminate: zero the termination head's logit row and give it a large negative bias, so
    episodes end only by truncation (a random head would end them at random; tests force terminations
    explicitly where they need them).
    state: a model of the world's game variables whose head always predicts this value for each of them (None:
    no game state).
    """
    import torch

    from odyssey_gym.model import WorldModel, WorldModelConfig

    spec = get_world(world)
    torch.manual_seed(seed)
    extra = {} if state is None else {"state_variables": list(spec.state_variables)}
    cfg = WorldModelConfig.tiny(spec.frame_size, spec.action_dim, spec.name, **extra)
    model = WorldModel(cfg)
    if state is not None:
        S = len(spec.state_variables)
        model.set_state_stats([50.0] * S, [25.0] * S)
        with torch.no_grad():
            model.dynamics.heads[-1].weight[2:].zero_()
            model.dynamics.heads[-1].bias[2:] = (float(state) - 50.0) / 25.0
    if never_terminate:
        head = model.dynamics.heads[-1]
        with torch.no_grad():
            head.weight[1].zero_()
            head.bias[1] = -30.0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    frames, actions = synthetic_start_bank(spec, n_starts, cfg.context_frames, seed=seed)
    np.savez_compressed(out / "start_bank.npz", frames=frames, actions=actions)
    return out
