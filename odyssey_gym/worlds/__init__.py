"""Real engines we learn from. Knows nothing of torch."""

from __future__ import annotations

from .catalog import WORLDS
from .spec import WorldSpec


def get_world(name: str | WorldSpec) -> WorldSpec:
    """Look a world up by name; an unknown name lists the known ones."""
    if isinstance(name, WorldSpec):
        return name
    if name in WORLDS:
        return WORLDS[name]
    if isinstance(name, str) and name.startswith("gym:"):
        from .gym_adapter import gym_world_spec

        return gym_world_spec(name[len("gym:"):])
    known = ", ".join(sorted(WORLDS))
    raise KeyError(f"unknown world {name!r}; known worlds: {known} (or 'gym:<EnvId>' for any Gymnasium env with RGB frames)")


def make_real_env(name: str | WorldSpec, render_mode: str | None = "rgb_array", **kwargs):
    """A real-engine Gymnasium env for the world (ViZDoom headless, or the wrapped Gymnasium env)."""
    spec = get_world(name)
    if spec.engine == "vizdoom":
        from .doom import DoomEnv

        return DoomEnv(spec, render_mode=render_mode, **kwargs)
    from .gym_adapter import GymFramesEnv

    return GymFramesEnv(spec, render_mode=render_mode, **kwargs)


__all__ = ["WORLDS", "WorldSpec", "get_world", "make_real_env"]
