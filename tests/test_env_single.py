"""The single numpy view, registration, gym.make / make_vec, env checkers."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import odyssey_gym  # noqa: F401  (registers the ids)
from odyssey_gym.envs.single_env import WorldModelEnv
from tiny_weights import make_tiny_weights
from odyssey_gym.envs.vector_env import WorldModelVectorEnv


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_weights("doom-takecover", tmp_path_factory.mktemp("tiny_single"), n_starts=3)


@pytest.fixture(scope="module")
def explore_weights(tmp_path_factory):
    return make_tiny_weights("doom-explore", tmp_path_factory.mktemp("tiny_explore"), n_starts=2)


def test_ids_registered():
    for env_id, world in [("odyssey_gym/DoomExplore-v0", "doom-explore"), ("odyssey_gym/DoomTakeCover-v0", "doom-takecover"),
                          ("odyssey_gym/DoomHealth-v0", "doom-health")]:
        spec = gym.spec(env_id)
        assert spec.kwargs == {"world": world}
        assert spec.entry_point == "odyssey_gym.envs.single_env:WorldModelEnv"
        assert spec.vector_entry_point == "odyssey_gym.envs.vector_env:WorldModelVectorEnv"
        assert spec.max_episode_steps == odyssey_gym.worlds.get_world(world).max_episode_steps


def test_gymnasium_env_checker(weights):
    from gymnasium.utils.env_checker import check_env

    env = gym.make("odyssey_gym/DoomTakeCover-v0", weights=weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker's warnings are failures here
        check_env(env.unwrapped, skip_render_check=False)


def test_sb3_env_checker(weights):
    from stable_baselines3.common.env_checker import check_env

    env = WorldModelEnv("doom-takecover", weights=weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, warn=True)


def test_checkers_multibinary(explore_weights):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = WorldModelEnv("doom-explore", weights=explore_weights)
    check_env(env)
    sb3_check(env)


def test_make_and_make_vec(weights):
    env = gym.make("odyssey_gym/DoomTakeCover-v0", weights=weights, max_episode_steps=3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    for t in range(3):
        obs, r, term, trunc, info = env.step(1)
        assert isinstance(r, float)
    assert trunc
    envs = gym.make_vec("odyssey_gym/DoomTakeCover-v0", num_envs=3, weights=weights, device="cpu")
    assert isinstance(envs.unwrapped, WorldModelVectorEnv) and envs.num_envs == 3
    assert envs.unwrapped.max_episode_steps == 525
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3)
    # the single view is env 0 of a vector env with the same seed
    single = gym.make("odyssey_gym/DoomTakeCover-v0", weights=weights)
    o1, _ = single.reset(seed=0)
    assert np.array_equal(o1, obs[0])
    o1, *_ = single.step(2)
    ov, *_ = envs.step(np.array([2, 0, 1]))
    # equal up to float summation order of a batch of 3 vs 1 (a rare pixel may move one level)
    assert np.abs(o1.astype(int) - ov[0].astype(int)).max() <= 1


def test_single_step_validation(weights):
    env = WorldModelEnv("doom-takecover", weights=weights)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expected an action of shape"):
        env.step(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"outside Discrete\(3\)"):
        env.step(5)


def test_keys_to_action_are_pygame_codes(weights, explore_weights):
    import pygame

    env = WorldModelEnv("doom-takecover", weights=weights)
    table = env.get_keys_to_action()
    assert table[(pygame.K_LEFT,)] == 0 and table[(pygame.K_d,)] == 1
    env = WorldModelEnv("doom-explore", weights=explore_weights)
    table = env.get_keys_to_action()
    fwd_left = table[tuple(sorted((pygame.K_w, pygame.K_LEFT)))]
    assert fwd_left.tolist() == [1, 0, 1, 0, 0, 0]
    for action in table.values():
        assert action in env.action_space
