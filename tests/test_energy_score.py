"""The energy-score target loss: a one-step sampler trained with it draws the next frame from its distribution,
where the squared error teaches the average of the possible frames (the blur that long rollouts fade into)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from odyssey_gym.model.dynamics import Dynamics, DynamicsConfig, energy_score

T, C, H = 4, 4, 4  # window frames, latent channels, latent side


def toy_config(target_loss: str, **kw) -> DynamicsConfig:
    return DynamicsConfig(latent_channels=C, latent_size=(H, H), patch_size=2, n_layer=2, n_head=2, n_embd=64,
                          action_dim=2, context_frames=T - 1, max_frames=T, objective="teacher_forcing",
                          start_from="previous", sigma_max=1.0, p_sigma_max=1.0, p_context_aug=0.0,
                          target_loss=target_loss, **kw)


def toy_windows(pattern: torch.Tensor, batch: int, gen: torch.Generator, detail: float = 1.0):
    """A room that stays put, then an action after which unpredictable detail (std `detail` per element) appears
    on it: what comes next is the room plus *some* detail, never the room alone."""
    z = pattern.expand(batch, T, C, H, H).clone()
    z[:, -1] += detail * torch.randn(batch, C, H, H, generator=gen)
    actions = torch.zeros(batch, T, 2)
    actions[:, :-1, 1] = 1.0  # stay
    actions[:, -1, 0] = 1.0  # the detail appears
    return z, actions


def train_and_sample(target_loss: str, energy_lambda: float = 1.0, steps: int = 200, samples: int = 256):
    """Train a tiny dynamics model on the toy room; return one-step samples of the last frame and the room."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    pattern = torch.randn(C, H, H, generator=gen)
    dyn = Dynamics(toy_config(target_loss, energy_lambda=energy_lambda))
    opt = torch.optim.AdamW(dyn.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        z, actions = toy_windows(pattern, 32, gen)
        loss, _ = dyn.loss(z, actions, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dyn.eval()
    z, actions = toy_windows(pattern, samples, gen)
    noise = torch.randn(samples, C, H, H, generator=gen)
    return dyn.generate_next(z[:, :-1], actions[:, :-1], actions[:, -1], steps=1, noise=noise), pattern


def detail_of(x: torch.Tensor, pattern: torch.Tensor) -> tuple[float, float]:
    """The samples' RMS detail around the room, and the RMS error of their mean (should be the room)."""
    return (float((x - pattern).pow(2).flatten(1).mean(-1).sqrt().mean()),
            float((x.mean(0) - pattern).pow(2).mean().sqrt()))


def test_energy_score_is_zero_for_exact_samples_and_penalises_the_mean():
    y = torch.randn(3, 2, 4, 4, 4)
    score, spread = energy_score(y, y, y)
    assert score.shape == spread.shape == (3, 2)
    assert score.abs().max() < 1e-2 and spread.max() < 1e-2
    # two equally likely outcomes +-p: sampling them scores better than predicting their mean (0)
    p = torch.ones(1, 1, 4, 4, 4)
    samplers = torch.stack([energy_score(a * p, b * p, y_ * p)[0] for a in (1, -1) for b in (1, -1) for y_ in (1, -1)])
    mean = torch.stack([energy_score(0 * p, 0 * p, y_ * p)[0] for y_ in (1, -1)])
    assert samplers.mean() < mean.mean() - 0.4


def test_patch_energy_score_is_the_mean_of_one_score_per_patch():
    a, b, y = torch.randn(3, 2, 3, 2, 4, 4).unbind(0)
    score, spread = energy_score(a, b, y, 0.7, patch=2)
    per_patch = [energy_score(a[..., i:i + 2, j:j + 2], b[..., i:i + 2, j:j + 2], y[..., i:i + 2, j:j + 2], 0.7)
                 for i in (0, 2) for j in (0, 2)]
    torch.testing.assert_close(score, torch.stack([s for s, _ in per_patch]).mean(0))
    torch.testing.assert_close(spread, torch.stack([d for _, d in per_patch]).mean(0))
    # each 2x2 patch of the next frame is +1 or -1 by a coin of its own. A sampler that draws them that way is
    # the truth; one that puts all its spread in one corner (+-2 there, 0 elsewhere) has spread of a similar total
    # size. The whole-frame score barely tells them apart, the per-patch score asks each region for its own spread
    g = torch.Generator().manual_seed(0)
    n = 8000

    def frames(signs):  # (n, 2, 2) patch values -> (n, 1, 1, 4, 4) frames
        return signs.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, None, None]

    def coins(*shape):
        return torch.randint(0, 2, shape, generator=g).float() * 2 - 1

    y, true_a, true_b = (frames(coins(n, 2, 2)) for _ in range(3))
    corner_a, corner_b = (frames(F.pad(2 * coins(n, 1, 1), (0, 1, 0, 1))) for _ in range(2))
    gap = {p: (energy_score(corner_a, corner_b, y, patch=p)[0] - energy_score(true_a, true_b, y, patch=p)[0]).mean()
           for p in (0, 2)}
    assert gap[0] > 0.1 and gap[2] > 2 * gap[0], gap


def test_config_checks_the_energy_settings():
    with pytest.raises(ValueError, match="target_loss"):
        DynamicsConfig(target_loss="gan")
    with pytest.raises(ValueError, match="teacher_forcing"):
        DynamicsConfig(target_loss="energy", objective="diffusion_forcing")
    with pytest.raises(ValueError, match="energy_lambda"):
        DynamicsConfig(target_loss="energy", energy_lambda=1.5)
    with pytest.raises(ValueError, match="energy_patch"):
        DynamicsConfig(target_loss="energy", latent_size=(16, 20), energy_patch=3)
    with pytest.raises(ValueError, match="energy_patch"):
        DynamicsConfig(target_loss="energy", latent_size=(16, 20), energy_patch=[2, 3])
    for bad in ([2, True], [True, False], [2, 2]):  # a YAML `true` is not a patch side; a scale twice is a typo
        with pytest.raises(ValueError, match="energy_patch"):
            DynamicsConfig(target_loss="energy", latent_size=(16, 20), energy_patch=bad)
    assert DynamicsConfig(target_loss="energy", latent_size=(16, 20), energy_patch=[2, 0]).energy_patch == (2, 0)
    assert DynamicsConfig(target_loss="energy", latent_size=(16, 20), energy_patch=[4]).energy_patch == 4
    import dataclasses
    import json

    cfg = DynamicsConfig(target_loss="energy", latent_size=(16, 20), energy_patch=(2, 0))
    assert DynamicsConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg  # config.json keeps the scales


def test_energy_loss_reports_the_samples_spread_and_trains_the_heads_once():
    dyn = Dynamics(toy_config("energy"))
    gen = torch.Generator().manual_seed(0)
    z, actions = toy_windows(torch.ones(C, H, H), 4, gen)
    loss, m = dyn.loss(z, actions, torch.zeros(4, T), torch.zeros(4, T, dtype=torch.bool), generator=gen)
    loss.backward()
    assert torch.isfinite(loss) and {"energy", "spread", "term_bce", "reward_mse"} <= m.keys()
    assert m["spread"] > 0  # two start noises give two different samples


def test_one_step_sampler_trained_on_the_energy_score_draws_the_detail_the_squared_error_averages_away():
    mse_detail, mse_bias = detail_of(*train_and_sample("mse"))
    half_detail, half_bias = detail_of(*train_and_sample("energy", energy_lambda=0.5))
    # the squared error teaches the mean of what may come: the bare room, its detail averaged away (blur)
    assert mse_detail < 0.15, mse_detail
    # the energy score with spread weight lam draws detail of std a with a^2 / (a^2 + 1) = lam^2 / 2, the
    # minimiser of sqrt(a^2 + 1) - lam / sqrt(2) * a: for lam = 0.5, a = 1 / sqrt(7) = 0.378
    assert abs(half_detail - 7**-0.5) < 0.08, half_detail
    # and both still centre on the room
    assert mse_bias < 0.15 and half_bias < 0.15, (mse_bias, half_bias)


def test_two_target_streams_are_each_what_one_stream_alone_gives():
    """The energy score's second sample is a second target stream against the one context stream: each stream's
    prediction (and the heads, read from the context stream) must equal a window forward with that stream alone.
    (FlexAttention's mask for several streams is checked against this dense one in test_model_agreement.)"""
    dyn = Dynamics(toy_config("energy", state_dim=2)).eval()
    g = torch.Generator().manual_seed(3)
    B = 2
    z_ctx = torch.randn(B, T, C, H, H, generator=g)
    s_ctx = torch.rand(B, T, generator=g) * 0.3
    a_noisy, b_noisy = torch.randn(2, B, T, C, H, H, generator=g).unbind(0)
    sig_a, sig_b = torch.rand(2, B, T, generator=g).unbind(0)
    actions = torch.randn(B, T, 2, generator=g)
    state_prev = torch.randn(B, T, 2, generator=g)
    with torch.no_grad():
        both, r, t, st = dyn.forward_teacher_forcing(z_ctx, s_ctx, torch.cat([a_noisy, b_noisy], 1),
                                                     torch.cat([sig_a, sig_b], 1), actions, state_prev=state_prev)
        alone_a, ra, ta, sta = dyn.forward_teacher_forcing(z_ctx, s_ctx, a_noisy, sig_a, actions, state_prev=state_prev)
        alone_b = dyn.forward_teacher_forcing(z_ctx, s_ctx, b_noisy, sig_b, actions, state_prev=state_prev)[0]
    assert both.shape == (B, 2 * T, C, H, H)
    torch.testing.assert_close(both[:, :T], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[:, T:], alone_b, atol=1e-5, rtol=1e-5)
    for x, y in ((r, ra), (t, ta), (st, sta)):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="whole windows"):
        dyn.forward_teacher_forcing(z_ctx, s_ctx, a_noisy[:, :-1], sig_a[:, :-1], actions)
