"""`odyssey-gym reproduce`: replay a world's training campaign from its log, as one command.

    odyssey-gym reproduce doom-explore --work DIR [--heldout human:900001:24000] [--legs 1-10] [--dry-run]

A world's weights carry their campaign log (`train_summary.json`): per leg, the config it trained with, the
datasets it read (each recording run's policy, base seed, steps and workers), and how many dynamics steps it
trained of how many its schedule planned (a leg a time limit stopped trained fewer). This command records each
dataset into DIR/data, then trains each leg from the previous leg's export for exactly its steps
(`train --max-steps`, the learning-rate schedule planned as it was; an autoencoder phase for the steps it ran),
into DIR/legs/<n>/export. With --heldout it
records that play and evaluates the last export on it (DIR/eval/report.json). Every stage is skipped when its
output is there, so a replay cut off by a time limit carries on when the same command runs again.

GPU kernels and the split of a recording's steps over its workers are not bit-exact from machine to machine, so a
replay reproduces the recipe and the numbers to within run-to-run noise, not the weights bit for bit.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .campaign import SUMMARY_NAME, load_summary
from .leg import Clock, LegError, Recording, StageFailed, eval_into, parse_recordings, record_one, train_into

# the recipe keys a leg's log may hold beside `config`, and where each goes in the YAML
RECIPE_TRAIN_KEYS = ("dyn_batch_size", "dyn_lr", "unroll_start_frac", "unroll_len")
RECIPE_DYNAMICS_KEYS = ("objective", "term_pos_weight", "sigma_ctx_max", "p_context_aug", "p_sigma_max")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_device_argument

    p.add_argument("world", help="world name, e.g. doom-explore: its shipped weights' campaign log is replayed")
    p.add_argument("--work", required=True, metavar="DIR", help="where the data, each leg's run and export go")
    p.add_argument("--weights", default=None, metavar="WEIGHTS_DIR",
                   help="replay the campaign log of these weights instead of the shipped ones")
    p.add_argument("--legs", default=None, metavar="A-B", help="replay legs A to B only (default all); a replay "
                   "from a leg after the first needs --init-from")
    p.add_argument("--init-from", default=None, metavar="WEIGHTS_DIR",
                   help="the weights the first replayed leg starts from, where it is not leg 1")
    p.add_argument("--configs", default="configs", metavar="DIR", help="where the legs' configs are (default configs)")
    p.add_argument("--heldout", default=None, metavar="POLICY:SEED:STEPS,...",
                   help="record this held-out play and evaluate the last export on it, e.g. human:900001:24000")
    p.add_argument("--workers", type=int, default=1,
                   help="recording processes where the log does not name them (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the commands a replay runs, run nothing")
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclass
class LegReplay:
    """One logged leg, as the commands that replay it."""

    number: int
    config: Path
    overrides: dict[str, dict[str, Any]]  # {"train": {...}, "dynamics": {...}} the log's recipe sets
    datasets: list[tuple[str, list[Recording], list[int | None]]]  # name, runs (cumulative steps), their workers
    phase: str  # "all" (autoencoder too), "dyn" or "decoder" (the frame decoder only)
    dyn_steps: int
    dyn_steps_planned: int
    ae_steps: int  # the autoencoder's steps, or for a decoder leg the decoder's planned steps
    decoder_steps: int = 0

    @property
    def max_steps(self) -> int | None:
        if self.phase == "decoder":
            return self.decoder_steps if self.decoder_steps < self.ae_steps else None
        return self.dyn_steps if self.dyn_steps < self.dyn_steps_planned else None


def parse_legs(text: str | None, count: int) -> range:
    """'3-10' / '4' / None -> the leg numbers (1-based) to replay; the error names --legs."""
    if not text:
        return range(1, count + 1)
    try:
        a, _, b = text.partition("-")
        first, last = int(a), int(b or a)
    except ValueError:
        raise LegError(f"--legs {text!r}: expected A-B or N, e.g. 1-10") from None
    if not 1 <= first <= last <= count:
        raise LegError(f"--legs {text!r}: the log holds legs 1-{count}")
    return range(first, last + 1)


def leg_replay(number: int, leg: dict[str, Any], configs: Path) -> LegReplay:
    """A logged leg -> what replays it; a log too old to name its config or recordings is refused by name."""
    recipe = leg.get("recipe") or {}
    if not recipe.get("config"):
        raise LegError(f"leg {number} of the log names no config: it was written before logs recorded the recipe, "
                       "so it cannot be replayed")
    config = configs / recipe["config"]
    if not config.is_file():
        raise LegError(f"leg {number}: config {config} not found (give --configs DIR)")
    datasets = []
    for d in (leg.get("data") or {}).get("datasets") or []:
        runs = d.get("runs") or []
        if not runs:
            raise LegError(f"leg {number}: dataset {d.get('name')!r} names no recording runs, so it cannot be "
                           "recorded again")
        total, recs, workers = 0, [], []
        for r in runs:
            total += int(r["steps"])
            recs.append(Recording(str(r["policy"]), int(r["seed"]), total))
            workers.append(r.get("workers"))
        datasets.append((str(d["name"]), recs, workers))
    if not datasets:
        raise LegError(f"leg {number}: the log names no datasets")
    steps = leg.get("steps") or {}
    if recipe.get("phase") == "decoder":  # a decoder-only leg: its steps of the schedule it planned
        ran = int(steps.get("decoder", 0))
        return LegReplay(number=number, config=config, overrides={"train": {}, "dynamics": {}}, datasets=datasets,
                         phase="decoder", dyn_steps=0, dyn_steps_planned=0,
                         ae_steps=int(leg.get("decoder_steps_planned") or ran), decoder_steps=ran)
    dyn = int(steps.get("dyn", 0))
    overrides = {"train": {k: recipe[k] for k in RECIPE_TRAIN_KEYS if k in recipe},
                 "dynamics": {k: recipe[k] for k in RECIPE_DYNAMICS_KEYS if k in recipe}}
    return LegReplay(number=number, config=config, overrides=overrides, datasets=datasets,
                     phase="all" if int(steps.get("ae", 0)) > 0 else "dyn", dyn_steps=dyn,
                     dyn_steps_planned=int(leg.get("dyn_steps_planned") or dyn), ae_steps=int(steps.get("ae", 0)))


def leg_config(rep: LegReplay, out: Path) -> Path:
    """The leg's YAML with the schedule and recipe its log names (the config file may have moved on since)."""
    import yaml

    d = yaml.safe_load(rep.config.read_text()) or {}
    train = d.setdefault("train", {})
    train.update(rep.overrides["train"])
    train["dyn_steps"] = rep.dyn_steps_planned
    train["ae_steps"] = rep.ae_steps
    if rep.overrides["dynamics"]:
        d.setdefault("model", {}).setdefault("dynamics", {}).update(rep.overrides["dynamics"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {rep.config.name} as leg {rep.number} of the campaign log ran it\n" + yaml.safe_dump(d))
    return out


def train_argv(rep: LegReplay, work: Path, init_from: Path | None, device: str, progress: bool) -> list[str]:
    """The leg's `odyssey-gym train` options (`train_into` adds --resume where its run holds a checkpoint)."""
    leg_dir = work / "legs" / str(rep.number)
    argv = ["--config", str(leg_dir / "config.yaml"), *[a for name, _, _ in rep.datasets
                                                        for a in ("--data", str(work / "data" / name))],
            "--out", str(leg_dir / "run"), "--phase", rep.phase, "--export", str(leg_dir / "export")]
    if init_from is not None:
        argv += ["--init-from", str(init_from)]
    if rep.max_steps is not None:
        argv += ["--max-steps", str(rep.max_steps)]
    if device != "auto":
        argv += ["--device", device]
    return argv + ([] if progress else ["--no-progress"])


def run(args: argparse.Namespace) -> int:
    from ..model import weights_dir
    from ..worlds import get_world

    clock = Clock()
    try:
        try:
            world = get_world(args.world).name
        except KeyError as e:
            raise LegError(f"world: {e.args[0]}") from None
        if args.workers < 1:
            raise LegError(f"--workers must be >= 1, got {args.workers}")
        weights = Path(args.weights) if args.weights else weights_dir(world)
        summary = load_summary(weights)
        if not summary or not summary.get("legs"):
            raise LegError(f"{weights}: no campaign log ({SUMMARY_NAME}) to replay")
        numbers = parse_legs(args.legs, len(summary["legs"]))
        init_from = Path(args.init_from) if args.init_from else None
        if numbers.start > 1 and init_from is None:
            raise LegError(f"--legs {args.legs}: leg {numbers.start} started from leg {numbers.start - 1}'s weights; "
                           "give them with --init-from")
        reps = [leg_replay(n, summary["legs"][n - 1], Path(args.configs)) for n in numbers]
        heldout = parse_recordings(args.heldout, "--heldout")
        work = Path(args.work)
        progress = not args.no_progress

        seen: set[str] = set()
        for rep in reps:
            for name, recs, workers in rep.datasets:
                if name in seen:  # a dataset several legs read is recorded once
                    continue
                seen.add(name)
                for r, w in zip(recs, workers):
                    if args.dry_run:
                        print(f"odyssey-gym collect --world {world} --out {work / 'data' / name} --seed {r.seed} "
                              f"--policy {r.policy} --steps {r.steps} --workers {w or args.workers}  "
                              "# tops the dataset up to --steps")
                    else:
                        record_one(world, r, work / "data" / name, clock, workers=w or args.workers,
                                   progress=progress)
            leg_dir = work / "legs" / str(rep.number)
            export = leg_dir / "export"
            argv = train_argv(rep, work, init_from, args.device, progress)
            if args.dry_run:
                print(f"odyssey-gym train {shlex.join(argv)}")
            else:
                if not (export / SUMMARY_NAME).is_file():
                    leg_config(rep, leg_dir / "config.yaml")
                resumed = train_into(argv, leg_dir / "run", export)
                clock(f"leg {rep.number}", f"skipped, {export} holds an export" if resumed is None else
                      f"{'resumed, ' if resumed else ''}trained {rep.dyn_steps}/{rep.dyn_steps_planned} dynamics "
                      f"steps -> {export}")
            init_from = export

        if heldout:
            dirs = [work / "data" / r.dir_name(world, heldout=True) for r in heldout]
            argv = ["--world", world, "--weights", str(init_from), "--data", *map(str, dirs),
                    "--out", str(work / "eval"), "--device", args.device]
            if args.dry_run:
                for r, d in zip(heldout, dirs):
                    print(f"odyssey-gym collect --world {world} --out {d} --seed {r.seed} --policy {r.policy} "
                          f"--steps {r.steps} --workers {args.workers}")
                print(f"odyssey-gym eval {shlex.join(argv)}")
                return 0
            for r, d in zip(heldout, dirs):
                record_one(world, r, d, clock, workers=args.workers, progress=progress)
            eval_into("eval", argv, work / "eval", clock)
        if not args.dry_run:
            clock("done", f"the replayed weights are {init_from}")
    except LegError as e:
        print(f"odyssey-gym reproduce: error: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"odyssey-gym reproduce: {e}", file=sys.stderr)
        return e.rc
    return 0
