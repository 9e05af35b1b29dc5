"""WorldModel: the autoencoder + the dynamics + latent normalisation, and its on-disk format.

Weights are stored as `config.json` (the full config, `"format": "odyssey-gym-weights"`,
`model_version`, the world, the shard list and each shard's sha256) plus
`model-0000i-of-0000N.safetensors` shards of at most `max_shard_bytes` each, and the standard
`model.safetensors.index.json` (`weight_map`: tensor -> shard, as huggingface_hub writes it) so other tools
can read the shards without our loader. Loading refuses other
model versions, out-of-range config values, shards that fail their recorded hash and any
config/weights mismatch, with an error naming the offending file (and key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .autoencoder import AutoencoderConfig, FrameAutoencoder, frames_to_tensor
from .dynamics import Dynamics, DynamicsConfig, karras_sigmas

MODEL_VERSION = 1  # bump when a change makes old weights load wrongly
WEIGHTS_FORMAT = "odyssey-gym-weights"
CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
MAX_SHARD_BYTES = 16 * 1024 * 1024
RENOISE = ("ddim", "fresh")


@dataclass
class WorldModelConfig:
    world: str = "doom-explore"
    ae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    latent_mean: list[float] | None = None  # per latent channel (None: 0); set by the trainer after the AE phase
    latent_std: list[float] | None = None  # per latent channel (None: 1)
    # game variables beside the pixels (names from the world's `state_variables`; dynamics.state_dim of them) and
    # the per-variable mean/std that normalise them for the dynamics; set by the trainer from the data
    state_variables: list[str] | None = None
    state_mean: list[float] | None = None
    state_std: list[float] | None = None
    sampling_steps: int = 2  # denoising passes per generated frame
    context_noise: float = 0.0  # sigma at which generated frames enter the context at inference
    # input of each denoising pass after the first (see `next_pass_input`): "ddim" keeps the first pass's noise
    # direction, "fresh" noises the prediction anew, as training noised every frame below sigma_max
    renoise: str = "ddim"
    # detail carry (`sampler.carry_detail`): the autoencoder loses fine detail (31.7 dB on doom-explore's held-out
    # frames); each generated frame keeps the share 1 - change / detail_carry of the last real frame's lost detail,
    # where change is how far the decoded frame moved from the one before (on the [-1, 1] scale, 3x3 neighbourhood):
    # all of it where the view is still, none where it moved by detail_carry or more. 0 turns it off.
    detail_carry: float = 0.0
    model_version: int = MODEL_VERSION

    def __post_init__(self):
        if isinstance(self.ae, dict):
            self.ae = AutoencoderConfig(**self.ae)
        if isinstance(self.dynamics, dict):
            self.dynamics = DynamicsConfig(**self.dynamics)
        a, d = self.ae, self.dynamics
        if d.latent_channels != a.latent_channels or tuple(d.latent_size) != a.latent_size:
            raise ValueError(
                f"dynamics latent ({d.latent_channels}, {d.latent_size}) does not match the autoencoder's "
                f"({a.latent_channels}, {a.latent_size})"
            )
        for name in ("latent_mean", "latent_std"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (list, tuple)) or len(v) != a.latent_channels):
                n = len(v) if isinstance(v, (list, tuple)) else type(v).__name__
                raise ValueError(f"{name} has {n} entries, expected a list of latent_channels={a.latent_channels}")
        _check_state(self)
        _check_values(self)

    # -- handy views
    @property
    def frame_size(self) -> tuple[int, int]:
        return self.ae.frame_size

    @property
    def action_dim(self) -> int:
        return self.dynamics.action_dim

    @property
    def context_frames(self) -> int:
        return self.dynamics.context_frames

    def sigma_schedule(self, steps: int | None = None) -> list[float]:
        """Noise levels of the few-step sampler: `steps` values then 0."""
        d = self.dynamics
        return karras_sigmas(steps or self.sampling_steps, d.sigma_max, d.sigma_min, d.rho)

    # -- dict / YAML
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, plain JSON types

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldModelConfig":
        """From `to_dict()` output or a YAML `model:` section. Extra conveniences: `preset` ("tiny"/"base")
        with `frame_size`/`action_dim`; sections `ae`/`dynamics` may be partial (latent shape is derived).
        Keys written by `save_pretrained` (`format`, `weights`) are ignored."""
        d = {k: v for k, v in d.items() if k not in ("format", "weights")}
        preset = d.pop("preset", None)
        if preset is not None or "ae" not in d or "dynamics" not in d:
            return cls.preset(preset or "base", **d)
        frame_size = d.pop("frame_size", None)
        action_dim = d.pop("action_dim", None)
        ae, dyn = dict(d.pop("ae")), dict(d.pop("dynamics"))
        if frame_size is not None:
            ae["frame_size"] = tuple(frame_size)
        if action_dim is not None:
            dyn["action_dim"] = int(action_dim)
        return cls._build(ae, dyn, d)

    @classmethod
    def _build(cls, ae: dict, dyn: dict, top: dict) -> "WorldModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = set(top) - fields
        if bad:
            raise ValueError(f"unknown WorldModelConfig keys {sorted(bad)}; known: {sorted(fields)}")
        _check_keys(ae, AutoencoderConfig, "ae")
        _check_keys(dyn, DynamicsConfig, "dynamics")
        if top.get("state_variables"):  # naming the variables is enough: the dynamics gets one input per name
            dyn.setdefault("state_dim", len(top["state_variables"]))
        aec = AutoencoderConfig(**ae)
        dyn.setdefault("latent_channels", aec.latent_channels)
        dyn.setdefault("latent_size", aec.latent_size)
        return cls(ae=aec, dynamics=DynamicsConfig(**dyn), **top)

    # -- presets
    @classmethod
    def preset(cls, name: str, **kw) -> "WorldModelConfig":
        if name not in ("tiny", "base"):
            raise ValueError(f"unknown preset {name!r}; known: 'tiny', 'base'")
        return getattr(cls, name)(**kw)

    @classmethod
    def tiny(cls, frame_size=(120, 160), action_dim: int = 6, world: str = "doom-explore", **overrides):
        """A model that trains in seconds on CPU (tests, smoke runs)."""
        ae = dict(frame_size=tuple(frame_size), latent_channels=4, downsample=8, base_channels=8,
                  channel_mult=(1, 1, 2, 2), num_res_blocks=1)
        dyn = dict(n_layer=2, n_head=4, n_embd=64, action_dim=int(action_dim), context_frames=4, max_frames=6)
        return cls._with_overrides(ae, dyn, dict(world=world, sampling_steps=1), overrides)

    @classmethod
    def base(cls, frame_size=(120, 160), action_dim: int = 6, world: str = "doom-explore", **overrides):
        """The GPU model (<= ~25M params so bf16 weights stay well under 64 MiB).

        120x160: AE 8x -> 16x20x16 latent, patch 2 -> 80 tokens/frame. 64x64: AE 4x -> 16x16x8, patch 2 -> 64.
        """
        H, W = frame_size
        if min(H, W) <= 64:
            ae = dict(frame_size=(H, W), latent_channels=8, downsample=4, base_channels=32, channel_mult=(1, 2, 4),
                      num_res_blocks=1)
        else:
            ae = dict(frame_size=(H, W), latent_channels=16, downsample=8, base_channels=32, channel_mult=(1, 2, 4, 4),
                      num_res_blocks=1)
        dyn = dict(n_layer=11, n_head=6, n_embd=384, action_dim=int(action_dim), context_frames=16, max_frames=20)
        aec = AutoencoderConfig(**ae)
        h, w = aec.latent_size
        dyn["patch_size"] = 2 if (h % 2 == 0 and w % 2 == 0 and h * w > 96) else 1
        return cls._with_overrides(ae, dyn, dict(world=world, sampling_steps=2), overrides)

    @classmethod
    def _with_overrides(cls, ae: dict, dyn: dict, top: dict, overrides: dict) -> "WorldModelConfig":
        overrides = dict(overrides)
        ae.update(overrides.pop("ae", None) or {})
        dyn.update(overrides.pop("dynamics", None) or {})
        if "frame_size" in overrides:
            ae["frame_size"] = tuple(overrides.pop("frame_size"))
        if "action_dim" in overrides:
            dyn["action_dim"] = int(overrides.pop("action_dim"))
        top.update(overrides)
        return cls._build(ae, dyn, top)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_values(cfg: WorldModelConfig) -> None:
    """Reject values that would load but generate garbage (NaN stats, no sampling pass, a zero noise scale)."""
    for section in ("ae", "dynamics"):
        sub = getattr(cfg, section)
        for f in dataclasses.fields(sub):
            if isinstance(f.default, bool) or not isinstance(f.default, (int, float)):
                continue
            v = getattr(sub, f.name)
            if isinstance(v, tuple) and "tuple" in str(f.type):
                continue  # a number or a tuple of them (dynamics.energy_patch): its own __post_init__ checks each
            integral = isinstance(f.default, int)
            if not _is_number(v) or not math.isfinite(v) or (integral and not isinstance(v, numbers.Integral)):
                kind = "an integer" if isinstance(f.default, int) else "a finite number"
                raise ValueError(f"{section}.{f.name} must be {kind}, got {v!r}")
    d = cfg.dynamics
    for name in ("sigma_max", "sigma_min", "sigma_data", "rho", "rope_base", "mlp_ratio"):
        if getattr(d, name) <= 0:
            raise ValueError(f"dynamics.{name} must be > 0, got {getattr(d, name)!r}")
    if d.sigma_min >= d.sigma_max:
        raise ValueError(f"dynamics.sigma_min ({d.sigma_min}) must be below dynamics.sigma_max ({d.sigma_max})")
    for name in ("n_layer", "n_head", "n_embd", "action_dim", "context_frames", "max_frames", "patch_size"):
        if getattr(d, name) < 1:
            raise ValueError(f"dynamics.{name} must be >= 1, got {getattr(d, name)!r}")
    steps = cfg.sampling_steps
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"sampling_steps must be an integer >= 1, got {cfg.sampling_steps!r}")
    if not _is_number(cfg.context_noise) or not 0.0 <= cfg.context_noise < math.inf:
        raise ValueError(f"context_noise must be a finite number >= 0, got {cfg.context_noise!r}")
    if cfg.renoise not in RENOISE:
        raise ValueError(f"renoise must be one of {RENOISE}, got {cfg.renoise!r}")
    if not _is_number(cfg.detail_carry) or not 0.0 <= cfg.detail_carry < math.inf:
        raise ValueError(f"detail_carry must be a finite number >= 0, got {cfg.detail_carry!r}")
    if cfg.latent_mean is not None or cfg.latent_std is not None:
        C = cfg.ae.latent_channels
        _check_latent_stats(cfg.latent_mean or [0.0] * C, cfg.latent_std or [1.0] * C)


def _check_state(cfg: "WorldModelConfig") -> None:
    """The state's names and stats agree with dynamics.state_dim; stats are finite, stds > 0."""
    S = int(cfg.dynamics.state_dim)
    names = cfg.state_variables
    if S and (not isinstance(names, (list, tuple)) or len(names) != S or not all(isinstance(n, str) for n in names)):
        raise ValueError(f"dynamics.state_dim is {S}: state_variables must name {S} game variables, got {names!r}")
    if not S and names:
        raise ValueError(f"state_variables {list(names)} need dynamics.state_dim = {len(names)}, got 0")
    for name in ("state_mean", "state_std"):
        v = getattr(cfg, name)
        if v is None:
            continue
        if not isinstance(v, (list, tuple)) or len(v) != S:
            raise ValueError(f"{name} must list {S} values (one per state variable), got {v!r}")
        for i, x in enumerate(v):
            if not _is_number(x) or not math.isfinite(x) or (name == "state_std" and x <= 0):
                raise ValueError(f"{name}[{i}] must be {'finite and > 0' if name == 'state_std' else 'finite'}, got {x!r}")


def _check_latent_stats(mean, std) -> None:
    """Finite means and finite positive stds: a bad entry turns every latent of that channel into NaN/inf."""
    for name, vals in (("latent_mean", mean), ("latent_std", std)):
        for i, v in enumerate(vals):
            if not _is_number(v) or not math.isfinite(v) or (name == "latent_std" and v <= 0):
                need = "finite and > 0" if name == "latent_std" else "finite"
                raise ValueError(f"{name}[{i}] must be {need}, got {v!r}")


def _check_keys(d: dict, klass, section: str):
    known = {f.name for f in dataclasses.fields(klass)}
    bad = set(d) - known
    if bad:
        raise ValueError(f"unknown {section} config keys {sorted(bad)}; known: {sorted(known)}")


# ---------------------------------------------------------------------------- the model


class WorldModel(nn.Module):
    """Frame autoencoder + dynamics. The dynamics sees latents normalised per channel by (mean, std)."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        self.config = config
        self.ae = FrameAutoencoder(config.ae)
        self.dynamics = Dynamics(config.dynamics)
        C = config.ae.latent_channels
        self.register_buffer("latent_mean", torch.zeros(C, 1, 1), persistent=False)
        self.register_buffer("latent_std", torch.ones(C, 1, 1), persistent=False)
        S = config.dynamics.state_dim
        self.register_buffer("state_mean", torch.tensor(config.state_mean or [0.0] * S), persistent=False)
        self.register_buffer("state_std", torch.tensor(config.state_std or [1.0] * S), persistent=False)
        self.pretrained_dir: Path | None = None
        if config.latent_mean is not None or config.latent_std is not None:
            self.set_latent_stats(config.latent_mean or [0.0] * C, config.latent_std or [1.0] * C)

    def set_latent_stats(self, mean, std) -> None:
        """Set the per-channel latent mean/std (config and buffers stay in sync)."""
        mean = [float(x) for x in torch.as_tensor(mean).flatten().tolist()]
        std = [float(x) for x in torch.as_tensor(std).flatten().tolist()]
        C = self.config.ae.latent_channels
        if len(mean) != C or len(std) != C:
            raise ValueError(f"latent stats need {C} entries each, got {len(mean)} and {len(std)}")
        _check_latent_stats(mean, std)
        self.config.latent_mean, self.config.latent_std = mean, std
        self.latent_mean.copy_(torch.tensor(mean).view(C, 1, 1))
        self.latent_std.copy_(torch.tensor(std).view(C, 1, 1))

    def set_state_stats(self, mean, std) -> None:
        """Set the per-variable state mean/std (config and buffers stay in sync)."""
        mean = [float(x) for x in torch.as_tensor(mean).flatten().tolist()]
        std = [float(x) for x in torch.as_tensor(std).flatten().tolist()]
        self.config.state_mean, self.config.state_std = mean, std
        _check_state(self.config)
        self.state_mean.copy_(torch.tensor(mean))
        self.state_std.copy_(torch.tensor(std))

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        """Game variables as recorded (..., S) -> what the dynamics sees and predicts."""
        return (state.float() - self.state_mean) / self.state_std

    def denormalize_state(self, state: torch.Tensor) -> torch.Tensor:
        """The dynamics' state (..., S) -> game variables in their own units (HEALTH in points)."""
        return state.float() * self.state_std + self.state_mean

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_params(self) -> dict[str, int]:
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"ae": n(self.ae), "encoder": n(self.ae.encoder), "decoder": n(self.ae.decoder),
                "dynamics": n(self.dynamics), "total": n(self)}

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) or float (..., 3, H, W) in [-1, 1] -> normalised latents (..., C, h, w)."""
        x = frames_to_tensor(frames) if frames.dtype == torch.uint8 else frames
        lead = x.shape[:-3]
        z = self.ae.encode(x.reshape(-1, *x.shape[-3:]).to(self.dtype))
        z = (z - self.latent_mean) / self.latent_std
        return z.reshape(*lead, *z.shape[1:])

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (..., C, h, w) -> float (..., 3, H, W) in about [-1, 1]."""
        lead = z.shape[:-3]
        z = z.reshape(-1, *z.shape[-3:]).to(self.dtype) * self.latent_std + self.latent_mean
        x = self.ae.decode(z)
        return x.reshape(*lead, *x.shape[1:])

    # -- save / load

    def save_pretrained(self, directory, dtype: torch.dtype | None = torch.bfloat16,
                        max_shard_bytes: int = MAX_SHARD_BYTES) -> list[Path]:
        """Write config.json + safetensors shards (<= max_shard_bytes each; a tensor that cannot fit raises
        ValueError before anything is written). Every file is written to a temp name and renamed into place, the
        shards first and config.json last (it lists them and their sha256), then stale shards of older saves
        are removed. dtype: cast floating tensors (default bf16; None keeps the model's). Returns the written paths."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for k, v in self.state_dict().items():
            v = v.detach()
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            tensors[k] = v.contiguous().cpu()
        # a shard's size = 8-byte length + JSON header (~100 bytes per tensor + metadata) + tensor bytes
        cost = {k: v.numel() * v.element_size() + len(k) + 128 for k, v in tensors.items()}
        budget = max_shard_bytes - 512
        too_big = [k for k, c in cost.items() if c > budget]
        if too_big:
            raise ValueError(f"tensor {too_big[0]!r} ({tensors[too_big[0]].numel() * tensors[too_big[0]].element_size()} "
                             f"bytes) cannot fit a shard of max_shard_bytes={max_shard_bytes}")
        groups: list[list[str]] = [[]]
        size = 0
        for k in tensors:
            if groups[-1] and size + cost[k] > budget:
                groups.append([])
                size = 0
            groups[-1].append(k)
            size += cost[k]
        n = len(groups)
        names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        meta = {"format": "pt", "odyssey_format": WEIGHTS_FORMAT, "model_version": str(MODEL_VERSION)}
        written = []
        for name, keys in zip(names, groups):
            tmp = out / f".{name}.tmp-{os.getpid()}"
            save_file({k: tensors[k] for k in keys}, str(tmp), metadata=meta)
            os.replace(tmp, out / name)
            written.append(out / name)
        _write_index(out, {k: name for name, keys in zip(names, groups) for k in keys},
                     sum(v.numel() * v.element_size() for v in tensors.values()))
        written.append(out / INDEX_NAME)
        cfg = {"format": WEIGHTS_FORMAT, **self.config.to_dict()}
        cfg["model_version"] = MODEL_VERSION
        any_float = next((v.dtype for v in tensors.values() if v.is_floating_point()), None)
        cfg["weights"] = {"dtype": str(any_float).removeprefix("torch."), "shards": names,
                          "num_params": sum(v.numel() for v in tensors.values()),
                          "sha256": {name: _file_sha256(out / name) for name in names}}
        _write_config(out, cfg)
        written.append(out / CONFIG_NAME)
        for stale in out.glob("model-*-of-*.safetensors"):
            if stale.name not in names:
                stale.unlink()
        return written

    @classmethod
    def from_pretrained(cls, directory, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> "WorldModel":
        """Load a directory written by `save_pretrained`. dtype None: float32.

        Each shard is checked against the sha256 recorded in config.json (exports without recorded hashes
        load unchecked); the config's values are range-checked. Every error names the file at fault."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        root = Path(directory)
        cfg_path = root / CONFIG_NAME
        d, shards, hashes = read_weights_config(root)
        try:
            config = WorldModelConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{cfg_path}: bad model config: {e}") from None

        state, where = {}, {}
        for name in shards:
            f = root / name
            if not f.is_file():
                raise FileNotFoundError(f"{f}: weight shard listed in {cfg_path.name} is missing")
            if hashes is not None and _file_sha256(f) != hashes[name]:
                raise ValueError(f"{f}: sha256 does not match the one recorded in {cfg_path.name} "
                                 f"(corrupt or altered shard; re-export or re-download the weights)")
            try:
                part = load_file(str(f), device="cpu")
            except (SafetensorError, OSError) as e:
                raise ValueError(f"{f}: cannot read safetensors shard ({e})") from None
            for k, v in part.items():
                if k in state:
                    raise ValueError(f"{f}: tensor {k!r} also appears in {where[k]}")
                state[k], where[k] = v, name
        _check_index(root, where)
        model = cls(config)
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"{root}: shards {shards} lack {len(missing)} tensors the model in {cfg_path.name} needs, "
                             f"e.g. {missing[:3]} (config and weights do not match)")
        for k, v in state.items():
            if k not in expected:
                raise ValueError(f"{root / where[k]}: unexpected tensor {k!r} for the model in {cfg_path.name} "
                                 f"(config and weights do not match)")
            if tuple(v.shape) != tuple(expected[k].shape):
                raise ValueError(f"{root / where[k]}: tensor {k!r} has shape {tuple(v.shape)} but the model in "
                                 f"{cfg_path.name} expects {tuple(expected[k].shape)} (config and weights do not match)")
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
        model.to(device=device, dtype=dtype or torch.float32)
        model.pretrained_dir = root
        return model.eval()


# ---------------------------------------------------------------------------- config.json


def _file_sha256(path: Path) -> str:
    """Streamed (no copy of the file in memory): ~30 ms for 47 MB of shards."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_index(out: Path, weight_map: dict[str, str], total_size: int) -> None:
    """model.safetensors.index.json in the layout huggingface_hub's `split_torch_state_dict_into_shards` gives
    (`metadata.total_size` = tensor bytes, `weight_map` sorted by tensor name); temp name + rename."""
    index = {"metadata": {"total_size": int(total_size)}, "weight_map": dict(sorted(weight_map.items()))}
    tmp = out / f".{INDEX_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, out / INDEX_NAME)


def _check_index(root: Path, where: dict[str, str]) -> None:
    """An index beside the shards must say where each tensor really is: a stale or edited one would send other
    tools to the wrong file. Exports made before the index existed have none and load as before."""
    f = root / INDEX_NAME
    if not f.exists():
        return
    try:
        wm = json.loads(f.read_text())["weight_map"]
        if not isinstance(wm, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: not a safetensors index ({type(e).__name__}: {e})") from None
    wrong = sorted(k for k in set(wm) | set(where) if wm.get(k) != where.get(k))
    if wrong:
        k = wrong[0]
        raise ValueError(f"{f}: does not match the shards ({len(wrong)} tensor(s), e.g. {k!r}: index says "
                         f"{wm.get(k)!r}, the shards have it in {where.get(k)!r}); re-export, or write it anew "
                         f"with odyssey_gym.model.write_safetensors_index")


def write_safetensors_index(directory) -> Path:
    """Write the standard model.safetensors.index.json for an export made before it existed, from the shards
    themselves (after they load and pass their recorded hashes, so a corrupt export is never indexed)."""
    from safetensors import safe_open

    root = Path(directory)
    _, shards, _ = read_weights_config(root)
    stale = root / INDEX_NAME
    if stale.exists():
        stale.unlink()  # rebuilt from the shards below; a wrong one must not block the check load
    WorldModel.from_pretrained(root)
    weight_map, total = {}, 0
    for name in shards:
        with safe_open(str(root / name), framework="pt") as sf:
            for k in sf.keys():
                weight_map[k] = name
                t = sf.get_tensor(k)
                total += t.numel() * t.element_size()
    _write_index(root, weight_map, total)
    return root / INDEX_NAME


def _write_config(out: Path, cfg: dict) -> None:
    """The one writer of config.json (temp name + rename), so every export has the same layout."""
    tmp = out / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    os.replace(tmp, out / CONFIG_NAME)


def _check_shard_name(name, cfg_path: Path) -> None:
    """A shard is a plain file name inside the weights folder: a config must not point the loader elsewhere."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or Path(name).is_absolute() or Path(name).name != name):
        raise ValueError(f"{cfg_path}: weights.shards entry {name!r} is not a file name inside {cfg_path.parent}")


def read_weights_config(directory) -> tuple[dict, list[str], dict[str, str] | None]:
    """Read and check config.json's envelope: (the config dict, the shard names, their sha256 or None).

    Raises naming config.json and the key at fault: not a JSON object, wrong format or model_version,
    no `world`, `weights.shards` not a list of file names inside the folder, `weights.sha256` not covering them."""
    root = Path(directory)
    cfg_path = root / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: no {CONFIG_NAME} (not a directory written by WorldModel.save_pretrained)")
    try:
        d = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got a {type(d).__name__}")
    if d.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{cfg_path}: format is {d.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
    if d.get("model_version") != MODEL_VERSION:
        raise ValueError(
            f"{cfg_path}: weights have model_version {d.get('model_version')!r} but this odyssey_gym reads "
            f"model_version {MODEL_VERSION}; use the odyssey_gym release they were trained with or retrain"
        )
    if not isinstance(d.get("world"), str) or not d["world"]:
        raise ValueError(f"{cfg_path}: 'world' must name the world the weights were trained for, got {d.get('world')!r}")
    w = d.get("weights")
    if not isinstance(w, dict):
        raise ValueError(f"{cfg_path}: 'weights' must be an object with a 'shards' list, got {w!r}")
    shards = w.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ValueError(f"{cfg_path}: 'weights.shards' must be a non-empty list of file names, got {shards!r}")
    for name in shards:
        _check_shard_name(name, cfg_path)
    if len(set(shards)) != len(shards):
        raise ValueError(f"{cfg_path}: 'weights.shards' lists a shard twice: {shards}")
    hashes = w.get("sha256")
    if hashes is not None:
        if not isinstance(hashes, dict) or set(hashes) != set(shards) or not all(
                isinstance(h, str) and len(h) == 64 for h in hashes.values()):
            raise ValueError(f"{cfg_path}: 'weights.sha256' must map each shard in 'weights.shards' to a "
                             f"64-hex-digit sha256")
    return d, shards, hashes


def record_shard_hashes(directory) -> dict[str, str]:
    """Add each shard's sha256 to the config.json of an export made before hashes were recorded.

    The weights must load first (so a corrupt shard is never blessed); hashes already recorded must match.
    The file is rewritten by the same writer as `save_pretrained`, with `weights.sha256` as its last key."""
    root = Path(directory)
    WorldModel.from_pretrained(root)  # raises on a bad config, an unreadable shard or a recorded hash that fails
    d, shards, hashes = read_weights_config(root)
    fresh = {name: _file_sha256(root / name) for name in shards}
    if hashes is not None:
        return fresh  # already recorded, and from_pretrained just checked them
    d["weights"]["sha256"] = fresh
    _write_config(root, d)
    return fresh


def estimate_flops_per_frame(config: WorldModelConfig, sampling_steps: int | None = None) -> dict[str, float]:
    """Analytic FLOPs (2 per multiply-add) of one generated frame at steady state in the cached sampler:
    `sampling_steps` denoising passes + 1 clean pass of one frame's P tokens against K cached frames,
    plus one AE decode (counted with torch's FLOP counter on a meta-free CPU run)."""
    from torch.utils.flop_counter import FlopCounterMode

    d = config.dynamics
    P, D, K, L = d.tokens_per_frame, d.n_embd, d.context_frames, d.n_layer
    hidden = int(D * d.mlp_ratio)
    per_layer = 2 * P * (3 * D * D + D * D + 2 * D * hidden) + 2 * 2 * P * (K + 1) * P * D
    io = 2 * P * D * d.latent_channels * d.patch_size**2 * 2 + 2 * (D * 6 * D)
    per_pass = L * per_layer + io
    steps = sampling_steps or config.sampling_steps
    dec = FrameAutoencoder(config.ae).decoder
    h, w = config.ae.latent_size
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        dec(torch.zeros(1, config.ae.latent_channels, h, w))
    decode = float(fc.get_total_flops())
    total = (steps + 1) * per_pass + decode
    return {"per_pass": float(per_pass), "passes": steps + 1, "decode": decode, "total": float(total),
            "gflops": total / 1e9}
