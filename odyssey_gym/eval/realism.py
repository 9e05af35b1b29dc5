"""Realism: Fréchet distance between feature statistics of two frame sets (docs/ARCHITECTURE.md, eval/).

The feature extractor is the inverse-dynamics probe's per-frame conv trunk (`odyssey_gym.eval.probe`),
trained on real frames of the world only and shipped beside the weights, so every user gets the same
numbers. A frame's feature is the spatial mean and standard deviation of each trunk channel.

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)

computed in float64 with symmetric eigendecompositions only (no scipy): S_a^1/2 from eigh(S_a), and the
trace term from the eigenvalues of the symmetric PSD product S_a^1/2 S_b S_a^1/2. Identical sets give 0
(up to float rounding; small negative results are clipped to 0).
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def device_features(probe, frames) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) on any device -> (N, D) float32 features on the probe's device, no host sync."""
    m = probe.trunk_maps(frames).flatten(2).float()
    return torch.cat([m.mean(2), m.std(2, unbiased=False)], dim=1)


@torch.no_grad()
def frame_features(probe, frames, batch: int = 256) -> np.ndarray:
    """uint8 frames (N, H, W, 3) -> float64 features (N, D), D = probe.config.feature_dim."""
    probe.eval()
    out = [device_features(probe, frames[i: i + batch]).double().cpu() for i in range(0, len(frames), batch)]
    if not out:
        return np.zeros((0, probe.config.feature_dim))
    return torch.cat(out).numpy()


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    diff = np.asarray(mu_a, np.float64) - np.asarray(mu_b, np.float64)
    sa = _sqrt_psd(np.asarray(cov_a, np.float64))
    prod = sa @ np.asarray(cov_b, np.float64) @ sa
    w = np.linalg.eigvalsh((prod + prod.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(w, 0, None)).sum())
    d = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(d, 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance (squared, as in FID) between Gaussians fitted to two feature sets (N_a, D), (N_b, D)."""
    mu_a, cov_a = feature_stats(feats_a)
    mu_b, cov_b = feature_stats(feats_b)
    return frechet_from_stats(mu_a, cov_a, mu_b, cov_b)


def realism_distance(probe, frames_a, frames_b) -> float:
    """Fréchet distance between the probe-trunk features of two uint8 frame sets."""
    return frechet_distance(frame_features(probe, frames_a), frame_features(probe, frames_b))
