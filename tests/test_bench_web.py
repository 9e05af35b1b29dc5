"""benchmarks/bench_web.py on CPU with tiny weights: real clients, real latencies, a table and a JSON file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

from tiny_weights import make_tiny_weights  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_web.py"


def test_bench_web_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_web", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    w = make_tiny_weights("doom-takecover", tmp_path / "w", n_starts=2)
    out = tmp_path / "bench_web.json"
    assert bench.main(["--world", "doom-takecover", "--device", "cpu", "--weights", str(w), "--counts", "1,2",
                       "--seconds-per-count", "1.5", "--warmup-s", "0.8", "--keep-going", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["players"] for r in res["rows"]] == [1, 2]
    for r in res["rows"]:
        assert r["connected"] == r["players"] and not r["errors"], r
        assert r["latency_samples"] > 0 and 0 < r["latency_p50_ms"] <= r["latency_p99_ms"] < 2000
        assert r["client_fps_mean"] > 2  # 8.75 fps world; a loaded 2-core box still streams
        assert {"queue", "step", "encode", "send"} <= set(r["server_timings_ms"])
    assert res["gpu_usd_per_hour"] == 2.0 and res["rows"][1]["usd_per_player_hour"] == 1.0
    text = capsys.readouterr().out
    assert "| players | ok |" in text and "Max players at full fps" in text


def test_bench_web_table_counts_full_collections():
    spec = importlib.util.spec_from_file_location("bench_web", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"players": 4, "ok": True, "server_fps": 35.0, "client_fps_mean": 35.0, "client_fps_min": 34.9,
           "latency_p50_ms": 20.0, "latency_p99_ms": 30.0, "usd_per_player_hour": 0.5, "server_timings_ms": {
               "step": {"p50_ms": 1.0, "p99_ms": 2.0}, "gc_full": {"p99_ms": 40.0, "max_ms": 41.5, "n": 2}}}
    quiet = {**row, "server_timings_ms": {"step": row["server_timings_ms"]["step"]}}
    lines = bench.table([row, quiet], None).splitlines()
    assert "full GC passes (max ms)" in lines[0]
    assert "| 2 (41.5) |" in lines[2] and "| 0 |" in lines[3] and "| 1.00 / 2.00 |" in lines[2]


def test_bench_jpeg_times_the_servers_encoder_on_start_bank_frames(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_jpeg", BENCH.parent / "bench_jpeg.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    w = make_tiny_weights("doom-takecover", tmp_path / "w", n_starts=2)
    out = tmp_path / "jpeg.json"
    assert bench.main(["--world", "doom-takecover", "--weights", str(w), "--counts", "3,1", "--repeats", "2",
                       "--workers", "1", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["frames"] for r in res["rows"]] == [1, 3]
    assert all(r["cpu"]["p50_ms"] > 0 and r["process"]["p50_ms"] > 0 for r in res["rows"])
    assert ("cuda" in res["rows"][0]) == (res["cuda_problem"] is None)
    assert "| frames | CPU threads" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.parse_args(["--counts", "0"])
    with pytest.raises(SystemExit, match="start_bank.npz"):
        bench.main(["--weights", str(tmp_path / "nowhere")])
