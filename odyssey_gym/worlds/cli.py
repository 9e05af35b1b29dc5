"""`odyssey-gym worlds`: the worlds this version knows, their env ids, and whether weights ship for them."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per world instead of a table")


def rows() -> list[dict]:
    from odyssey_gym.model import available_worlds

    from . import WORLDS

    shipped = set(available_worlds())
    return [{"world": w.name, "version": w.version, "env_id": w.env_id, "frames": f"{w.frame_size[0]}x{w.frame_size[1]}",
             "fps": round(w.fps, 2), "actions": str(w.action_space()), "weights": w.name in shipped,
             "description": w.description} for w in WORLDS.values()]


def run(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        for r in table:
            print(json.dumps(r))
        return 0
    cols = ("world", "env_id", "frames", "fps", "actions", "weights")
    cells = [[str(r[c]) if c != "weights" else ("shipped" if r[c] else "none (train one)") for c in cols] for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    print("gym.make(ENV_ID) opens a world with shipped weights; any world takes weights=DIR from `odyssey-gym train`.")
    return 0
