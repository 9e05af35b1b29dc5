"""Training data held as tensors: frames (GPU or pinned CPU), latents, actions/rewards/terminated.

No DataLoader: batches are index arithmetic on resident tensors. Window starts come from
`FlatData.window_starts(T)`; a batch of windows is `starts[randint] + arange(T)`, gathered on the
device where the data lives. All randomness goes through one `torch.Generator` (`self.gen`) whose
state is checkpointed, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.dynamics import previous_state


def _fits(nbytes: int, device: torch.device, frac: float, already_there: bool = False) -> bool:
    """Whether `nbytes` may live on `device`: at most `frac` of its memory, and (unless the tensor is already
    there, its bytes then counted as used) at most 80% of what is free now (another process may hold the rest)."""
    if device.type != "cuda":
        return True
    total = torch.cuda.get_device_properties(device).total_memory
    if nbytes > frac * total:
        return False
    if already_there:
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= 0.8 * free


def _to(x: np.ndarray | torch.Tensor, device: torch.device, frac: float, what: str, log=None) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if device.type == "cuda":
        if _fits(t.numel() * t.element_size(), device, frac, already_there=t.device.type == "cuda"):
            return t.to(device, non_blocking=False)
        if log:
            log(f"{what}: {t.numel() * t.element_size() / 2**30:.1f} GiB does not fit the GPU budget; kept in pinned CPU memory")
        return t.cpu().pin_memory()  # a tensor made on the GPU (the encoded latents) comes back to the host first
    return t


class ResidentData:
    """FlatData as tensors. `device` is where batches are produced (the training device)."""

    def __init__(self, flat, device: torch.device | str, seed: int, gpu_resident_frac: float = 0.35, log=None):
        self.device = torch.device(device)
        self.flat = flat
        self.log = log
        self.frames = _to(np.asarray(flat.frames), self.device, gpu_resident_frac, "frames", log)  # (N,H,W,3) uint8
        self.actions = torch.as_tensor(np.asarray(flat.actions, np.float32)).to(self.device)  # (N,A)
        self.rewards = torch.as_tensor(np.asarray(flat.rewards, np.float32)).to(self.device)  # (N,)
        self.terminated = torch.as_tensor(np.asarray(flat.terminated, bool)).to(self.device)  # (N,)
        self.first = torch.as_tensor(np.asarray(flat.first, bool)).to(self.device)  # (N,)
        self.n = int(self.frames.shape[0])
        self.latents: torch.Tensor | None = None
        self.state: torch.Tensor | None = None  # (N, S) normalised game variables, from set_state()
        self.state_prev: torch.Tensor | None = None  # (N, S) the state frame i-1 ended in (zeros at a first frame)
        self.gpu_resident_frac = gpu_resident_frac
        self._starts: dict[int, torch.Tensor] = {}
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(seed))

    # ------------------------------------------------------------------ frames (autoencoder phase)
    def sample_frames(self, batch_size: int) -> torch.Tensor:
        """Random frames as float (B, 3, H, W) in [-1, 1] on the training device."""
        idx = torch.randint(0, self.n, (batch_size,), device=self.device, generator=self.gen)
        return self.frames_at(idx)

    def frames_at(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.frames[idx.to(self.frames.device)].to(self.device, non_blocking=True)
        return uint8_to_float(x)

    # ------------------------------------------------------------------ latents (dynamics phase)
    def set_latents(self, z: torch.Tensor) -> None:
        """z: (N, C, h, w), any device; kept on the GPU in bf16 when it fits, else pinned CPU."""
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.latents = _to(z.to(dtype), self.device, self.gpu_resident_frac, "latents", self.log)

    def set_state(self, state: torch.Tensor) -> None:
        """state: (N, S) normalised game variables of every frame (the model's `normalize_state`)."""
        self.state = state.float().to(self.device)
        self.state_prev = previous_state(self.state[None], self.first[None])[0]  # the whole data as one window

    def window_starts(self, T: int) -> torch.Tensor:
        if T not in self._starts:
            s = np.asarray(self.flat.window_starts(T), dtype=np.int64)
            if s.size == 0:
                raise ValueError(f"no episode in the data is at least {T} frames long; lower train.dyn_window")
            self._starts[T] = torch.as_tensor(s).to(self.device)
        return self._starts[T]

    def sample_window_index(self, batch_size: int, T: int) -> torch.Tensor:
        """(B, T) int64 frame indices of random windows lying inside one episode each."""
        starts = self.window_starts(T)
        pick = torch.randint(0, starts.numel(), (batch_size,), device=self.device, generator=self.gen)
        return starts[pick][:, None] + torch.arange(T, device=self.device)[None, :]

    def windows(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather a window batch: z (B,T,C,h,w) float32, actions (B,T,A), rewards (B,T), terminated (B,T) bool;
        with game state, state and state_prev (B,T,S)."""
        assert self.latents is not None, "set_latents() first"
        z = self.latents[idx.to(self.latents.device)].to(self.device, non_blocking=True).float()
        out = {
            "z": z,
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "terminated": self.terminated[idx],
            "first": self.first[idx],
        }
        if self.state is not None:
            out["state"], out["state_prev"] = self.state[idx], self.state_prev[idx]
        return out

    def sample_windows(self, batch_size: int, T: int) -> dict[str, torch.Tensor]:
        return self.windows(self.sample_window_index(batch_size, T))


def uint8_to_float(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [-1, 1]."""
    return x.movedim(-1, -3).float().div_(127.5).sub_(1.0)
