"""`odyssey-gym leg` end to end on the tiny world (CPU): stages, skipping on re-run, landing, refused seeds."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_train import TINY, make_dataset, write_config

from odyssey_gym.cli import main
from odyssey_gym.train import leg as legmod
from odyssey_gym.train.campaign import append_leg, load_summary, write_summary

WORLD = "doom-takecover"
EVAL_ARGS = "--horizons 1,4 --windows 2 --rollout-steps 0 --latency-steps 2 --throughput-batch 2 --no-probe"
STAGES = ("before", "train", "after", "result", "land")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("legdata")
    return make_dataset(root / "takecover-train", seed=0), make_dataset(root / "takecover-heldout", episodes=3, seed=7)


def tiny_weights(path: Path) -> Path:
    """Tiny random weights with a one-leg campaign log and a probe folder (which landing must keep)."""
    from tiny_weights import make_tiny_weights

    w = make_tiny_weights(WORLD, path)
    log = append_leg(None, {"steps": {"ae": 5, "dyn": 5}, "gpu_minutes": 0.5,
                            "data": {"frames": 10, "episodes": 1, "seeds": [424242], "datasets": [{"name": "first"}]}},
                     WORLD, 1)
    write_summary(w, log)
    (w / "probe").mkdir()
    (w / "probe" / "probe.safetensors").write_bytes(b"kept as is")
    return w


def leg_argv(root: Path, datasets, *extra) -> list[str]:
    """The leg command of a root dir holding weights/, leg.yaml and the leg's work dir leg/."""
    train, heldout = datasets
    cfg = root / "leg.yaml"
    if not cfg.exists():
        write_config(cfg, {**TINY, "world": WORLD}, ae_steps=0, dyn_steps=6, save_every_steps=3)
    return ["leg", "--world", WORLD, "--config", str(cfg), "--work", str(root / "leg"), "--minutes", "5",
            "--weights", str(root / "weights"), "--data", str(train), "--heldout-data", str(heldout),
            "--device", "cpu", "--eval-args", EVAL_ARGS, "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished_leg(tmp_path_factory, datasets):
    """A leg run once, to its end: (its root dir, its stdout). Tests work on copies (`copy_leg`)."""
    root = tmp_path_factory.mktemp("leg")
    tiny_weights(root / "weights")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(leg_argv(root, datasets))
    assert rc == 0, out.getvalue()[-3000:]
    return root, out.getvalue()


def copy_leg(finished_leg, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(finished_leg[0], root)
    return root


def stage_lines(out: str) -> dict[str, str]:
    """The progress line of each stage, by stage name."""
    lines = {}
    for line in out.splitlines():
        if line.startswith("[") and "s] " in line:
            stage, _, what = line.split("s] ", 1)[1].partition(": ")
            lines[stage] = what
    return lines


def set_before_psnr(work: Path, value: float) -> None:
    """Make the "before" weights look as good (or bad) as `value` dB at every horizon (an energy score to match:
    0 for a perfect +1000 dB, 1 for -1000)."""
    p = work / "eval-before" / "report.json"
    r = json.loads(p.read_text())
    for v in r["fidelity"].values():
        v["teacher_forced_psnr"] = v["open_loop_psnr"] = value
        v["teacher_forced_energy"] = v["open_loop_energy"] = 0.0 if value > 0 else 1.0
    p.write_text(json.dumps(r))


def weight_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_leg_end_to_end_skips_on_rerun_and_lands_only_when_improved(finished_leg, tmp_path, datasets, capsys):
    root = copy_leg(finished_leg, tmp_path)
    w, work, argv = root / "weights", root / "leg", leg_argv(root, datasets)
    original = weight_bytes(w)

    lines = stage_lines(finished_leg[1])
    assert lines["record"].startswith("nothing to record")
    assert set(STAGES) <= set(lines) and not any(lines[s].startswith("skipped") for s in STAGES[:4])
    assert "trained 6/6 dynamics steps" in lines["train"] and lines["land"] == "not landed: --land not given"
    summary = load_summary(work / "export")
    assert [leg["leg"] for leg in summary["legs"]] == [1, 2] and "eval" not in summary["legs"][0]
    entry = summary["legs"][-1]["eval"]
    before = json.loads((work / "eval-before" / "report.json").read_text())["fidelity"]
    after = json.loads((work / "eval-after" / "report.json").read_text())["fidelity"]
    for h in ("1", "4"):
        assert entry["before"][h]["tf_psnr"] == pytest.approx(before[h]["teacher_forced_psnr"], abs=1e-3)
        assert entry["after"][h]["ol_psnr"] == pytest.approx(after[h]["open_loop_psnr"], abs=1e-3)
        assert entry["after"][h]["copy_last_ol"] == pytest.approx(after[h]["open_loop_copy_last_psnr"], abs=1e-3)
    assert entry["improved"] == legmod.improved(entry["before"], entry["after"])
    assert entry["realism_before"] is None and entry["realism_after"] is None  # no rollout in these evals
    assert entry["heldout"][0]["name"] == "takecover-heldout" and entry["heldout"][0]["seeds"] == [700, 701, 702]
    assert str(finished_leg[0]) not in (work / "export" / "train_summary.json").read_text()

    # the same command again: every stage is found done
    assert main(argv) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert all(lines[s].startswith("skipped") for s in STAGES[:4]), lines
    assert len(load_summary(work / "export")["legs"]) == 2

    # "before" better than anything the export reaches: not landed, WEIGHTS untouched
    set_before_psnr(work, 1000.0)
    assert main(argv + ["--land"]) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert lines["land"].startswith("not landed: the held-out eval did not improve")
    assert load_summary(work / "export")["legs"][-1]["eval"]["improved"] is False
    assert weight_bytes(w) == original

    # "before" worse than anything: landed, the export's files in WEIGHTS, the probe kept
    set_before_psnr(work, -1000.0)
    assert main(argv + ["--land"]) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert lines["land"].startswith("landed: ")
    exported = weight_bytes(work / "export")
    assert weight_bytes(w) == exported  # the landed files are exactly the export's ...
    assert (w / "probe" / "probe.safetensors").read_bytes() == b"kept as is"  # ... and probe/ is kept
    assert load_summary(w)["legs"][-1]["eval"]["improved"] is True
    assert not list(root.glob(".weights.landing-*"))
    from odyssey_gym.model import WorldModel

    WorldModel.from_pretrained(w)
    assert main(argv + ["--land"]) == 0
    assert stage_lines(capsys.readouterr().out)["land"].startswith("landed (already")


def test_cut_off_training_resumes_from_its_checkpoint(finished_leg, tmp_path, datasets, capsys):
    root = copy_leg(finished_leg, tmp_path)
    argv, work = leg_argv(root, datasets), root / "leg"
    shutil.rmtree(work / "export")  # as if the job ended between the run's last checkpoint and its export
    shutil.rmtree(work / "eval-after")
    assert main(argv) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert lines["before"].startswith("skipped") and lines["train"].startswith("resumed, trained 6/6")
    assert "eval" in load_summary(work / "export")["legs"][-1]


def test_a_partial_eval_report_is_not_taken_as_done(tmp_path):
    p = tmp_path / "report.json"
    p.write_text(json.dumps({"fidelity": {"1": {"windows": 2}}}))  # what eval leaves when it is cut off
    assert legmod.finished_report(p) is None
    p.write_text(json.dumps({"fidelity": {}, "eval_seconds": 1.0}))
    assert legmod.finished_report(p) is not None


def test_heldout_seeds_that_were_trained_on_are_refused(tmp_path, datasets, capsys):
    w = tiny_weights(tmp_path / "weights")
    base = leg_argv(tmp_path, datasets)
    no_data = [a for a in base if a not in (str(d) for d in datasets)]
    no_data = [a for a in no_data if a not in ("--data", "--heldout-data")]
    # a --heldout seed that --record also uses: refused before anything is recorded
    rc = main(no_data + ["--record", "sticky:5:100,walker:6:100", "--heldout", "human:6:50"])
    assert rc == 2 and "--heldout seed 6 is a training seed (--record)" in capsys.readouterr().err
    assert not (tmp_path / "leg" / "data").exists()
    # a seed an earlier leg of the weights' campaign recorded its training data with
    log = load_summary(w)
    log["legs"][0]["data"]["datasets"] = [{"name": "first", "runs": [{"seed": 9, "policy": "sticky"}]}]
    write_summary(w, log)
    rc = main(no_data + ["--record", "sticky:5:100", "--heldout", "human:9:50"])
    assert rc == 2 and "--heldout seed 9 is a training seed (dataset first of leg 1" in capsys.readouterr().err
    # existing held-out data whose episodes share engine seeds with the training data
    train, _ = datasets
    overlap = make_dataset(tmp_path / "overlap", episodes=2, seed=0)
    rc = main(no_data + ["--data", str(train), "--heldout-data", str(overlap)])
    assert rc == 2 and "shares 2 episode seed(s)" in capsys.readouterr().err
    assert not (tmp_path / "leg" / "eval-before").exists()


def test_bad_arguments_are_named(tmp_path, datasets, capsys):
    tiny_weights(tmp_path / "weights")
    argv = leg_argv(tmp_path, datasets)

    def err(*change):
        args = list(argv)
        for flag, value in zip(change[::2], change[1::2]):
            args[args.index(flag) + 1] = value
        assert main(args) == 2
        return capsys.readouterr().err

    assert "--eval-args must not set --out" in err("--eval-args", "--out elsewhere")
    assert "--eval-args" in err("--eval-args", "--horizon-typo 3")
    assert "--weights" in err("--weights", str(tmp_path / "none"))
    assert "--minutes must be > 0" in err("--minutes", "0")
    assert "--heldout-data" in err("--heldout-data", str(tmp_path / "missing"))
    rc = main(argv + ["--record", "sticky:1"])
    assert rc == 2 and "--record 'sticky:1': expected policy:seed:steps" in capsys.readouterr().err
    rc = main(argv + ["--record", "nobody:1:10"])
    assert rc == 2 and "policy 'nobody'" in capsys.readouterr().err


def test_a_failing_training_stops_the_leg(finished_leg, tmp_path, datasets, capsys):
    root = copy_leg(finished_leg, tmp_path)
    for stage in ("run", "export", "eval-after"):
        shutil.rmtree(root / "leg" / stage)
    # a model that does not match the weights it starts from
    write_config(root / "leg.yaml", {**TINY, "world": WORLD, "model": {"preset": "tiny", "dynamics": {"n_layer": 3}}},
                 ae_steps=0)
    rc = main(leg_argv(root, datasets))
    captured = capsys.readouterr()
    assert rc != 0 and "train failed" in captured.err and "weights do not match the configured model" in captured.err
    assert "after" not in stage_lines(captured.out) and not (root / "leg" / "eval-after").exists()


def test_a_decoder_leg_trains_only_the_decoder_of_the_weights(finished_leg, tmp_path, datasets, capsys):
    """`leg --phase decoder`: the same stages, with `train --phase decoder`; the export keeps the weights' encoder
    and dynamics and logs a decoder leg."""
    from odyssey_gym.model import WorldModel

    root = copy_leg(finished_leg, tmp_path)
    for stage in ("run", "export", "eval-after"):
        shutil.rmtree(root / "leg" / stage)
    write_config(root / "leg.yaml", {**TINY, "world": WORLD}, ae_steps=4, dyn_steps=6)
    assert main(leg_argv(root, datasets, "--phase", "decoder")) == 0
    lines = stage_lines(capsys.readouterr().out)
    assert lines["before"].startswith("skipped") and lines["train"].startswith("trained 4 decoder steps")
    sa = WorldModel.from_pretrained(root / "weights").state_dict()
    sb = WorldModel.from_pretrained(root / "leg" / "export").state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("ae.decoder."))
    assert not all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith("ae.decoder."))
    assert load_summary(root / "leg" / "export")["legs"][-1]["steps"] == {"decoder": 4}


# ============================================================================ the pieces, one by one


def test_recording_tops_datasets_up_and_skips_full_ones(tmp_path, monkeypatch, capsys):
    """The record stage without an engine: `collect` replaced by a writer of synthetic episodes."""
    from odyssey_gym.data import recorder
    from odyssey_gym.data.recorder import CollectResult

    calls = []

    def fake_collect(world, out, steps, workers, seed, policy, progress):
        calls.append((Path(out).name, steps, seed, policy))
        make_dataset(Path(out), episodes=steps // 40, length=40, seed=seed + len(calls))
        return CollectResult(out=str(out), steps=steps, episodes=steps // 40)

    monkeypatch.setattr(recorder, "collect", fake_collect)
    plan = legmod.Plan(world=WORLD, config=Path("c.yaml"), work=tmp_path, weights=tmp_path / "w", minutes=1.0,
                       record=legmod.parse_recordings("sticky:1:120,walker:3:80", "--record"),
                       heldout=legmod.parse_recordings("human:9:40", "--heldout"), data=[], heldout_data=[], workers=1,
                       device="cpu", eval_args=[], land=False, progress=False)
    make_dataset(tmp_path / "data" / f"{WORLD}-walker-3", episodes=1, length=40, seed=50)  # cut off at 40 of 80
    legmod.record_stage(plan, legmod.Clock())
    assert calls == [(f"{WORLD}-sticky-1", 120, 1, "sticky"), (f"{WORLD}-walker-3", 40, 3, "walker"),
                     (f"{WORLD}-heldout-human-9", 40, 9, "human")]
    assert [d.name for d in plan.train_dirs] == [f"{WORLD}-sticky-1", f"{WORLD}-walker-3"]
    assert [d.name for d in plan.heldout_dirs] == [f"{WORLD}-heldout-human-9"]
    capsys.readouterr()
    legmod.record_stage(plan, legmod.Clock())  # everything is there now
    assert len(calls) == 3 and capsys.readouterr().out.count("skipped, holds") == 3



def fid(tf1, ol_last, last="16"):
    return {"1": {"tf_psnr": tf1, "ol_psnr": 0.0}, "4": {"tf_psnr": 0.0, "ol_psnr": 0.0},
            last: {"tf_psnr": 0.0, "ol_psnr": ol_last}}


@pytest.mark.parametrize("before, after, expected", [
    (fid(20, 15), fid(20, 15), True),  # equal counts: nothing got worse
    (fid(20, 15), fid(21, 16), True),
    (fid(20, 15), fid(21, 14.9), False),  # sharper next frame, worse drift
    (fid(20, 15), fid(19.9, 17), False),  # less drift, worse next frame
    (fid(20, 15), fid(float("nan"), 16), False),
    (fid(20, 15, last="64"), {"1": {"tf_psnr": 30, "ol_psnr": 30}}, True),  # only h=1 is shared: it decides both
    (fid(20, 15), {}, False),
])
def test_improved_needs_both_one_step_and_longest_open_loop(before, after, expected):
    assert legmod.improved(before, after) is expected


@pytest.mark.parametrize("realism_before, realism_after, expected", [
    (1.0, 1.1, True),  # within the slack
    (1.0, 1.2, False),  # sharper PSNR, but the long rollout faded
    (1.0, float("nan"), False),
    (None, 5.0, True),  # a side without a rollout: PSNR alone decides
])
def test_improved_also_needs_the_rollout_realism_where_both_evals_measured_it(realism_before, realism_after, expected):
    assert legmod.improved(fid(20, 15), fid(21, 16), realism_before, realism_after) is expected
    assert legmod.improved(fid(20, 15), fid(19, 16), realism_before, realism_after) is False


def test_realism_is_the_mean_over_minutes_against_the_engine_else_heldout_play():
    engine = {"stability": {"realism": {"per_minute": [9.0, 9.0], "engine": {"per_minute": [1.0, 2.0, 4.5]}}}}
    assert legmod.realism(engine) == 2.5
    assert legmod.realism({"stability": {"realism": {"per_minute": [3.0, 5.0]}}}) == 4.0
    assert legmod.realism({"fidelity": {}}) is None


def set_rollout_realism(report: Path, per_minute: list[float]) -> None:
    r = json.loads(report.read_text())
    r["stability"] = {"realism": {"per_minute": [99.0] * len(per_minute), "engine": {"per_minute": per_minute}}}
    report.write_text(json.dumps(r))


def test_a_leg_whose_rollouts_fade_is_not_landed_even_when_its_psnr_improved(finished_leg, tmp_path, datasets, capsys):
    root = copy_leg(finished_leg, tmp_path)
    w, work, argv = root / "weights", root / "leg", leg_argv(root, datasets, "--land")
    original = weight_bytes(w)
    set_before_psnr(work, -1000.0)
    set_rollout_realism(work / "eval-before" / "report.json", [1.0, 1.0])
    set_rollout_realism(work / "eval-after" / "report.json", [2.0, 3.0])
    assert main(argv) == 0
    line = stage_lines(capsys.readouterr().out)["land"]
    assert line.startswith("not landed") and "rollout realism 1.0 -> 2.5" in line, line
    assert weight_bytes(w) == original
    entry = load_summary(work / "export")["legs"][-1]["eval"]
    assert (entry["realism_before"], entry["realism_after"], entry["improved"]) == (1.0, 2.5, False)

    set_rollout_realism(work / "eval-after" / "report.json", [1.0, 1.1])
    assert main(argv) == 0
    assert stage_lines(capsys.readouterr().out)["land"].startswith("landed: ")
    assert load_summary(w)["legs"][-1]["eval"]["improved"] is True


def fake_weights(d: Path, shards: list[str], tag: str) -> Path:
    d.mkdir(parents=True)
    for s in shards:
        (d / s).write_text(f"{tag} {s}")
    (d / "config.json").write_text(json.dumps({"weights": {"shards": shards}, "tag": tag}))
    (d / "start_bank.npz").write_text(tag)
    (d / "train_summary.json").write_text(json.dumps({"tag": tag}))
    return d


def test_landing_replaces_weights_removes_stale_shards_and_keeps_the_rest(tmp_path):
    old = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    new = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weights = fake_weights(tmp_path / "w", old, "old")
    (weights / "probe").mkdir()
    (weights / "probe" / "probe.json").write_text("probe")
    (weights / "MODEL_CARD.md").write_text("card")
    export = fake_weights(tmp_path / "export", new, "new")
    (export / "extra.txt").write_text("not a weights file")
    assert not legmod.is_landed(export, weights)
    names = legmod.land(export, weights)
    assert names[-2:] == ["config.json", "train_summary.json"]  # config after its shards, the log last
    assert sorted(p.name for p in weights.glob("model-*")) == new
    assert all((weights / n).read_text() == (export / n).read_text() for n in names)
    assert (weights / "probe" / "probe.json").read_text() == "probe" and (weights / "MODEL_CARD.md").exists()
    assert not (weights / "extra.txt").exists() and legmod.is_landed(export, weights)
    assert {p.name for p in tmp_path.iterdir()} == {"w", "export"}  # no temp dir left beside WEIGHTS


def test_landing_carries_the_shard_index_and_drops_one_that_would_point_at_old_shards(tmp_path):
    old = ["model-00001-of-00001.safetensors"]
    new = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weights = fake_weights(tmp_path / "w", old, "old")
    (weights / legmod.INDEX_NAME).write_text("old index")
    export = fake_weights(tmp_path / "export", new, "new")
    (export / legmod.INDEX_NAME).write_text("new index")
    names = legmod.land(export, weights)
    assert names.index(legmod.INDEX_NAME) == len(new)  # after its shards, before config.json
    assert (weights / legmod.INDEX_NAME).read_text() == "new index"
    plain = fake_weights(tmp_path / "export-without-index", old, "plain")  # made before exports had an index
    assert legmod.INDEX_NAME not in legmod.land(plain, weights)
    assert not (weights / legmod.INDEX_NAME).exists()


def test_landing_refuses_an_export_missing_a_listed_shard(tmp_path):
    weights = fake_weights(tmp_path / "w", ["model-00001-of-00001.safetensors"], "old")
    export = fake_weights(tmp_path / "export", ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], "new")
    (export / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(legmod.StageFailed, match="lacks model-00002-of-00002"):
        legmod.land(export, weights)
    assert json.loads((weights / "config.json").read_text())["tag"] == "old"


def with_energy(fidelity, tf1, ol_last):
    out = {h: dict(v) for h, v in fidelity.items()}
    first, last = min(out, key=int), max(out, key=int)
    out[first]["tf_energy"], out[last]["ol_energy"] = tf1, ol_last
    return out


@pytest.mark.parametrize("tf_after, ol_after, expected", [
    (0.05, 0.10, True),  # lower PSNR (a sharp draw misses by more than the mean), lower energy score: better
    (0.07, 0.10, False),  # worse next-frame draws
    (0.05, 0.13, False),  # worse drift
])
def test_improved_judges_frames_by_the_energy_score_where_both_evals_measured_it(tf_after, ol_after, expected):
    before, after = with_energy(fid(20, 15), 0.06, 0.12), with_energy(fid(19, 14), tf_after, ol_after)
    assert legmod.improved(before, after) is expected
    assert legmod.improved(before, after, 1.0, 1.5) is False  # the rollout's realism still has to hold
    # one side without energy scores (an older report): PSNR decides, as before
    assert legmod.improved(fid(20, 15), after) is False and legmod.improved(before, fid(21, 16)) is True
    assert "energy score" in legmod.compare({"before": before, "after": after})


def test_each_stage_compiles_for_its_own_shapes():
    """torch.compile keeps a few shape variants per function; a leg's train and eval run in one process, so the
    memory release between them also forgets what the stage before compiled (else the next stage can find the
    variants used up and run FlexAttention eager and unfused)."""
    import torch

    from odyssey_gym.train.leg import release_memory

    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(1)
        return gm.forward

    f = torch.compile(lambda x: x * 2 + 1, backend=counting_backend)
    x = torch.ones(3)
    f(x)
    f(x)
    assert len(compiles) == 1  # cached: the same shape does not compile again
    release_memory()
    f(x)
    assert len(compiles) == 2
