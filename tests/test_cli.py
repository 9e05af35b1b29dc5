"""The CLI's one-line errors: an unknown world, a world without weights; examples/play.py's exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from odyssey_gym.cli import main

ROOT = Path(__file__).resolve().parent.parent
UNKNOWN = "unknown world 'doom-nope'; known worlds: doom-explore, doom-health, doom-takecover"

# every command that takes a world, with the other arguments it requires
WORLD_COMMANDS = {
    "collect": ["--world", "doom-nope", "--steps", "1", "--out", "{tmp}/data"],
    "leg": ["--world", "doom-nope", "--config", "{tmp}/x.yaml", "--work", "{tmp}/leg", "--minutes", "1"],
    "play": ["--world", "doom-nope", "--allow-dummy"],
    "record": ["--world", "doom-nope", "--out", "{tmp}/x.mp4"],
    "eval": ["--world", "doom-nope", "--data", "{tmp}/data", "--out", "{tmp}/report"],
    "train-probe": ["--world", "doom-nope", "--data", "{tmp}/data"],
    "card": ["--world", "doom-nope", "--report", "{tmp}/report.json"],
    "bench": ["--worlds", "doom-takecover,doom-nope"],
}


@pytest.mark.parametrize("command", sorted(WORLD_COMMANDS))
def test_unknown_world_is_one_line_and_exit_2(command, tmp_path, capsys):
    argv = [command] + [a.format(tmp=tmp_path) for a in WORLD_COMMANDS[command]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"odyssey-gym {command}: {UNKNOWN}") and err.count("\n") == 1, err


def test_play_web_unknown_world(capsys):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    assert main(["play", "--web", "--world", "doom-nope"]) == 2
    assert capsys.readouterr().err.startswith(f"odyssey-gym play: {UNKNOWN}")


@pytest.fixture
def no_shipped_weights(tmp_path, monkeypatch):
    """As if no world shipped weights."""
    import odyssey_gym.model as om

    monkeypatch.setattr(om, "WEIGHTS_ROOT", tmp_path / "no-weights")


def _one_weights_hint(err: str) -> None:
    assert "weights_dir" not in err and err.count("weights=DIR") == 1 and err.count("--weights DIR") == 1, err
    assert "Traceback" not in err and err.count("\n") == 1, err


def test_make_vec_without_weights_says_weights_keyword(no_shipped_weights):
    import gymnasium as gym

    from odyssey_gym.envs.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="no weights for world 'doom-takecover'") as e:
        gym.make_vec("odyssey_gym/DoomTakeCover-v0", num_envs=1)
    assert "weights=DIR" in str(e.value) and "weights_dir" not in str(e.value)
    assert "worlds with shipped weights: none" in str(e.value)


@pytest.mark.parametrize("command", [
    ["record", "--world", "doom-takecover", "--steps", "1", "--out", "{tmp}/x.mp4", "--device", "cpu"],
    ["play", "--world", "doom-takecover", "--allow-dummy", "--device", "cpu"],
    ["eval", "--world", "doom-takecover", "--data", "{tmp}/data", "--out", "{tmp}/report", "--device", "cpu"],
])
def test_missing_weights_is_one_hint(command, no_shipped_weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    assert main([a.format(tmp=tmp_path) for a in command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"odyssey-gym {command[0]}: no weights for world 'doom-takecover'")
    _one_weights_hint(err)


def _example(*args, **env):
    return subprocess.run([sys.executable, str(ROOT / "examples" / "play.py"), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_example_play_exits_non_zero_on_error():
    r = _example("--world", "doom-nope")
    assert r.returncode != 0 and UNKNOWN in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _example("--world", "doom-takecover", SDL_VIDEODRIVER="dummy")  # no window can open here
    assert r.returncode != 0 and "no display" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_makes_openmp_threads_sleep_while_waiting():
    """Set before torch loads OpenMP: spinning threads hold the cores that other work on the machine needs."""
    code = "import sys, odyssey_gym.cli, os; assert 'torch' not in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**env, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout.strip() == "PASSIVE", r.stderr


def test_version_and_worlds(capsys):
    import json

    import odyssey_gym
    from odyssey_gym.cli import main
    from odyssey_gym.model import available_worlds
    from odyssey_gym.worlds import WORLDS

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"odyssey-gym {odyssey_gym.__version__}"
    assert main(["worlds"]) == 0
    out = capsys.readouterr().out
    for w in WORLDS.values():
        assert w.name in out and w.env_id in out
    assert main(["worlds", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["world"] for r in rows} == set(WORLDS)
    assert {r["world"] for r in rows if r["weights"]} == set(available_worlds()) & set(WORLDS)


def test_every_command_has_the_same_device_option(capsys):
    """--device means one thing everywhere: default auto, the names torch knows, checked when parsed."""
    import argparse
    import importlib

    from odyssey_gym.cli import COMMANDS, device_arg

    with_device = []
    for name, (module, _) in COMMANDS.items():
        p = argparse.ArgumentParser(prog=name)
        importlib.import_module(module).add_arguments(p)
        dev = [a for a in p._actions if a.dest == "device"]
        if not dev:
            continue
        with_device.append(name)
        assert dev[0].default == "auto" and dev[0].type is device_arg, name
    assert {"record", "play", "train", "leg", "build", "eval", "train-probe", "bench"} <= set(with_device)
    assert device_arg("CPU") == "cpu" and device_arg("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown device 'tpu'"):
        device_arg("tpu")
    with pytest.raises(SystemExit) as e:
        main(["eval", "--world", "doom-explore", "--data", "d", "--out", "o", "--device", "tpu"])
    assert e.value.code == 2 and "argument --device" in capsys.readouterr().err
