"""Real-engine worlds: ViZDoom envs built from WorldSpecs, and the Gymnasium adapter."""

import dataclasses
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from odyssey_gym.worlds import WORLDS, get_world, make_real_env
from odyssey_gym.worlds.catalog import DOOM_EXPLORE


def test_unknown_world_lists_known_names():
    with pytest.raises(KeyError) as e:
        get_world("doom-nope")
    for name in WORLDS:
        assert name in str(e.value)


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_doom_world_passes_check_env(name):
    spec = get_world(name)
    env = make_real_env(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env)
        obs, info = env.reset(seed=1)
        assert obs.shape == spec.frame_shape and obs.dtype == np.uint8
        assert env.metadata["render_fps"] == spec.fps
        assert np.array_equal(env.render(), obs)
        obs2, *_ = env.step(env.action_space.sample())
        assert obs2.shape == spec.frame_shape
    finally:
        env.close()
    env.close()  # closing twice is harmless


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        frames.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    return np.stack(frames), np.array(rewards)


def test_seed_reproduces_episode_under_same_actions():
    env = make_real_env("doom-takecover")
    try:
        actions = np.random.default_rng(0).integers(0, 3, 120)
        f1, r1 = _rollout(env, 7, actions)
        f2, r2 = _rollout(env, 7, actions)
        f3, _ = _rollout(env, 8, actions)
    finally:
        env.close()
    assert np.array_equal(f1, f2) and np.array_equal(r1, r2)
    n = min(len(f1), len(f3))
    assert not np.array_equal(f1[:n], f3[:n])  # another seed: fireballs come differently
    assert len(np.unique(f1.reshape(len(f1), -1), axis=0)) > len(f1) // 2  # frames really change


def test_truncation_at_max_episode_steps_is_not_termination():
    spec = dataclasses.replace(DOOM_EXPLORE, max_episode_steps=5)
    env = make_real_env(spec)
    try:
        env.reset(seed=0)
        flags = [env.step(spec.noop_action())[2:4] for _ in range(5)]
        assert flags[:4] == [(False, False)] * 4 and flags[4] == (False, True)
        with pytest.raises(RuntimeError, match="reset"):
            env.step(spec.noop_action())
    finally:
        env.close()


def test_invalid_action_is_refused_clearly():
    env = make_real_env("doom-explore")
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="doom-explore.*MultiBinary"):
            env.step(np.array([1, 0, 2, 0, 0, 0]))
        with pytest.raises(ValueError, match="invalid action"):
            env.step(3)
    finally:
        env.close()
    env = make_real_env("doom-takecover")
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="Discrete"):
            env.step(3)
        env.step(np.int64(2))  # numpy ints are fine
    finally:
        env.close()


def test_gym_adapter_cartpole():
    spec = get_world("gym:CartPole-v1")
    assert spec.action_kind == "discrete" and spec.action_dim == 2 and spec.frame_shape == (64, 64, 3)
    env = make_real_env("gym:CartPole-v1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
        frames = [obs]
        for _ in range(10):
            obs, r, term, trunc, _ = env.step(1)
            frames.append(obs)
            if term or trunc:
                break
        assert not np.array_equal(frames[0], frames[-1])  # the pole/cart moved
        assert env.metadata["render_fps"] == 50
    finally:
        env.close()


def test_gym_adapter_refuses_box_actions():
    with pytest.raises(NotImplementedError, match="Box"):
        get_world("gym:Pendulum-v1")
