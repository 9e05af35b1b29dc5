"""`odyssey-gym reproduce`: a campaign's log replays as one command: the same recordings, each leg for the steps
it trained of the schedule it planned, restartable, and a log too old to replay is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odyssey_gym.cli import main
from odyssey_gym.train.campaign import load_summary
from odyssey_gym.train.reproduce import leg_config, leg_replay

ROOT = Path(__file__).resolve().parents[1]
WORLD = "gym:CartPole-v1"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A two-leg campaign of a tiny model: leg 1 trains from scratch, leg 2 from its export and is stopped at
    step 8 of 20, as a time limit would stop it."""
    base = tmp_path_factory.mktemp("campaign")
    configs = base / "configs"
    configs.mkdir()
    text = (ROOT / "configs" / "tiny.yaml").read_text()
    for a, b in (("ae_steps: 200", "ae_steps: 12"), ("dyn_steps: 300", "dyn_steps: 20"),
                 ("save_every_steps: 100", "save_every_steps: 10")):
        assert a in text
        text = text.replace(a, b)
    (configs / "leg1.yaml").write_text(text)
    (configs / "leg2.yaml").write_text(text.replace("ae_steps: 12", "ae_steps: 0"))
    data = base / "data" / "cartpole"
    assert main(["collect", "--world", WORLD, "--steps", "300", "--policy", "random", "--seed", "5", "--out",
                 str(data), "--no-progress"]) == 0
    common = ["--data", str(data), "--device", "cpu", "--no-progress"]
    assert main(["train", "--config", str(configs / "leg1.yaml"), "--out", str(base / "r1"), "--export",
                 str(base / "w1"), *common]) == 0
    assert main(["train", "--config", str(configs / "leg2.yaml"), "--out", str(base / "r2"), "--phase", "dyn",
                 "--init-from", str(base / "w1"), "--max-steps", "8", "--export", str(base / "w2"), *common]) == 0
    return base


def reproduce(campaign, work, *extra):
    return main(["reproduce", WORLD, "--weights", str(campaign / "w2"), "--configs", str(campaign / "configs"),
                 "--work", str(work), "--device", "cpu", "--no-progress", *extra])


def test_a_campaign_log_replays_as_one_command(campaign, tmp_path, capsys):
    work = tmp_path / "replay"
    assert reproduce(campaign, work, "--dry-run") == 0
    printed = capsys.readouterr().out
    assert printed.count("odyssey-gym collect") == 1 and printed.count("odyssey-gym train") == 2
    assert "--max-steps 8" in printed and not work.exists()  # a dry run runs nothing

    assert reproduce(campaign, work) == 0
    original, replayed = load_summary(campaign / "w2"), load_summary(work / "legs" / "2" / "export")
    steps = [(leg["steps"], leg.get("dyn_steps_planned")) for leg in replayed["legs"]]
    assert steps == [(leg["steps"], leg.get("dyn_steps_planned")) for leg in original["legs"]]
    assert steps[1] == ({"ae": 0, "dyn": 8}, 20)
    # the same recording: same episode seeds, same frames
    assert replayed["data"]["seeds"] == original["data"]["seeds"]
    assert [leg["data"]["frames"] for leg in replayed["legs"]] == [leg["data"]["frames"] for leg in original["legs"]]
    assert "leg 2 of the campaign log" in (work / "legs" / "2" / "config.yaml").read_text()

    capsys.readouterr()
    assert reproduce(campaign, work) == 0  # done already: every stage skips
    printed = capsys.readouterr().out
    assert "leg 1: skipped" in printed and "leg 2: skipped" in printed and "skipped, holds" in printed


def test_bad_requests_and_old_logs_are_refused_by_name(campaign, tmp_path, capsys):
    assert reproduce(campaign, tmp_path / "a", "--legs", "2") == 2
    assert "--init-from" in capsys.readouterr().err
    assert reproduce(campaign, tmp_path / "a", "--legs", "1-3") == 2
    assert "legs 1-2" in capsys.readouterr().err
    old = tmp_path / "old"
    old.mkdir()
    summary = json.loads((campaign / "w2" / "train_summary.json").read_text())
    for leg in summary["legs"]:
        leg.pop("recipe", None)
    (old / "train_summary.json").write_text(json.dumps(summary))
    assert main(["reproduce", WORLD, "--weights", str(old), "--work", str(tmp_path / "b"), "--dry-run"]) == 2
    assert "cannot be replayed" in capsys.readouterr().err


def test_a_recipe_the_config_file_no_longer_names_goes_into_the_replayed_config(campaign, tmp_path):
    """A leg trained before a default changed (the objective, the termination weight) replays what it ran."""
    import yaml

    leg = load_summary(campaign / "w2")["legs"][0]
    leg["recipe"].update(objective="diffusion_forcing", term_pos_weight=1.0, dyn_lr=1e-4)
    out = leg_config(leg_replay(1, leg, campaign / "configs"), tmp_path / "config.yaml")
    d = yaml.safe_load(out.read_text())
    assert d["model"]["dynamics"]["objective"] == "diffusion_forcing"
    assert d["model"]["dynamics"]["term_pos_weight"] == 1.0
    assert d["train"]["dyn_lr"] == 1e-4


def test_a_decoder_leg_replays_as_a_decoder_run_cut_where_it_was(campaign, tmp_path):
    import yaml

    leg = load_summary(campaign / "w2")["legs"][0]
    leg = {**leg, "recipe": {**leg["recipe"], "phase": "decoder"}, "steps": {"decoder": 7}, "dyn_steps_planned": 0,
           "decoder_steps_planned": 12}
    rep = leg_replay(1, leg, campaign / "configs")
    assert rep.phase == "decoder" and rep.max_steps == 7 and rep.ae_steps == 12
    d = yaml.safe_load(leg_config(rep, tmp_path / "config.yaml").read_text())
    assert d["train"]["ae_steps"] == 12 and d["train"]["dyn_steps"] == 0


@pytest.mark.parametrize("world", ["doom-explore", "doom-takecover"])
def test_every_shipped_campaign_replays(world, tmp_path, capsys):
    """Each shipped world's card reproduces with `odyssey-gym reproduce WORLD`: its log names every leg's config,
    recordings and steps (checked by a dry run, which records and trains nothing)."""
    assert main(["reproduce", world, "--work", str(tmp_path / "w"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    legs = load_summary(ROOT / "odyssey_gym" / "weights" / world)["legs"]
    assert printed.count("odyssey-gym train") == len(legs)
    assert not (tmp_path / "w").exists()
