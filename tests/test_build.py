"""`odyssey-gym build` from a Gymnasium game to a registered env, on a CPU in seconds (docs/OWN_WORLD.md's example,
with a smaller budget): record, train, probe, eval, card; restartable; the result opens with gym.make."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from odyssey_gym.cli import main

ROOT = Path(__file__).resolve().parents[1]
EVAL_ARGS = ("--windows 2 --horizons 1,4 --rollout-steps 200 --rollout-envs 2 --latency-steps 3 --throughput-batch 2 "
             "--probe-transitions 16")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    text = (ROOT / "configs" / "tiny.yaml").read_text()
    for a, b in (("ae_steps: 200", "ae_steps: 20"), ("dyn_steps: 300", "dyn_steps: 20"),
                 ("save_every_steps: 100", "save_every_steps: 10")):
        assert a in text
        text = text.replace(a, b)
    p = tmp_path_factory.mktemp("cfg") / "tiny-build.yaml"
    p.write_text(text)
    return str(p)


def build(out, config, *extra):
    return main(["build", "gym:CartPole-v1", "--out", str(out), "--config", config, "--steps", "300", "--policy",
                 "random", "--probe-steps", "20", "--eval-args", EVAL_ARGS, "--device", "cpu", "--no-progress", *extra])


def test_build_a_gym_game_into_a_registered_env(tmp_path, config, capsys):
    import gymnasium as gym

    import odyssey_gym

    out = tmp_path / "cartpole"
    assert build(out, config, "--stages", "record,train") == 0  # a build cut off after training...
    manifest = json.loads((out / "build.json").read_text())
    assert set(manifest["stages"]) == {"record", "train"}
    capsys.readouterr()
    assert build(out, config) == 2  # ...is not continued by accident
    assert "add --resume" in capsys.readouterr().err
    assert build(out, config, "--resume") == 0  # ...and carries on where it stopped
    printed = capsys.readouterr().out
    assert "record: skipped" in printed and "train: skipped" in printed and "card: done" in printed
    manifest = json.loads((out / "build.json").read_text())
    assert set(manifest["stages"]) == {"record", "train", "probe", "eval", "card"}
    assert manifest["plan"]["world"] == "gym:CartPole-v1"
    w = out / "weights"
    for f in ("config.json", "start_bank.npz", "train_summary.json", "MODEL_CARD.md", "probe/probe.json"):
        assert (w / f).is_file(), f
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["world"] == "gym:CartPole-v1" and report["fidelity"]["1"]["windows"] == 2
    assert "odyssey-gym build gym:CartPole-v1" in (w / "MODEL_CARD.md").read_text()

    assert odyssey_gym.register_world("TinyCartPoleDream-v0", weights=w) == "gym:CartPole-v1"
    env = gym.make("TinyCartPoleDream-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    obs, reward, *_ = env.step(env.action_space.sample())
    assert obs.shape == (64, 64, 3) and np.isfinite(reward)
    env.close()
    envs = gym.make_vec("TinyCartPoleDream-v0", num_envs=2)
    assert envs.reset(seed=0)[0].shape == (2, 64, 64, 3)
    envs.close()
    with pytest.raises(ValueError, match="already registered"):
        odyssey_gym.register_world("TinyCartPoleDream-v0", weights=w)


@pytest.mark.parametrize("extra,match", [
    (["--stages", "record,fly"], "--stages"),
    (["--steps", "3"], "--steps must be >= 10"),
    (["--policy", "genius"], "--policy"),
    (["--minutes", "0"], "--minutes"),
])
def test_build_refuses_bad_arguments(tmp_path, config, capsys, extra, match):
    assert build(tmp_path / "b", config, *extra) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_build_refuses_a_resume_that_changes_the_plan(tmp_path, config, capsys):
    out = tmp_path / "b"
    assert build(out, config, "--stages", "record") == 0
    capsys.readouterr()
    assert main(["build", "gym:CartPole-v1", "--out", str(out), "--config", config, "--steps", "500", "--policy",
                 "random", "--resume", "--device", "cpu"]) == 2
    assert "steps 300 -> 500" in capsys.readouterr().err


def test_register_world_needs_a_weights_folder(tmp_path):
    import odyssey_gym

    with pytest.raises(FileNotFoundError, match="not a weights folder"):
        odyssey_gym.register_world("Nothing-v0", weights=tmp_path)


def test_build_takes_a_minari_dataset_as_its_recording(tmp_path, config, capsys):
    """--from-minari: a Minari dataset's episodes become the build's train, held-out and probe sets, disjoint,
    every episode used once; the card's one command says where they came from."""
    from odyssey_gym.data.dataset import Dataset
    from odyssey_gym.data.minari_io import export_minari
    from odyssey_gym.train.build import reproduce_command

    rec = tmp_path / "rec"
    assert main(["collect", "--world", "gym:CartPole-v1", "--steps", "300", "--policy", "random", "--seed", "5",
                 "--out", str(rec), "--no-progress"]) == 0
    source = Dataset(rec)
    minari_dir = export_minari(source, "odyssey/cartpole/random-v0", path=tmp_path / "minari")
    out = tmp_path / "b"
    argv = ["build", "gym:CartPole-v1", "--out", str(out), "--config", config, "--from-minari", str(minari_dir),
            "--stages", "record", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    manifest = json.loads((out / "build.json").read_text())
    counts = manifest["stages"]["record"]["episodes"]
    assert sum(counts.values()) == len(source) and min(counts.values()) >= 1
    lengths = {}
    for name in ("train", "heldout", "probe"):
        ds = Dataset(out / "data" / name)
        assert len(ds) == counts[name]
        lengths[name] = sorted(len(ds.load_episode(i).actions) for i in range(len(ds)))
    assert sorted(sum(lengths.values(), [])) == sorted(len(source.load_episode(i).actions) for i in range(len(source)))
    assert counts["train"] > counts["probe"] >= counts["heldout"]
    assert reproduce_command(manifest["plan"]) == (f"odyssey-gym build gym:CartPole-v1 --out DIR --config {config} "
                                                   f"--from-minari {minari_dir}")
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0  # done: skipped
    assert "record: skipped" in capsys.readouterr().out
    # a dataset that is not there fails the stage with its name, and records nothing
    bad = tmp_path / "b2"
    rc = main(["build", "gym:CartPole-v1", "--out", str(bad), "--config", config, "--from-minari",
               str(tmp_path / "nope"), "--stages", "record", "--device", "cpu", "--no-progress"])
    assert rc != 0 and "nope" in capsys.readouterr().err
    assert not (bad / "build.json").exists()
