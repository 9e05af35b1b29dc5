"""The interactive video model: frame autoencoder, frame-causal dynamics, the real-time sampler.

Pure torch (plus numpy/safetensors): no gymnasium, no vizdoom, no other odyssey_gym layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .autoencoder import AutoencoderConfig, FrameAutoencoder, frames_to_tensor, ssim, tensor_to_frames
from .dynamics import Dynamics, DynamicsConfig, karras_sigmas
from .sampler import Sampler, hash_noise, rollout_reference
from .world_model import (
    MODEL_VERSION,
    WEIGHTS_FORMAT,
    WorldModel,
    WorldModelConfig,
    estimate_flops_per_frame,
)

__all__ = [
    "AutoencoderConfig", "FrameAutoencoder", "frames_to_tensor", "tensor_to_frames", "ssim",
    "Dynamics", "DynamicsConfig", "karras_sigmas",
    "WorldModel", "WorldModelConfig", "MODEL_VERSION", "WEIGHTS_FORMAT", "estimate_flops_per_frame",
    "Sampler", "rollout_reference", "hash_noise",
    "WEIGHTS_ROOT", "weights_dir", "available_worlds", "load", "load_start_bank",
]

WEIGHTS_ROOT = Path(__file__).parent.parent / "weights"
START_BANK_NAME = "start_bank.npz"


def weights_dir(world: str) -> Path:
    """Where the shipped weights of `world` live: odyssey_gym/weights/<world>/."""
    return WEIGHTS_ROOT / world


def available_worlds() -> list[str]:
    """Worlds that ship weights (a directory with a config.json)."""
    if not WEIGHTS_ROOT.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_ROOT.iterdir() if (p / "config.json").is_file())


def load(world: str, device: str | torch.device = "cpu", weights_dir: str | os.PathLike | None = None,
         dtype: torch.dtype | None = None) -> WorldModel:
    """Load the world model of `world` (shipped weights unless `weights_dir` is given)."""
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_ROOT / world
    if not (d / "config.json").is_file():
        have = available_worlds()
        raise FileNotFoundError(
            f"no weights for world {world!r} at {d}; worlds with shipped weights: {have or 'none'} "
            f"(train one with `odyssey-gym train` or pass weights_dir=)"
        )
    model = WorldModel.from_pretrained(d, device=device, dtype=dtype)
    if model.config.world != world and weights_dir is None:
        raise ValueError(f"{d / 'config.json'}: weights are for world {model.config.world!r}, not {world!r}")
    return model


def load_start_bank(world_or_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Real starting contexts shipped next to the weights: (frames uint8 (N, K, H, W, 3), actions float32 (N, K, A)).

    Accepts a world name or a weights directory. Returns None when there is no start_bank.npz;
    actions is None when the bank has none."""
    p = Path(world_or_dir)
    d = p if p.is_dir() else WEIGHTS_ROOT / str(world_or_dir)
    f = d / START_BANK_NAME
    if not f.is_file():
        return None
    with np.load(f) as z:
        if "frames" not in z.files:
            raise KeyError(f"{f}: no 'frames' array (has {z.files})")
        frames = z["frames"]
        actions = z["actions"].astype(np.float32) if "actions" in z.files else None
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"{f}: frames must be uint8 (N, K, H, W, 3), got {frames.dtype} {frames.shape}")
    if actions is not None and actions.shape[:2] != frames.shape[:2]:
        raise ValueError(f"{f}: actions {actions.shape} do not match frames {frames.shape}")
    return frames, actions
