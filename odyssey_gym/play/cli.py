"""`odyssey-gym play`: play a world model with the keyboard (window), or in the browser (`--web`)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--world", default="doom-explore", help="world name (default: doom-explore)")
    p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights)")
    p.add_argument("--zoom", type=float, default=4.0, help="window scale (default 4)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--fps", type=int, default=None, help="frames per second (default: the world's)")
    p.add_argument("--sampling-steps", type=int, default=None)
    p.add_argument("--web", action="store_true", help="serve the browser page instead of a window")
    p.add_argument("--allow-dummy", action="store_true", help="run even with SDL's dummy video driver (tests)")


def run(args: argparse.Namespace) -> int:
    if args.web:
        print("odyssey-gym play --web: the browser page is not yet available in this version", file=sys.stderr)
        return 2
    from odyssey_gym.play.keyboard import NoDisplayError, check_display, play_keyboard

    try:
        check_display(allow_dummy=args.allow_dummy)
    except NoDisplayError as e:
        print(f"odyssey-gym play: {e}", file=sys.stderr)
        return 2
    from odyssey_gym.envs.single_env import WorldModelEnv
    from odyssey_gym.worlds import get_world

    world = get_world(args.world)
    print(f"{world.name}: keys {', '.join(f'{k}={world.buttons[i]}' for k, i in world.keys.items())}; Esc quits")
    env = WorldModelEnv(world, device=args.device, weights=args.weights, sampling_steps=args.sampling_steps)
    try:
        play_keyboard(env, zoom=args.zoom, fps=args.fps, seed=args.seed, allow_dummy=args.allow_dummy)
    finally:
        env.close()
    return 0
