"""`odyssey-gym leg`: one leg of a training campaign, as one re-runnable command.

    odyssey-gym leg --world doom-explore --config configs/doom-explore-tf.yaml --work DIR --minutes 9 \
        [--weights WEIGHTS] [--record "sticky:1:150000,walker:3:150000"] [--heldout "human:900001:24000"] [--land]

Stages, in order, each skipped when its output is already in DIR (a job cut off by its time limit re-runs the
same command and carries on where it stopped):

1. record   DIR/data/<world>-<policy>-<seed> (training) and DIR/data/<world>-heldout-<policy>-<seed>
2. before   `eval` of WEIGHTS on the held-out data          -> DIR/eval-before/report.json
3. train    `train --phase dyn --init-from WEIGHTS` (or `--phase decoder`: the frame decoder only), or `--resume`
           once DIR/run holds a checkpoint
                                                           -> DIR/run, DIR/export
4. after    `eval` of DIR/export on the same held-out data  -> DIR/eval-after/report.json
5. result   the before/after numbers, as an "eval" entry of the export's last leg in train_summary.json
6. land     (--land, and only when the held-out numbers improved) the export's files copied into WEIGHTS
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .campaign import SUMMARY_NAME, load_summary, with_totals, write_summary

RESERVED_EVAL_OPTIONS = ("world", "weights", "data", "out", "device")  # the leg sets these itself
LANDED_EXTRAS = ("start_bank.npz",)  # besides the shards, config.json and the campaign log
CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"  # the standard shard index save_pretrained writes
REPORT_NAME = "report.json"
LANDING_PREFIX = ".landing-"
PSNR_DECIMALS = 3  # what the campaign log keeps (and `improved` compares): a thousandth of a dB
ENERGY_DECIMALS = 5  # the energy score (RMS distance, 0-1 range) as the campaign log keeps it
REALISM_DECIMALS = 3  # the rollout realism (a Fréchet distance) as the campaign log keeps it
REALISM_SLACK = 0.10  # how much worse the rollout's realism may get (the card's minute-5-vs-minute-1 tolerance)
SHOWN_SEEDS = 3  # shared seeds named in the refusal


class LegError(RuntimeError):
    """A bad argument or input, found before any work is done on it (exit status 2)."""


class StageFailed(RuntimeError):
    """A stage ran and failed; `rc` is the exit status the leg ends with."""

    def __init__(self, message: str, rc: int = 1):
        super().__init__(message)
        self.rc = rc if rc else 1


# ============================================================================ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    from odyssey_gym.cli import add_device_argument

    p.add_argument("--world", required=True, help="world name, e.g. doom-explore")
    p.add_argument("--config", required=True, help="training YAML (configs/*.yaml), as for `odyssey-gym train`")
    p.add_argument("--work", required=True, metavar="DIR",
                   help="the leg's directory: data/, eval-before/, run/, export/, eval-after/ (re-run to continue)")
    p.add_argument("--minutes", required=True, type=float, metavar="M",
                   help="training time of this call in minutes (`train --max-minutes`)")
    p.add_argument("--weights", default=None, metavar="WEIGHTS_DIR",
                   help="weights the leg starts from and lands into (default: the world's shipped weights)")
    p.add_argument("--record", default=None, metavar="POLICY:SEED:STEPS,...",
                   help="training data to record, e.g. 'sticky:1:150000,walker:3:150000'")
    p.add_argument("--heldout", default=None, metavar="POLICY:SEED:STEPS,...",
                   help="held-out data to record for eval, e.g. 'human:900001:24000' (seeds never trained on)")
    p.add_argument("--data", nargs="+", default=[], metavar="DIR",
                   help="use existing training dataset dir(s), instead of or besides --record")
    p.add_argument("--heldout-data", nargs="+", default=[], metavar="DIR",
                   help="use existing held-out dataset dir(s), instead of or besides --heldout")
    p.add_argument("--workers", type=int, default=1, help="recording processes, one engine each (default 1)")
    p.add_argument("--phase", choices=("dyn", "decoder"), default="dyn",
                   help="what the leg trains: the dynamics (default), or only the frame decoder (the config's ae_steps; "
                        "the encoder and dynamics stay as in WEIGHTS)")
    p.add_argument("--land", action="store_true",
                   help="when the held-out numbers improved, copy the export into WEIGHTS (WEIGHTS/probe/ is kept)")
    add_device_argument(p, "for training and eval")
    p.add_argument("--eval-args", default="", metavar="ARGS",
                   help="extra `odyssey-gym eval` options for both evals, e.g. '--rollout-steps 0 --horizons 1,16' "
                        "(a single option as --eval-args=--no-probe)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars from recording and training")


@dataclass
class Recording:
    """One `policy:seed:steps` item of --record / --heldout."""

    policy: str
    seed: int
    steps: int

    def dir_name(self, world: str, heldout: bool) -> str:
        policy = Path(self.policy).stem if os.sep in self.policy else self.policy
        return f"{world}-{'heldout-' if heldout else ''}{policy}-{self.seed}"


@dataclass
class Plan:
    """Everything the stages need, checked before any of them runs."""

    world: str
    config: Path
    work: Path
    weights: Path
    minutes: float
    record: list[Recording]
    heldout: list[Recording]
    data: list[Path]
    heldout_data: list[Path]
    workers: int
    device: str
    eval_args: list[str]
    land: bool
    progress: bool
    phase: str = "dyn"  # what `train` trains: dyn | decoder
    probe: Path | None = None
    train_dirs: list[Path] = field(default_factory=list)
    heldout_dirs: list[Path] = field(default_factory=list)

    @property
    def export(self) -> Path:
        return self.work / "export"


def parse_recordings(text: str | None, flag: str) -> list[Recording]:
    """'sticky:1:150000,walker:3:150000' -> Recordings; the error names the flag and the bad item."""
    from ..data.policies import POLICY_NAMES

    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.rsplit(":", 2)  # a policy given as a file path may itself hold ':'
        try:
            policy, seed, steps = parts[0], int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise LegError(f"{flag} {item!r}: expected policy:seed:steps, e.g. sticky:1:150000") from None
        if steps < 1:
            raise LegError(f"{flag} {item!r}: steps must be >= 1")
        if policy not in POLICY_NAMES and not os.path.exists(policy):
            raise LegError(f"{flag} {item!r}: policy {policy!r} is neither one of {', '.join(POLICY_NAMES)} "
                           "nor an existing SB3 .zip")
        out.append(Recording(policy, seed, steps))
    return out


def make_plan(args: argparse.Namespace) -> Plan:
    """Check every argument and input file up front, so a bad one fails in a second, not after hours of work."""
    from ..model import weights_dir
    from ..worlds import get_world
    from .config import ConfigError, load_config

    try:
        world = get_world(args.world).name
    except KeyError as e:
        raise LegError(f"--world: {e.args[0]}") from None
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        raise LegError(f"--config: {e}") from None
    if cfg.world is not None and cfg.world != world:
        raise LegError(f"--config {args.config} is for world {cfg.world!r}, not --world {world!r}")
    if not args.minutes > 0:
        raise LegError(f"--minutes must be > 0, got {args.minutes}")
    if args.workers < 1:
        raise LegError(f"--workers must be >= 1, got {args.workers}")
    weights = Path(args.weights) if args.weights else weights_dir(world)
    if not (weights / CONFIG_NAME).is_file():
        raise LegError(f"--weights {weights}: not a weights directory (no {CONFIG_NAME})")
    plan = Plan(world=world, config=Path(args.config), work=Path(args.work), weights=weights, minutes=args.minutes,
                record=parse_recordings(args.record, "--record"), heldout=parse_recordings(args.heldout, "--heldout"),
                data=[Path(d) for d in args.data], heldout_data=[Path(d) for d in args.heldout_data],
                workers=args.workers, device=args.device, eval_args=parse_eval_args(args.eval_args),
                land=args.land, progress=not args.no_progress, phase=args.phase)
    if not plan.record and not plan.data:
        raise LegError("no training data: give --record POLICY:SEED:STEPS,... or --data DIR...")
    if not plan.heldout and not plan.heldout_data:
        raise LegError("no held-out data: give --heldout POLICY:SEED:STEPS,... or --heldout-data DIR...")
    for flag, dirs in (("--data", plan.data), ("--heldout-data", plan.heldout_data)):
        for d in dirs:
            check_dataset(d, world, flag)
    check_recording_seeds(plan, load_summary(weights))
    plan.probe = probe_for(plan)
    return plan


def parse_eval_args(text: str) -> list[str]:
    """--eval-args as `odyssey-gym eval` options, checked by eval's own parser; the options the leg sets are refused."""
    from ..eval import cli as eval_cli

    try:
        extra = shlex.split(text)
    except ValueError as e:
        raise LegError(f"--eval-args {text!r}: {e}") from None
    parser = _QuietParser(prog="odyssey-gym eval")
    eval_cli.add_arguments(parser)
    for action in parser._actions:  # the placeholder below stands for --device too: do not check it as a device
        if action.dest == "device":
            action.type = None
    placeholder = "\0leg"  # what the leg passes for the options it sets; anything else means --eval-args set one
    fixed = [tok for name in RESERVED_EVAL_OPTIONS for tok in (f"--{name}", placeholder)]
    try:
        parsed = parser.parse_args(fixed + extra)
    except ValueError as e:
        raise LegError(f"--eval-args {text!r}: {e}") from None
    for name in RESERVED_EVAL_OPTIONS:
        value = getattr(parsed, name)
        if value != placeholder and value != [placeholder]:
            raise LegError(f"--eval-args must not set --{name}: the leg sets it (--{name} of the leg, or its own dirs)")
    return extra


class _QuietParser(argparse.ArgumentParser):
    """An argparse parser that raises instead of printing usage and exiting (for checking --eval-args)."""

    def error(self, message):
        raise ValueError(message)


def check_dataset(path: Path, world: str, flag: str) -> None:
    """A dataset dir given on the command line exists and holds `world`."""
    from ..data.dataset import Dataset, DatasetError

    if not path.is_dir():
        raise LegError(f"{flag} {path}: no such directory")
    try:
        Dataset(path, world)
    except DatasetError as e:
        raise LegError(f"{flag} {path}: {e}") from None


def check_recording_seeds(plan: Plan, log: dict[str, Any] | None) -> None:
    """Refuse a --heldout seed that records training data: in --record, or in a dataset an earlier leg trained on.

    A held-out yardstick recorded with a training seed replays the training episodes, and the eval would then
    reward memorising them instead of modelling the world.
    """
    trained = {r.seed: "--record" for r in plan.record}
    for leg in (log or {}).get("legs") or []:
        for ds in (leg.get("data") or {}).get("datasets") or []:
            for run in ds.get("runs") or []:
                if run.get("seed") is not None:
                    trained.setdefault(int(run["seed"]), f"dataset {ds.get('name')} of leg {leg.get('leg')} of the weights' log")
    for r in plan.heldout:
        if r.seed in trained:
            raise LegError(f"--heldout seed {r.seed} is a training seed ({trained[r.seed]}); "
                           "held-out data must come from seeds never trained on")


def check_episode_seeds(train_dirs: list[Path], heldout_dirs: list[Path], log: dict[str, Any] | None) -> None:
    """Refuse held-out episodes whose engine seed a training episode (this leg's or the weights' log) also used."""
    trained = set(int(s) for s in ((log or {}).get("data") or {}).get("seeds") or [])
    for d in train_dirs:
        trained |= episode_seeds(d)
    for d in heldout_dirs:
        shared = sorted(episode_seeds(d) & trained)
        if shared:
            raise LegError(f"held-out dataset {d} shares {len(shared)} episode seed(s) with the training data "
                           f"(e.g. {shared[:SHOWN_SEEDS]}); held-out data must come from seeds never trained on")


def episode_seeds(d: Path) -> set[int]:
    from ..data.dataset import Dataset

    return {int(e["seed"]) for e in Dataset(d).episodes if e.get("seed") is not None}


def probe_for(plan: Plan) -> Path | None:
    """WEIGHTS' shipped probe, passed to both evals so the export (which has none) is judged by the same probe."""
    from ..eval.probe import CONFIG_FILE

    if any(a in ("--probe", "--no-probe") or a.startswith("--probe=") for a in plan.eval_args):
        return None
    d = plan.weights / "probe"
    return d if (d / CONFIG_FILE).is_file() else None


# ============================================================================ running


class Clock:
    """One progress line per stage, stamped with the seconds since the leg started."""

    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self, stage: str, what: str) -> None:
        print(f"[{time.monotonic() - self.t0:8.1f}s] {stage}: {what}", flush=True)


def run(args: argparse.Namespace) -> int:
    clock = Clock()
    try:
        plan = make_plan(args)
        plan.work.mkdir(parents=True, exist_ok=True)
        record_stage(plan, clock)
        check_episode_seeds(plan.train_dirs, plan.heldout_dirs, load_summary(plan.weights))
        before = eval_stage("before", plan.weights, plan.work / "eval-before", plan, clock)
        train_stage(plan, clock)
        after = eval_stage("after", plan.export, plan.work / "eval-after", plan, clock)
        entry = result_stage(plan, before, after, clock)
        land_stage(plan, entry, clock)
    except LegError as e:
        print(f"odyssey-gym leg: error: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"odyssey-gym leg: {e}", file=sys.stderr)
        return e.rc
    return 0


def run_command(name: str, argv: list[str]) -> int:
    """Run `odyssey-gym <name> argv` in this process; its failures come back as a non-zero status."""
    from ..cli import COMMANDS

    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"odyssey-gym {name}")
    module.add_arguments(parser)
    try:
        return int(module.run(parser.parse_args(argv)) or 0)
    except SystemExit as e:  # eval stops with SystemExit("message") on mismatched inputs
        if isinstance(e.code, str):
            print(f"odyssey-gym {name}: {e.code}", file=sys.stderr)
            return 1
        return int(e.code or 0)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001  an unexpected failure: the traceback, then the leg stops
        traceback.print_exc()
        print(f"odyssey-gym {name}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------- 1. record


def record_stage(plan: Plan, clock: Clock) -> None:
    """Record what is missing of every --record / --heldout dataset; collect the dirs the later stages use."""
    plan.train_dirs = list(plan.data)
    plan.heldout_dirs = list(plan.heldout_data)
    if not plan.record and not plan.heldout:
        clock("record", "nothing to record: using the --data and --heldout-data datasets")
    for recs, heldout, dirs in ((plan.record, False, plan.train_dirs), (plan.heldout, True, plan.heldout_dirs)):
        for r in recs:
            out = plan.work / "data" / r.dir_name(plan.world, heldout)
            record_one(plan.world, r, out, clock, workers=plan.workers, progress=plan.progress)
            dirs.append(out)


def dataset_steps(path: Path) -> int:
    """Env steps a dataset dir holds (0 when there is none yet)."""
    from ..data.dataset import MANIFEST, Dataset

    return Dataset(path).num_steps if (path / MANIFEST).is_file() else 0


def record_one(world: str, r: Recording, out: Path, clock: Clock, workers: int = 1, progress: bool = True) -> None:
    """Top a dataset up to `r.steps`: a recording cut off earlier keeps its episodes, only the rest is recorded."""
    from ..data.dataset import DatasetError
    from ..data.recorder import collect

    try:
        have = dataset_steps(out)
    except DatasetError as e:
        raise LegError(f"{out}: {e}") from None
    if have >= r.steps:
        clock("record", f"{out.name}: skipped, holds {have} >= {r.steps} steps")
        return
    try:
        res = collect(world, out, steps=r.steps - have, workers=workers, seed=r.seed, policy=r.policy,
                      progress=progress)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        raise StageFailed(f"record {out.name} failed: {e}") from None
    if res.error:
        raise StageFailed(f"record {out.name} failed: {res.error}")
    if res.interrupted:
        raise KeyboardInterrupt
    clock("record", f"{out.name}: recorded {res.steps} steps, {res.episodes} episodes (now {res.total_frames} frames)")


# ---------------------------------------------------------------------------- 2 + 4. eval


def finished_report(path: Path) -> dict[str, Any] | None:
    """An eval report that ran to its end (eval rewrites a partial report.json while it runs; the last write adds
    `eval_seconds`), else None."""
    try:
        r = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return r if isinstance(r, dict) and "eval_seconds" in r and "fidelity" in r else None


def eval_stage(stage: str, weights: Path, out: Path, plan: Plan, clock: Clock) -> dict[str, Any]:
    """`odyssey-gym eval` of `weights` on the held-out data into `out`, unless a finished report is there."""
    argv = ["--world", plan.world, "--weights", str(weights), "--data", *map(str, plan.heldout_dirs),
            "--out", str(out), "--device", plan.device, *(["--probe", str(plan.probe)] if plan.probe else []),
            *plan.eval_args]
    return eval_into(stage, argv, out, clock)


def eval_into(stage: str, argv: list[str], out: Path, clock: Clock) -> dict[str, Any]:
    """`odyssey-gym eval argv` (whose --out is `out`), unless a finished report is there; the report."""
    report = finished_report(out / REPORT_NAME)
    if report is not None:
        clock(stage, f"skipped, {out / REPORT_NAME} exists ({headline(report)})")
        return report
    rc = run_command("eval", argv)
    report = finished_report(out / REPORT_NAME)
    if rc != 0 or report is None:
        raise StageFailed(f"eval {stage} failed (exit status {rc}) for odyssey-gym eval {shlex.join(argv)}", rc)
    clock(stage, f"evaluated {argv[argv.index('--weights') + 1]} -> {out / REPORT_NAME} ({headline(report)})")
    return report


def headline(report: dict[str, Any]) -> str:
    """The numbers `improved` compares, for a progress line."""
    fid = fidelity(report)
    if not fid:
        return "no horizon had a long enough held-out window"
    tf_h, ol_h = min(fid, key=int), max(fid, key=int)
    text = f"teacher-forced PSNR h={tf_h} {fid[tf_h]['tf_psnr']} dB, open-loop PSNR h={ol_h} {fid[ol_h]['ol_psnr']} dB"
    if "tf_energy" in fid[tf_h] and "ol_energy" in fid[ol_h]:
        text += f"; energy score {fid[tf_h]['tf_energy']} / {fid[ol_h]['ol_energy']}"
    return text


# ---------------------------------------------------------------------------- 3. train


def train_stage(plan: Plan, clock: Clock) -> None:
    """Dynamics (or the decoder) from WEIGHTS for --minutes, exported; a run cut off before its export resumes from
    its checkpoint."""
    # --init-from stays with --resume: the checkpoint overrides its weights, and the export still appends this
    # leg to WEIGHTS' campaign log
    argv = ["--config", str(plan.config), *[a for d in plan.train_dirs for a in ("--data", str(d))],
            "--out", str(plan.work / "run"), "--phase", plan.phase, "--init-from", str(plan.weights),
            "--max-minutes", str(plan.minutes), "--export", str(plan.export),
            *([] if plan.device == "auto" else ["--device", plan.device]), *([] if plan.progress else ["--no-progress"])]
    resumed = train_into(argv, plan.work / "run", plan.export)
    if resumed is None:
        clock("train", f"skipped, {plan.export} holds an export")
        return
    leg = load_summary(plan.export)["legs"][-1]
    what = (f"{leg['steps']['decoder']} decoder steps" if plan.phase == "decoder"
            else f"{leg['steps']['dyn']}/{leg.get('dyn_steps_planned')} dynamics steps")
    clock("train", f"{'resumed, ' if resumed else ''}trained {what}, {leg['gpu_minutes']} GPU-minutes -> {plan.export}")


def train_into(argv: list[str], run_dir: Path, export: Path) -> bool | None:
    """`odyssey-gym train argv` (whose --out is `run_dir` and --export `export`) until `export` holds an export,
    with --resume once `run_dir` holds a checkpoint. None: the export was there already; else whether it resumed."""
    from . import checkpoint as ckpt

    if (export / SUMMARY_NAME).is_file():
        return None
    resume = bool(ckpt.list_checkpoints(run_dir))
    argv = [*argv, *(["--resume"] if resume else [])]
    release_memory()  # the eval before it compiled for its own shapes
    rc = run_command("train", argv)
    release_memory()
    if rc != 0 or not (export / SUMMARY_NAME).is_file():
        raise StageFailed(f"train failed (exit status {rc}) for odyssey-gym train {shlex.join(argv)}", rc)
    return resume


def release_memory() -> None:
    """Give the training run's GPU memory back before eval loads two models in the same process, and forget the
    code it compiled: torch.compile keeps at most 8 shape variants of a function (FlexAttention's kernel among
    them), and a stage that finds them used up by the one before runs that function eager and unfused."""
    import gc

    import torch

    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- 5. result


def fidelity(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """report.json's per-horizon fidelity, reduced to what the campaign log keeps (horizons that were measured;
    the energy scores where the eval measured them)."""
    keys = {"tf_psnr": "teacher_forced_psnr", "ol_psnr": "open_loop_psnr",
            "copy_last_tf": "teacher_forced_copy_last_psnr", "copy_last_ol": "open_loop_copy_last_psnr"}
    energy = {"tf_energy": "teacher_forced_energy", "ol_energy": "open_loop_energy"}
    out = {}
    for h, v in (report.get("fidelity") or {}).items():
        if v.get("windows"):
            out[h] = {k: round(float(v[src]), PSNR_DECIMALS) for k, src in keys.items()}
            out[h].update({k: round(float(v[src]), ENERGY_DECIMALS) for k, src in energy.items() if src in v})
    return out


def realism(report: dict[str, Any]) -> float | None:
    """The long held-key rollout's realism, one number: the mean over its minutes of the Fréchet distance to the
    real engine under the same keys (to held-out play where the report has no engine reference); lower is more
    real. None when the eval ran no rollout (`--rollout-steps 0`)."""
    r = (report.get("stability") or {}).get("realism") or {}
    per_minute = (r.get("engine") or {}).get("per_minute") or r.get("per_minute")
    if not per_minute:
        return None
    return round(sum(map(float, per_minute)) / len(per_minute), REALISM_DECIMALS)


def improved(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
             realism_before: float | None = None, realism_after: float | None = None) -> bool:
    """New weights count as better only if no worse on what a player sees: the next frame from the true history
    (teacher-forced, at the smallest horizon both measured, 1 by default), drift over a long imagined stretch
    (open-loop, at the largest horizon both measured), and, where both evals ran the long rollout, its realism
    (at most REALISM_SLACK worse). Each alone can be gamed: blur lifts PSNR at every horizon while long rollouts
    fade to flat rooms, so all must hold; no shared horizon (or a NaN) is not better.

    Frames are judged by the energy score of two draws where both evals measured it, else by PSNR. PSNR's best
    answer to an uncertain future is the mean of the possible frames, so it refuses a model that learned to
    draw sharp frames (each draw, however right, misses the truth by more than the mean does); the energy score
    is lowest for draws from the real frames' distribution, and for a model that draws the same frame each
    time it is that frame's RMS error."""
    shared = sorted(set(before) & set(after), key=int)
    if not shared:
        return False
    tf, ol = shared[0], shared[-1]
    if all("tf_energy" in d[tf] and "ol_energy" in d[ol] for d in (before, after)):
        frames_ok = after[tf]["tf_energy"] <= before[tf]["tf_energy"] and after[ol]["ol_energy"] <= before[ol]["ol_energy"]
    else:
        frames_ok = after[tf]["tf_psnr"] >= before[tf]["tf_psnr"] and after[ol]["ol_psnr"] >= before[ol]["ol_psnr"]
    if realism_before is None or realism_after is None:
        return frames_ok
    return frames_ok and realism_after <= realism_before * (1.0 + REALISM_SLACK)  # NaN compares False: not better


def compare(entry: dict[str, Any]) -> str:
    """The numbers `improved` compared in an eval entry, as 'before -> after'."""
    before, after = entry["before"], entry["after"]
    shared = sorted(set(before) & set(after), key=int)
    if not shared:
        return "no horizon was measured both before and after"
    tf, ol = shared[0], shared[-1]
    text = (f"teacher-forced h={tf} {before[tf]['tf_psnr']} -> {after[tf]['tf_psnr']} dB, "
            f"open-loop h={ol} {before[ol]['ol_psnr']} -> {after[ol]['ol_psnr']} dB")
    if all("tf_energy" in d[tf] and "ol_energy" in d[ol] for d in (before, after)):
        text += (f"; energy score (lower is better, decides) teacher-forced {before[tf]['tf_energy']} -> "
                 f"{after[tf]['tf_energy']}, open-loop {before[ol]['ol_energy']} -> {after[ol]['ol_energy']}")
    if entry.get("realism_before") is not None and entry.get("realism_after") is not None:
        text += f", rollout realism {entry['realism_before']} -> {entry['realism_after']} (lower is better)"
    return text


def heldout_record(d: Path) -> dict[str, Any]:
    """A held-out dataset as the log names it: name, how it was recorded, its episode seeds (never a path)."""
    from .steps import _dataset_record

    return {**_dataset_record(str(d)), "seeds": sorted(episode_seeds(d))}


def eval_entry(heldout_dirs: list[Path], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    b, a, rb, ra = fidelity(before), fidelity(after), realism(before), realism(after)
    return {"heldout": [heldout_record(d) for d in heldout_dirs], "before": b, "after": a,
            "realism_before": rb, "realism_after": ra, "improved": improved(b, a, rb, ra)}


def result_stage(plan: Plan, before: dict[str, Any], after: dict[str, Any], clock: Clock) -> dict[str, Any]:
    """Write the eval entry into the export's last leg (rewritten when the reports changed, e.g. a re-run eval)."""
    entry = eval_entry(plan.heldout_dirs, before, after)
    summary = load_summary(plan.export)
    leg = summary["legs"][-1]
    if leg.get("eval") == entry:
        clock("result", f"skipped, leg {leg['leg']} of {plan.export / SUMMARY_NAME} holds it "
                        f"(improved: {entry['improved']})")
        return entry
    leg["eval"] = entry
    write_summary(plan.export, with_totals(summary))
    clock("result", f"leg {leg['leg']} improved: {entry['improved']} ({compare(entry)})")
    return entry


# ---------------------------------------------------------------------------- 6. land


def land_stage(plan: Plan, entry: dict[str, Any], clock: Clock) -> None:
    if not plan.land:
        clock("land", "not landed: --land not given")
    elif not entry["improved"]:
        clock("land", f"not landed: the held-out eval did not improve ({compare(entry)})")
    elif is_landed(plan.export, plan.weights):
        clock("land", f"landed (already: {plan.weights} holds this export)")
    else:
        names = land(plan.export, plan.weights)
        clock("land", f"landed: {len(names)} files into {plan.weights}")


def landed_files(export: Path) -> list[str]:
    """The export's files that make up weights, in landing order: shards, their index, start bank, config.json (it lists the
    shards), and last the campaign log, whose arrival marks a finished landing."""
    cfg_path = export / CONFIG_NAME
    try:
        shards = list(json.loads(cfg_path.read_text())["weights"]["shards"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StageFailed(f"land: {cfg_path} does not list its weight shards ({e})") from None
    index = [INDEX_NAME] if (export / INDEX_NAME).is_file() else []  # exports made before the index have none
    names = [*shards, *index, *LANDED_EXTRAS, CONFIG_NAME, SUMMARY_NAME]
    missing = [n for n in names if not (export / n).is_file()]
    if missing:
        raise StageFailed(f"land: {export} lacks {', '.join(missing)}")
    return names


def is_landed(export: Path, weights: Path) -> bool:
    """WEIGHTS already holds this export (its campaign log, the last file a landing writes, is the same)."""
    a, b = export / SUMMARY_NAME, weights / SUMMARY_NAME
    return b.is_file() and a.read_bytes() == b.read_bytes()


def land(export: Path, weights: Path) -> list[str]:
    """Copy the export's weight files into WEIGHTS without losing what is saved there at any moment.

    Every file is first copied (and fsynced) into a temp dir beside WEIGHTS, on the same file system, then renamed
    into place one by one in `landed_files` order; shards no longer listed go only once the new config.json is in
    place. A landing cut off midway is finished by running it again. Other files (probe/, model card) are kept.
    """
    from ..fsutil import fsync_dir

    names = landed_files(export)
    weights.mkdir(parents=True, exist_ok=True)
    for old in weights.parent.glob(f".{weights.name}{LANDING_PREFIX}*"):  # left by a landing that was killed
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{weights.name}{LANDING_PREFIX}", dir=weights.parent))
    try:
        for n in names:
            shutil.copyfile(export / n, tmp / n)
            with open(tmp / n, "rb") as f:
                os.fsync(f.fileno())
        for n in names:
            os.replace(tmp / n, weights / n)
        fsync_dir(weights)
        for stale in [*weights.glob("model-*.safetensors"), weights / INDEX_NAME]:
            if stale.name not in names and stale.exists():  # an old index would point at the old shards
                stale.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names
