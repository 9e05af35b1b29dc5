"""The DIAMOND/Dreamer loop: the world model learns the states the agent reaches, the agent learns in it again.

    python agents/dream_loop.py --world doom-takecover --rounds 3 --out runs/loop \
        --base-data data/takecover --config configs/doom-takecover-finetune.yaml

Each round r:
  1. PPO in imagination on world model r (round 0: the shipped weights), starting from the previous policy;
  2. score that policy in the real engine (agents/evaluate.py);
  3. record real episodes with it (`odyssey-gym collect --policy`);
  4. fine-tune the dynamics on the base data plus every round's recordings (`odyssey-gym train --phase dyn
     --init-from` world model r), giving world model r+1.
Every stage is one of the repo's own commands, run as a subprocess. OUT/loop.json records each finished
stage, so a rerun (after a job hit its time limit, say) continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

AGENTS = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="doom-takecover")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="runs/loop")
    p.add_argument("--weights", default=None, help="world model of round 0 (default: the shipped one)")
    p.add_argument("--base-data", nargs="+", required=True, help="the world model's original training data")
    p.add_argument("--config", required=True, help="fine-tune YAML (e.g. configs/doom-takecover-finetune.yaml)")
    p.add_argument("--ppo-steps", type=int, default=200_000, help="agent steps per round, in imagination")
    p.add_argument("--collect-steps", type=int, default=50_000, help="real steps recorded per round")
    p.add_argument("--collect-workers", type=int, default=8)
    p.add_argument("--wm-minutes", type=float, default=5.0, help="fine-tune time per round")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=7_000_000, help="base seed of the rounds' recordings")
    p.add_argument("--ppo-args", default="", help="extra train_ppo.py flags, e.g. '--n-steps 32 --batch-size 64'")
    a = p.parse_args(argv)
    for name in ("rounds", "ppo_steps", "collect_steps", "collect_workers", "eval_episodes", "num_envs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.wm_minutes <= 0:
        p.error("--wm-minutes must be > 0")
    return a


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise SystemExit(f"dream_loop: step failed (exit {rc}): {' '.join(cmd)}")


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "loop.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rounds": []}

    def save():
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_path)

    py, og = sys.executable, [sys.executable, "-m", "odyssey_gym.cli"]
    weights, policy = a.weights, None
    for r in range(a.rounds):
        if r == len(state["rounds"]):
            state["rounds"].append({"round": r, "weights": weights or "shipped"})
        rec = state["rounds"][r]
        rd = out / f"round{r}"
        wflag = ["--weights", weights] if weights else []
        if "policy" not in rec:
            init = ["--init-policy", policy] if policy else []
            run([py, str(AGENTS / "train_ppo.py"), "--world", a.world, "--in", "imagination", "--steps", str(a.ppo_steps),
                 "--num-envs", str(a.num_envs), "--device", a.device, "--out", str(rd / "ppo"), "--no-progress",
                 "--resume", *wflag, *init, *a.ppo_args.split()])
            rec["policy"] = str(rd / "ppo" / "policy.zip")
            save()
        policy = rec["policy"]
        if "real_score" not in rec:
            run([py, str(AGENTS / "evaluate.py"), "--world", a.world, "--policy", policy, "--episodes", str(a.eval_episodes),
                 "--num-envs", str(a.num_envs), "--videos", "0", "--device", a.device, "--out", str(rd / "eval-real")])
            ev = json.loads((rd / "eval-real" / "eval.json").read_text())
            rec["real_score"] = {"mean": ev["mean"], "std": ev["std"], "episodes": ev["episodes"]}
            rec["dream_train_score"] = json.loads((rd / "ppo" / "meta.json").read_text())["train_score"]
            save()
        if r == a.rounds - 1:
            break  # the last round's policy is scored; no model is needed after it
        if "data" not in rec:
            run([*og, "collect", "--world", a.world, "--steps", str(a.collect_steps), "--workers", str(a.collect_workers),
                 "--out", str(rd / "data"), "--seed", str(a.seed + r), "--policy", policy, "--no-progress"])
            rec["data"] = str(rd / "data")
            save()
        if "next_weights" not in rec:
            data = [d for d in a.base_data] + [x["data"] for x in state["rounds"][: r + 1]]
            init = weights or str(_shipped(a.world))
            resume = ["--resume"] if any((rd / "wm").glob("checkpoints/*")) else []  # a cut-off round continues
            run([*og, "train", "--config", a.config, *sum((["--data", d] for d in data), []), "--out", str(rd / "wm"),
                 "--phase", "dyn", "--init-from", init, "--max-minutes", str(a.wm_minutes),
                 "--export", str(rd / "weights"), "--no-progress", *resume])
            rec["next_weights"] = str(rd / "weights")
            save()
        weights = rec["next_weights"]
    print(json.dumps([{k: x.get(k) for k in ("round", "real_score", "dream_train_score")} for x in state["rounds"]]))
    return 0


def _shipped(world: str) -> Path:
    from odyssey_gym.model import weights_dir

    return weights_dir(world)


if __name__ == "__main__":
    sys.exit(main())
