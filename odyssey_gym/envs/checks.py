"""Argument checks of the env API, each failing with a message that names the argument.

Kept out of `vector_env.py` so the env reads as the gymnasium API over the sampler; everything here runs on the
host, on the user's arguments, before any device work (never in the per-step hot path except `step`'s
action check, which is already host-side for numpy actions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.error import ResetNeeded as _GymResetNeeded

SEED_MAX = 2**63 - 1  # env i's seed (seed + i) lives in an int64 tensor
RESET_OPTIONS = ("context", "actions", "state", "reset_mask")
MAX_NUM_ENVS = 1 << 16  # far past what one GPU holds (1,024 is the goal); a typo of 10**12 must not allocate
MAX_SAMPLING_STEPS = 1000  # the shipped models take 1-2; a sigma schedule longer than this is a typo


class ResetNeeded(_GymResetNeeded, RuntimeError):
    """step()/render() before the first reset(): gymnasium's ResetNeeded, and a RuntimeError as before."""


def is_int(x: Any) -> bool:
    """A Python or numpy integer, and not a bool (True is an int to Python, never a count or a seed here)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def check_num_envs(num_envs: Any) -> int:
    if not is_int(num_envs) or not 1 <= num_envs <= MAX_NUM_ENVS:
        raise ValueError(f"num_envs must be an int in [1, {MAX_NUM_ENVS}], got {num_envs!r}")
    return int(num_envs)


def check_choice(name: str, value: Any, choices: tuple, allow_none: bool = False) -> Any:
    """One of `choices` (strings), compared without ever truth-testing an array or other junk."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or value not in choices:
        shown = list(choices) + ([None] if allow_none else [])
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")
    return value


def check_max_episode_steps(value: Any) -> int | None:
    """None (the world's limit) or an int >= 0, 0 meaning no limit (the eval runs windows without one)."""
    if value is None:
        return None
    if not is_int(value) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"max_episode_steps must be None or an int >= 0 (0: no limit), got {value!r}")
    return int(value)


def check_sampling_steps(sampling_steps: Any) -> int | None:
    """None (the model's own count) or an int >= 1; 0 is refused rather than read as "the default"."""
    if sampling_steps is None:
        return None
    if not is_int(sampling_steps) or not 1 <= sampling_steps <= MAX_SAMPLING_STEPS:
        raise ValueError(f"sampling_steps must be None or an int in [1, {MAX_SAMPLING_STEPS}], got {sampling_steps!r}")
    return int(sampling_steps)


def env_seeds(seed: Any, num_envs: int) -> list[int | None] | None:
    """`reset(seed=...)` -> one seed (or None: draw one) per env; None when no seed was given.

    An int s seeds env i with s + i (gymnasium's vector convention); a list/tuple/array gives each env its own
    (None entries draw a fresh one). Strings, floats, bools, dicts and out-of-range ints are refused: a string
    "12" would otherwise iterate as the seeds [1, 2]."""
    if seed is None:
        return None
    if is_int(seed):
        s = int(seed)
        if s < 0 or s + num_envs - 1 > SEED_MAX:
            raise ValueError(f"seed must lie in [0, {SEED_MAX - num_envs + 1}] for {num_envs} envs "
                             f"(env i gets seed + i), got {s}")
        return [s + i for i in range(num_envs)]
    if isinstance(seed, np.ndarray):
        seed = seed.tolist() if seed.ndim == 1 else seed
    if not isinstance(seed, (list, tuple)):
        raise TypeError(f"seed must be an int, a list of {num_envs} ints (or None entries), or None; "
                        f"got {type(seed).__name__} {seed!r}")
    if len(seed) != num_envs:
        raise ValueError(f"seed must be an int or a list of {num_envs} seeds, got a list of {len(seed)}")
    out: list[int | None] = []
    for i, s in enumerate(seed):
        if s is None:
            out.append(None)
        elif not is_int(s):
            raise TypeError(f"seed[{i}] must be an int or None, got {type(s).__name__} {s!r}")
        elif not 0 <= int(s) <= SEED_MAX:
            raise ValueError(f"seed[{i}] must lie in [0, {SEED_MAX}], got {int(s)}")
        else:
            out.append(int(s))
    return out


def check_reset_options(options: Any) -> dict:
    """A copy of `options`, refusing anything but a dict of the known keys (a typo must not pass silently)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict with keys among {list(RESET_OPTIONS)}, got {type(options).__name__}")
    unknown = sorted(str(k) for k in options if k not in RESET_OPTIONS)
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; known: {list(RESET_OPTIONS)}")
    for key in ("actions", "state"):
        if key in options and "context" not in options:
            raise ValueError(f"options[{key!r}] given without options['context']")
    return dict(options)


def check_action_vectors(act: np.ndarray, kind: str, what: str = "options['actions']") -> None:
    """Model action vectors of a context: finite 0/1 entries, and for a discrete world at most one 1 per frame
    (a one-hot, or all zero for "no action", as the start bank's first frame). Anything else is not an action
    the model was trained on and would be blamed on the weights later."""
    if not np.isfinite(act).all():
        raise ValueError(f"{what} holds NaN or inf")
    if not np.isin(act, (0.0, 1.0)).all():
        bad = act[~np.isin(act, (0.0, 1.0))]
        raise ValueError(f"{what} as vectors must be 0/1 entries (one-hot for a discrete world), got values like "
                         f"{bad[:3].tolist()}")
    if kind == "discrete" and (act.sum(-1) > 1).any():
        raise ValueError(f"{what} as vectors must be one-hot for a discrete world; some frames have several 1s")


def discrete_actions(a: np.ndarray, n: int, what: str = "actions") -> np.ndarray:
    """Raw discrete actions -> int64, refusing non-integers, NaN and out-of-range values by their own value
    (a float 1e30 is reported as 1e30, not as the int64 it would wrap to)."""
    a = np.asarray(a)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        vals = a
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"expected integer {what} for Discrete({n}), got dtype {a.dtype}: {a.tolist()}")
        vals = a
    else:
        raise ValueError(f"expected integer {what} for Discrete({n}), got dtype {a.dtype}")
    bad = (vals < 0) | (vals >= n)
    if bad.any():
        idx = np.flatnonzero(bad.reshape(len(a), -1).any(-1)) if a.ndim else np.array([0])
        raise ValueError(f"{what} outside Discrete({n}) for envs {idx.tolist()}: got {a[idx].tolist()}")
    return vals.astype(np.int64)
