"""`odyssey-gym card`: the model card is written from config.json, the campaign log and an eval report."""

from __future__ import annotations

import json

from odyssey_gym.cli import main
from tiny_weights import make_tiny_weights

WORLD = "doom-takecover"


def _report(world=WORLD):
    fid = {"windows": 4, "teacher_forced_psnr": 30.5, "teacher_forced_ssim": 0.8, "open_loop_psnr": 29.0,
           "open_loop_ssim": 0.75, "teacher_forced_copy_last_psnr": 29.5, "open_loop_copy_last_psnr": 24.0}
    return {"world": world, "device": "cpu", "dtype": "float32",
            "data": {"frames": 300, "episodes": 3, "seeds": [901, 902, 903]},
            "fidelity": {"1": fid, "16": fid}, "autoencoder": {"psnr": 40.0, "ssim": 0.98, "frames": 8},
            "heads": {}, "speed": {"batch_1": {"batch_size": 1, "latency_ms_p50": 4.2, "latency_ms_p99": 4.9,
                                               "frames_per_s": 230.0, "mode": "eager"}}}


def test_card_from_a_two_leg_campaign(tmp_path, capsys):
    w = make_tiny_weights(WORLD, tmp_path / "w")
    legs = [{"leg": 1, "steps": {"ae": 10, "dyn": 20}, "gpu_minutes": 1.5, "gpu": "GPU-A", "git_commit": "aaa",
             "data": {"frames": 100, "episodes": 2, "seeds": [1, 2], "datasets": [{"name": "tc-sticky-1"}]}},
            {"leg": 2, "steps": {"ae": 0, "dyn": 30}, "gpu_minutes": 2.0, "gpu": "GPU-B", "git_commit": "bbb",
             "init_from": "weights", "data": {"frames": 150, "episodes": 3, "seeds": [3]}}]
    (w / "train_summary.json").write_text(json.dumps({"world": WORLD, "world_version": 1, "legs": legs}))
    (tmp_path / "report.json").write_text(json.dumps(_report()))
    out = tmp_path / "CARD.md"
    assert main(["card", "--world", WORLD, "--weights", str(w), "--report", str(tmp_path / "report.json"),
                 "--out", str(out), "--notes", "the loss was still falling"]) == 0
    card = out.read_text()
    assert card.startswith(f"# Model card: {WORLD}")
    assert "trained on 3 episode seeds (min 1, max 3" in card
    assert "- Leg 1: autoencoder 10, dynamics 20 steps; 1.5 GPU-minutes on GPU-A; data 100 frames, 2 episodes (tc-sticky-1)." in card
    assert "- Leg 2: autoencoder 0, dynamics 30 steps; 2.0 GPU-minutes on GPU-B" in card
    assert "- In all: 2 legs, autoencoder 10 and dynamics 50 steps, 3.5 GPU-minutes." in card
    assert "- Code: commit bbb." in card  # the last leg's
    assert "**30.50 dB, missed**" in card and "**+5.00 dB over copy-last, missed**" in card
    assert "p50 4.2 ms, p99 4.9 ms (eager), met" in card
    assert "seeds 901, 902, 903 (" in card and "## What limits these numbers\n\nthe loss was still falling" in card
    assert str(out) in capsys.readouterr().out


def test_card_refuses_a_report_of_another_world(tmp_path, capsys):
    w = make_tiny_weights(WORLD, tmp_path / "w")
    (w / "train_summary.json").write_text(json.dumps({"world": WORLD, "world_version": 1, "legs": []}))
    (tmp_path / "report.json").write_text(json.dumps(_report("doom-explore")))
    assert main(["card", "--world", WORLD, "--weights", str(w), "--report", str(tmp_path / "report.json")]) == 2
    assert "the report for 'doom-explore'" in capsys.readouterr().err
    assert not (w / "MODEL_CARD.md").exists()
