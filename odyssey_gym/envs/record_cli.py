"""`odyssey-gym record`: run an agent in a world model and write an MP4.

    odyssey-gym record --world doom-explore --steps 100 --out episode.mp4
    odyssey-gym record --world doom-takecover --agent ppo_takecover.zip --num-envs 4 --out tiled.mp4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    from odyssey_gym.cli import add_device_argument

    p.add_argument("--world", default="doom-explore", help="world name (default: doom-explore)")
    p.add_argument("--agent", default="sticky", help="'sticky' (held keys, default), 'random', or a path to an SB3 .zip")
    p.add_argument("--steps", type=int, default=300, help="env steps to record (default 300)")
    p.add_argument("--out", default="episode.mp4", help="output MP4 path")
    p.add_argument("--num-envs", type=int, default=1, help="envs in the batch; >1 writes a tiled video")
    add_device_argument(p)
    p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampling-steps", type=int, default=None, help="denoising steps per frame (default: the model's)")
    p.add_argument("--fps", type=int, default=None, help="video fps (default: the world's)")


def _sb3_agent(path: str, venv):
    """Load an SB3 zip with the shared loader and stack frames the way the policy was trained (read from its own
    observation space), so `examples/sb3_ppo.py`'s frame-stacked CNN policy records as it plays."""
    from stable_baselines3.common.vec_env import VecFrameStack

    from odyssey_gym.data.policies import check_sb3_observations, load_sb3

    model = load_sb3(path)
    k = check_sb3_observations(model, venv.observation_space.shape)
    if k > 1:
        venv = VecFrameStack(venv, k, channels_order="last")

    def act(obs):
        return model.predict(obs, deterministic=False)[0]

    return act, venv


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    import torch

    from odyssey_gym.envs.agents import make_agent
    from odyssey_gym.envs.vector_env import WorldModelVectorEnv
    from odyssey_gym.worlds import get_world

    world = get_world(args.world)
    if args.steps < 1:
        print("--steps must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        print(f"--out must end in .mp4, got {args.out!r}", file=sys.stderr)
        return 2
    builtin = args.agent in ("random", "sticky")
    if not builtin and not (Path(args.agent).exists() or args.agent.endswith(".zip")):
        print(f"unknown agent {args.agent!r}: use 'sticky', 'random' or a path to an SB3 .zip", file=sys.stderr)
        return 2
    try:
        if builtin:  # the vector env itself: SB3 is neither needed nor imported
            venv = WorldModelVectorEnv(world, num_envs=args.num_envs, device=args.device, weights=args.weights,
                                       sampling_steps=args.sampling_steps)
        else:
            from odyssey_gym.envs.sb3 import OdysseyVecEnv

            base = OdysseyVecEnv(world.name, num_envs=args.num_envs, device=args.device, weights=args.weights,
                                 sampling_steps=args.sampling_steps)
            venv = base.venv
    except (FileNotFoundError, ValueError) as e:
        print(f"odyssey-gym record: {e}", file=sys.stderr)
        return 2

    if builtin:
        agent = make_agent(args.agent, world, args.num_envs, seed=args.seed)

        def reset():
            return venv.reset(seed=args.seed)[0]

        def step(obs):
            return venv.step(agent(obs))[0]
    else:
        try:
            agent, env = _sb3_agent(args.agent, base)
        except (FileNotFoundError, ValueError) as e:
            base.close()
            print(f"odyssey-gym record: {e}", file=sys.stderr)
            return 2
        env.seed(args.seed)

        def reset():
            return env.reset()

        def step(obs):
            return env.step(agent(obs))[0]

    from stable_baselines3.common.vec_env.base_vec_env import tile_images  # the grid SB3's VecEnv.render draws

    frames = []
    with torch.inference_mode():
        obs = reset()
        frames.append(tile_images(np.stack(venv.render())))
        t_env = 0.0
        for _ in range(args.steps):
            t0 = time.perf_counter()
            obs = step(obs)
            t_env += time.perf_counter() - t0
            frames.append(tile_images(np.stack(venv.render())))
    sampling_steps = venv.sampler.sampling_steps
    venv.close()

    from odyssey_gym.video import write_mp4

    out.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(out, frames, fps=args.fps or venv.metadata["render_fps"])
    sps = args.steps / max(t_env, 1e-9)
    print(f"{args.steps} steps x {args.num_envs} envs on {venv.device}: {sps * args.num_envs:.1f} env steps/s "
          f"({sps:.1f} batched steps/s, {sampling_steps} sampling steps per frame); "
          f"{time.perf_counter() - t_start:.1f} s in all")
    print(f"video: {out.resolve()}")
    return 0
