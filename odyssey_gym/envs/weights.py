"""The weights an env runs when none are passed, and the error when a world ships none. Imports nothing heavy."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MissingWeightsError", "load_model_and_bank", "shipped_weights"]


class MissingWeightsError(FileNotFoundError):
    """A world with no shipped weights, and none passed (`weights=DIR` in Python, `--weights DIR` in the CLI)."""


def shipped_weights(world: str) -> Path:
    """The shipped weights dir of `world`; `MissingWeightsError` (naming the worlds that ship some) when it has none."""
    from odyssey_gym.model import available_worlds, weights_dir

    d = weights_dir(world)
    if not (d / "config.json").is_file():
        raise MissingWeightsError(
            f"no weights for world {world!r} at {d}; worlds with shipped weights: {', '.join(available_worlds()) or 'none'} "
            "(train one with `odyssey-gym train`, then pass its export dir as weights=DIR to gym.make / make_vec, "
            "or --weights DIR to odyssey-gym)")
    return d


def load_model_and_bank(spec, weights, start_bank):
    """An env's `weights=` and `start_bank=` -> (model on cpu, bank frames (N,K,H,W,3) uint8 or None, bank actions
    (N,K,A) float32 or None). None means the shipped weights and the start bank saved beside them."""
    import numpy as np
    import torch

    from odyssey_gym import model as om

    if weights is None:
        shipped_weights(spec.name)  # or the error that says how to pass weights
        model = om.load(spec, device="cpu")
        bank = start_bank if start_bank is not None else om.load_start_bank(spec.name)
    elif isinstance(weights, torch.nn.Module):
        model = weights
        bank = start_bank
        if bank is None and weights.pretrained_dir is not None:
            bank = om.load_start_bank(weights.pretrained_dir)
        if getattr(model, "config", None) is not None:
            om.check_world(model.config, spec, "weights")
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if not path.is_dir():
            raise FileNotFoundError(f"weights={str(weights)!r} is not a directory (expected a dir with config.json + *.safetensors)")
        model = om.load(spec, device="cpu", weights_dir=path)
        bank = start_bank if start_bank is not None else om.load_start_bank(path)
    else:
        raise TypeError(f"weights must be None (shipped weights), a directory path or a WorldModel, got {type(weights).__name__}")

    if bank is None:
        return model, None, None
    if isinstance(bank, dict):
        frames, actions = bank["frames"], bank.get("actions")
    else:
        frames, actions = bank
    frames = np.asarray(frames)
    if actions is None:
        actions = np.zeros((*frames.shape[:2], spec.action_dim), np.float32)
    return model, frames, np.asarray(actions, dtype=np.float32)
