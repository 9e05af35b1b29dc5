import pytest
import torch

from odyssey_gym.model import Dynamics, DynamicsConfig, WorldModel, WorldModelConfig, frames_to_tensor, karras_sigmas


def tiny_dynamics(seed=0, **kw) -> Dynamics:
    """Tiny dynamics with its zero-initialised layers randomised, so every input visibly matters."""
    torch.manual_seed(seed)
    cfg = dict(latent_channels=4, latent_size=(4, 4), patch_size=2, n_layer=2, n_head=4, n_embd=64, action_dim=3,
               context_frames=4, max_frames=6)
    cfg.update(kw)
    dyn = Dynamics(DynamicsConfig(**cfg))
    with torch.no_grad():
        for mod in (dyn.adaln[-1], dyn.out):
            mod.weight.normal_(0, 0.05)
            mod.bias.normal_(0, 0.05)
    return dyn.eval()


def inputs(B=2, T=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, 4, 4, 4, generator=g)
    sigma = torch.rand(B, T, generator=g) * 2
    a = (torch.rand(B, T, 3, generator=g) > 0.5).float()
    return z, sigma, a


def test_forward_shapes():
    dyn = tiny_dynamics()
    z, s, a = inputs()
    z0, r, t, _ = dyn(z, s, a)
    assert z0.shape == z.shape and r.shape == (2, 5) and t.shape == (2, 5)
    *_, kvs = dyn(z, s, a, return_kv=True)
    assert len(kvs) == 2 and kvs[0][0].shape == (2, 4, 5 * 4, 16)


def test_frame_causal():
    dyn = tiny_dynamics()
    z, s, a = inputs(T=6)
    out = dyn(z, s, a)
    for t in range(5):
        z2, s2, a2 = z.clone(), s.clone(), a.clone()
        z2[:, t + 1 :] += torch.randn_like(z2[:, t + 1 :])
        s2[:, t + 1 :] = 3.0
        a2[:, t + 1 :] = 1 - a2[:, t + 1 :]
        out2 = dyn(z2, s2, a2)
        for o, o2 in zip(out[:3], out2[:3]):  # frames, rewards, termination logits (no state here)
            torch.testing.assert_close(o[:, : t + 1], o2[:, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(o[:, t + 1 :], o2[:, t + 1 :])


def test_sliding_window():
    """With one layer, frame t sees exactly frames t-K..t: changing frame t-K-1 changes nothing at t."""
    dyn = tiny_dynamics(n_layer=1, context_frames=2)
    z, s, a = inputs(T=6)
    z2 = z.clone()
    z2[:, 0] += 1.0
    o, o2 = dyn(z, s, a)[0], dyn(z2, s, a)[0]
    torch.testing.assert_close(o[:, 3:], o2[:, 3:], rtol=0, atol=1e-6)
    assert not torch.allclose(o[:, 1:3], o2[:, 1:3])


def test_action_conditioning_changes_output():
    dyn = tiny_dynamics()
    z, s, a = inputs()
    z0, r, t, _ = dyn(z, s, a)
    a2 = a.clone()
    a2[:, -1] = 1 - a2[:, -1]
    z0b, rb, tb, _ = dyn(z, s, a2)
    assert (z0[:, -1] - z0b[:, -1]).abs().max() > 1e-4
    assert (r[:, -1] - rb[:, -1]).abs().max() > 1e-6
    torch.testing.assert_close(z0[:, :-1], z0b[:, :-1])  # earlier frames unaffected


def test_sigma_zero_is_identity():
    """EDM preconditioning: at sigma=0 the x0 prediction is the input itself (c_skip=1, c_out=0)."""
    dyn = tiny_dynamics()
    z, s, a = inputs()
    s[:, 2] = 0.0
    z0 = dyn(z, s, a)[0]
    torch.testing.assert_close(z0[:, 2], z[:, 2])


def test_karras_sigmas():
    assert karras_sigmas(1, 5.0, 0.002, 7.0) == [5.0, 0.0]
    s = karras_sigmas(3, 5.0, 0.002, 7.0)
    assert len(s) == 4 and s[0] == 5.0 and s[-1] == 0.0 and s[0] > s[1] > s[2] > 0
    with pytest.raises(ValueError):
        karras_sigmas(0, 5.0, 0.002, 7.0)


def test_loss_masks_and_metrics():
    dyn = tiny_dynamics()
    z, _, a = inputs(T=5)
    r = torch.randn(2, 5)
    term = torch.zeros(2, 5, dtype=torch.bool)
    first = torch.zeros(2, 5, dtype=torch.bool)
    first[:, 0] = True
    loss, m = dyn.loss(z, a, r, term, first, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"denoise", "reward_mse", "term_bce", "term_acc", "mse_target", "loss"} <= set(m)
    assert all(v.requires_grad is False for v in m.values())
    # teacher forcing: only the counted frames' denoising counts (the target stream of frame 4 alone)
    lm = torch.zeros(2, 5, dtype=torch.bool)
    lm[:, -1] = True
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    _, m_all = dyn.loss(z, a, r, term, loss_mask=lm, generator=g())
    z_other = z.clone()
    z_other[:, 1:4] += 1.0  # moves the targets 1..3 (not counted) and the context of frame 4
    _, m_moved = dyn.loss(z_other, a, r, term, loss_mask=lm, context_z=z, generator=g())
    torch.testing.assert_close(m_moved["denoise"], m_all["denoise"])  # frame 4's context was kept by context_z
    with pytest.raises(ValueError, match="diffusion_forcing"):
        dyn.loss(z, a, r, term, context_mask=~lm)
    # diffusion forcing: only the last frame counts, forced target-like: no head loss (heads train on context-like frames)
    dyn = tiny_dynamics(objective="diffusion_forcing")
    ctx = ~lm
    loss2, m2 = dyn.loss(z, a, r, term, loss_mask=lm, context_mask=ctx)
    assert m2["reward_mse"] == 0 and torch.isfinite(loss2)
    loss2.backward()
    assert dyn.patch_in.weight.grad is not None


def test_overfits_tiny_batch():
    torch.manual_seed(0)
    dyn = tiny_dynamics(seed=3)
    dyn.train()
    g = torch.Generator().manual_seed(0)
    B, T = 4, 5
    # a toy world: the next latent is the previous one rolled by the action, reward = mean of the frame
    z = [torch.randn(B, 4, 4, 4, generator=g)]
    a = (torch.rand(B, T, 3, generator=g) > 0.5).float()
    for t in range(1, T):
        z.append(torch.roll(z[-1], shifts=int(1), dims=-1) * (1 - a[:, t, 0, None, None, None]) + z[-1] * a[:, t, 0, None, None, None])
    z = torch.stack(z, 1)
    r = z.mean((2, 3, 4))
    term = torch.zeros(B, T, dtype=torch.bool)
    term[0, -1] = True
    opt = torch.optim.AdamW(dyn.parameters(), lr=2e-3, weight_decay=0.0)

    def eval_loss():
        with torch.no_grad():
            return dyn.loss(z, a, r, term, generator=torch.Generator().manual_seed(123))[0].item()

    first = eval_loss()
    for _ in range(100):  # same noise every step: the tiny model must memorise the batch
        loss, _ = dyn.loss(z, a, r, term, generator=torch.Generator().manual_seed(123))
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = eval_loss()
    print("dynamics overfit", first, last)
    assert last < 0.2 * first, (first, last)


def test_generate_next_and_unroll():
    dyn = tiny_dynamics()
    z, _, a = inputs(T=5)
    nxt = dyn.generate_next(z[:, :3], a[:, :3], a[:, 3], steps=2)
    assert nxt.shape == (2, 4, 4, 4) and not nxt.requires_grad
    nxt2 = dyn.predict_next(z[:, :3], a[:, :4], steps=2)
    assert nxt2.shape == nxt.shape
    noise = torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(dyn.generate_next(z[:, :3], a[:, :3], a[:, 3], noise=noise),
                               dyn.generate_next(z[:, :3], a[:, :3], a[:, 3], noise=noise))
    assert dyn.generate_next(z[:, :0], a[:, :0], a[:, 0]).shape == (2, 4, 4, 4)  # no context at all
    u = dyn.unroll(z, a, n_real=2, n_gen=2)
    torch.testing.assert_close(u[:, :2], z[:, :2])
    torch.testing.assert_close(u[:, 4:], z[:, 4:])
    assert not torch.allclose(u[:, 2:4], z[:, 2:4])


def test_world_model_normalisation_round_trip():
    torch.manual_seed(0)
    m = WorldModel(WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3))
    frames = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8)
    z_raw = m.ae.encode(frames_to_tensor(frames).flatten(0, 1))
    m.set_latent_stats([0.5] * 4, [2.0] * 4)
    z = m.encode_frames(frames)
    assert z.shape == (2, 3, 4, 4, 4)
    torch.testing.assert_close(z.flatten(0, 1), (z_raw - 0.5) / 2.0)
    assert m.config.latent_mean == [0.5] * 4
    x = m.decode_latents(z)
    torch.testing.assert_close(x.flatten(0, 1), m.ae.decode(z_raw))


def test_rope_exactly_periodic_and_relative():
    """Temporal RoPE depends only on frame differences and is exactly periodic: the ring cache can run forever."""
    from odyssey_gym.model.dynamics import apply_rope, rope_angles

    pos = torch.arange(40)
    c1, s1 = rope_angles(pos, 32, 100.0, 4096)
    c2, s2 = rope_angles(pos + 4096 * 123457, 32, 100.0, 4096)
    assert torch.equal(c1, c2) and torch.equal(s1, s2)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(64, generator=g), torch.randn(64, generator=g)

    def score(pq, pk):
        cq, sq = rope_angles(torch.tensor([pq]), 32, 100.0, 4096)
        ck, sk = rope_angles(torch.tensor([pk]), 32, 100.0, 4096)
        return (apply_rope(q[None], cq, sq) * apply_rope(k[None], ck, sk)).sum()

    for d in (0, 1, 5, 16):
        ref = score(d, 0)
        for p in (7, 4095, 10**9 + 3):
            torch.testing.assert_close(score(p + d, p), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(score(1, 0), score(2, 0))


def test_term_pos_weight_scales_only_terminal_frames():
    """Class weighting of the termination BCE: terminal frames count pos_weight times, others unchanged."""
    z, _, a = inputs(T=5)
    r = torch.zeros(2, 5)
    none = torch.zeros(2, 5, dtype=torch.bool)
    some = none.clone()
    some[:, 2] = True
    bce = {}
    for w in (1.0, 10.0):
        dyn = tiny_dynamics(term_pos_weight=w)
        for name, term in (("none", none), ("some", some)):
            # teacher forcing: the heads read every frame's context stream
            _, m = dyn.loss(z, a, r, term, generator=torch.Generator().manual_seed(0))
            bce[w, name] = float(m["term_bce"])
    assert bce[1.0, "none"] == pytest.approx(bce[10.0, "none"])  # no terminal frame: weight is irrelevant
    assert bce[10.0, "some"] > 2 * bce[1.0, "some"]


def test_a_model_without_state_keeps_its_parameters():
    """state_dim 0 (every shipped model): no state layers, the heads give reward and termination only."""
    dyn = tiny_dynamics()
    assert dyn.state_mlp is None and dyn.heads[-1].out_features == 2
    assert not any("state" in k for k in dyn.state_dict())
    assert dyn(*inputs())[3].shape == (2, 5, 0)
    with pytest.raises(ValueError, match="state_dim"):
        DynamicsConfig(latent_channels=4, latent_size=(4, 4), patch_size=2, n_embd=64, n_head=4, state_dim=-1)


def test_state_conditions_later_frames_only_and_its_head_learns_the_state():
    """Frame t is conditioned on the state frame t-1 ended in (causal, like its action), and the state head, trained
    by `loss(state=...)`, learns a state the frames show (their latent mean)."""
    from odyssey_gym.model.dynamics import previous_state

    dyn = tiny_dynamics(state_dim=2)
    with torch.no_grad():
        dyn.state_mlp[-1].weight.normal_(0, 0.05)  # zero-initialised: the state starts with no effect
    z, s, a = inputs(T=6)
    prev = torch.randn(2, 6, 2)
    out = dyn(z, s, a, state_prev=prev)
    assert out[3].shape == (2, 6, 2)
    prev2 = prev.clone()
    prev2[:, 3:] += 1.0
    out2 = dyn(z, s, a, state_prev=prev2)
    torch.testing.assert_close(out[0][:, :3], out2[0][:, :3], rtol=0, atol=1e-6)
    assert not torch.allclose(out[0][:, 3:], out2[0][:, 3:])

    state = torch.randn(2, 4, 2)
    first = torch.tensor([[True, False, False, False], [False, False, True, False]])
    shifted = previous_state(state, first)
    assert torch.equal(shifted[0, 1:], state[0, :-1]) and (shifted[0, 0] == 0).all()
    assert (shifted[1, 2] == 0).all() and torch.equal(shifted[1, 3], state[1, 2])

    torch.manual_seed(0)
    dyn = tiny_dynamics(state_dim=2).train()
    opt = torch.optim.AdamW(dyn.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(8, 5, 4, 4, 4, generator=g)
    acts = (torch.rand(8, 5, 3, generator=g) > 0.5).float()
    target = torch.stack([z.mean((2, 3, 4)), z[:, :, 0].mean((2, 3))], -1) * 3  # what each frame shows
    mse = []
    for _ in range(80):
        loss, m = dyn.loss(z, acts, state=target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mse.append(float(m["state_mse"]))
    assert mse[-1] < 0.25 * mse[0], (mse[0], mse[-1])


@pytest.mark.parametrize("term_from", ["clean", "start"])
def test_a_start_pass_termination_head_never_sees_the_frame_it_judges(term_from):
    """`term_from: start`: frame t's termination logit comes from its first-pass input (frame t-1 plus noise) and
    the context before it, so changing frame t itself (a recorded death frame is a copy of the one before) cannot
    move it; `clean` reads the finished frame t, and does move. The loss trains it on the first-pass frames only."""
    dyn = tiny_dynamics(objective="teacher_forcing", start_from="previous", sigma_max=1.0, p_sigma_max=0.5,
                        term_from=term_from)
    with torch.no_grad():
        dyn.heads[-1].weight.normal_(0, 0.5)
    z, _, a = inputs(T=5)
    noise = torch.randn_like(z)
    sig, sig_ctx = torch.ones(2, 5), torch.zeros(2, 5)

    def term(z):
        return dyn.forward_teacher_forcing(z, sig_ctx, dyn.start_input(z) + noise, sig, a)[2]

    z2 = z.clone()
    z2[:, 3] += 1.0
    t1, t2 = term(z), term(z2)
    torch.testing.assert_close(t1[:, :3], t2[:, :3])  # earlier frames never see frame 3
    assert torch.allclose(t1[:, 3], t2[:, 3]) == (term_from == "start")
    dead = torch.zeros(2, 5, dtype=torch.bool)
    dead[:, 3] = True
    loss, m = dyn.loss(z, a, torch.zeros(2, 5), dead, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and m["term_bce"] > 0
