"""Frame autoencoder: uint8 frames <-> a small latent grid the dynamics model works in.

A plain conv encoder/decoder (GroupNorm + SiLU residual blocks, no attention). Frames are
padded (replicate, bottom/right) up to a multiple of twice the downsample factor and cropped
back, so 120x160 at 8x gives an even 16x20 latent (padded to 128x160). The decoder runs once per generated frame inside the
real-time loop, so it is kept light: few channels at high resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class AutoencoderConfig:
    frame_size: tuple[int, int] = (120, 160)  # (H, W) of the frames
    latent_channels: int = 16
    downsample: int = 8  # 4, 8 or 16
    base_channels: int = 32
    # channel multiplier per resolution level, full resolution first; log2(downsample)+1 entries
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 1  # per level, encoder and decoder
    # frames are padded up to a multiple of this (None: 2 * downsample, so the latent is even and a
    # patch-2 transformer fits: 120x160 at 8x -> padded 128x160 -> latent 16x20)
    pad_multiple: int | None = None
    # loss weights (no pretrained nets: L1 + SSIM + image-gradient L1, tiny latent L2 keeps the scale tame)
    l1_weight: float = 1.0
    ssim_weight: float = 0.2
    grad_weight: float = 0.5
    latent_reg: float = 1e-5
    # decoder robustness: train the decoder on latents perturbed by Gaussian noise of this many latent RMS, so
    # the slightly-off latents a dynamics model predicts decode to plausible frames instead of artefacts
    decoder_noise: float = 0.0

    def __post_init__(self):
        self.frame_size = tuple(int(s) for s in self.frame_size)
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.downsample not in (4, 8, 16):
            raise ValueError(f"downsample must be 4, 8 or 16, got {self.downsample}")
        levels = int(math.log2(self.downsample)) + 1
        if len(self.channel_mult) != levels:
            raise ValueError(
                f"channel_mult needs log2(downsample)+1 = {levels} entries for downsample {self.downsample}, "
                f"got {self.channel_mult}"
            )
        if self.pad_multiple is not None and self.pad_multiple % self.downsample:
            raise ValueError(f"pad_multiple {self.pad_multiple} must be a multiple of downsample {self.downsample}")

    @property
    def padded_size(self) -> tuple[int, int]:
        d = self.pad_multiple or 2 * self.downsample
        return (-(-self.frame_size[0] // d) * d, -(-self.frame_size[1] // d) * d)

    @property
    def latent_size(self) -> tuple[int, int]:
        ph, pw = self.padded_size
        return (ph // self.downsample, pw // self.downsample)


# ---------------------------------------------------------------------------- frames <-> tensors


def frames_to_tensor(frames) -> torch.Tensor:
    """uint8 (..., H, W, 3) numpy or torch -> float32 (..., 3, H, W) in [-1, 1] (same device)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    return frames.movedim(-1, -3).float().div(127.5).sub(1.0)


def tensor_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float (..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3) (rounded, clamped, channels-last, contiguous)."""
    return x.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1).contiguous()


# ---------------------------------------------------------------------------- building blocks


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, plus a (1x1 if needed) skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chs = [cfg.base_channels * m for m in cfg.channel_mult]
        self.conv_in = nn.Conv2d(3, chs[0], 3, padding=1)
        layers: list[nn.Module] = []
        c = chs[0]
        for i, ch in enumerate(chs):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, ch))
                c = ch
            if i < len(chs) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # downsample
        layers.append(ResBlock(c, c))
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, cfg.latent_channels, 3, padding=1)

    def forward(self, x):
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (no checkerboard artifacts from transposed convs)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        chs = [cfg.base_channels * m for m in cfg.channel_mult]
        c = chs[-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        layers: list[nn.Module] = [ResBlock(c, c)]
        for i in reversed(range(len(chs))):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, chs[i]))
                c = chs[i]
            if i > 0:
                layers.append(Upsample(c, chs[i - 1]))  # channels shrink as resolution grows: keeps it fast
                c = chs[i - 1]
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z):
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))


# ---------------------------------------------------------------------------- losses


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM with a box window, inputs in [-1, 1] (cheap; no Gaussian kernel needed for a loss)."""
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    mx, my = pool(x), pool(y)
    vx = pool(x * x) - mx * mx
    vy = pool(y * y) - my * my
    cxy = pool(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def _grad_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients: keeps edges sharp where plain L1 blurs."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


# ---------------------------------------------------------------------------- the autoencoder


class FrameAutoencoder(nn.Module):
    """Deterministic conv autoencoder. x float (B, 3, H, W) in [-1, 1] <-> z (B, C, h, w)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def _check(self, x: torch.Tensor):
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.config.frame_size:
            raise ValueError(f"expected frames (B, 3, {self.config.frame_size[0]}, {self.config.frame_size[1]}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        H, W = self.config.frame_size
        ph, pw = self.config.padded_size
        if (ph, pw) != (H, W):
            x = F.pad(x, (0, pw - W, 0, ph - H), mode="replicate")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        H, W = self.config.frame_size
        return self.decoder(z)[..., :H, :W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction loss of a batch x (B, 3, H, W) in [-1, 1]. Metrics are detached tensors (no sync)."""
        loss, metrics, _ = self.loss_with_frames(x)
        return loss, metrics

    def loss_with_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """`loss`, plus the decoded frames it scored (float, in the graph): an adversarial term judges them too."""
        cfg = self.config
        z = self.encode(x)
        z_dec = z
        if cfg.decoder_noise > 0 and self.training:
            rms = z.detach().float().pow(2).mean().sqrt()
            z_dec = z + (cfg.decoder_noise * rms * torch.randn_like(z, dtype=torch.float32)).to(z.dtype)
        xr = self.decode(z_dec).float()
        loss, metrics = self.reconstruction_loss(xr, x)
        reg = z.float().pow(2).mean()
        loss = loss + cfg.latent_reg * reg
        metrics.update(loss=loss.detach(), z_rms=reg.detach().sqrt())
        return loss, metrics, xr

    def reconstruction_loss(self, xr: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 + SSIM + gradient L1 of decoded frames xr (B, 3, H, W) against real frames x in [-1, 1], with PSNR as
        a metric: the autoencoder's loss without its latent term, also for a decoder trained on latents the encoder
        did not make (a world model's predictions)."""
        cfg = self.config
        xr, x = xr.float(), x.float()
        l1 = (xr - x).abs().mean()
        s = ssim(xr, x)
        g = _grad_l1(xr, x)
        loss = cfg.l1_weight * l1 + cfg.ssim_weight * (1 - s) + cfg.grad_weight * g
        with torch.no_grad():
            mse = (xr.clamp(-1, 1) - x).pow(2).mean()
            psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-10))
        return loss, {"loss": loss.detach(), "l1": l1.detach(), "ssim": s.detach(), "grad_l1": g.detach(), "psnr": psnr}
