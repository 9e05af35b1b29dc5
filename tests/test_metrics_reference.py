"""Our frame metrics against torchmetrics, the library reference: PSNR/SSIM/Fréchet stay ours (batched on uint8
frames where they live, Fréchet from feature statistics without scipy) only while they give the library's numbers."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import _compute_fid

from odyssey_gym.eval.metrics import psnr, ssim
from odyssey_gym.eval.realism import feature_stats, frechet_distance


def _pairs():
    """Noisy copies of random and of smooth 120x160 frames (doom-explore's size; a game frame is mostly smooth walls)."""
    g = torch.Generator().manual_seed(0)
    rough = torch.randint(0, 256, (3, 120, 160, 3), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 120), torch.linspace(0, 1, 160), indexing="ij")
    smooth = (torch.stack([yy, xx, (yy + xx) / 2], -1) * 200 + 20)[None].repeat(3, 1, 1, 1)
    for a in (rough, smooth.to(torch.uint8)):
        b = (a.int() + torch.randint(-25, 26, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        yield a, b


def _nchw(x):
    return x.permute(0, 3, 1, 2).double()


@pytest.mark.parametrize("pair", list(_pairs()), ids=["rough", "smooth"])
def test_psnr_and_ssim_match_torchmetrics(pair):
    a, b = pair
    ref_p = peak_signal_noise_ratio(_nchw(a), _nchw(b), data_range=255.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(psnr(a, b), ref_p, rtol=0, atol=1e-5)  # torchmetrics sums in float32
    ref_s = structural_similarity_index_measure(_nchw(a), _nchw(b), data_range=255.0, gaussian_kernel=True,
                                                sigma=1.5, kernel_size=11, reduction="none")
    # torchmetrics reflect-pads the border and crops it again; ours uses only full windows: a few 1e-4 apart
    assert (ssim(a, b) - ref_s).abs().max() < 2e-3
    assert ssim(a, b).min() < 0.99  # the noise is visible, so the comparison is not 1 against 1


def test_frechet_matches_torchmetrics():
    rng = np.random.default_rng(1)
    fa = rng.normal(size=(400, 12))
    fb = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) * 0.5 + 0.3
    (ma, ca), (mb, cb) = feature_stats(fa), feature_stats(fb)
    ref = float(_compute_fid(*(torch.from_numpy(v) for v in (ma, ca, mb, cb))))
    assert ref > 1.0
    assert frechet_distance(fa, fb) == pytest.approx(ref, rel=1e-6)
