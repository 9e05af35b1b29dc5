"""The pieces of the loop that touch the model and the dataset APIs (kept here so `trainer.py` reads plainly).

Everything model-specific goes through: `WorldModelConfig` (from_dict / presets), `WorldModel(cfg)` with
`.ae` (FrameAutoencoder: encode/decode, `loss(x)`) and `.dynamics` (Dynamics: forward + `loss(...)`),
`save_pretrained` / `from_pretrained`. Data goes through `odyssey_gym.data` (Dataset -> FlatData).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..worlds import get_world
from .resident import ResidentData


class DataError(RuntimeError):
    pass


# ============================================================================ data


def load_data(dirs: list[str]) -> tuple[Any, dict[str, Any]]:
    """Open the dataset dir(s) (one world) and load everything as one FlatData (frames in RAM)."""
    from ..data.dataset import DatasetError, open_dataset

    for d in dirs:
        if not Path(d).is_dir():
            raise DataError(f"--data {d}: no such directory")
    try:
        ds = open_dataset(dirs[0] if len(dirs) == 1 else list(dirs))
        flat = ds.flat()
    except DatasetError as e:
        raise DataError(str(e)) from None
    if len(flat) == 0:
        raise DataError(f"--data {', '.join(dirs)}: the dataset holds no episodes")
    info = {
        "world": ds.world_name,
        "dirs": [str(Path(d).resolve()) for d in dirs],
        "datasets": [_dataset_record(d) for d in dirs],
        "frames": int(len(flat)),
        "episodes": int(flat.num_episodes),
        "seeds": sorted({int(e["seed"]) for e in ds.episodes if e.get("seed") is not None}),
    }
    return flat, info


def _dataset_record(d: str) -> dict[str, Any]:
    """A dataset as the campaign log records it: its name and how it was recorded (no machine paths)."""
    from ..data.dataset import open_dataset

    ds = open_dataset(d)
    runs = [{k: r[k] for k in ("seed", "policy", "steps", "workers") if k in r} for r in ds.manifest.get("runs", [])]
    for r in runs:  # a policy given as a file is named by its file name
        if isinstance(r.get("policy"), str) and os.sep in r["policy"]:
            r["policy"] = Path(r["policy"]).name
    return {"name": Path(d).resolve().name, "frames": int(ds.num_frames), "episodes": len(ds.episodes), "runs": runs}


def resolve_world(config_world: str | None, data_info: dict[str, Any], source: str):
    name = data_info["world"]
    if config_world is not None and config_world != name:
        raise DataError(f"{source}: world {config_world!r} but the data ({', '.join(data_info['dirs'])}) holds {name!r}")
    return get_world(name)


# ============================================================================ model


def model_config(model_cfg: dict[str, Any], world):
    """`model:` YAML -> WorldModelConfig. `preset` picks WorldModelConfig.<preset>(); other keys override it."""
    from ..model import WorldModelConfig

    d = dict(model_cfg)
    preset = d.pop("preset", None)
    world_kw = {"world": world.name, "frame_size": tuple(world.frame_size), "action_dim": world.action_dim}
    if preset is not None:
        return WorldModelConfig.preset(preset, **world_kw, **d)
    return WorldModelConfig.from_dict({**world_kw, **d})


def build_model(model_cfg: dict[str, Any], world) -> torch.nn.Module:
    """`model:` YAML -> WorldModel (see `model_config`)."""
    from ..model import WorldModel

    return WorldModel(model_config(model_cfg, world))


def load_pretrained_weights(model: torch.nn.Module, weights_dir: str) -> None:
    cls = type(model)  # WorldModel
    if not (Path(weights_dir) / "config.json").is_file():
        raise DataError(f"--init-from {weights_dir}: not a weights directory (no config.json)")
    src = cls.from_pretrained(weights_dir, device="cpu")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in src.state_dict().items()}
    grows_state = model.config.dynamics.state_dim > 0 and src.config.dynamics.state_dim == 0
    if grows_state:  # weights without game state: the state layers start fresh (their input zero-initialised)
        own = model.state_dict()
        for k in HEAD_OUT:  # reward and termination rows come from the weights, the state rows stay as initialised
            grown = own[k].clone()
            grown[: sd[k].shape[0]] = sd[k]
            sd[k] = grown
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if grows_state:
        missing = [k for k in missing if not k.startswith("dynamics.state_mlp.")]
    if missing or unexpected:
        raise ValueError(f"--init-from {weights_dir}: weights do not match the configured model "
                         f"(missing {missing[:5]}..., unexpected {unexpected[:5]}...)")
    if src.config.latent_mean is not None:
        model.set_latent_stats(src.config.latent_mean, src.config.latent_std)
    if src.config.state_variables and src.config.state_variables == model.config.state_variables:
        model.set_state_stats(src.config.state_mean, src.config.state_std)


HEAD_OUT = ("dynamics.heads.2.weight", "dynamics.heads.2.bias")  # the heads' output layer: reward, term, state


def data_state(flat, names: list[str]) -> np.ndarray:
    """(N, S) float32: the named game variables of every frame, in the model's order; the error names what the
    data lacks."""
    have = list(getattr(flat, "state_variables", ()) or ())
    if flat.state is None or not have:
        raise DataError(f"the model predicts game state {names}, but the data records none (record it with a "
                        f"world that names state_variables; dataset format 2)")
    missing = [n for n in names if n not in have]
    if missing:
        raise DataError(f"the model predicts game state {names}, but the data records {have} (no {missing})")
    return np.asarray(flat.state, np.float32)[:, [have.index(n) for n in names]]


def state_stats(state: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-variable mean and std of the data's state; a variable that never changes gets std 1 (no scaling)."""
    std = state.std(0)
    return state.mean(0).astype(float).tolist(), np.where(std > 1e-6, std, 1.0).astype(float).tolist()


def _unwrap(m: torch.nn.Module) -> torch.nn.Module:
    m = getattr(m, "_orig_mod", m)  # torch.compile
    return getattr(m, "module", m)  # DDP


# ============================================================================ autoencoder


def ae_loss(ae: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The autoencoder's own reconstruction loss and its metrics."""
    return ae.loss(x)


@torch.no_grad()
def encode_all(ae: torch.nn.Module, data: ResidentData, batch_size: int, amp) -> torch.Tensor:
    """Encode every frame once -> (N, C, h, w) float32 on the training device (deterministic)."""
    out = []
    for i in range(0, data.n, batch_size):
        idx = torch.arange(i, min(i + batch_size, data.n), device=data.device)
        with amp:
            z = ae.encode(data.frames_at(idx))
        out.append(z.float())
    return torch.cat(out)


def latent_stats(z: torch.Tensor) -> dict[str, list[float]]:
    """Per-channel mean/std of the latents (computed in float64 for stability)."""
    zc = z.double().transpose(0, 1).reshape(z.shape[1], -1)
    return {"mean": zc.mean(1).tolist(), "std": zc.std(1).clamp_min(1e-6).tolist()}


def normalize(z: torch.Tensor, stats: dict[str, list[float]]) -> torch.Tensor:
    m = torch.tensor(stats["mean"], device=z.device, dtype=z.dtype)[:, None, None]
    s = torch.tensor(stats["std"], device=z.device, dtype=z.dtype)[:, None, None]
    return (z - m) / s


def set_latent_stats(model: torch.nn.Module, stats: dict[str, list[float]]) -> None:
    """Write the latent mean/std into the model (its config and normalisation buffers)."""
    model.set_latent_stats(stats["mean"], stats["std"])


# ============================================================================ dynamics


def dyn_loss(dyn, b: dict[str, torch.Tensor], **kw):
    """The dynamics' training loss (its `objective`, with its context-noise augmentation) on a window batch.
    kw: `loss_mask` / `context_z` from `unroll_context`. A batch with game state trains the state head on it."""
    if dyn.config.state_dim:
        kw = {**kw, "state": b["state"], "state_prev": b["state_prev"]}
    return dyn.loss(b["z"], b["actions"], b["rewards"], b["terminated"], b.get("first"), **kw)


@torch.no_grad()
def unroll_context(dyn, b: dict[str, torch.Tensor], n_rows: int, unroll_len: int, sigmas, depth: int = 1) -> dict:
    """Self-forcing-lite: the first `n_rows` windows see frames T-1-u .. T-2 as the model's own samples.

    Teacher forcing: those context frames become the model's few-step samples (all frames sampled at once,
    `sigmas` the sampler's schedule); every frame stays a target with its true value, so the frames after them
    learn to correct the model's own errors. The first pass samples each frame from the true frames before it;
    each of the `depth` - 1 further passes samples them again from the last pass's frames, so errors compound
    as they do open-loop (depth >= unroll_len gives the sequential rollout's dependence). Returns {"context_z"}.
    Diffusion forcing: the frames are regenerated one at a time with 1-step predictions and those rows
    train only on the true last frame. Returns {"z", "loss_mask"}.
    """
    z = b["z"].clone()
    B, T = z.shape[:2]
    rows = slice(0, n_rows)
    lo = T - 1 - unroll_len
    if dyn.config.objective == "teacher_forcing":
        for _ in range(depth):
            prev = b["state_prev"][rows] if "state_prev" in b else None
            gen = dyn.sample_teacher_forced(z[rows], b["actions"][rows], sigmas, state_prev=prev)
            z[rows, lo:T - 1] = gen[:, lo:T - 1].to(z.dtype)
        return {"context_z": z}
    for p in range(lo, T - 1):
        z[rows, p] = dyn.predict_next(z[rows, :p], b["actions"][rows, : p + 1]).to(z.dtype)
    mask = torch.ones(B, T, device=z.device, dtype=torch.bool)
    mask[rows, : T - 1] = False
    return {"z": z, "loss_mask": mask}


# ============================================================================ export


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    except Exception:
        pass
    return None


def start_bank(flat, n: int, K: int, seed: int) -> dict[str, np.ndarray]:
    """N real starting contexts of K frames (+ the actions into them), drawn with `FlatData.pick_windows`: each
    at a distinct episode's first frame (a natural reset state) when N episodes are K frames long, else anywhere."""
    pick = flat.pick_windows(K, n, np.random.default_rng(seed), episode_start=True)
    if len(pick) < n:  # too few episodes this long: any windows, repeated where even those are too few
        pick = flat.pick_windows(K, n, np.random.default_rng(seed), repeat=True)
        if len(pick) == 0:
            raise DataError(f"no episode is {K} frames long: cannot build a start bank")
    idx = np.sort(pick)[:, None] + np.arange(K)[None, :]
    return {"frames": np.asarray(flat.frames)[idx].astype(np.uint8),
            "actions": np.asarray(flat.actions, np.float32)[idx]}


def export(model, ema, world, data, flat, data_info, out_dir, tc, last_metrics, train_seconds, log,
           partial_step: int | None = None, init_from: str | None = None, config_name: str | None = None,
           decoder_only: bool = False) -> Path:
    """EMA weights via `save_pretrained` (bf16, <=16 MiB shards), start_bank.npz, and train_summary.json: the
    campaign log of `init_from` (when it has one) with this run appended as a leg. `partial_step`: the steps a
    time limit let the last phase run; `decoder_only`: the run fine-tuned only the decoder (`--phase decoder`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = _unwrap(ema)
    m.save_pretrained(out, dtype=torch.bfloat16)
    K = m.config.context_frames
    bank = start_bank(flat, tc.start_bank_size, K, tc.seed)
    np.savez_compressed(out / "start_bank.npz", **bank)
    from .campaign import append_leg, load_summary, write_summary

    planned = tc.ae_steps if decoder_only else tc.dyn_steps  # the last phase's steps, unless a time limit cut it
    ran = planned if partial_step is None else partial_step
    leg = {
        "recipe": {"objective": m.config.dynamics.objective, "config": config_name,
                   **({"phase": "decoder"} if decoder_only else {})},
        "init_from": "weights" if init_from else None,
        "steps": {"decoder": ran} if decoder_only else {"ae": tc.ae_steps, "dyn": ran},
        "dyn_steps_planned": 0 if decoder_only else tc.dyn_steps,
        **({"decoder_steps_planned": tc.ae_steps} if decoder_only else {}),
        "gpu_minutes": round(train_seconds / 60.0, 2),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "data": {"frames": data_info["frames"], "episodes": data_info["episodes"], "seeds": data_info["seeds"],
                 "datasets": data_info["datasets"]},
        "final_losses": {ph: {k: round(v, 6) for k, v in mm.items()} for ph, mm in last_metrics.items()},
        "git_commit": _git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    previous = load_summary(init_from) if init_from else None  # a leg from landed weights continues their log
    write_summary(out, append_leg(previous, leg, world.name, world.version))
    log(f"exported EMA weights, start_bank.npz ({bank['frames'].shape}) and train_summary.json to {out}")
    return out
