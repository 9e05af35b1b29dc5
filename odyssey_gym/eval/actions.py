"""Human-like action sequences for long rollouts: keys held for varied durations, not i.i.d. noise.

Generated up front as one array so a 10,500-step rollout spends no Python time per env per step.
"""

from __future__ import annotations

import numpy as np

from ..data.policies import HeldKeys


def _raw(spec, combos) -> np.ndarray:
    """Sets of button names -> raw actions: (n, buttons) int8 rows (multibinary) or action indices (discrete)."""
    if spec.action_kind == "multibinary":
        return np.array([[int(b in c) for b in spec.buttons] for c in combos], dtype=np.int8)
    codes = [tuple(int(b in c) for b in spec.buttons) for c in combos]
    return np.array([spec.discrete_actions.index(code) for code in codes])


def held_key_choice_array(spec) -> tuple[np.ndarray, np.ndarray]:
    """The world's held-key choices (`HeldKeys`, the recording policy's) as raw actions, with their probabilities."""
    holds = HeldKeys(spec)
    return _raw(spec, holds.combos), holds.p


def held_key_actions(spec, steps: int, num_envs: int, seed: int = 0, min_hold: int = 2,
                     max_hold: int | None = None) -> np.ndarray:
    """Raw actions (steps, num_envs, *action_shape): each env plays the world's `HeldKeys` process, the one the
    sticky recording policy plays (without its wall escape, which needs frames), from its own random stream
    (`default_rng([seed, env])`): an env's first n actions are the same whatever `steps` and `num_envs` are, so
    minute 1 of a 2-minute rollout and of a 5-minute one are the same play."""
    holds = HeldKeys(spec, min_hold, max_hold)
    choices = _raw(spec, holds.combos)
    out = np.empty((steps, num_envs, *spec.action_shape), dtype=spec.action_dtype)
    for e in range(num_envs):  # setup only, not a hot path
        rng = np.random.default_rng([seed, e])
        t = 0
        while t < steps:
            i, hold = holds.draw(rng)
            out[t : t + hold, e] = choices[i]
            t += hold
    return out


def random_actions(steps: int, batch: int, action_dim: int, discrete: bool, seed: int = 0) -> np.ndarray:
    """Uniformly random raw actions, a fresh one each step: (steps, batch) action indices (discrete) or
    (steps, batch, action_dim) 0/1 buttons. What the timing loops of `bench` and `eval`'s speed feed, made
    before the clock starts."""
    rng = np.random.default_rng(seed)
    if discrete:
        return rng.integers(0, action_dim, (steps, batch), dtype=np.int64)
    return rng.integers(0, 2, (steps, batch, action_dim), dtype=np.int64)
