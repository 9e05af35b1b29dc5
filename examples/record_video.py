"""Record MP4s with gymnasium's own wrappers: one env, and a tiled batch.

    python examples/record_video.py --world doom-explore --out-dir videos [--weights DIR]
"""

import argparse

import gymnasium as gym
from gymnasium.wrappers import RecordVideo
from gymnasium.wrappers.vector import RecordVideo as VectorRecordVideo

import odyssey_gym  # registers the env ids
from odyssey_gym.envs.agents import make_agent
from odyssey_gym.worlds import get_world

p = argparse.ArgumentParser()
p.add_argument("--world", default="doom-explore")
p.add_argument("--steps", type=int, default=100)
p.add_argument("--device", default="auto")
p.add_argument("--weights", default=None)
p.add_argument("--out-dir", default="videos")
args = p.parse_args()
env_id = get_world(args.world).env_id

# one env, sticky human-like keys; a video per episode
env = RecordVideo(gym.make(env_id, device=args.device, weights=args.weights, max_episode_steps=args.steps),
                  f"{args.out_dir}/single", episode_trigger=lambda e: e == 0, name_prefix="single")
agent = make_agent("sticky", args.world, 1, seed=0)
obs, _ = env.reset(seed=0)
done = False
while not done:
    obs, reward, terminated, truncated, _ = env.step(agent(obs[None])[0])
    done = terminated or truncated
env.close()

# 4 envs in one batch: gymnasium tiles their render() frames into one video
envs = VectorRecordVideo(gym.make_vec(env_id, num_envs=4, device=args.device, weights=args.weights),
                         f"{args.out_dir}/tiled", step_trigger=lambda s: s == 0, video_length=args.steps,
                         name_prefix="tiled")  # its own folder: two wrappers sharing one would overwrite each other
agent = make_agent("sticky", args.world, 4, seed=1)
obs, _ = envs.reset(seed=0)
for _ in range(args.steps):
    obs, *_ = envs.step(agent(obs))
envs.close()
print(f"videos in {args.out_dir}/single/ and {args.out_dir}/tiled/")
