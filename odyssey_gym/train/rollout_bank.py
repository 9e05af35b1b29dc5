"""Rolling self-forcing: rows of the model's own long rollouts, kept between training steps.

The unrolls of `steps.unroll_context` put at most `unroll_len` generated frames into a window, all of them
sampled from real frames a few passes back. In play the whole context is the model's own output, minutes deep,
and that is where doom-explore's frames fade. A `RolloutBank` keeps `rows` rollouts alive across steps: each
follows a real stretch of play under its true actions, and every training step it advances them by `advance`
frames with the sampler's own rule (one `generate_next` per frame from the last K generated frames, no grad).
Its rows enter the batch with those frames as the context stream and the true frames as targets, so the model
learns to pull a context that has drifted for up to `max_age` frames back to the real frame (truncated
gradients: nothing flows through the rollout).

A row restarts from a random real window when its episode ends or its life (drawn uniformly in 1..max_age
frames, so the bank holds every age) runs out. Everything is fixed-shape on the training device: no host sync.
The bank is not checkpointed: a resumed run refills it from real windows.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .resident import ResidentData


class RolloutBank:
    """`rows` rollouts over `window`-frame stretches of `data` (latents set); `context` frames feed each new one."""

    def __init__(self, data: ResidentData, rows: int, window: int, context: int, max_age: int, advance: int,
                 seed: int):
        if data.latents is None:
            raise ValueError("RolloutBank needs the data's latents (set_latents first)")
        if rows < 1 or advance < 1 or max_age < 1:
            raise ValueError(f"RolloutBank: rows ({rows}), advance ({advance}) and max_age ({max_age}) must be >= 1")
        if not 1 <= context <= window:
            raise ValueError(f"RolloutBank: context ({context}) must lie in 1..window ({window})")
        self.data, self.rows, self.window, self.context = data, rows, window, context
        self.max_age, self.advance_frames = max_age, advance
        dev = data.device
        self.starts = data.window_starts(window)
        valid = torch.zeros(data.n + 1, dtype=torch.bool, device=dev)
        valid[self.starts] = True
        self.next_ok = valid[1:].clone()  # a window at s can slide to s + 1 without leaving its episode
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(int(seed))
        self.arange = torch.arange(window, device=dev)
        self.idx = torch.zeros(rows, dtype=torch.int64, device=dev)  # first real frame of each row's window
        self.age = torch.zeros(rows, dtype=torch.int64, device=dev)  # frames generated since the row's restart
        self.life = torch.ones(rows, dtype=torch.int64, device=dev)
        self.z = torch.zeros(rows, window, *data.latents.shape[1:], dtype=data.latents.dtype, device=dev)
        self._restart(torch.ones(rows, dtype=torch.bool, device=dev))

    def _latents(self, idx: torch.Tensor) -> torch.Tensor:
        lat = self.data.latents
        return lat[idx.to(lat.device)].to(self.z.device, non_blocking=True).to(self.z.dtype)

    def _restart(self, mask: torch.Tensor) -> None:
        """Rows in `mask` (R,) bool start again from a random real window, with a new life."""
        pick = torch.randint(0, self.starts.numel(), (self.rows,), device=self.idx.device, generator=self.gen)
        idx = self.starts[pick]
        life = torch.randint(1, self.max_age + 1, (self.rows,), device=self.idx.device, generator=self.gen)
        real = self._latents(idx[:, None] + self.arange)
        self.idx = torch.where(mask, idx, self.idx)
        self.age = torch.where(mask, torch.zeros_like(self.age), self.age)
        self.life = torch.where(mask, life, self.life)
        self.z = torch.where(mask[:, None, None, None, None], real, self.z)

    @torch.no_grad()
    def advance(self, dyn: torch.nn.Module, sigmas: Sequence[float]) -> None:
        """Slide every row `advance` frames: the frame after its window is sampled (`sigmas`, the sampler's
        schedule) from its last `context` frames under the true action; rows that cannot go on restart."""
        acts = self.data.actions
        last = self.data.n - 1
        for _ in range(self.advance_frames):
            alive = self.next_ok[self.idx] & (self.age < self.life)
            nxt = (self.idx + self.window).clamp_max(last)  # a row that cannot go on reads any frame; it restarts
            ctx_idx = (nxt[:, None] - self.context + torch.arange(self.context, device=nxt.device)).clamp_min(0)
            noise = torch.randn(self.z[:, 0].shape, device=self.z.device, generator=self.gen)
            new = dyn.generate_next(self.z[:, -self.context:], acts[ctx_idx], acts[nxt], noise=noise, sigmas=sigmas)
            self.z = torch.where(alive[:, None, None, None, None],
                                 torch.cat([self.z[:, 1:], new[:, None].to(self.z.dtype)], 1), self.z)
            self.idx = torch.where(alive, self.idx + 1, self.idx)
            self.age = torch.where(alive, self.age + 1, self.age)
            self._restart(~alive)

    def batch(self) -> dict[str, Any]:
        """The rows as a window batch (`ResidentData.windows` of the true frames) plus `rollout_z`: the context
        stream, the model's own frames where it has made them (real frames of a freshly restarted row)."""
        b = self.data.windows(self.idx[:, None] + self.arange)
        b["rollout_z"] = self.z.float()
        return b
