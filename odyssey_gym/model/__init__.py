"""The interactive video model: frame autoencoder, frame-causal dynamics, the real-time sampler.

Pure torch (plus numpy/safetensors): no gymnasium, no vizdoom, no other odyssey_gym layer except the
world specs (`odyssey_gym.worlds`, torch- and engine-free), which `load` checks weights against.
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
    record_shard_hashes,
    write_safetensors_index,
)

__all__ = [
    "AutoencoderConfig", "FrameAutoencoder", "frames_to_tensor", "tensor_to_frames", "ssim",
    "Dynamics", "DynamicsConfig", "karras_sigmas",
    "WorldModel", "WorldModelConfig", "MODEL_VERSION", "WEIGHTS_FORMAT", "estimate_flops_per_frame",
    "record_shard_hashes", "write_safetensors_index", "check_world",
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


def load(world, device: str | torch.device = "cpu", weights_dir: str | os.PathLike | None = None,
         dtype: torch.dtype | None = None) -> WorldModel:
    """Load the world model of `world` (a name or a WorldSpec; shipped weights unless `weights_dir` is given).

    The weights must be for that world: config.json's `world`, frame size and action_dim are checked against
    the world's spec, so weights of another world (or of none) never run under the wrong action space."""
    spec = _world_spec(world)
    d = Path(weights_dir) if weights_dir is not None else WEIGHTS_ROOT / spec.name
    if not (d / "config.json").is_file():
        have = available_worlds()
        raise FileNotFoundError(
            f"no weights for world {spec.name!r} at {d}; worlds with shipped weights: {have or 'none'} "
            f"(train one with `odyssey-gym train` or pass weights_dir=)"
        )
    model = WorldModel.from_pretrained(d, device=device, dtype=dtype)
    check_world(model.config, spec, d / "config.json")
    return model


def _world_spec(world):
    """A WorldSpec (or anything with name / frame_size / action_dim) as is; a name looked up in the catalog."""
    if isinstance(world, str):
        from odyssey_gym.worlds import get_world

        return get_world(world)
    if not all(hasattr(world, a) for a in ("name", "frame_size", "action_dim")):
        raise TypeError(f"world must be a world name or a WorldSpec, got {type(world).__name__}")
    return world


def check_world(config: WorldModelConfig, spec, where: str | os.PathLike = "weights") -> None:
    """Raise unless the model config was trained for `spec`: same world name, frame size and action_dim."""
    if config.world != spec.name:
        raise ValueError(f"{where}: these weights were trained for world {config.world!r}, not {spec.name!r}; "
                         f"pass weights for {spec.name!r} (or world={config.world!r})")
    if tuple(config.frame_size) != tuple(spec.frame_size):
        raise ValueError(f"{where}: ae.frame_size {tuple(config.frame_size)} does not match world {spec.name!r}'s "
                         f"frame size {tuple(spec.frame_size)}")
    if config.action_dim != spec.action_dim:
        raise ValueError(f"{where}: dynamics.action_dim {config.action_dim} does not match world {spec.name!r}'s "
                         f"action_dim {spec.action_dim}")


def load_start_bank(world_or_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Real starting contexts shipped next to the weights: (frames uint8 (N, K, H, W, 3), actions float32 (N, K, A)).

    Accepts a world name or a weights directory. Returns None when there is no start_bank.npz;
    actions is None when the bank has none."""
    p = Path(world_or_dir)
    d = p if p.is_dir() else WEIGHTS_ROOT / str(world_or_dir)
    f = d / START_BANK_NAME
    if not f.is_file():
        return None
    try:
        with np.load(f) as z:
            files = list(z.files)
            frames = z["frames"] if "frames" in files else None
            actions = z["actions"].astype(np.float32) if "actions" in files else None
    except Exception as e:  # zip, CRC, pickle or header errors: all mean the file is damaged
        raise ValueError(f"{f}: cannot read start bank ({type(e).__name__}: {e})") from None
    if frames is None:
        raise KeyError(f"{f}: no 'frames' array (has {files})")
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"{f}: frames must be uint8 (N, K, H, W, 3), got {frames.dtype} {frames.shape}")
    if actions is not None and actions.shape[:2] != frames.shape[:2]:
        raise ValueError(f"{f}: actions {actions.shape} do not match frames {frames.shape}")
    if actions is not None and not np.isfinite(actions).all():
        raise ValueError(f"{f}: actions hold NaN/inf")
    return frames, actions
