"""Small batched agents for recording and demos: uniform random and sticky (human-like held keys)."""

from __future__ import annotations

import numpy as np

from odyssey_gym.worlds import WorldSpec, get_world

__all__ = ["RandomAgent", "StickyAgent", "make_agent"]

_OPPOSITE = {"MOVE_FORWARD": "MOVE_BACKWARD", "TURN_LEFT": "TURN_RIGHT", "MOVE_LEFT": "MOVE_RIGHT"}


class RandomAgent:
    """Uniform random actions from the batched action space."""

    def __init__(self, world: str | WorldSpec, num_envs: int, seed: int | None = None):
        self.world = get_world(world)
        self.space = self.world.action_space()
        self.space.seed(seed)
        self.num_envs = num_envs

    def __call__(self, obs=None) -> np.ndarray:
        return np.stack([np.asarray(self.space.sample()) for _ in range(self.num_envs)])


class StickyAgent:
    """Held keys of varied length, like a person: each env holds an action for a random
    number of steps (log-uniform between `min_hold` and `max_hold`), with some idle time.

    Multibinary worlds press plausible key sets (forward-biased, never both of an opposite pair);
    discrete worlds pick a combo uniformly (noop with probability `p_idle`).
    """

    def __init__(self, world: str | WorldSpec, num_envs: int, seed: int | None = None,
                 min_hold: int = 2, max_hold: int | None = None, p_idle: float = 0.1):
        self.world = get_world(world)
        self.num_envs = num_envs
        self.rng = np.random.default_rng(seed)
        self.min_hold = min_hold
        # about 0.05 s .. 1.5 s of game time
        self.max_hold = max_hold or max(min_hold + 1, int(round(1.5 * self.world.fps)))
        self.p_idle = p_idle
        shape = (num_envs, *self.world.action_shape)
        self.current = np.zeros(shape, dtype=self.world.action_dtype)
        self.left = np.zeros(num_envs, dtype=np.int64)

    def _new_action(self):
        spec = self.world
        if self.rng.random() < self.p_idle:
            return np.asarray(spec.noop_action())
        if spec.action_kind == "discrete":
            return np.int64(self.rng.integers(spec.action_dim))
        a = np.zeros(spec.num_buttons, dtype=np.int8)
        names = list(spec.buttons)
        for i, b in enumerate(names):
            p = 0.6 if b == "MOVE_FORWARD" else 0.3
            a[i] = self.rng.random() < p
        for x, y in _OPPOSITE.items():
            if x in names and y in names and a[names.index(x)] and a[names.index(y)]:
                a[names.index(y if self.rng.random() < 0.5 else x)] = 0
        return a

    def _hold(self) -> int:
        lo, hi = np.log(self.min_hold), np.log(self.max_hold)
        return int(np.exp(self.rng.uniform(lo, hi)))

    def __call__(self, obs=None) -> np.ndarray:
        for i in np.flatnonzero(self.left <= 0):
            self.current[i] = self._new_action()
            self.left[i] = self._hold()
        self.left -= 1
        return self.current.copy()


def make_agent(name: str, world: str | WorldSpec, num_envs: int, seed: int | None = None):
    """'random' | 'sticky' -> a callable obs -> batched actions."""
    if name == "random":
        return RandomAgent(world, num_envs, seed)
    if name == "sticky":
        try:  # the data layer's recording policy (held keys + wall escape), one per env
            from odyssey_gym.data.policies import StickyRandomPolicy
        except ImportError:
            return StickyAgent(world, num_envs, seed)
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
