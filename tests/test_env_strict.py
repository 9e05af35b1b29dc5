"""The env refuses loose input with a message that names the argument, instead of silently doing something
else (a string seed "12" iterating as the seeds [1, 2], an unknown reset option ignored, NaN context actions
blamed on the weights later)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.error import ResetNeeded

from tiny_weights import make_tiny_weights
from odyssey_gym.envs.vector_env import WorldModelVectorEnv


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_weights("doom-takecover", tmp_path_factory.mktemp("tiny_strict"), n_starts=3)


@pytest.fixture
def env(weights):
    e = WorldModelVectorEnv("doom-takecover", num_envs=2, weights=weights)
    yield e
    e.close()


@pytest.mark.parametrize("seed,error,match", [
    ("12", TypeError, "seed must be an int"),
    (1.5, TypeError, "seed must be an int"),
    ({"a": 1}, TypeError, "seed must be an int"),
    (True, TypeError, "got bool"),
    ([1, "x"], TypeError, r"seed\[1\]"),
    ([1, 2.0], TypeError, r"seed\[1\]"),
    ([1, 2, 3], ValueError, "list of 2 seeds"),
    (-1, ValueError, "seed must lie in"),
    (2**64, ValueError, "seed must lie in"),
    (2**63 - 1, ValueError, "seed must lie in"),  # env 1 would get 2**63: past int64
    ([0, -5], ValueError, r"seed\[1\]"),
])
def test_bad_seeds_are_refused(env, seed, error, match):
    with pytest.raises(error, match=match):
        env.reset(seed=seed)


def test_good_seeds(env):
    a = env.reset(seed=7)[0]
    assert np.array_equal(env.reset(seed=np.int64(7))[0], a)
    assert np.array_equal(env.reset(seed=[7, 8])[0], a)
    assert np.array_equal(env.reset(seed=np.array([7, 8]))[0], a)
    env.reset(seed=[None, 3])
    env.reset(seed=2**63 - 2)  # the largest seed two envs can take


def test_unknown_reset_option_is_refused(env):
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['bogus'\]"):
        env.reset(options={"bogus": 1})
    with pytest.raises(TypeError, match="options must be a dict"):
        env.reset(options=[("context", None)])
    with pytest.raises(ValueError, match="without options\\['context'\\]"):
        env.reset(options={"actions": np.zeros((2, 4), np.int64)})


def test_context_actions_are_checked(env):
    K = 4
    ctx = np.zeros((2, K, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="NaN or inf"):
        env.reset(options={"context": ctx, "actions": np.full((2, K, 3), np.nan, np.float32)})
    with pytest.raises(ValueError, match="0/1 entries"):
        env.reset(options={"context": ctx, "actions": np.full((2, K, 3), 0.5, np.float32)})
    with pytest.raises(ValueError, match="one-hot"):
        env.reset(options={"context": ctx, "actions": np.ones((2, K, 3), np.float32)})
    with pytest.raises(ValueError, match="outside Discrete"):
        env.reset(options={"context": ctx, "actions": np.full((2, K), 7)})
    with pytest.raises(ValueError, match="integer"):
        env.reset(options={"context": ctx, "actions": np.full((2, K), 1.5)})
    onehot = np.zeros((2, K, 3), np.float32)
    onehot[..., 1] = 1
    env.reset(options={"context": ctx, "actions": onehot})
    env.reset(options={"context": ctx, "actions": np.ones((2, K), np.int64)})


def test_step_actions_report_their_own_values(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside Discrete\(3\) for envs \[0\]: got \[1e\+30"):
        env.step(np.array([1e30, 0.0]))
    with pytest.raises(ValueError, match="integer actions"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"outside Discrete\(3\) for envs \[1\]: got \[99\]"):
        env.step(np.array([0, 99]))
    env.step(np.array([2.0, 0.0]))  # integral floats are actions


def test_render_and_step_need_reset(weights):
    e = WorldModelVectorEnv("doom-takecover", num_envs=2, weights=weights)
    with pytest.raises(ResetNeeded, match="render"):
        e.render()
    with pytest.raises(RuntimeError, match="reset"):  # ResetNeeded is a RuntimeError too
        e.step(np.zeros(2, np.int64))
    e.close()


def test_closed_env_says_so(weights):
    e = WorldModelVectorEnv("doom-takecover", num_envs=2, weights=weights)
    e.reset(seed=0)
    e.close()
    for call in (lambda: e.step(np.zeros(2, np.int64)), e.reset, e.render):
        with pytest.raises(RuntimeError, match="closed env"):
            call()


@pytest.mark.parametrize("kw,match", [
    ({"num_envs": True}, "num_envs"),
    ({"num_envs": 2.0}, "num_envs"),
    ({"sampling_steps": 0}, "sampling_steps"),
    ({"sampling_steps": -1}, "sampling_steps"),
    ({"sampling_steps": 1.5}, "sampling_steps"),
])
def test_constructor_arguments(weights, kw, match):
    with pytest.raises(ValueError, match=match):
        WorldModelVectorEnv("doom-takecover", weights=weights, **{"num_envs": 1, **kw})
