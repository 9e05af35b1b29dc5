"""`odyssey-gym collect | train | leg | reproduce | play | record | bench | eval | train-probe | card | build | worlds`.

Each subcommand lives beside the layer it drives, as a module with
`add_arguments(parser)` and `run(args) -> int`; imports are lazy so `--help` is instant
and a CPU-only machine never imports what it does not use.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from odyssey_gym.envs.weights import MissingWeightsError

# Before torch loads OpenMP: its threads wait by sleeping, not spinning. Where other work shares the cores, spinning
# threads hold the cores the others need: one doom-explore step on 2 shared CPU cores took 3.9 s with spinning
# threads and 0.48 s with sleeping ones (0.25-0.30 s either way on idle cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMANDS = {
    "collect": ("odyssey_gym.data.collect_cli", "record episodes from a real engine into a dataset"),
    "train": ("odyssey_gym.train.cli", "train a world model (autoencoder, then dynamics) from a dataset"),
    "leg": ("odyssey_gym.train.leg", "one leg of a training campaign: record, eval, train, eval again, log, land"),
    "play": ("odyssey_gym.play.cli", "play a world model with the keyboard (window) or in the browser (--web)"),
    "record": ("odyssey_gym.envs.record_cli", "record an agent acting in a world model to MP4"),
    "bench": ("odyssey_gym.eval.bench", "measure speed: world model vs the real engine (--out BENCHMARKS.md to record it)"),
    "eval": ("odyssey_gym.eval.cli", "measure fidelity, stability and controllability of a world model"),
    "train-probe": ("odyssey_gym.eval.probe_cli", "train the inverse-dynamics probe that eval uses, on real frames only"),
    "card": ("odyssey_gym.eval.card", "write a weights folder's MODEL_CARD.md from its campaign log and an eval report"),
    "reproduce": ("odyssey_gym.train.reproduce", "replay a world's training campaign from its log: record, train each leg, eval"),
    "build": ("odyssey_gym.train.build", "from a game to a shipped world in one command: record, train, probe, eval, card"),
    "worlds": ("odyssey_gym.worlds.cli", "list the worlds, their env ids, and whether weights ship for them"),
}


DEVICE_HELP = "auto (cuda when available, the Python API's default too), cpu, cuda, cuda:N or mps"


def device_arg(text: str) -> str:
    """argparse type of every command's --device: checked when parsed (an unknown name or a GPU this machine lacks
    is a usage error naming --device), kept as the string the commands pass on."""
    from odyssey_gym.envs.vector_env import resolve_device

    name = text.strip().lower()
    try:
        resolve_device(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_device_argument(p: argparse.ArgumentParser, what: str = "") -> None:
    """The one --device option: same spelling, choices and default ("auto") in every command."""
    p.add_argument("--device", type=device_arg, default="auto", metavar="DEVICE",
                   help=f"{what + ': ' if what else ''}{DEVICE_HELP}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odyssey-gym", description=__doc__.splitlines()[0])
    from odyssey_gym import __version__

    parser.add_argument("--version", action="version", version=f"odyssey-gym {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            p.set_defaults(_unavailable=name)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _unknown_world(args: argparse.Namespace) -> str | None:
    """The one-line error for an unknown --world (or a name in bench's --worlds), None when all are known."""
    from odyssey_gym.worlds import get_world

    names = [args.world] if isinstance(getattr(args, "world", None), str) else []
    names += [w.strip() for w in (getattr(args, "worlds", None) or "").split(",") if w.strip()]
    for name in names:
        try:
            get_world(name)
        except KeyError as e:
            return str(e.args[0])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", None):
        print(f"odyssey-gym {args._unavailable}: not available in this version", file=sys.stderr)
        return 2
    unknown = _unknown_world(args)
    if unknown:
        print(f"odyssey-gym {args.command}: {unknown}", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except MissingWeightsError as e:
        print(f"odyssey-gym {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
