"""Inverse-dynamics probe: (frame_t, frame_t+1) -> the action that led into frame t+1 (docs/ARCHITECTURE.md, eval/).

Trained on real consecutive frames only, then scored on real and on generated transitions; the ratio of the
two accuracies is the world model's controllability. The same network's per-frame conv trunk is the fixed
feature extractor of the realism score (`odyssey_gym.eval.realism`), so one small shipped file serves both.

Architecture (pure torch, CPU-friendly): each frame is downsampled (area) to at most 64x64 and passed
through a shared per-frame trunk (3 convs, stride 4 overall); the two feature maps and their difference
are stacked along channels and go through a small fusion head to one logit per button (multibinary worlds,
sigmoid) or per discrete action (softmax).

Accuracy conventions (`probe_accuracy`):
- multibinary: per button, the fraction of transitions where the thresholded sigmoid matches the key; `mean`
  is the mean over buttons. Chance for a button is max(p, 1-p), p its press rate (reported as `chance`).
- discrete: per action, its recall (fraction of transitions with that true action predicted as it); `mean`
  is the mean recall (balanced accuracy), whose chance level is exactly 1/K for any predictor that ignores
  the frames, whatever the action frequencies. Top-1 accuracy is reported beside it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_SIDE = 64
WEIGHTS_FILE = "probe.safetensors"
CONFIG_FILE = "probe.json"


@dataclass
class ProbeConfig:
    world: str
    action_kind: str  # "multibinary" | "discrete"
    action_names: list[str]  # one per logit
    frame_size: list[int]  # (H, W) of the world's frames
    input_size: list[int]  # (h, w) the frames are downsampled to (each <= 64)
    channels: int = 16
    trained_steps: int = 0
    train_transitions: int = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        return len(self.action_names)

    @property
    def feature_dim(self) -> int:
        """Length of the per-frame realism feature (mean and std of each trunk channel)."""
        return 2 * 2 * self.channels


def input_size_for(frame_size, max_side: int = MAX_SIDE) -> list[int]:
    h, w = int(frame_size[0]), int(frame_size[1])
    s = min(1.0, max_side / h, max_side / w)
    return [max(1, int(round(h * s))), max(1, int(round(w * s)))]


def action_names(spec) -> list[str]:
    if spec.action_kind == "multibinary":
        return list(spec.buttons)
    names = []
    for combo in spec.discrete_actions:
        pressed = [b for b, on in zip(spec.buttons, combo) if on]
        names.append("+".join(pressed) if pressed else "NOOP")
    return names


class Probe(nn.Module):
    def __init__(self, config: ProbeConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.trunk = nn.Sequential(
            nn.Conv2d(3, c, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, 2, 1), nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Conv2d(6 * c, 4 * c, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(4 * c, 4 * c, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * c, config.num_outputs),
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, frames) -> torch.Tensor:
        """uint8 (N, H, W, 3) numpy/torch -> float (N, 3, h, w) in [-1, 1] at the probe's input size."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8, got {frames.dtype}")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) frames, got shape {tuple(frames.shape)}")
        x = frames.to(self.device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        size = tuple(self.config.input_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="area")
        return x

    def trunk_maps(self, frames) -> torch.Tensor:
        return self.trunk(self.prepare(frames))

    def forward(self, frames_t, frames_t1) -> torch.Tensor:
        """Logits (N, num_outputs) for the action that led from frames_t to frames_t1."""
        a, b = self.trunk_maps(frames_t), self.trunk_maps(frames_t1)
        return self.head(torch.cat([a, b, b - a], dim=1))

    # ------------------------------------------------------------------ io
    def save(self, directory) -> Path:
        """Write probe.safetensors + probe.json into `directory` (created); returns the directory."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = out / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(out / WEIGHTS_FILE)
        tmp = out / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self.config), indent=2))
        tmp.replace(out / CONFIG_FILE)
        return out

    @classmethod
    def load(cls, directory, device="cpu") -> "Probe":
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = ProbeConfig(**json.loads((d / CONFIG_FILE).read_text()))
        probe = cls(cfg)
        probe.load_state_dict(load_file(str(d / WEIGHTS_FILE)))
        return probe.to(device).eval()


def _targets(actions, kind: str) -> torch.Tensor:
    """Action vectors (N, A) float (flat.actions layout) or class indices (N,) -> training targets."""
    a = torch.as_tensor(np.asarray(actions))
    if kind == "multibinary":
        if a.ndim != 2:
            raise ValueError(f"multibinary actions must be (N, buttons), got shape {tuple(a.shape)}")
        return (a > 0.5).float()
    if a.ndim == 2:
        return a.argmax(dim=1).long()
    return a.long()


def real_pairs(flat, starts: np.ndarray):
    """(frames_t, frames_t+1, action into t+1) for transition starts t (from `flat.pick_windows(2, ...)`)."""
    if flat.frames is None:
        raise ValueError("the probe needs frames in memory (FlatData.frames is None)")
    starts = np.asarray(starts, np.int64)
    return flat.frames[starts], flat.frames[starts + 1], flat.actions[starts + 1]


def train_probe(flat, spec, steps: int = 2000, batch: int = 64, seed: int = 0, device="cpu",
                lr: float = 1e-3, channels: int = 16, progress: bool = False) -> Probe:
    """Train the probe on real consecutive frames of `flat` (every transition inside one episode).
    `progress`: a bar with ETA and the loss on stderr (thousands of steps take minutes on a CPU)."""
    import sys

    from tqdm import tqdm

    starts = flat.window_starts(2)
    if len(starts) == 0:
        raise ValueError("no transition (two consecutive frames of one episode) in the data")
    if flat.frames is None:
        raise ValueError("the probe needs frames in memory (FlatData.frames is None)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = ProbeConfig(world=spec.name, action_kind=spec.action_kind, action_names=action_names(spec),
                      frame_size=list(flat.frames.shape[1:3]), input_size=input_size_for(flat.frames.shape[1:3]),
                      channels=channels, trained_steps=int(steps), train_transitions=int(len(starts)), seed=int(seed))
    probe = Probe(cfg).to(device)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    probe.train()
    bar = tqdm(range(steps), desc=f"{spec.name} probe", unit="step", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=1.0)
    for step in bar:
        ft, ft1, act = real_pairs(flat, flat.pick_windows(2, batch, rng, repeat=True))
        y = _targets(act, spec.action_kind).to(device)
        logits = probe(ft, ft1)
        if spec.action_kind == "multibinary":
            loss = F.binary_cross_entropy_with_logits(logits, y)
        else:
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress and step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # a sync every 50 steps, only with a bar
    bar.close()
    return probe.eval()


@torch.no_grad()
def predict(probe: Probe, frames_t, frames_t1, batch: int = 256) -> torch.Tensor:
    """Predicted actions: (N, buttons) 0/1 for multibinary worlds, (N,) class indices for discrete ones."""
    probe.eval()
    out = []
    for i in range(0, len(frames_t), batch):
        logits = probe(frames_t[i: i + batch], frames_t1[i: i + batch]).cpu()
        out.append((logits > 0).float() if probe.config.action_kind == "multibinary" else logits.argmax(1))
    if not out:
        k = probe.config.num_outputs
        return torch.zeros((0, k)) if probe.config.action_kind == "multibinary" else torch.zeros(0, dtype=torch.long)
    return torch.cat(out)


def probe_accuracy(probe: Probe, frames_t, frames_t1, actions, batch: int = 256) -> dict:
    """Per-action accuracy, its mean, chance levels and confusion matrices (conventions: module docstring).

    actions: (N, A) vectors as in FlatData.actions (the action INTO frames_t1), or (N,) class indices.
    """
    cfg = probe.config
    y = _targets(actions, cfg.action_kind)
    if len(y) != len(frames_t) or len(frames_t) != len(frames_t1):
        raise ValueError(f"lengths differ: {len(frames_t)} frames_t, {len(frames_t1)} frames_t1, {len(y)} actions")
    pred = predict(probe, frames_t, frames_t1, batch)
    names = cfg.action_names
    n = int(len(y))
    if cfg.action_kind == "multibinary":
        per = {nm: float((pred[:, j] == y[:, j]).float().mean()) if n else float("nan") for j, nm in enumerate(names)}
        rate = y.mean(0) if n else torch.full((len(names),), float("nan"))
        chance = {nm: float(torch.maximum(rate[j], 1 - rate[j])) for j, nm in enumerate(names)}
        # per button [[true 0 -> pred 0, true 0 -> pred 1], [true 1 -> pred 0, true 1 -> pred 1]]
        conf = {nm: [[int(((y[:, j] == a) & (pred[:, j] == b)).sum()) for b in (0, 1)] for a in (0, 1)]
                for j, nm in enumerate(names)}
        exact = float((pred == y).all(1).float().mean()) if n else float("nan")
        mean_chance = float(np.mean(list(chance.values())))
    else:
        k = len(names)
        conf_t = torch.zeros(k, k, dtype=torch.long)
        conf_t.index_put_((y, pred), torch.ones(n, dtype=torch.long), accumulate=True)
        support = conf_t.sum(1)
        per = {nm: float(conf_t[j, j] / support[j]) if support[j] else float("nan") for j, nm in enumerate(names)}
        present = [v for v in per.values() if not np.isnan(v)]
        chance = {nm: 1.0 / max(1, len(present)) for nm in names}
        conf = conf_t.tolist()
        exact = float((pred == y).float().mean()) if n else float("nan")
        mean_chance = 1.0 / max(1, len(present))
    vals = [v for v in per.values() if not np.isnan(v)]
    return {
        "transitions": n,
        "per_action": per,
        "mean": float(np.mean(vals)) if vals else float("nan"),
        "exact_match": exact,  # discrete: top-1 accuracy; multibinary: every button right
        "chance": chance,
        "mean_chance": mean_chance,
        "confusion": conf,  # discrete: rows true action, columns predicted (order of per_action)
    }


def controllability(generated: dict, real: dict) -> dict:
    """Accuracy on generated transitions / accuracy on real ones, per action and for the mean (target >= 0.95)."""
    def ratio(g, r):
        return float(g / r) if r and not (np.isnan(g) or np.isnan(r)) else float("nan")

    return {
        "per_action": {k: ratio(generated["per_action"][k], real["per_action"][k]) for k in real["per_action"]},
        "mean": ratio(generated["mean"], real["mean"]),
        "real_mean_accuracy": real["mean"],
        "generated_mean_accuracy": generated["mean"],
    }
