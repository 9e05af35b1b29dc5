"""`odyssey-gym build`: from a game to a shipped world in one re-runnable command.

    odyssey-gym build gym:CartPole-v1 --out builds/cartpole --config configs/tiny.yaml --steps 4000
    odyssey-gym build doom-takecover --out builds/tc --config configs/doom-takecover.yaml --steps 300000 --minutes 30
    odyssey-gym build gym:CarRacing-v3 --out builds/car --config configs/tiny.yaml --from-minari DATASET_ID_OR_DIR

Stages, in order (`--stages` picks some), each skipped when its output is already in DIR, so a build cut off by a
time limit carries on where it stopped when the same command runs again with --resume:

1. record  DIR/data/train, DIR/data/heldout and DIR/data/probe from three disjoint base seeds, or (--from-minari)
           a Minari dataset's episodes split between them: every 10th to heldout, 2 in 10 to probe, the rest to train
2. train   `train` (autoencoder, then dynamics) -> DIR/run (checkpoints), exported to DIR/weights
3. probe   `train-probe` on DIR/data/probe (seeds the model never saw) -> DIR/weights/probe
4. eval    `eval` of DIR/weights on DIR/data/heldout -> DIR/report/report.json
5. card    `card` -> DIR/weights/MODEL_CARD.md

DIR/build.json records the world, the arguments and when each stage finished. The result opens as an env:
`odyssey_gym.register_world("MyGame-v0", weights="DIR/weights")`, then `gym.make("MyGame-v0")`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from .leg import Clock, LegError, Recording, StageFailed, finished_report, headline, record_one, release_memory, run_command

STAGES = ("record", "train", "probe", "eval", "card")
MANIFEST = "build.json"
HELDOUT_SEED_OFFSET = 900_000  # base seeds of the held-out and probe recordings, far from the training seed
PROBE_SEED_OFFSET = 800_000
HELDOUT_FRACTION = 0.1  # of --steps, for the held-out recording
PROBE_FRACTION = 0.2  # of --steps, for the probe's recording
MINARI_SPLIT_PERIOD = 10  # --from-minari: of each 10 episodes, position 0 is held out, 3 and 7 train the probe
MINARI_HELDOUT, MINARI_PROBE = (0,), (3, 7)


def minari_split(i: int) -> str:
    """Which of the build's datasets the i-th episode of a Minari dataset goes to (4 episodes fill all three)."""
    r = i % MINARI_SPLIT_PERIOD
    return "heldout" if r in MINARI_HELDOUT else "probe" if r in MINARI_PROBE else "train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from odyssey_gym.cli import add_device_argument

    p.add_argument("world", help="a world name (odyssey-gym worlds) or gym:<EnvId> for any Gymnasium env with RGB frames")
    p.add_argument("--out", required=True, metavar="DIR", help="the build's directory (data/, run/, weights/, report/)")
    p.add_argument("--config", required=True, help="training YAML, e.g. configs/tiny.yaml (CPU, minutes)")
    p.add_argument("--steps", type=int, default=20_000, help="env steps of training data to record (default 20000)")
    p.add_argument("--policy", default="sticky", help="recording policy: sticky | walker | human | random | an SB3 "
                                                      ".zip (default sticky)")
    p.add_argument("--seed", type=int, default=1, help="base seed of the training recording (default 1); the held-out "
                                                       f"and probe data use seed + {HELDOUT_SEED_OFFSET} / + {PROBE_SEED_OFFSET}")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)} (default all)")
    p.add_argument("--minutes", type=float, default=None, help="training time limit of this call (train --max-minutes)")
    p.add_argument("--probe-steps", type=int, default=3000, help="probe training steps (default 3000)")
    p.add_argument("--eval-args", default="", metavar="ARGS", help="extra `odyssey-gym eval` options, e.g. "
                                                                   "'--windows 16 --rollout-steps 2000'")
    p.add_argument("--workers", type=int, default=1, help="recording processes (default 1)")
    p.add_argument("--from-minari", default=None, metavar="DATASET", help="record nothing: take the episodes of this "
                   "Minari dataset (an id under the Minari root, or its directory) instead; --steps, --policy and "
                   "--seed then do not apply")
    add_device_argument(p, "for training, the probe and eval")
    p.add_argument("--resume", action="store_true", help="continue the build already in DIR (without it, a DIR that "
                                                         "holds another build is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Every argument checked before any work: a bad one fails in a second, not after the recording."""
    from ..data.policies import POLICY_NAMES
    from ..worlds import get_world
    from .config import ConfigError, load_config

    try:
        world = get_world(args.world).name
    except KeyError as e:
        raise LegError(str(e.args[0])) from None
    try:
        load_config(args.config)
    except ConfigError as e:
        raise LegError(f"--config: {e}") from None
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise LegError(f"--stages {args.stages!r}: use a comma-separated subset of {','.join(STAGES)}")
    if args.from_minari is None and args.steps < 10:
        raise LegError(f"--steps must be >= 10, got {args.steps}")
    if args.minutes is not None and not args.minutes > 0:
        raise LegError(f"--minutes must be > 0, got {args.minutes}")
    if args.probe_steps < 1 or args.workers < 1:
        raise LegError("--probe-steps and --workers must be >= 1")
    if args.from_minari is None and args.policy not in POLICY_NAMES and not Path(args.policy).is_file():
        raise LegError(f"--policy {args.policy!r}: use one of {', '.join(POLICY_NAMES)} or an SB3 .zip")
    if args.from_minari is not None:
        try:
            import minari  # noqa: F401
        except ImportError:
            raise LegError('--from-minari needs minari: pip install "minari[hdf5]"') from None
    try:
        eval_args = shlex.split(args.eval_args)
    except ValueError as e:
        raise LegError(f"--eval-args {args.eval_args!r}: {e}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LegError(f"--out {out} is a file")
    manifest = out / MANIFEST
    if args.from_minari is not None:
        plan = {"world": world, "config": str(args.config), "minari": str(args.from_minari)}
    else:
        plan = {"world": world, "config": str(args.config), "steps": args.steps, "policy": args.policy, "seed": args.seed}
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        if not args.resume:
            raise LegError(f"--out {out} already holds a build of {old.get('world')!r}: add --resume to continue it, "
                           "or give another --out")
        before = old.get("plan", {})
        changed = [f"{k} {before.get(k)!r} -> {plan[k]!r}" for k in plan if before.get(k) != plan[k]]
        if changed:
            raise LegError(f"--resume: {', '.join(changed)} differ from the build in {out}; a build keeps one world, "
                           "config and recording")
    elif out.is_dir() and any(out.iterdir()):
        raise LegError(f"--out {out} is not empty and holds no build: give a new or empty directory")
    return {"plan": plan, "stages": stages, "out": out, "eval_args": eval_args}


class Build:
    """The build's directory and its manifest; a stage is done when the manifest says so and its output exists."""

    def __init__(self, out: Path, plan: dict[str, Any]):
        self.out = out
        self.path = out / MANIFEST
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"plan": plan, "stages": {}}

    def done(self, stage: str) -> bool:
        return bool(self.data["stages"].get(stage, {}).get("finished"))

    def finish(self, stage: str, seconds: float, **extra) -> None:
        self.data["stages"][stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                      "seconds": round(seconds, 1), **extra}
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)  # a build cut off mid-write keeps the previous manifest


def reproduce_command(plan: dict[str, Any]) -> str:
    """The one command that rebuilds this world (the card's "Reproduce")."""
    head = f"odyssey-gym build {plan['world']} --out DIR --config {plan['config']}"
    if "minari" in plan:
        return f"{head} --from-minari {shlex.quote(plan['minari'])}"
    return f"{head} --steps {plan['steps']} --policy {plan['policy']} --seed {plan['seed']}"


def import_from_minari(plan: dict[str, Any], data: dict[str, Path], clock) -> dict[str, int]:
    """The record stage of a --from-minari build: one read of the dataset fills train, heldout and probe with
    disjoint episodes. A cut-off import left only this stage's own partial dirs: they are started over."""
    import shutil

    from ..data.dataset import DatasetError
    from ..data.minari_io import import_minari_split

    for d in data.values():
        if d.exists():
            shutil.rmtree(d)
    try:
        sets = import_minari_split(plan["minari"], data, plan["world"], minari_split)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        raise StageFailed(f"record from Minari {plan['minari']} failed: {e}") from None
    counts = {k: len(v) for k, v in sets.items()}
    clock("record", "from Minari " + ", ".join(f"{k} {n} episodes" for k, n in counts.items()))
    return counts


def recordings(plan: dict[str, Any]) -> dict[str, Recording]:
    steps, seed, policy = plan["steps"], plan["seed"], plan["policy"]
    return {"train": Recording(policy, seed, steps),
            "heldout": Recording(policy, seed + HELDOUT_SEED_OFFSET, max(10, int(steps * HELDOUT_FRACTION))),
            "probe": Recording(policy, seed + PROBE_SEED_OFFSET, max(10, int(steps * PROBE_FRACTION)))}


def run(args: argparse.Namespace) -> int:
    clock = Clock()
    try:
        p = make_plan(args)
        out, plan = p["out"], p["plan"]
        build = Build(out, plan)
        dev = [] if args.device == "auto" else ["--device", args.device]
        progress = [] if not args.no_progress else ["--no-progress"]
        data = {name: out / "data" / name for name in ("train", "heldout", "probe")}
        weights = out / "weights"
        for stage in STAGES:
            if stage not in p["stages"]:
                continue
            if build.done(stage):
                clock(stage, f"skipped, done {build.data['stages'][stage]['finished']} ({MANIFEST})")
                continue
            t0 = time.monotonic()
            if stage == "record":
                if "minari" in plan:
                    episodes = import_from_minari(plan, data, clock)
                    build.finish(stage, time.monotonic() - t0, episodes=episodes)
                else:
                    for name, r in recordings(plan).items():
                        record_one(plan["world"], r, data[name], clock, workers=args.workers,
                                   progress=not args.no_progress)
                    build.finish(stage, time.monotonic() - t0)
            elif stage == "train":
                from . import checkpoint as ckpt

                resume = bool(ckpt.list_checkpoints(out / "run"))
                argv = ["--config", plan["config"], "--data", str(data["train"]), "--out", str(out / "run"),
                        "--export", str(weights), *(["--resume"] if resume else []),
                        *(["--max-minutes", str(args.minutes)] if args.minutes else []), *dev, *progress]
                _check(run_command("train", argv), "train", argv)
                release_memory()
                if not (weights / "config.json").is_file():
                    raise StageFailed(f"train wrote no export to {weights}")
                build.finish(stage, time.monotonic() - t0, resumed=resume)
            elif stage == "probe":
                argv = ["--world", plan["world"], "--data", str(data["probe"]), "--val-data", str(data["heldout"]),
                        "--weights", str(weights), "--steps", str(args.probe_steps),
                        "--device", args.device]
                _check(run_command("train-probe", argv), "train-probe", argv)
                build.finish(stage, time.monotonic() - t0)
            elif stage == "eval":
                argv = ["--world", plan["world"], "--weights", str(weights), "--data", str(data["heldout"]),
                        "--out", str(out / "report"), "--device", args.device, *p["eval_args"]]
                _check(run_command("eval", argv), "eval", argv)
                report = finished_report(out / "report" / "report.json")
                if report is None:
                    raise StageFailed(f"eval wrote no finished report to {out / 'report'}")
                clock(stage, headline(report))
                build.finish(stage, time.monotonic() - t0)
            else:  # card
                reproduce = f"```bash\n{reproduce_command(plan)}\n```"
                argv = ["--world", plan["world"], "--weights", str(weights), "--report",
                        str(out / "report" / "report.json"), "--reproduce", reproduce]
                _check(run_command("card", argv), "card", argv)
                build.finish(stage, time.monotonic() - t0)
            clock(stage, f"done in {time.monotonic() - t0:.1f} s")
    except LegError as e:
        print(f"odyssey-gym build: error: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"odyssey-gym build: {e}", file=sys.stderr)
        return e.rc
    print(f"build of {plan['world']} in {out}: weights in {weights}; open it with "
          f"odyssey_gym.register_world('MyWorld-v0', weights={str(weights)!r}) then gym.make('MyWorld-v0')")
    return 0


def _check(rc: int, name: str, argv: list[str]) -> None:
    if rc != 0:
        raise StageFailed(f"{name} failed (exit status {rc}) for odyssey-gym {name} {shlex.join(argv)}", rc)
