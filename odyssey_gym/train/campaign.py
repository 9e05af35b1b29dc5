"""A training campaign's log: `train_summary.json` beside the weights, one entry per leg.

A world model worth shipping needs hours of GPU time, which come as many short jobs (preemptible
instances, a cluster's time limit). Each leg resumes from the landed weights, trains, and is appended
here, so the card can show the cumulative GPU-minutes, steps and data, and `train-probe` can refuse every
episode seed any leg trained on (top-level `data.seeds`). Datasets are recorded by name, recording seed
and policy, never by the path of the machine they lay on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUMMARY_NAME = "train_summary.json"


def _leg_from_single_run(d: dict[str, Any]) -> dict[str, Any]:
    """A summary written before campaigns existed (one training run) -> its leg entry."""
    leg = {k: v for k, v in d.items() if k not in ("world", "world_version", "legs", "totals")}
    data = dict(leg.get("data") or {})
    dirs = data.pop("dirs", None)
    if dirs and "datasets" not in data:
        data["datasets"] = [{"name": Path(p).name} for p in dirs]
    leg["data"] = data
    return leg


def load_summary(path) -> dict[str, Any] | None:
    """The campaign log at `path` (a file or a weights dir), upgraded to the legs format; None if absent."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_NAME
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{p}: expected a JSON object, got {type(d).__name__}")
    if "legs" not in d:
        d = {"world": d.get("world"), "world_version": d.get("world_version"), "legs": [_leg_from_single_run(d)]}
    return with_totals(d)


def with_totals(summary: dict[str, Any]) -> dict[str, Any]:
    """Recompute `totals` and the union of training seeds from the legs."""
    legs = summary.get("legs") or []
    seeds: set[int] = set()
    steps = {"ae": 0, "dyn": 0}  # and "decoder" once a leg fine-tuned only the decoder
    frames = 0
    for leg in legs:
        data = leg.get("data") or {}
        seeds.update(int(s) for s in data.get("seeds") or [])
        for k, n in (leg.get("steps") or {}).items():
            if k in ("ae", "dyn", "decoder"):
                steps[k] = steps.get(k, 0) + int(n)
        frames = max(frames, int(data.get("frames", 0)))
    out = dict(summary)
    out["totals"] = {"legs": len(legs), "gpu_minutes": round(sum(float(l.get("gpu_minutes", 0)) for l in legs), 2),
                     "steps": steps, "largest_dataset_frames": frames}
    out["data"] = {"seeds": sorted(seeds)}
    return out


def append_leg(previous: dict[str, Any] | None, leg: dict[str, Any], world: str, world_version) -> dict[str, Any]:
    """The campaign log after one more leg (a new log when `previous` is None)."""
    legs = list((previous or {}).get("legs") or [])
    leg = {"leg": len(legs) + 1, **leg}
    return with_totals({"world": world, "world_version": world_version, "legs": legs + [leg]})


def write_summary(directory, summary: dict[str, Any]) -> Path:
    """Write atomically (temp name, then rename), so a cut-off job never leaves half a log."""
    out = Path(directory) / SUMMARY_NAME
    tmp = out.with_name(f".{SUMMARY_NAME}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out)
    return out
