"""Play a world model with the keyboard (needs a display; otherwise see `odyssey-gym play --web`).

    python examples/play.py --world doom-explore [--weights DIR] [--zoom 4]
"""

import argparse

import gymnasium as gym

import odyssey_gym  # registers the env ids
from odyssey_gym.play.keyboard import NoDisplayError, play_keyboard
from odyssey_gym.worlds import get_world

p = argparse.ArgumentParser()
p.add_argument("--world", default="doom-explore")
p.add_argument("--device", default="auto")
p.add_argument("--weights", default=None)
p.add_argument("--zoom", type=float, default=4)
args = p.parse_args()

env = gym.make(get_world(args.world).env_id, device=args.device, weights=args.weights)
try:
    play_keyboard(env, zoom=args.zoom)  # arrows/WASD per the world's key map; nothing pressed = noop; Esc quits
except NoDisplayError as e:
    print(e)
