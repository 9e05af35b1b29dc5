"""The weights an env runs when none are passed, and the error when a world ships none. Imports nothing heavy."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MissingWeightsError", "shipped_weights"]


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
