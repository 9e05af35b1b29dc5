"""Human-like action sequences for long rollouts: keys held for varied durations, not i.i.d. noise.

Generated up front as one array so a 10,500-step rollout spends no Python time per env per step.
"""

from __future__ import annotations

import numpy as np

# plausible multibinary combos for (forward, back, turn left, turn right, strafe left, strafe right)
_EXPLORE_COMBOS = np.array(
    [
        [1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], [1, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0],
        [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 1, 0],
    ],
    dtype=np.int8,
)
_EXPLORE_WEIGHTS = np.array([6, 3, 3, 2, 2, 1, 1, 1, 1, 1], dtype=np.float64)


def held_key_actions(spec, steps: int, num_envs: int, seed: int = 0, min_hold: int = 2, max_hold: int = 60) -> np.ndarray:
    """Raw actions (steps, num_envs, *action_shape): each env holds a choice for a log-uniform duration."""
    rng = np.random.default_rng(seed)
    if spec.action_kind == "multibinary" and spec.num_buttons == _EXPLORE_COMBOS.shape[1]:
        choices, weights = _EXPLORE_COMBOS, _EXPLORE_WEIGHTS / _EXPLORE_WEIGHTS.sum()
    elif spec.action_kind == "multibinary":
        choices = np.eye(spec.num_buttons, dtype=np.int8)
        weights = np.full(len(choices), 1 / len(choices))
    else:
        choices = np.arange(len(spec.discrete_actions))
        weights = np.full(len(choices), 1 / len(choices))
    out = np.empty((steps, num_envs, *spec.action_shape), dtype=spec.action_dtype)
    for e in range(num_envs):  # setup only, not a hot path
        t = 0
        while t < steps:
            hold = int(np.exp(rng.uniform(np.log(min_hold), np.log(max_hold))))
            out[t : t + hold, e] = choices[rng.choice(len(choices), p=weights)]
            t += hold
    return out
