"""The decoder phase's adversary: a patch discriminator and its optimiser, stepped once after each decoder step.

It owns its state (weights, AdamW, how many updates it has made); the trainer asks it for the generator's term and
tells it when to update. Its weights go into checkpoints so a resumed leg continues the same game, and never into
exported weights.
"""

from __future__ import annotations

from typing import Any

import torch

from odyssey_gym.model.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss


class Adversary:
    """`weight`: the generator term's relative weight (see `generator_loss`) once the discriminator has made `start`
    updates; before that the discriminator learns against the unchanged decoder, so its first gradients are not
    noise."""

    def __init__(self, *, channels: int, lr: float, betas: tuple[float, float], weight: float, start: int,
                 device: torch.device, amp: Any, seed: int, all_reduce_grads=None):
        with torch.random.fork_rng(devices=[]):  # the same start on every rank, the run's RNG streams untouched
            torch.manual_seed(seed)
            self.disc = PatchDiscriminator(channels).to(device)
        self.disc.requires_grad_(False)  # on only inside `update`: the decoder's backward leaves it alone
        self.opt = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=betas, weight_decay=0.0)
        self.weight, self.start, self.amp = float(weight), int(start), amp
        self.updates = 0
        self._all_reduce = all_reduce_grads  # DDP: every rank's discriminator takes the same step

    def generator_loss(self, fake: torch.Tensor, recon: torch.Tensor, last_layer: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The term the decoder adds to its reconstruction loss `recon` for decoded frames `fake` (zero before
        `start`). Its weight adapts (VQGAN): `weight` times the ratio of the two losses' gradient norms at the
        decoder's output layer `last_layer`, so `weight` means the same however large either loss is."""
        g = hinge_g_loss(self.disc(fake))
        if self.updates < self.start:
            return 0.0 * g, {"adv_g": g.detach()}
        grad_rec = torch.autograd.grad(recon, last_layer, retain_graph=True)[0]
        grad_adv = torch.autograd.grad(g, last_layer, retain_graph=True)[0]
        w = (grad_rec.norm() / (grad_adv.norm() + 1e-4)).clamp(0.0, 1e4).detach()
        return self.weight * w * g, {"adv_g": g.detach(), "adv_w": w}

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator step on real frames and decoded ones (detached). Metrics are device tensors."""
        self.disc.requires_grad_(True)
        try:
            with self.amp:
                loss = hinge_d_loss(self.disc(real), self.disc(fake.detach()))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self._all_reduce is not None:
                self._all_reduce([p.grad for p in self.disc.parameters()])
            self.opt.step()
        finally:
            self.disc.requires_grad_(False)
        self.updates += 1
        return {"adv_d": loss.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"disc": self.disc.state_dict(), "opt": self.opt.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])
        self.updates = int(state["updates"])
