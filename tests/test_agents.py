"""agents/: PPO in imagination on the tiny model, resumed, then scored in the real engine and in the dream (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(script, *args, cwd):
    """Run an agents/ script; output goes to files, not pipes, so an engine process left behind by a crash
    cannot hold the pipe open and turn a failure into a timeout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        rc = subprocess.run([sys.executable, str(ROOT / "agents" / script), *map(str, args)], cwd=cwd, env=env,
                            stdout=out, stderr=err, text=True, timeout=300).returncode
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess([script], rc, out.read(), err.read())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tiny_weights import make_tiny_weights

    root = tmp_path_factory.mktemp("agents")
    make_tiny_weights("doom-takecover", root / "w")
    small = ["--n-steps", 32, "--batch-size", 64, "--epochs", 1, "--device", "cpu", "--num-envs", 4, "--no-progress",
             "--weights", root / "w", "--out", root / "run", "--checkpoint-every", 128]
    r = _run("train_ppo.py", "--in", "imagination", "--steps", 256, *small, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    first = json.loads((root / "run" / "meta.json").read_text())
    again = _run("train_ppo.py", "--in", "imagination", "--steps", 256, *small, cwd=root)
    assert again.returncode == 2 and "already holds a trained policy" in again.stderr
    r = _run("train_ppo.py", "--in", "imagination", "--steps", 384, "--resume", *small, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    return root, first, json.loads((root / "run" / "meta.json").read_text())


def test_train_in_imagination_checkpoints_and_resumes(trained):
    root, first, meta = trained
    assert first["agent_steps"] == 256 and meta["agent_steps"] == 384
    assert meta["trained_in"] == "imagination" and meta["frame_stack"] == 4
    assert meta["wall_seconds_total"] >= first["wall_seconds_total"]
    assert list((root / "run" / "checkpoints").glob("ppo_*_steps.zip"))
    assert list((root / "run" / "tb").rglob("events.out.tfevents.*"))


def test_evaluate_scores_in_the_real_engine_and_in_the_dream(trained):
    root, _, _ = trained
    r = _run("evaluate.py", "--policy", root / "run" / "policy.zip", "--episodes", 3, "--num-envs", 2, "--videos", 1,
             "--device", "cpu", cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "episodes: 100%" in r.stderr and "4/4" in r.stderr  # the bar counts each env's quota (2 envs x 2)
    rep = json.loads((root / "run" / "eval-real" / "eval.json").read_text())
    assert rep["scored_in"] == "real" and rep["episodes"] == 3 and len(rep["scores"]) == 3
    # take_cover scores tics survived: a short-lived agent still survives some tics, never more than the 2100 cap
    assert all(0 < s <= 2100 for s in rep["scores"])
    assert (root / "run" / "eval-real" / "histogram.png").stat().st_size > 1000
    assert (root / "run" / "eval-real" / "episode_0.mp4").stat().st_size > 1000
    r = _run("evaluate.py", "--policy", root / "run" / "policy.zip", "--episodes", 2, "--num-envs", 2, "--videos", 0,
             "--in", "imagination", "--weights", root / "w", "--device", "cpu", "--no-progress", cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "episodes:" not in r.stderr
    dream = json.loads((root / "run" / "eval-imagination" / "eval.json").read_text())
    # the tiny test model never terminates, so dream episodes run to the 525-step time limit
    assert dream["scored_in"] == "imagination" and dream["mean_length_steps"] == 525


def test_bad_input_is_named(trained, tmp_path):
    root, _, _ = trained
    r = _run("evaluate.py", "--policy", tmp_path / "missing.zip", cwd=tmp_path)
    assert r.returncode == 2 and "no policy file" in r.stderr
    r = _run("evaluate.py", "--policy", root / "run" / "policy.zip", "--world", "doom-health", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 2 and "trained for 'doom-takecover'" in r.stderr
    r = _run("train_ppo.py", "--steps", 0, cwd=tmp_path)
    assert r.returncode == 2 and "--steps must be >= 1" in r.stderr


def test_train_in_the_real_engine_uses_the_same_stack(tmp_path):
    r = _run("train_ppo.py", "--in", "real", "--steps", 64, "--num-envs", 2, "--n-steps", 32, "--batch-size", 32,
             "--epochs", 1, "--device", "cpu", "--out", tmp_path / "real", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "real" / "meta.json").read_text())
    assert meta["trained_in"] == "real" and meta["agent_steps"] == 64


def test_collect_records_with_a_frame_stacked_agent(trained, tmp_path):
    """`collect --policy policy.zip` feeds an agents/-trained policy the 4 stacked frames it was trained on."""
    from odyssey_gym.data.dataset import open_dataset
    from odyssey_gym.data.policies import make_policy
    from odyssey_gym.data.recorder import collect
    from odyssey_gym.worlds import get_world

    root, _, _ = trained
    pol = make_policy(str(root / "run" / "policy.zip"), get_world("doom-takecover"))
    assert pol.stack == 4
    res = collect("doom-takecover", tmp_path / "d", steps=120, workers=1, seed=3, policy=str(root / "run" / "policy.zip"),
                  progress=False)
    assert res.error is None and res.steps == 120
    assert len(open_dataset([str(tmp_path / "d")]).episodes) == res.episodes >= 1


def test_dream_loop_two_rounds_on_tiny(tmp_path):
    """agents/dream_loop.py: PPO in the dream, real score, real data with the policy, world-model fine-tune, again."""
    from odyssey_gym.data.recorder import collect
    from tiny_weights import make_tiny_weights

    w = make_tiny_weights("doom-takecover", tmp_path / "w", n_starts=4)
    collect("doom-takecover", tmp_path / "base", steps=150, workers=1, seed=9, progress=False)
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("model:\n  preset: tiny\ntrain:\n  bf16: false\n  ae_steps: 0\n  dyn_steps: 6\n  dyn_batch_size: 4\n"
                   "  dyn_window: 8\n  dyn_warmup_steps: 1\n  log_every_steps: 2\n  save_every_steps: 3\n"
                   "  save_every_seconds: 0\n  start_bank_size: 4\n  gpu_resident_frac: 1.0\n")
    args = ["--rounds", 2, "--out", tmp_path / "loop", "--weights", w, "--base-data", tmp_path / "base", "--config", cfg,
            "--ppo-steps", 64, "--collect-steps", 80, "--collect-workers", 1, "--wm-minutes", 2, "--eval-episodes", 2,
            "--num-envs", 2, "--device", "cpu", "--ppo-args", "--n-steps 32 --batch-size 32 --epochs 1 --checkpoint-every 64"]
    r = _run("dream_loop.py", *args, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    state = json.loads((tmp_path / "loop" / "loop.json").read_text())
    r0, r1 = state["rounds"]
    assert r0["weights"] == str(w) and r1["weights"] == r0["next_weights"]  # round 1 plays in the fine-tuned model
    assert (Path(r0["next_weights"]) / "config.json").is_file() and (Path(r0["data"]) / "manifest.json").is_file()
    assert all(x["real_score"]["episodes"] == 2 for x in (r0, r1)) and "data" not in r1
    meta1 = json.loads((tmp_path / "loop" / "round1" / "ppo" / "meta.json").read_text())
    assert meta1["init_policy"] == r0["policy"] and meta1["weights"] == r0["next_weights"]
    again = _run("dream_loop.py", *args, cwd=tmp_path)  # everything recorded as done: nothing runs again
    assert again.returncode == 0 and "$ " not in again.stdout


def test_the_shipped_real_engine_policy_records_and_outlives_random_play(tmp_path):
    """agents/policies/doom-takecover-real.zip drives `collect --policy` in the real engine and dodges: over the same
    recorded steps its episodes last longer than sticky-random play's (about 75 steps; the policy averages 175)."""
    from odyssey_gym.data.dataset import open_dataset
    from odyssey_gym.data.recorder import collect

    policy = ROOT / "agents" / "policies" / "doom-takecover-real.zip"
    meta = json.loads(policy.with_suffix(".meta.json").read_text())
    assert meta["trained_in"] == "real" and meta["frame_stack"] == 4 and meta["real_score"]["episodes"] == 100
    lengths = {}
    for name, pol in (("ppo", str(policy)), ("sticky", "sticky")):
        res = collect("doom-takecover", tmp_path / name, steps=1500, workers=1, seed=5, policy=pol, progress=False)
        assert res.error is None and res.steps == 1500
        lengths[name] = res.steps / max(1, len(open_dataset([str(tmp_path / name)]).episodes))
    assert lengths["ppo"] > 1.3 * lengths["sticky"], lengths
