"""Random actions in a batch of world-model envs (gym.make_vec).

    python examples/random_agent.py --world doom-takecover --num-envs 16 [--weights DIR] [--device auto]
"""

import argparse
import time

import gymnasium as gym
import numpy as np

import odyssey_gym  # registers the env ids
from odyssey_gym.worlds import get_world

p = argparse.ArgumentParser()
p.add_argument("--world", default="doom-takecover")
p.add_argument("--num-envs", type=int, default=16)
p.add_argument("--steps", type=int, default=100)
p.add_argument("--device", default="auto")
p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights)")
args = p.parse_args()

envs = gym.make_vec(get_world(args.world).env_id, num_envs=args.num_envs, device=args.device, weights=args.weights)
obs, info = envs.reset(seed=0)
returns, episodes = np.zeros(args.num_envs), []
t0 = time.perf_counter()
for _ in range(args.steps):
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    returns += reward
    for i in np.flatnonzero(terminated | truncated):  # NEXT_STEP autoreset: the next step starts a new episode
        episodes.append(returns[i])
        returns[i] = 0
dt = time.perf_counter() - t0
print(f"{args.steps * args.num_envs / dt:.0f} env steps/s; {len(episodes)} episodes finished; obs {obs.shape} {obs.dtype}")
envs.close()
