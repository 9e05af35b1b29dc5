"""Frame metrics on uint8 frames, batched in torch so they run where the frames are (GPU or CPU).

PSNR and SSIM follow the usual definitions on 8-bit RGB (data range 255; SSIM with an 11-tap
Gaussian window, sigma 1.5, averaged over channels), so numbers compare with GameNGen/DIAMOND.

PSNR scores one frame against the truth, so where the next frame is uncertain the best it can ask for is the
mean of the possible frames: a blur. `energy_score` scores a model's draws as a distribution (two draws from
the same history), and is lowest for a model that draws frames as the world does; for a model that always gives
the same frame it is that frame's RMS error.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _as_float(frames: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (N, 3, H, W) float64 in [0, 255]."""
    if frames.shape[-1] != 3:
        raise ValueError(f"expected channels-last RGB frames (..., H, W, 3), got shape {tuple(frames.shape)}")
    x = frames.reshape(-1, *frames.shape[-3:]).to(torch.float64)
    return x.permute(0, 3, 1, 2)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB, shape = leading dims of the inputs. Identical frames give +inf."""
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    lead = pred.shape[:-3]
    mse = ((_as_float(pred) - _as_float(target)) ** 2).mean(dim=(1, 2, 3))
    out = 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 -> inf, as it should be
    return out.reshape(lead)


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM in [-1, 1] (1 for identical frames), shape = leading dims of the inputs."""
    if pred.shape != target.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    lead = pred.shape[:-3]
    x, y = _as_float(pred), _as_float(target)
    size = min(11, x.shape[-1], x.shape[-2])
    w = _gaussian_window(size, 1.5, x.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x = F.conv2d(x, w, groups=3)
    mu_y = F.conv2d(y, w, groups=3)
    sxx = F.conv2d(x * x, w, groups=3) - mu_x**2
    syy = F.conv2d(y * y, w, groups=3) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=3) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(lead)


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame RMS distance of uint8 frames in units of the full range (0: equal, 1: black against white)."""
    if a.shape != b.shape:
        raise ValueError(f"rms_distance: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    lead = a.shape[:-3]
    d = ((_as_float(a) - _as_float(b)) / 255.0) ** 2
    return d.mean(dim=(1, 2, 3)).sqrt().reshape(lead)


def energy_score(draw1: torch.Tensor, draw2: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame energy score of two independent draws against the real frame, and its spread term:
    E|X - y| - 1/2 E|X - X'| with RMS distances, estimated from the two draws (lower is better). A strictly proper
    score: its expectation is lowest when the draws come from the real frames' own distribution, so neither a
    blur (no spread, the error of the mean) nor noise (spread where the frame is certain) passes for it."""
    spread = 0.5 * rms_distance(draw1, draw2)
    return 0.5 * (rms_distance(draw1, target) + rms_distance(draw2, target)) - spread, spread


PSNR_CAP_DB = 100.0  # where +inf (identical frames) is capped when PSNRs are averaged


def mean_finite_db(values: torch.Tensor, cap: float = PSNR_CAP_DB) -> float:
    """Average PSNRs, capping +inf (identical frames) so one perfect frame doesn't make the mean infinite."""
    v = values.double().clamp(max=cap)
    return float(v.mean()) if v.numel() else math.nan


def percentiles(samples_ms: list[float], qs=(50, 99)) -> dict[str, float]:
    t = torch.tensor(samples_ms, dtype=torch.float64)
    return {f"p{q}": float(torch.quantile(t, q / 100)) for q in qs}
