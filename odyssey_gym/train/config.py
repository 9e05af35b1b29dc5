"""Training configuration: one YAML file -> `RunConfig(world, model, train)`.

```yaml
world: doom-explore          # optional; when absent the world comes from the data's manifest
model:                       # handed to the model's config (`WorldModelConfig.from_dict`, presets)
  preset: base               # tiny | base | ...; every other key overrides the preset
train:                       # the fields of `TrainConfig` below; unknown keys are an error
  ae_steps: 6000
  ...
```
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Fields that may differ between a checkpoint and the config it is resumed with.
# Everything else that differs makes `--resume` refuse (the run would silently change meaning).
RESUME_MUTABLE = frozenset(
    {
        "train.log_every_steps",
        "train.log_every_seconds",
        "train.save_every_steps",
        "train.save_every_seconds",
        "train.keep_checkpoints",
        "train.compile",
        "train.start_bank_size",
        "train.eval_batches",  # a reserved field of older configs, since removed
        "train.peak_tflops",
    }
)


# TrainConfig fields that are a float or None.
OPTIONAL_FLOATS = frozenset({"peak_tflops"})


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass
class TrainConfig:
    # --- reproducibility / numerics
    seed: int = 0
    bf16: bool = True  # autocast to bf16 on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the training modules (CUDA only)

    # --- phase 1: frame autoencoder on random frames
    ae_steps: int = 6000
    ae_batch_size: int = 64
    ae_lr: float = 1e-3
    ae_warmup_steps: int = 300
    ae_weight_decay: float = 0.0
    # `--phase decoder` only: the share of each batch decoded from the frozen dynamics' one-step predictions after
    # real context (what the sampler decodes), against the real frame, instead of from the encoder's own latents
    decoder_predicted_frac: float = 0.0
    # `--phase decoder` only: weight of a patch discriminator's hinge term on every decoded frame (0: off), relative
    # to the reconstruction loss by their gradients at the decoder's output layer, so an uncertain latent decodes to
    # texture a real frame has, not to the mean of its candidates (`adversary.py`)
    decoder_adv_weight: float = 0.0
    decoder_adv_start: int = 100  # discriminator updates before the term applies (it first learns the decoder)
    disc_lr: float = 2.0e-4
    disc_channels: int = 64

    # --- phase 2: dynamics on random windows of `dyn_window` frames
    dyn_steps: int = 30000
    dyn_batch_size: int = 32
    dyn_window: int = 16  # T, frames per training window
    dyn_lr: float = 3e-4
    dyn_warmup_steps: int = 1000
    dyn_weight_decay: float = 0.05

    # --- learning rate schedule (both phases): linear warmup then cosine to min_lr_frac * lr
    lr_schedule: str = "cosine"  # cosine | constant
    min_lr_frac: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99

    # --- self-forcing-lite: for the last (1 - unroll_start_frac) of dynamics steps, `unroll_batch_frac`
    # of each batch gets its last `unroll_len` context frames replaced by the model's own 1-step generations
    unroll_start_frac: float = 0.85
    unroll_len: int = 2
    unroll_batch_frac: float = 0.5
    unroll_steps: int = 1  # sampling steps of those generations (the shipped sampler's count is the honest choice)
    # teacher forcing: passes over the unrolled frames, each sampling them from the previous pass's frames, so
    # frame k of the unroll carries min(k + 1, depth) compounded errors as in open-loop play (1: one-step errors)
    unroll_depth: int = 1
    # rolling self-forcing (`rollout_bank.py`), from the same step as the unroll: the last `rollout_rows` rows of
    # each batch come from rollouts the model keeps generating between steps (`rollout_advance` frames a step,
    # each row restarted after a life drawn in 1..`rollout_max_age` frames); 0 rows: off
    rollout_rows: int = 0
    rollout_max_age: int = 96
    rollout_advance: int = 2

    # --- stabilisers
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + step) / (10 + step)) early in training
    grad_clip: float = 1.0

    # --- logging / checkpoints (steps and/or seconds; 0 disables that trigger)
    log_every_steps: int = 100
    log_every_seconds: float = 0.0
    save_every_steps: int = 0
    save_every_seconds: float = 120.0
    keep_checkpoints: int = 2

    # --- export
    start_bank_size: int = 16  # N starting contexts in start_bank.npz

    # --- residency: keep frames/latents on the GPU when they take at most this fraction of its memory
    gpu_resident_frac: float = 0.35

    # --- MFU in the log: the accelerator's peak TFLOP/s (None: looked up from the CUDA device name, bf16 dense;
    # an unknown device or the CPU logs no mfu)
    peak_tflops: float | None = None

    def validate(self, where: str = "config") -> None:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{where}: train.{key} {msg}")

        for k in ("ae_steps", "dyn_steps", "unroll_len", "log_every_steps", "save_every_steps", "ae_warmup_steps", "dyn_warmup_steps"):
            need(int(getattr(self, k)) >= 0, k, "must be >= 0")
        for k in ("ae_batch_size", "dyn_batch_size", "keep_checkpoints"):
            need(int(getattr(self, k)) >= 1, k, "must be >= 1")
        need(self.dyn_window >= 2, "dyn_window", "must be >= 2 (context + next frame)")
        need(int(self.unroll_steps) >= 1, "unroll_steps", "must be >= 1")
        need(int(self.unroll_depth) >= 1, "unroll_depth", "must be >= 1")
        need(self.unroll_len < self.dyn_window, "unroll_len", f"must be < dyn_window ({self.dyn_window})")
        need(0.0 <= self.unroll_start_frac <= 1.0, "unroll_start_frac", "must lie in [0, 1]")
        need(0.0 <= self.unroll_batch_frac <= 1.0, "unroll_batch_frac", "must lie in [0, 1]")
        need(0.0 <= self.decoder_predicted_frac <= 1.0, "decoder_predicted_frac", "must lie in [0, 1]")
        need(self.decoder_adv_weight >= 0, "decoder_adv_weight", "must be >= 0")
        need(int(self.decoder_adv_start) >= 0, "decoder_adv_start", "must be >= 0")
        need(self.disc_lr > 0, "disc_lr", "must be > 0")
        need(int(self.disc_channels) >= 1, "disc_channels", "must be >= 1")
        need(0 <= int(self.rollout_rows) <= self.dyn_batch_size, "rollout_rows",
             f"must lie in 0..dyn_batch_size ({self.dyn_batch_size})")
        need(int(round(self.unroll_batch_frac * self.dyn_batch_size)) + int(self.rollout_rows) <= self.dyn_batch_size
             or self.unroll_len == 0, "rollout_rows",
             "plus the unrolled rows (unroll_batch_frac * dyn_batch_size) must not exceed dyn_batch_size")
        need(int(self.rollout_max_age) >= 1, "rollout_max_age", "must be >= 1")
        need(int(self.rollout_advance) >= 1, "rollout_advance", "must be >= 1")
        need(0.0 <= self.ema_decay < 1.0, "ema_decay", "must lie in [0, 1)")
        need(self.ae_lr > 0 and self.dyn_lr > 0, "ae_lr/dyn_lr", "must be > 0")
        need(self.lr_schedule in ("cosine", "constant"), "lr_schedule", "must be 'cosine' or 'constant'")
        need(0.0 <= self.min_lr_frac <= 1.0, "min_lr_frac", "must lie in [0, 1]")
        need(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)")
        need(self.peak_tflops is None or self.peak_tflops > 0, "peak_tflops", "must be > 0 (or absent: looked up)")


@dataclass
class RunConfig:
    world: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = "<dict>"  # the file it came from (not part of the hash)

    def to_dict(self) -> dict[str, Any]:
        return {"world": self.world, "model": dict(self.model), "train": dataclasses.asdict(self.train)}

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for diffs and the hash."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k in sorted(obj):
                    walk(f"{prefix}.{k}" if prefix else str(k), obj[k])
            else:
                out[prefix] = obj

        walk("", self.to_dict())
        return out

    def hash(self) -> str:
        """Hash of everything that changes what training computes (RESUME_MUTABLE keys excluded)."""
        flat = {k: v for k, v in self.flat().items() if k not in RESUME_MUTABLE}
        blob = json.dumps(flat, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def train_defaults() -> dict[str, Any]:
    """`train.<field>` -> its default: what a config written before the field existed trained with."""
    return {f"train.{f.name}": getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig)}


def diff_configs(a: dict[str, Any], b: dict[str, Any], ignore=RESUME_MUTABLE) -> list[str]:
    """Keys (dotted) whose values differ between two `RunConfig.flat()` dicts. A train field one side lacks
    counts as its default, so a checkpoint from before a field was added resumes while the field keeps it."""
    keys = sorted(set(a) | set(b))
    d = train_defaults()
    return [k for k in keys if k not in ignore and a.get(k, d.get(k, "<absent>")) != b.get(k, d.get(k, "<absent>"))]


def from_dict(d: dict[str, Any], source: str = "<dict>") -> RunConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping with keys world/model/train, got {type(d).__name__}")
    unknown = set(d) - {"world", "model", "train"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: world, model, train")
    world = d.get("world")
    if world is not None and not isinstance(world, str):
        raise ConfigError(f"{source}: 'world' must be a world name string, got {world!r}")
    model = d.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: 'model' must be a mapping, got {type(model).__name__}")
    train_d = d.get("train") or {}
    if not isinstance(train_d, dict):
        raise ConfigError(f"{source}: 'train' must be a mapping, got {type(train_d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(train_d) - set(fields))
    if bad:
        import difflib

        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, fields, 1)) else k for k in bad]
        raise ConfigError(f"{source}: unknown train key(s): {', '.join(hints)}")
    kw = {}
    for k, v in train_d.items():
        default = getattr(TrainConfig(), k)
        try:
            if k in OPTIONAL_FLOATS:
                if isinstance(v, bool) or not (v is None or isinstance(v, (int, float, str))):
                    raise TypeError
                kw[k] = None if v is None else float(v)
            elif isinstance(default, bool):
                if not isinstance(v, bool):
                    raise TypeError
                kw[k] = v
            elif isinstance(default, int):
                if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                    raise TypeError
                kw[k] = int(v)
            elif isinstance(default, float):
                if isinstance(v, bool):
                    raise TypeError
                kw[k] = float(v)  # YAML reads 3e-4 as a string; float() accepts it
            else:
                kw[k] = type(default)(v)
        except (TypeError, ValueError):
            kind = "a number or null" if k in OPTIONAL_FLOATS else type(default).__name__
            raise ConfigError(f"{source}: train.{k} must be {kind}, got {v!r}") from None
    train = TrainConfig(**kw)
    train.validate(source)
    return RunConfig(world=world, model=dict(model), train=train, source=source)


def load_config(path: str | Path) -> RunConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return from_dict(d or {}, source=str(path))
