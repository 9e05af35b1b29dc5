"""Small batched agents for recording and demos: uniform random, and sticky (human-like held keys: the
data layer's `StickyRandomPolicy`, one per env, so recordings and demos share one model of a person)."""

from __future__ import annotations

import numpy as np

from odyssey_gym.worlds import WorldSpec, get_world

__all__ = ["RandomAgent", "make_agent"]


class RandomAgent:
    """Uniform random actions from the batched action space."""

    def __init__(self, world: str | WorldSpec, num_envs: int, seed: int | None = None):
        self.world = get_world(world)
        self.space = self.world.action_space()
        self.space.seed(seed)
        self.num_envs = num_envs

    def __call__(self, obs=None) -> np.ndarray:
        return np.stack([np.asarray(self.space.sample()) for _ in range(self.num_envs)])


def make_agent(name: str, world: str | WorldSpec, num_envs: int, seed: int | None = None):
    """'random' | 'sticky' -> a callable obs -> batched actions."""
    if name == "random":
        return RandomAgent(world, num_envs, seed)
    if name == "sticky":  # the data layer's recording policy (held keys + wall escape), one per env
        from odyssey_gym.data.policies import StickyRandomPolicy

        return _PerEnv([StickyRandomPolicy(get_world(world), rng=None if seed is None else seed + i)
                        for i in range(num_envs)])
    raise ValueError(f"unknown agent {name!r}: use 'random', 'sticky' or a path to an SB3 .zip")


class _PerEnv:
    """Batch of single-env policies (`act(obs_i)`), one per env; obs batched (N, H, W, 3)."""

    def __init__(self, policies):
        self.policies = policies
        for p in policies:
            p.reset()

    def __call__(self, obs=None) -> np.ndarray:
        if obs is None:
            return np.stack([np.asarray(p.act(None)) for p in self.policies])
        return np.stack([np.asarray(p.act(o)) for p, o in zip(self.policies, obs)])
