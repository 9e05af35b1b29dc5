"""A patch discriminator: judges every ~30-pixel patch of a frame real or decoded.

Training aid only (never shipped or run in play). A frame decoder trained on pixel losses alone decodes an uncertain
latent to the mean of the frames it could be, a soft blur; an adversarial term rewards texture a real frame would
have instead (VQGAN, Esser et al. 2021; Oasis's and Matrix-Game's autoencoders).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .autoencoder import _groups


class PatchDiscriminator(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] -> logits (B, 1, H/8, W/8): three stride-2 convolutions, then one logit per
    patch. GroupNorm, not BatchNorm: real and decoded frames are judged in separate calls."""

    def __init__(self, channels: int = 64, levels: int = 3):
        super().__init__()
        if channels < 1 or levels < 1:
            raise ValueError(f"discriminator needs channels >= 1 and levels >= 1, got {channels} and {levels}")
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(levels - 1):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.GroupNorm(_groups(2 * c), 2 * c),
                       nn.LeakyReLU(0.2)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: real patches pushed above +1, decoded ones below -1."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side: raise the discriminator's logits on decoded frames."""
    return -logits_fake.float().mean()
