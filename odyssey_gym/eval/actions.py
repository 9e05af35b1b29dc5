"""Human-like action sequences for long rollouts: keys held for varied durations, not i.i.d. noise.

Generated up front as one array so a 10,500-step rollout spends no Python time per env per step.
"""

from __future__ import annotations

import numpy as np

from ..data.policies import held_key_choices

# What the long-rollout player holds (button names, weight): mostly walking, turning while walking, some turns on
# the spot, backing off, strafing and standing. Kept apart from the recording policies' table so the realism
# numbers of every eval compare with each other.
HELD_KEY_COMBOS: list[tuple[tuple[str, ...], float]] = [
    (("MOVE_FORWARD",), 6.0), (("MOVE_FORWARD", "TURN_LEFT"), 3.0), (("MOVE_FORWARD", "TURN_RIGHT"), 3.0),
    (("TURN_LEFT",), 2.0), (("TURN_RIGHT",), 2.0), (("MOVE_BACKWARD",), 1.0), (("MOVE_LEFT",), 1.0),
    (("MOVE_RIGHT",), 1.0), ((), 1.0), (("MOVE_FORWARD", "MOVE_LEFT"), 1.0),
]


def held_key_choice_array(spec) -> tuple[np.ndarray, np.ndarray]:
    """The world's held-key choices as raw actions: (n, buttons) int8 rows (multibinary) or action indices
    (discrete), with their probabilities; derived from the world's button names."""
    combos, weights = held_key_choices(spec, HELD_KEY_COMBOS)
    if spec.action_kind == "multibinary":
        return np.array([[int(b in c) for b in spec.buttons] for c in combos], dtype=np.int8), weights
    codes = [tuple(int(b in c) for b in spec.buttons) for c in combos]
    return np.array([spec.discrete_actions.index(code) for code in codes]), weights


def held_key_actions(spec, steps: int, num_envs: int, seed: int = 0, min_hold: int = 2, max_hold: int = 60) -> np.ndarray:
    """Raw actions (steps, num_envs, *action_shape): each env holds a choice for a log-uniform duration."""
    rng = np.random.default_rng(seed)
    choices, weights = held_key_choice_array(spec)
    out = np.empty((steps, num_envs, *spec.action_shape), dtype=spec.action_dtype)
    for e in range(num_envs):  # setup only, not a hot path
        t = 0
        while t < steps:
            hold = int(np.exp(rng.uniform(np.log(min_hold), np.log(max_hold))))
            out[t : t + hold, e] = choices[rng.choice(len(choices), p=weights)]
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
