"""Training checkpoints: atomic writes, keep-last-N, resume with a config check and a fallback.

A checkpoint is one `torch.save` file `RUN/checkpoints/ckpt-<global step>.pt` holding model, EMA,
optimizer and scheduler state, the phase and step, latent statistics, every RNG state (python, numpy,
torch CPU, CUDA, the data sampler's generator; one set per DDP rank) and the config with its hash.
Everything in it is tensors and plain Python values, so it loads with `torch.load(weights_only=True)`:
reading a checkpoint never unpickles arbitrary objects (which could run code).

Writes go to a temp file in the same directory, are fsynced, then `os.replace`d into place, so a run
killed at any moment leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig, diff_configs
from ..fsutil import fsync_dir

FORMAT_VERSION = 2  # 2: RNG states as tensors and plain values (weights-only loadable)
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first (by global step in the name)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temp file beside `path`, fsync, then os.replace (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def checkpoint_path(run_dir: str | Path, global_step: int) -> Path:
    return checkpoint_dir(run_dir) / f"ckpt-{int(global_step):09d}.pt"


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` as the checkpoint for `state['global_step']`; delete all but the newest `keep`."""
    d = checkpoint_dir(run_dir)
    path = checkpoint_path(run_dir, state["global_step"])
    state = {"format_version": FORMAT_VERSION, **state}
    atomic_torch_save(state, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        try:
            old.unlink()
        except FileNotFoundError:
            pass
    for stale in d.glob(".ckpt-*.tmp"):  # temp files of a writer that was killed mid-save
        try:
            stale.unlink()
        except FileNotFoundError:
            pass
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe:
            raise CheckpointError(
                f"checkpoint file {path} holds a pickled Python object ({unsafe.group(1)}) that a weights-only load "
                f"refuses; it was not unpickled, since that could run code. Files from odyssey-gym before checkpoint "
                f"format {FORMAT_VERSION} are like this: start a new run (--out elsewhere), or continue from exported "
                f"weights with --init-from"
            ) from None
        why = re.search(r"WeightsUnpickler error: \s*(.+)", str(e))
        raise CheckpointError(f"checkpoint file is corrupt or unreadable: {path} "
                              f"({why.group(1).strip() if why else type(e).__name__})") from None
    except Exception as e:  # truncated zip, ...
        raise CheckpointError(f"checkpoint file is corrupt or unreadable: {path} ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint file {path} is not an odyssey-gym training checkpoint (format_version "
            f"{state.get('format_version') if isinstance(state, dict) else '?'}, expected {FORMAT_VERSION})"
        )
    for k in ("config", "config_flat", "global_step", "phase", "model", "rng"):
        if k not in state:
            raise CheckpointError(f"checkpoint file {path} lacks the entry {k!r} (corrupt or from another tool)")
    return state


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_latest(run_dir: str | Path, config: RunConfig | None = None, log=_stderr) -> tuple[dict[str, Any], Path]:
    """Load the newest readable checkpoint of a run.

    A missing or corrupt newest file is reported by name and the previous good one is used instead
    (saying so). A config that differs from the checkpoint's raises, naming both files and the keys.
    """
    run_dir = Path(run_dir)
    paths = list_checkpoints(run_dir)
    if not paths:
        raise CheckpointError(
            f"--resume: no checkpoint found in {checkpoint_dir(run_dir)} (expected files named ckpt-<step>.pt)"
        )
    errors: list[str] = []
    for path in reversed(paths):
        try:
            state = _read(path)
        except CheckpointError as e:
            errors.append(str(e))
            log(f"warning: {e}; trying the previous checkpoint")
            continue
        if errors:
            log(f"resuming from the previous good checkpoint {path} (newer file(s) unusable)")
        if config is not None:
            check_config(state, config, path)
        return state, path
    raise CheckpointError("no usable checkpoint in " + str(checkpoint_dir(run_dir)) + ":\n  " + "\n  ".join(errors))


def check_config(state: dict[str, Any], config: RunConfig, path: Path | str) -> None:
    differing = diff_configs(state["config_flat"], config.flat())
    if differing:
        lines = [f"  {k}: checkpoint={state['config_flat'].get(k, '<absent>')!r} config={config.flat().get(k, '<absent>')!r}" for k in differing]
        raise CheckpointError(
            f"config {config.source} differs from the one checkpoint {path} was trained with, in key(s) "
            f"{', '.join(differing)}:\n" + "\n".join(lines)
            + "\nresume with the original config, or start a new run (--out elsewhere)"
        )


# ----------------------------------------------------------------------------- RNG state


def get_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (what a weights-only load accepts)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # a different GPU count: restore what we can
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(state["generators"][k].cpu())
