"""`odyssey-gym train-probe` then `odyssey-gym eval`, end to end on real ViZDoom frames and a tiny model (CPU)."""

from __future__ import annotations

import json

import pytest

from odyssey_gym.cli import main
from odyssey_gym.data.recorder import collect

WORLD = "doom-takecover"


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    collect(WORLD, root / "probe", steps=400, workers=1, seed=71, progress=False)
    collect(WORLD, root / "heldout", steps=300, workers=1, seed=72, progress=False)
    return root


def test_train_probe_refuses_the_world_models_training_seeds(real_data, tmp_path, capsys):
    from odyssey_gym.data.dataset import open_dataset
    from tiny_weights import make_tiny_weights

    w = make_tiny_weights(WORLD, tmp_path / "w")
    seed = int(open_dataset([str(real_data / "probe")]).episodes[0]["seed"])
    (w / "train_summary.json").write_text(json.dumps({"data": {"seeds": [seed, 5]}}))
    rc = main(["train-probe", "--world", WORLD, "--data", str(real_data / "probe"), "--weights", str(w),
               "--steps", "2", "--device", "cpu"])
    assert rc == 2
    assert "used to train" in capsys.readouterr().err
    assert not (w / "probe").exists()
    assert main(["train-probe", "--world", "doom-nowhere", "--data", str(real_data / "probe")]) == 2


def test_train_probe_then_eval_writes_every_section(real_data, tmp_path, capsys):
    from tiny_weights import make_tiny_weights

    w = make_tiny_weights(WORLD, tmp_path / "w")
    rc = main(["train-probe", "--world", WORLD, "--data", str(real_data / "probe"), "--val-data", str(real_data / "heldout"),
               "--weights", str(w), "--steps", "40", "--batch", "32", "--device", "cpu"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "doom-takecover probe: 100%" in err and "40/40" in err  # a bar with ETA over the training steps
    cfg = json.loads((w / "probe" / "probe.json").read_text())
    assert cfg["world"] == WORLD and cfg["trained_steps"] == 40 and 0 <= cfg["extra"]["val_mean_accuracy"] <= 1
    out = tmp_path / "report"
    rc = main(["eval", "--world", WORLD, "--weights", str(w), "--data", str(real_data / "heldout"), "--out", str(out),
               "--device", "cpu", "--horizons", "1,4", "--windows", "4", "--rollout-steps", "600", "--rollout-envs", "2",
               "--latency-steps", "3", "--throughput-batch", "2", "--probe-transitions", "16"])
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["probe"]["dir"] == "w/probe"  # found beside the weights without --probe; named, not a machine path
    assert r["weights"] == "w" and r["data"]["dirs"] == ["heldout"]
    assert str(tmp_path) not in (out / "report.json").read_text()
    assert r["controllability"]["transitions"] == 16
    assert 0 <= r["controllability"]["ratio"]["mean"] < 10
    rz = r["stability"]["realism"]
    assert len(rz["per_minute"]) == 2 and all(v is not None and v >= 0 for v in rz["per_minute"])
    assert rz["samples_per_minute"][0] > 100
    assert r["stability"]["video"] == "long_rollout.mp4" and (out / "long_rollout.mp4").stat().st_size > 1000
    for png in ("psnr_vs_horizon.png", "controllability_confusion.png", "realism_vs_minute.png", "strip.png"):
        assert (out / png).stat().st_size > 1000, png
    md = (out / "report.md").read_text()
    assert "Controllability" in md and "Realism per minute" in md
    # fidelity always stands beside copy-last and the 2-px blurred real frame, and realism beside the blurred floor
    f1 = r["fidelity"]["1"]
    assert f1["teacher_forced_gap_db"] == pytest.approx(f1["teacher_forced_psnr"] - f1["teacher_forced_copy_last_psnr"])
    assert f1["open_loop_gap_db"] == pytest.approx(f1["open_loop_psnr"] - f1["open_loop_copy_last_psnr"])
    assert 10 < f1["blurred_real_psnr"] < 60
    assert f1["teacher_forced_gap_se_db"] >= 0 and f1["open_loop_gap_se_db"] >= 0 and " ± " in md
    assert "Energy score of two draws" in md and 0 < f1["blurred_real_energy"] < f1["open_loop_copy_last_energy"] + 1
    assert rz["blurred_real"] > rz["real_floor"] and len(rz["minutes_better_than_blurred_real"]) == 2
    # the like-for-like reference: the real engine under the rollout's own held keys
    eng = rz["engine"]
    assert "skipped" not in eng, eng
    assert len(eng["per_minute"]) == 2 and all(v >= 0 for v in eng["per_minute"])
    # the floor and the 2-px bar are both reported, but not ordered here: at 600 engine frames a half the floor's
    # sampling noise is as large as what a 2-px blur adds (the thousands of frames of a real eval order them)
    assert eng["blurred_real"] >= 0 and eng["real_floor"] >= 0 and len(eng["minutes_better_than_blurred_real"]) == 2
    assert eng["vs_heldout"] > 0 and eng["reference_frames"] >= 100
    assert "Against the real engine under the same held keys" in md
    assert "gap dB" in md and "public env API" in md
    # --no-probe skips both sections
    rc = main(["eval", "--world", WORLD, "--weights", str(w), "--data", str(real_data / "heldout"), "--out", str(tmp_path / "r2"),
               "--device", "cpu", "--horizons", "1", "--windows", "2", "--rollout-steps", "0", "--latency-steps", "2",
               "--throughput-batch", "2", "--no-probe", "--sampling-steps", "2", "--renoise", "fresh",
               "--context-noise", "0.1", "--detail-carry", "0.25"])
    r2 = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert rc == 0 and "controllability" not in r2 and "probe" not in r2
    assert r2["sampler"] == {"sampling_steps": 2, "renoise": "fresh", "context_noise": 0.1,
                             "detail_carry": 0.25}  # the knobs it ran with
    assert r["sampler"]["renoise"] == "ddim" and r["sampler"]["context_noise"] == 0.0
    assert r["sampler"]["detail_carry"] == 0.0
    with pytest.raises(SystemExit, match="context-noise"):
        main(["eval", "--world", WORLD, "--weights", str(w), "--data", str(real_data / "heldout"),
              "--out", str(tmp_path / "r3"), "--device", "cpu", "--context-noise", "-1"])
    with pytest.raises(SystemExit, match="detail-carry"):
        main(["eval", "--world", WORLD, "--weights", str(w), "--data", str(real_data / "heldout"),
              "--out", str(tmp_path / "r3"), "--device", "cpu", "--detail-carry", "-1"])


def test_speed_names_the_mode_the_sampler_ran_and_reports_a_fallback(real_data, tmp_path, monkeypatch):
    """A sampler that cannot compile falls back to eager by itself; eval must not time that as "compile"."""
    from tiny_weights import make_tiny_weights
    from odyssey_gym.model.sampler import Sampler

    w = make_tiny_weights(WORLD, tmp_path / "w")
    args = ["eval", "--world", WORLD, "--weights", str(w), "--data", str(real_data / "heldout"), "--device", "cpu",
            "--horizons", "1", "--windows", "2", "--rollout-steps", "0", "--latency-steps", "2", "--throughput-batch", "2",
            "--no-probe", "--compile"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    speed = json.loads((tmp_path / "a" / "report.json").read_text())["speed"]
    assert speed["batch_1"]["mode"] == "eager" and speed["batch_2"]["mode"] == "eager"  # no compile on a CPU

    real_init, real_prepare = Sampler.__init__, Sampler.prepare

    def init(self, *a, compile=False, **kw):
        real_init(self, *a, compile=compile, **kw)
        self.asked_to_compile = compile

    def prepare(self):
        if getattr(self, "asked_to_compile", False):  # as a failed compile does: fall back to eager and say why
            self.fallback_error, self.mode = "InductorError: boom", "eager"
            return self.mode
        return real_prepare(self)

    monkeypatch.setattr(Sampler, "__init__", init)
    monkeypatch.setattr(Sampler, "prepare", prepare)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    speed = json.loads((tmp_path / "b" / "report.json").read_text())["speed"]
    assert speed["failed_modes"] == [f"batch {b} compile: RuntimeError: InductorError: boom" for b in (1, 2)]
    assert speed["batch_1"]["mode"] == "eager" and speed["batch_1"]["latency_ms_p50"] > 0
