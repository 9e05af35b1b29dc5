"""A fuzz pass over the env API, as a careless user or an attacker would call it: every junk argument must be
refused with an error that names the argument, never accepted silently and never end in an error from deep
inside (an AttributeError, an IndexError, a numpy or torch message). The tally per area is printed (pytest -s)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tiny_weights import make_tiny_weights
from odyssey_gym.envs.vector_env import WorldModelVectorEnv

B, K = 2, 4
CLEAR = (ValueError, TypeError, RuntimeError)


class Junk:
    def __repr__(self):
        return "<junk object>"


JUNK = ["12", "", 1.5, float("nan"), float("inf"), True, False, -1, 2**64, 2**63, b"x", {"a": 1}, [], [1], [1, "x"],
        [None], (1.5, 2.0), np.float32(1), np.array([[1, 2]]), np.array(["a", "b"]), torch.tensor([1.5, 2.5]), Junk()]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_weights("doom-takecover", tmp_path_factory.mktemp("tiny_fuzz"), n_starts=3)


def outcome(call, names: tuple[str, ...]) -> str:
    """'refused' (a clear error naming one of `names`), 'accepted', or 'unclear: <what was raised>'."""
    try:
        call()
    except CLEAR as e:
        msg = str(e)
        return "refused" if any(n in msg for n in names) else f"unclear: {type(e).__name__}: {msg[:120]}"
    except Exception as e:  # noqa: BLE001 (anything else is from deep inside)
        return f"unclear: {type(e).__name__}: {str(e)[:120]}"
    return "accepted"


def tally(area: str, results: dict[str, str]) -> None:
    counts = Counter("refused" if r == "refused" else "accepted" if r == "accepted" else "unclear"
                     for r in results.values())
    print(f"\n{area}: {len(results)} inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    bad = {k: v for k, v in results.items() if v != "refused"}
    assert not bad, f"{area}: not refused clearly:\n" + "\n".join(f"  {k}: {v}" for k, v in bad.items())


def test_fuzz_reset_seed(weights):
    env = WorldModelVectorEnv("doom-takecover", num_envs=B, weights=weights)
    # every junk value is wrong for two envs: bools are not seeds, [None] and [1] have one entry, floats are not ints
    results = {repr(j): outcome(lambda j=j: env.reset(seed=j), ("seed",)) for j in JUNK}
    results.update({"[0, -1]": outcome(lambda: env.reset(seed=[0, -1]), ("seed",)),
                    "[0, 2**64]": outcome(lambda: env.reset(seed=[0, 2**64]), ("seed",))})
    tally("reset(seed=...)", results)
    env.close()


def test_fuzz_reset_options(weights):
    env = WorldModelVectorEnv("doom-takecover", num_envs=B, weights=weights)
    ctx = np.zeros((B, K, 64, 64, 3), np.uint8)
    cases = {f"options={j!r}": j for j in JUNK}  # none of them is a dict
    cases.update({
        "bogus key": {"bogus": 1},
        "context str": {"context": "x"},
        "context float": {"context": ctx.astype(np.float32)},
        "context 3 for 2 envs": {"context": np.zeros((3, K, 64, 64, 3), np.uint8)},
        "context wrong size": {"context": np.zeros((B, K, 32, 32, 3), np.uint8)},
        "context 2-d": {"context": np.zeros((64, 64), np.uint8)},
        "actions str": {"context": ctx, "actions": "x"},
        "actions nan": {"context": ctx, "actions": np.full((B, K, 3), np.nan, np.float32)},
        "actions 7": {"context": ctx, "actions": np.full((B, K), 7)},
        "actions -1": {"context": ctx, "actions": np.full((B, K), -1)},
        "actions wrong length": {"context": ctx, "actions": np.zeros((B, K + 3), np.int64)},
        "actions two-hot": {"context": ctx, "actions": np.ones((B, K, 3), np.float32)},
        "actions alone": {"actions": np.zeros((B, K), np.int64)},
        "reset_mask list": {"reset_mask": [True, False]},
        "reset_mask ints": {"reset_mask": np.array([1, 0])},
        "reset_mask shape": {"reset_mask": np.ones(3, bool)},
        "reset_mask none set": {"reset_mask": np.zeros(B, bool)},
    })
    names = ("options", "context", "actions", "reset_mask", "reset")
    env.reset(seed=0)
    results = {k: outcome(lambda v=v: env.reset(options=v), names) for k, v in cases.items()}
    tally("reset(options=...)", results)
    env.close()


def test_fuzz_step_actions(weights):
    env = WorldModelVectorEnv("doom-takecover", num_envs=B, weights=weights)
    env.reset(seed=0)
    cases = {repr(j): j for j in JUNK}
    cases.update({"None": None, "one int": 1, "one env": np.array([0]), "half": np.array([0.5, 0.0]),
                  "3": np.array([3, 0]), "-1": np.array([-1, 0]), "2-d": np.zeros((2, 2), np.int64),
                  "inf": np.array([np.inf, 0.0]), "1e30": np.array([1e30, 0.0]), "strings": np.array(["0", "1"]),
                  "torch float": torch.tensor([0.0, 1.0]), "torch 9": torch.tensor([9, 0])})
    results = {k: outcome(lambda v=v: env.step(v), ("action",)) for k, v in cases.items()}
    tally("step(actions)", results)
    env.close()


@pytest.mark.parametrize("param,names", [
    ("num_envs", ("num_envs",)), ("sampling_steps", ("sampling_steps",)), ("autoreset_mode", ("autoreset_mode",)),
    ("backend", ("backend",)), ("render_mode", ("render_mode",)), ("termination", ("termination",)),
    ("device", ("device",)), ("max_episode_steps", ("max_episode_steps",)), ("compile", ("compile",)),
])
def test_fuzz_constructor(weights, param, names):
    results = {}
    valid = {"compile": (False,)}.get(param, ())  # compile=False is a real choice: no graph, eager
    for j in JUNK:
        if any(j is v for v in valid):
            continue
        kw = {"num_envs": 1, param: j}
        results[repr(j)] = outcome(lambda kw=kw: WorldModelVectorEnv("doom-takecover", weights=weights, **kw), names)
    # a few values that look plausible but are not
    extra = {"num_envs": [0, 10**12], "sampling_steps": [0, 10**9], "device": ["cuda:99", "tpu", "cpu:x"],
             "max_episode_steps": [-5], "backend": ["jax"], "render_mode": ["human"], "termination": ["never"],
             "autoreset_mode": ["sometimes"]}
    for v in extra.get(param, []):
        kw = {"num_envs": 1, param: v}
        results[repr(v)] = outcome(lambda kw=kw: WorldModelVectorEnv("doom-takecover", weights=weights, **kw), names)
    tally(f"WorldModelVectorEnv({param}=...)", results)
