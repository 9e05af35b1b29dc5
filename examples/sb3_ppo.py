"""PPO (Stable-Baselines3) trained inside a world model, in ~20 lines.

    python examples/sb3_ppo.py --world doom-takecover --steps 20000 [--weights DIR] [--device auto]
"""

import argparse

from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecFrameStack, VecMonitor

from odyssey_gym.envs.sb3 import OdysseyVecEnv

p = argparse.ArgumentParser()
p.add_argument("--world", default="doom-takecover")
p.add_argument("--num-envs", type=int, default=8)
p.add_argument("--steps", type=int, default=20_000)
p.add_argument("--device", default="auto")
p.add_argument("--weights", default=None)
p.add_argument("--out", default="ppo_takecover.zip")
args = p.parse_args()

venv = VecFrameStack(VecMonitor(OdysseyVecEnv(args.world, num_envs=args.num_envs, device=args.device,
                                              weights=args.weights)), 4)
model = PPO("CnnPolicy", venv, n_steps=128, batch_size=256, n_epochs=4, verbose=1)
model.learn(total_timesteps=args.steps)
model.save(args.out)
print(f"saved {args.out}; record it with: odyssey-gym record --world {args.world} --agent {args.out} --out ppo.mp4")
