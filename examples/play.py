"""Play a world model with the keyboard (needs a display; otherwise see `odyssey-gym play --web`).

    python examples/play.py --world doom-explore [--weights DIR] [--zoom 4]
"""

import argparse
import sys

import gymnasium as gym

import odyssey_gym  # registers the env ids
from odyssey_gym.play.keyboard import NoDisplayError, check_display, play_keyboard
from odyssey_gym.worlds import get_world

p = argparse.ArgumentParser()
p.add_argument("--world", default="doom-explore")
p.add_argument("--device", default="auto")
p.add_argument("--weights", default=None)
p.add_argument("--zoom", type=float, default=4)
args = p.parse_args()

try:
    world = get_world(args.world)
    check_display()  # before loading the model: no window, no point
    env = gym.make(world.env_id, device=args.device, weights=args.weights)
except (KeyError, NoDisplayError, FileNotFoundError, ValueError) as e:
    sys.exit(f"play.py: {e.args[0] if isinstance(e, KeyError) else e}")  # message on stderr, exit status 1
play_keyboard(env, zoom=args.zoom)  # arrows/WASD per the world's key map; nothing pressed = noop; Esc quits
