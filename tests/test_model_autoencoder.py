import numpy as np
import torch

from odyssey_gym.model import AutoencoderConfig, FrameAutoencoder, WorldModelConfig, frames_to_tensor, tensor_to_frames


def test_frames_round_trip_exact():
    f = np.random.default_rng(0).integers(0, 256, (2, 5, 12, 16, 3), dtype=np.uint8)
    x = frames_to_tensor(f)
    assert x.shape == (2, 5, 3, 12, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    back = tensor_to_frames(x)
    assert back.dtype == torch.uint8 and back.shape == f.shape
    assert np.array_equal(back.numpy(), f)
    assert tensor_to_frames(torch.full((3, 2, 2), 5.0)).max() == 255  # clamped


def test_shapes_pad_and_crop():
    cfg = WorldModelConfig.tiny(frame_size=(120, 160), action_dim=6).ae
    assert cfg.padded_size == (128, 160) and cfg.latent_size == (16, 20)
    ae = FrameAutoencoder(cfg)
    x = torch.rand(2, 3, 120, 160) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, cfg.latent_channels, 16, 20)
    assert ae.decode(z).shape == (2, 3, 120, 160)
    base64 = WorldModelConfig.base(frame_size=(64, 64), action_dim=3).ae
    assert base64.latent_size == (16, 16)
    ae16 = FrameAutoencoder(AutoencoderConfig(frame_size=(30, 40), downsample=16, channel_mult=(1, 1, 1, 1, 1),
                                              base_channels=8, latent_channels=4))
    assert ae16.config.padded_size == (32, 64)  # multiple of 2 * downsample
    assert ae16.encode(torch.zeros(1, 3, 30, 40)).shape == (1, 4, 2, 4)
    assert ae16.decode(torch.zeros(1, 4, 2, 4)).shape == (1, 3, 30, 40)


def test_autoencoder_overfits_tiny_batch():
    torch.manual_seed(0)
    cfg = AutoencoderConfig(frame_size=(24, 32), latent_channels=4, downsample=4, base_channels=16,
                            channel_mult=(1, 2, 2), num_res_blocks=1)
    ae = FrameAutoencoder(cfg)
    # smooth synthetic frames (blobs on a gradient)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 32), indexing="ij")
    imgs = []
    for i in range(4):
        cx, cy = 0.5 * np.cos(i), 0.5 * np.sin(i)
        blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 8)
        imgs.append(torch.stack([blob, xx * 0.5, (yy + blob) * 0.5]) * 1.6 - 0.8)
    x = torch.stack(imgs).clamp(-1, 1)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = ae.loss(x)[0].item()
    for _ in range(100):
        loss, m = ae.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.35 * first, (first, loss.item())
    assert m["psnr"] > 20
