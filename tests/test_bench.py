"""`odyssey-gym bench` on CPU with tiny weights: the section is written with real numbers and replaced on a rerun."""

from __future__ import annotations

import json
import re

import pytest

from odyssey_gym.cli import main
from tiny_weights import make_tiny_weights

pytest.importorskip("vizdoom")


def test_bench_writes_and_replaces_section(tmp_path):
    root = tmp_path / "weights"
    make_tiny_weights("doom-takecover", root / "doom-takecover")
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nintro\n\n## Speed: some other machine\n\nkeep me\n")
    js = tmp_path / "bench.json"
    argv = ["bench", "--worlds", "doom-takecover", "--num-envs", "1,4", "--device", "cpu", "--steps", "2",
            "--repeats", "2", "--latency-steps", "3", "--engine-workers", "1", "--engine-seconds", "1",
            "--weights-root", str(root), "--out", str(out), "--json", str(js)]
    assert main(argv) == 0

    text = out.read_text()
    heads = re.findall(r"^## Speed: (.+)$", text, re.M)
    assert len(heads) == 2 and "some other machine" in heads and "keep me" in text
    sec = text[text.index(f"## Speed: {heads[-1]}"):] if heads[0] == "some other machine" else text
    for n in (1, 4):
        row = re.search(rf"^\| {n} \| ([0-9.,]+) \| ([0-9.,]+) \|", sec, re.M)
        assert row and float(row.group(1).replace(",", "")) > 0, sec
    assert re.search(r"latency, num_envs 1 .*p50 [0-9.]+ ms, p99 [0-9.]+ ms", sec)
    m = re.search(r"Real engine \(ViZDoom\), 1 processes?, .*: ([0-9.,]+) steps/s", sec)
    assert m and float(m.group(1).replace(",", "")) > 0, sec
    assert re.search(r"World model ÷ engine: .*= \*\*[0-9.e+-]+x\*\*; .* = \*\*[0-9.e+-]+x\*\*", sec)

    res = json.loads(js.read_text())
    w = res["worlds"][0]
    assert [r["num_envs"] for r in w["env"]] == [1, 4] and all(r["steps_per_s"] > 0 for r in w["env"])
    assert w["engine"]["steps_per_s"] > 0 and w["ratio_best_vs_engine"] > 0

    argv2 = argv.copy()
    argv2[argv2.index("1,4")] = "1"  # a cheaper rerun: same machine, so the section is replaced
    argv2[argv2.index("--repeats") + 1] = "1"
    assert main(argv2) == 0
    text2 = out.read_text()
    heads2 = re.findall(r"^## Speed: (.+)$", text2, re.M)
    assert sorted(heads2) == sorted(heads)  # replaced, not duplicated
    assert text2.count("### doom-takecover") == 1 and "keep me" in text2
    assert not re.search(r"^\| 4 \|", text2, re.M)  # the old section's rows are gone


def test_bench_writes_no_file_unless_asked(tmp_path, monkeypatch, capsys):
    root = tmp_path / "weights"
    make_tiny_weights("doom-takecover", root / "doom-takecover")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["bench", "--worlds", "doom-takecover", "--num-envs", "1", "--device", "cpu", "--steps", "2",
                 "--repeats", "1", "--latency-steps", "2", "--engine-workers", "1", "--engine-seconds", "1",
                 "--weights-root", str(root)]) == 0
    out = capsys.readouterr()
    assert "## Speed:" in out.out
    # one bar over the measurements (1 env size + latency + engine), the result lines above it
    assert "bench: 100%" in out.err and "3/3" in out.err and "doom-takecover num_envs 1:" in out.err
    # no report written into the current folder (ViZDoom itself leaves its _vizdoom.ini there)
    assert not [f.name for f in work.iterdir() if not f.name.startswith("_vizdoom")]


def test_bench_checks_its_options_once_into_a_config(capsys):
    """The command line becomes a BenchConfig (the timing code never sees argparse); a bad option is refused by
    name before anything is measured."""
    import argparse

    from odyssey_gym.eval.bench import BenchConfig, add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = BenchConfig.from_args(p.parse_args(["--worlds", "doom-takecover, doom-explore", "--num-envs", "1,8",
                                              "--steps", "5", "--eager", "--no-progress"]))
    assert cfg.worlds == ("doom-takecover", "doom-explore") and cfg.num_envs == (1, 8)
    assert cfg.timing.steps == 5 and cfg.timing.compile is False and not cfg.progress
    for bad, named in ((["--num-envs", "1,x"], "--num-envs"), (["--num-envs", "0"], "--num-envs"),
                       (["--steps", "0"], "--steps"), (["--worlds", " , "], "--worlds")):
        with pytest.raises(ValueError, match=named):
            BenchConfig.from_args(p.parse_args(bad))
        assert main(["bench", *bad, "--device", "cpu"]) == 2
        assert named in capsys.readouterr().err


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_detail_carry_frames_draws_real_without_and_with_carry(tmp_path, capsys):
    """benchmarks/detail_carry_frames.py on tiny weights and tiny data: a 3-column PNG of 2 rows a window, the
    PSNRs printed; weights without carry need --carry."""
    from PIL import Image
    from test_train import make_dataset

    mod = load_benchmark("detail_carry_frames")
    w = make_tiny_weights("doom-takecover", tmp_path / "w")
    data = make_dataset(tmp_path / "d", episodes=2, length=20)
    out = tmp_path / "f.png"
    with pytest.raises(SystemExit):  # tiny weights carry nothing by default
        mod.main(["--world", "doom-takecover", "--weights", str(w), "--data", str(data), "--out", str(out)])
    assert mod.main(["--world", "doom-takecover", "--weights", str(w), "--data", str(data), "--out", str(out),
                     "--steps", "3", "--carry", "0.3"]) == 0
    assert Image.open(out).size == (3 * 64, 3 * 2 * 64)
    assert "detail_carry 0:" in capsys.readouterr().out


def test_termination_toy_trains_both_heads_and_scores_them(capsys):
    """benchmarks/termination_toy.py end to end at a few steps: a row per head, each with an AUC in [0, 1] over
    held-out deaths that are copies of the frame before."""
    mod = load_benchmark("termination_toy")
    rows = mod.main(["--steps", "4", "--ae-steps", "4", "--episodes", "12", "--windows", "32"])
    assert [r[0] for r in rows] == ["clean", "start"]
    for _, h in rows:
        assert h["terminal_transitions"] > 0 and 0 <= h["termination_auc"] <= 1
    assert "| term_from | AUC |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main(["--hazard", "0"])


def test_termination_toy_repeats_a_frame_only_at_a_death(tmp_path):
    import numpy as np

    from odyssey_gym.data.dataset import open_dataset

    mod = load_benchmark("termination_toy")
    ds = open_dataset(mod.toy_dataset(tmp_path / "toy", episodes=20, max_len=60, hazard=1.0, seed=3))
    deaths = 0
    for ep in ds:
        same = (ep.frames[1:] == ep.frames[:-1]).reshape(len(ep.actions), -1).all(1)
        assert np.array_equal(same, ep.terminations), "a frame repeats exactly where the episode dies"
        deaths += int(ep.terminations.sum())
    assert deaths > 0
