"""`odyssey-gym play`: play a world model with the keyboard (window), or in the browser (`--web`)."""

from __future__ import annotations

import argparse
import sys


WEB_SLOTS_GPU = 8  # default --max-players on a GPU
WEB_SLOTS_CPU = 1  # on a CPU every slot costs a full model step per tick: one player is what a laptop holds


def add_arguments(p: argparse.ArgumentParser) -> None:
    from odyssey_gym.cli import add_device_argument

    p.add_argument("--world", default="doom-explore", help="world name (default: doom-explore)")
    p.add_argument("--weights", default=None, help="weights dir (default: the shipped weights)")
    p.add_argument("--zoom", type=float, default=4.0, help="window scale (default 4)")
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--fps", type=int, default=None, help="frames per second (default: the world's)")
    p.add_argument("--sampling-steps", type=int, default=None)
    p.add_argument("--web", action="store_true", help="serve the browser page instead of a window")
    p.add_argument("--host", default="127.0.0.1", help="--web: address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="--web: port (default 8000)")
    p.add_argument("--max-players", type=int, default=None,
                   help="--web: player slots = envs in the one batch, each stepped every tick "
                        f"(default {WEB_SLOTS_GPU} on a GPU, {WEB_SLOTS_CPU} on a CPU)")
    p.add_argument("--record-seconds", type=float, default=120.0,
                   help="--web: how much of a session 'record' keeps (default 120; 0 disables)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="--web: a page origin besides the server's own that may open games, e.g. "
                        "https://play.example.org (repeatable; '*' allows any)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="--web: a Host name to answer besides loopback names when bound to loopback, or the only "
                        "names to answer when bound publicly (repeatable; '*' allows any)")
    p.add_argument("--idle-timeout", type=float, default=120.0, metavar="S",
                   help="--web: free the slot of a player who sends nothing for S seconds (default 120; 0: never)")
    p.add_argument("--max-per-address", type=int, default=4, metavar="N",
                   help="--web: players per remote address (default 4; loopback is not capped; 0: no cap)")
    p.add_argument("--jpeg-encoder", default="auto", choices=("auto", "cpu", "process", "cuda"),
                   help="--web: where frames are JPEG-encoded: auto (default: one batched encode on the GPU where the env "
                        "steps on CUDA), cpu (a thread pool), process (worker processes) or cuda")
    p.add_argument("--allow-dummy", action="store_true", help="run even with SDL's dummy video driver (tests)")


def run(args: argparse.Namespace) -> int:
    if args.web:
        return _run_web(args)
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


def _run_web(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        print(f"odyssey-gym play --web needs the 'web' extra ({e.name} is missing): pip install 'odyssey-gym[web]'",
              file=sys.stderr)
        return 2
    from odyssey_gym.play.web.server import WebConfig, run_server

    max_players = args.max_players
    if max_players is None:
        from odyssey_gym.envs.vector_env import resolve_device

        # --device was checked when parsed (cli.device_arg)
        on_gpu = resolve_device(args.device).type == "cuda"
        max_players = WEB_SLOTS_GPU if on_gpu else WEB_SLOTS_CPU
    try:
        config = WebConfig(world=args.world, host=args.host, port=args.port, max_players=max_players,
                           device=args.device, weights=args.weights, sampling_steps=args.sampling_steps,
                           fps=args.fps, record_seconds=args.record_seconds,
                           allowed_origins=tuple(args.allow_origin), allowed_hosts=tuple(args.allow_host),
                           idle_timeout_s=args.idle_timeout, max_per_address=args.max_per_address,
                           jpeg_encoder=args.jpeg_encoder)
    except ValueError as e:
        print(f"odyssey-gym play --web: {e}", file=sys.stderr)
        return 2
    run_server(config)
    return 0
