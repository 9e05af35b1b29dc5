"""A tiny model trained for a fixed small budget on a tiny world beats copy-last-frame one step ahead, measured
through the public env API. If training and inference disagreed (normalisation, positions, the action that
conditions a frame, the context's noise level), or a target saw too little of its context, this would fail."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import odyssey_gym  # noqa: F401  (registers the env ids)
from odyssey_gym.cli import main

from test_train import make_dataset, write_config

BUDGET = {
    # 64x64 frames at 4x: 16x16x4 latents, 4x4 patches (16 tokens a frame) keep a CPU step cheap; the decoder
    # trains on noised latents so a slightly-off prediction still decodes to a square
    "model": {"preset": "tiny", "ae": {"downsample": 4, "channel_mult": [1, 2, 2], "decoder_noise": 0.3},
              "dynamics": {"patch_size": 4, "p_sigma_max": 0.5}},
    "train": {
        "seed": 0, "bf16": False, "compile": False,
        "ae_steps": 300, "ae_batch_size": 16, "ae_lr": 3e-3, "ae_warmup_steps": 20,
        "dyn_steps": 800, "dyn_batch_size": 16, "dyn_window": 6, "dyn_lr": 3e-3, "dyn_warmup_steps": 20,
        "unroll_start_frac": 0.8, "unroll_len": 2, "unroll_batch_frac": 0.5,
        "ema_decay": 0.95, "log_every_steps": 200, "save_every_steps": 0, "save_every_seconds": 0,
        "start_bank_size": 4,
    },
}
MOVE, SIZE = 8, 12  # the square moves its own width's worth on 2 of 3 actions: copy-last is badly wrong then
MARGIN_DB = 3.0  # what the model must win by


def mse_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the mean squared error over a batch (finite even where a copy is exact)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def test_tiny_model_beats_copy_last_through_the_env(tmp_path):
    train = make_dataset(tmp_path / "train", episodes=16, length=60, seed=0, move=MOVE, size=SIZE)
    held = make_dataset(tmp_path / "held", episodes=4, length=40, seed=99, move=MOVE, size=SIZE)  # unseen starts, actions
    cfg = write_config(tmp_path / "cfg.yaml", BUDGET)
    weights = tmp_path / "weights"
    rc = main(["train", "--config", str(cfg), "--data", str(train), "--out", str(tmp_path / "run"), "--device", "cpu",
               "--no-progress", "--export", str(weights)])
    assert rc == 0 and (weights / "config.json").is_file()

    from odyssey_gym.data.dataset import open_dataset

    flat = open_dataset(str(held)).flat()
    K = json.loads((weights / "config.json").read_text())["dynamics"]["context_frames"]
    rng = np.random.default_rng(0)
    starts = rng.choice(flat.window_starts(K + 1), size=8, replace=False)
    idx = starts[:, None] + np.arange(K + 1)
    ctx, target = flat.frames[idx[:, :K]], flat.frames[idx[:, K]]
    raw_next = flat.actions[idx[:, K]].argmax(-1)  # the env takes the world's own actions (Discrete(3))
    assert (raw_next != 2).any(), "the windows must include moves, or copy-last would be exact"

    envs = gym.make_vec("odyssey_gym/DoomTakeCover-v0", num_envs=8, weights=str(weights), device="cpu")
    envs.reset(seed=0, options={"context": ctx, "actions": flat.actions[idx[:, :K]]})
    obs, *_ = envs.step(raw_next)
    envs.close()
    model_db, copy_db = mse_psnr(obs, target), mse_psnr(ctx[:, -1], target)
    assert model_db > copy_db + MARGIN_DB, f"model {model_db:.2f} dB vs copy-last {copy_db:.2f} dB"
