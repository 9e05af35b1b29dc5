"""SB3 adapter: VecEnv API, terminal_observation / TimeLimit.truncated, PPO + wrappers."""

from __future__ import annotations

import numpy as np
import pytest

from odyssey_gym.envs.sb3 import OdysseyVecEnv
from tiny_weights import make_tiny_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_weights("doom-takecover", tmp_path_factory.mktemp("tiny_sb3"), n_starts=4)


def test_truncation_info(weights):
    venv = OdysseyVecEnv("doom-takecover", num_envs=3, weights=weights, max_episode_steps=4)
    assert venv.metadata["render_fps"] == 9 and venv.render_mode == "rgb_array"
    venv.seed(7)
    obs = venv.reset()
    assert obs.shape == (3, 64, 64, 3)
    for t in range(4):
        prev = obs
        obs, rew, dones, infos = venv.step(np.array([0, 1, 2]))
        assert rew.dtype == np.float32 and len(infos) == 3
    assert dones.all()
    for i in range(3):
        assert infos[i]["TimeLimit.truncated"] is True
        term = infos[i]["terminal_observation"]
        assert term.shape == (64, 64, 3) and not np.array_equal(term, obs[i])
    obs, rew, dones, infos = venv.step(np.array([0, 1, 2]))
    assert not dones.any() and infos == [{}, {}, {}]


def test_termination_is_not_truncation(weights):
    import torch

    venv = OdysseyVecEnv("doom-takecover", num_envs=2, weights=weights, max_episode_steps=50)
    real = venv.venv.sampler.step
    venv.venv.sampler.step = lambda a: (lambda f, r, t: (f, r, torch.tensor([True, False])))(*real(a))
    venv.reset()
    obs, rew, dones, infos = venv.step(np.array([0, 0]))
    assert dones.tolist() == [True, False]
    assert infos[0]["TimeLimit.truncated"] is False and "terminal_observation" in infos[0]


def test_vecenv_plumbing(weights):
    venv = OdysseyVecEnv("doom-takecover", num_envs=2, weights=weights)
    assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]
    assert venv.get_attr("max_episode_steps", indices=[1]) == [525]
    assert venv.env_is_wrapped(object) == [False, False]
    assert venv.seed(3) == [3, 4]
    venv.reset()
    frames = venv.env_method("render")
    assert len(frames) == 2 and frames[0].shape == (64, 64, 3)
    imgs = venv.get_images()
    assert len(imgs) == 2 and np.array_equal(imgs[1], frames[1])
    assert venv.render().shape == (128, 64, 3)  # SB3 tiles the images (2 rows)
    venv.set_attr("max_episode_steps", 9)
    assert venv.venv.max_episode_steps == 9
    with pytest.raises(ValueError, match="SAME_STEP"):
        from odyssey_gym.envs.vector_env import WorldModelVectorEnv

        OdysseyVecEnv(WorldModelVectorEnv("doom-takecover", num_envs=2, weights=weights))


def test_ppo_learns_with_wrappers(weights, tmp_path):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecFrameStack, VecMonitor, VecTransposeImage, VecVideoRecorder

    venv = OdysseyVecEnv("doom-takecover", num_envs=8, weights=weights, max_episode_steps=40)
    venv = VecMonitor(venv)
    venv = VecFrameStack(venv, 2)
    venv = VecTransposeImage(venv)
    venv = VecVideoRecorder(venv, str(tmp_path), record_video_trigger=lambda step: step == 0, video_length=20,
                            name_prefix="ppo")
    model = PPO("CnnPolicy", venv, n_steps=32, batch_size=128, n_epochs=1, learning_rate=3e-4, seed=0,
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}}, device="cpu")
    model.learn(total_timesteps=512)  # 2 rollouts of 8 envs x 32 steps: each env passes max_episode_steps
    assert model.num_timesteps >= 512
    assert model._n_updates >= 2  # PPO trained on both rollouts
    # VecMonitor saw finished (truncated) episodes
    assert len(model.ep_info_buffer) > 0 and all(ep["l"] <= 40 for ep in model.ep_info_buffer)
    venv.close()
    videos = list(tmp_path.glob("*.mp4"))
    assert len(videos) == 1
    from test_env_record import n_frames

    n, shape = n_frames(videos[0])
    assert shape == (192, 192, 3)  # 8 envs tiled 3x3
    assert n == 21  # the reset frame + video_length steps
