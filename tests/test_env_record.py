"""Recording: gymnasium RecordVideo (single + vector) and `odyssey-gym record`."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_weights import make_tiny_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_weights("doom-takecover", tmp_path_factory.mktemp("tiny_rec"), n_starts=3)


def n_frames(path):
    """(frame count, first frame shape), decoded with imageio-ffmpeg (exact count; moviepy's is duration-based)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    n = sum(1 for _ in reader)
    return n, (h, w, 3)


def test_record_video_single(weights, tmp_path):
    import gymnasium as gym
    from gymnasium.wrappers import RecordVideo

    import odyssey_gym  # noqa: F401

    env = gym.make("odyssey_gym/DoomTakeCover-v0", weights=weights, max_episode_steps=12)
    env = RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda e: True, name_prefix="single")
    env.reset(seed=0)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        done = term or trunc
    env.close()
    videos = sorted((tmp_path / "videos").glob("single*.mp4"))
    assert len(videos) == 1
    n, shape = n_frames(videos[0])
    assert shape == (64, 64, 3)
    assert n == 13  # the reset frame + 12 steps


def test_record_video_vector_tiled(weights, tmp_path):
    from gymnasium.wrappers.vector import RecordVideo

    from odyssey_gym.envs.vector_env import WorldModelVectorEnv

    envs = WorldModelVectorEnv("doom-takecover", num_envs=4, weights=weights)
    envs = RecordVideo(envs, str(tmp_path / "videos"), step_trigger=lambda s: s == 0, video_length=10, name_prefix="vec")
    envs.reset(seed=0)
    for _ in range(12):
        envs.step(envs.action_space.sample())
    envs.close()
    videos = sorted((tmp_path / "videos").glob("vec*.mp4"))
    assert len(videos) == 1
    n, shape = n_frames(videos[0])
    assert n == 11  # the reset frame + video_length steps
    assert shape[:2] == (128, 128)  # 2x2 tile of 64x64


@pytest.mark.parametrize("agent", ["sticky", "random"])
def test_record_cli(weights, tmp_path, capsys, agent):
    from odyssey_gym.cli import main

    out = tmp_path / f"{agent}.mp4"
    rc = main(["record", "--world", "doom-takecover", "--agent", agent, "--steps", "15", "--out", str(out),
               "--num-envs", "2", "--device", "cpu", "--weights", str(weights), "--seed", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"video: {out.resolve()}" in printed and "batched steps/s" in printed and "sampling steps per frame" in printed
    n, shape = n_frames(out)
    assert n == 16 and shape[:2] == (128, 64)  # SB3's tile_images grid: ceil(sqrt(2)) = 2 rows, 1 column


def test_record_cli_sb3_agent(weights, tmp_path, capsys):
    from stable_baselines3 import PPO

    from odyssey_gym.cli import main
    from odyssey_gym.envs.sb3 import OdysseyVecEnv

    venv = OdysseyVecEnv("doom-takecover", num_envs=2, weights=weights)
    model = PPO("CnnPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, device="cpu",
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}})
    zip_path = tmp_path / "agent.zip"
    model.save(zip_path)
    out = tmp_path / "agent.mp4"
    rc = main(["record", "--world", "doom-takecover", "--agent", str(zip_path), "--steps", "5", "--out", str(out),
               "--device", "cpu", "--weights", str(weights)])
    assert rc == 0
    assert n_frames(out)[0] == 6


def test_sticky_agent_holds_keys():
    from odyssey_gym.envs.agents import make_agent

    agent = make_agent("sticky", "doom-explore", 3, seed=0)
    acts = np.stack([agent() for _ in range(200)])  # (T, 3, 6)
    changes = (acts[1:] != acts[:-1]).any(-1).sum(0)
    assert (changes < 150).all() and (changes > 3).all()  # held, but not forever
    assert not (acts[..., 0] & acts[..., 1]).any()  # never forward+back together
    sticky = make_agent("sticky", "doom-takecover", 2, seed=0)
    a = sticky(np.zeros((2, 64, 64, 3), np.uint8))
    assert a.shape == (2,)
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("smart", "doom-takecover", 1)


def test_record_cli_frame_stacked_sb3_agent(weights, tmp_path, capsys):
    """examples/sb3_ppo.py's policy: CnnPolicy over VecFrameStack(4), which SB3 stores transposed (12, 64, 64)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecFrameStack

    from odyssey_gym.cli import main
    from odyssey_gym.envs.sb3 import OdysseyVecEnv

    venv = VecFrameStack(OdysseyVecEnv("doom-takecover", num_envs=2, weights=weights), 4)
    model = PPO("CnnPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, device="cpu",
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}})
    assert model.observation_space.shape == (12, 64, 64)
    zip_path = tmp_path / "stacked.zip"
    model.save(zip_path)
    out = tmp_path / "stacked.mp4"
    rc = main(["record", "--world", "doom-takecover", "--agent", str(zip_path), "--steps", "5", "--out", str(out),
               "--device", "cpu", "--weights", str(weights), "--num-envs", "2"])
    assert rc == 0, capsys.readouterr().err
    assert n_frames(out)[0] == 6


def test_record_cli_refuses_policy_of_another_shape(weights, tmp_path, capsys):
    import gymnasium as gym
    from stable_baselines3 import PPO

    from odyssey_gym.cli import main

    env = gym.make("CartPole-v1")
    zip_path = tmp_path / "cartpole.zip"
    PPO("MlpPolicy", env, n_steps=8, batch_size=8, device="cpu").save(zip_path)
    rc = main(["record", "--world", "doom-takecover", "--agent", str(zip_path), "--steps", "2",
               "--out", str(tmp_path / "x.mp4"), "--device", "cpu", "--weights", str(weights)])
    assert rc == 2
    assert "observation space" in capsys.readouterr().err


def test_sb3_frame_stack_reads_the_policy_space():
    from types import SimpleNamespace

    from gymnasium import spaces

    from odyssey_gym.data.policies import check_sb3_observations, sb3_frame_stack

    def pol(shape):
        return SimpleNamespace(observation_space=spaces.Box(0, 255, shape, np.uint8))

    assert sb3_frame_stack(pol((12, 64, 64))) == 4
    assert sb3_frame_stack(pol((64, 64, 12))) == 4
    assert sb3_frame_stack(pol((3, 120, 160))) == 1
    with pytest.raises(ValueError, match="not a stack of RGB"):
        sb3_frame_stack(pol((4, 64, 64)))
    assert check_sb3_observations(pol((12, 64, 64)), (64, 64, 3)) == 4
    with pytest.raises(ValueError, match="another world"):
        check_sb3_observations(pol((12, 64, 64)), (120, 160, 3))
