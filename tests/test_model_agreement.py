"""Training and inference compute the same thing: the teacher-forcing training forward and the cached sampler
give the same prediction for the same window, actions and noise (normalisation, RoPE positions, which action
conditions which frame, the context's noise level, the K-frame window, the heads)."""

import warnings

import pytest
import torch

from odyssey_gym.model import Sampler, WorldModel, WorldModelConfig, hash_noise
from odyssey_gym.model.dynamics import teacher_forcing_mask


def tiny_model(seed=0, **dynamics) -> WorldModel:
    """Tiny model (32x32 frames, K=4), zero-init layers randomised so the output depends on the context."""
    torch.manual_seed(seed)
    m = WorldModel(WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3, world="test-world", dynamics=dynamics))
    with torch.no_grad():
        for mod in (m.dynamics.adaln[-1], m.dynamics.out):
            mod.weight.normal_(0, 0.05)
            mod.bias.normal_(0, 0.05)
        m.set_latent_stats(torch.randn(4) * 0.3, torch.rand(4) + 0.5)  # normalisation must be applied alike
    return m.eval()


@pytest.mark.parametrize("start_from", ["noise", "previous"])
@pytest.mark.parametrize("k,extra,steps", [(1, 0, 1), (3, 0, 2), (4, 5, 2)])
def test_training_forward_matches_sampler(k, extra, steps, start_from):
    """k real context frames, then 1 + extra sampler steps (extra > 0 wraps the ring and slides the window)."""
    m = tiny_model(start_from=start_from)
    dyn, cfg = m.dynamics, m.config
    B, n = 2, 1 + extra
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (B, k, 32, 32, 3), generator=g, dtype=torch.uint8)
    acts = (torch.rand(B, k + n, 3, generator=g) > 0.5).float()
    seeds = torch.tensor([5, 6])
    s = Sampler(m, batch_size=B, device="cpu", sampling_steps=steps, context_noise=0.0)
    s.reset(frames, acts[:, :k], seeds=seeds)
    gen, rew = [], []
    for i in range(n):
        _, r, _ = s.step(acts[:, k + i])
        gen.append(s.last_latent.clone())
        rew.append(r)
    gen = torch.stack(gen, 1)

    # the same window through the training forward: context stream = real latents then the sampler's own frames
    with torch.no_grad():
        z = torch.cat([m.encode_frames(frames), gen], 1)  # (B, k+n, C, h, w)
        T = z.shape[1]
        sig = cfg.sigma_schedule(steps)
        x = torch.randn(z.shape, generator=g)  # frames not compared get arbitrary target inputs
        start = dyn.start_input(z)  # zeros, or the previous frame: what training feeds the first pass
        for p in range(k, T):
            x[:, p] = sig[0] * hash_noise(seeds, torch.full((B,), p), 0, z.shape[2:]) + start[:, p]
        zero = torch.zeros(B, T)
        z0 = x
        for i in range(len(sig) - 1):
            z0, r, _, _ = dyn.forward_teacher_forcing(z, zero, x, torch.full((B, T), sig[i]), acts)
            x = z0 if sig[i + 1] == 0 else z0 + (sig[i + 1] / sig[i]) * (x - z0)
    torch.testing.assert_close(z0[:, k:], gen, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(r[:, k:], torch.stack(rew, 1), rtol=1e-4, atol=1e-4)
    # the prediction really depends on the context: another context gives another frame
    with torch.no_grad():
        other = dyn.forward_teacher_forcing(torch.roll(z, 1, 0), zero, x, torch.full((B, T), sig[-2]), acts)[0]
    assert (other[:, k:] - z0[:, k:]).abs().max() > 1e-3


def test_teacher_forcing_mask_shows_each_target_only_its_past_context():
    T, P, K = 6, 2, 3
    m = teacher_forcing_mask(T, P, K)
    frame = torch.arange(T).repeat_interleave(P)
    for q in range(2 * T * P):
        for key in range(2 * T * P):
            qt, kt = frame[q % (T * P)], frame[key % (T * P)]
            q_target, k_target = q >= T * P, key >= T * P
            if not q_target:
                want = (not k_target) and 0 <= qt - kt <= K
            elif k_target:
                want = qt == kt
            else:
                want = 1 <= qt - kt <= K
            assert bool(m[q, key]) == want, (q, key)


def test_teacher_forcing_target_ignores_its_own_true_frame():
    """A target must not see the true frame it predicts (a leak would make training trivially easy)."""
    m = tiny_model()
    dyn = m.dynamics
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 5, 4, 4, 4, generator=g)
    x = torch.randn(2, 5, 4, 4, 4, generator=g)
    a = torch.rand(2, 5, 3, generator=g)
    s = torch.full((2, 5), 2.0)
    with torch.no_grad():
        base = dyn.forward_teacher_forcing(z, torch.zeros(2, 5), x, s, a)[0]
        z2 = z.clone()
        z2[:, 3] += 5.0  # change context frame 3: targets 0..3 must not move, target 4 must
        moved = dyn.forward_teacher_forcing(z2, torch.zeros(2, 5), x, s, a)[0]
    torch.testing.assert_close(moved[:, :4], base[:, :4])
    assert (moved[:, 4] - base[:, 4]).abs().max() > 1e-3


@pytest.mark.parametrize("T,P,K", [(6, 4, 3), (5, 3, 4), (20, 2, 16)])
def test_flex_mask_mods_are_the_dense_masks(T, P, K):
    """attention 'flex' computes the same function as 'sdpa': its mask_mods give exactly the dense masks."""
    from torch.nn.attention.flex_attention import create_mask

    from odyssey_gym.model.dynamics import frame_causal_mask, frame_causal_mask_mod, teacher_forcing_mask_mod

    tf = create_mask(teacher_forcing_mask_mod(T, P, K), None, None, 2 * T * P, 2 * T * P, device="cpu")[0, 0]
    assert torch.equal(tf, teacher_forcing_mask(T, P, K))
    n = 3 * T * P  # two target streams (the energy score's two samples) beside one context stream
    tf2 = create_mask(teacher_forcing_mask_mod(T, P, K), None, None, n, n, device="cpu")[0, 0]
    assert torch.equal(tf2, teacher_forcing_mask(T, P, K, streams=2))
    fc = create_mask(frame_causal_mask_mod(P, K), None, None, T * P, T * P, device="cpu")[0, 0]
    assert torch.equal(fc, frame_causal_mask(T, P, K))


def test_flex_attention_matches_sdpa_on_the_teacher_forcing_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    from odyssey_gym.model.dynamics import flex_attention, teacher_forcing_mask_mod

    T, P, K = 6, 4, 3
    q, k, v = torch.randn(3, 2, 2, 2 * T * P, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    bm = create_block_mask(teacher_forcing_mask_mod(T, P, K), None, None, 2 * T * P, 2 * T * P, device="cpu")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # eager flex (a CPU) warns that it is unfused
        y = flex_attention(q, k, v, bm)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=teacher_forcing_mask(T, P, K))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_attention_setting_is_checked():
    from odyssey_gym.model.dynamics import DynamicsConfig

    with pytest.raises(ValueError, match="attention must be one of"):
        DynamicsConfig(attention="flash")
    with pytest.raises(ValueError, match="no attention dropout"):
        DynamicsConfig(attention="flex", dropout=0.1)
    m = tiny_model(attention="flex")  # on a CPU the dense mask runs: training works there too
    z = torch.randn(2, 5, 4, *m.config.dynamics.latent_size)
    loss, _ = m.dynamics.loss(z, torch.rand(2, 5, 3))
    loss.backward()
    assert torch.isfinite(loss)


def test_flex_block_masks_give_way_to_dense_masks_for_the_flop_counter():
    """The trainer counts a step's FLOPs under dense_masks(): compiled flex cannot be traced by torch's counter."""
    flex = tiny_model(attention="flex").dynamics
    assert flex.uses_block_mask("cuda") and not flex.uses_block_mask("cpu")
    with flex.dense_masks():
        assert not flex.uses_block_mask("cuda")
        with flex.dense_masks():
            pass
        assert not flex.uses_block_mask("cuda")  # nested exits keep the outer setting
    assert flex.uses_block_mask("cuda")
    assert not tiny_model(attention="sdpa").dynamics.uses_block_mask("cuda")


def test_compiled_window_forwards_run_the_same_function_and_give_way_to_the_flop_counter():
    """`train.compile` compiles only the dynamics' window forwards: both go through the compiler, compute what the
    eager ones compute, and inside dense_masks() (the FLOP counter's pass) the eager functions run again."""
    dyn = tiny_model().dynamics
    calls = []

    def counting_compiler(fn):
        def wrapped(*a, **kw):
            calls.append(fn.__name__)
            return fn(*a, **kw)
        return wrapped

    g = torch.Generator().manual_seed(3)
    B, T = 2, 5
    z = torch.randn(B, T, *dyn_latent_shape(dyn), generator=g)
    sig, acts = torch.rand(B, T, generator=g), torch.rand(B, T, 3, generator=g)
    with torch.no_grad():
        eager = [dyn(z, sig, acts), dyn.forward_teacher_forcing(z, torch.zeros(B, T), z, sig, acts)]
        dyn.compile_window_forwards(counting_compiler)
        compiled = [dyn(z, sig, acts), dyn.forward_teacher_forcing(z, torch.zeros(B, T), z, sig, acts)]
        assert calls == ["_forward_causal", "_forward_teacher_forcing"]
        for e, c in zip(eager, compiled):
            for a, b in zip(e, c):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        with dyn.dense_masks():
            dyn(z, sig, acts)
            dyn.forward_teacher_forcing(z, torch.zeros(B, T), z, sig, acts)
        assert len(calls) == 2


def dyn_latent_shape(dyn) -> tuple[int, int, int]:
    cfg = dyn.config
    return cfg.latent_channels, cfg.latent_size[0], cfg.latent_size[1]
