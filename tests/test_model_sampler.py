import numpy as np
import pytest
import torch

from odyssey_gym.model import Sampler, WorldModel, WorldModelConfig, hash_noise, rollout_reference


def tiny_model(seed=0, **overrides) -> WorldModel:
    """Tiny world model (32x32 frames, K=4) with zero-init layers randomised so outputs depend on everything."""
    torch.manual_seed(seed)
    m = WorldModel(WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3, world="test-world", **overrides))
    with torch.no_grad():
        for mod in (m.dynamics.adaln[-1], m.dynamics.out):
            mod.weight.normal_(0, 0.05)
            mod.bias.normal_(0, 0.05)
    return m.eval()


def data(B, k, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, k, 32, 32, 3), generator=g, dtype=torch.uint8)
    ctx_a = (torch.rand(B, k, 3, generator=g) > 0.5).float()
    acts = (torch.rand(B, N, 3, generator=g) > 0.5).float()
    return frames, ctx_a, acts


def run(sampler, acts):
    out = {"frames": [], "reward": [], "terminated": [], "latents": []}
    for n in range(acts.shape[1]):
        f, r, t = sampler.step(acts[:, n])
        out["frames"].append(f)
        out["reward"].append(r)
        out["terminated"].append(t)
        out["latents"].append(sampler.last_latent.clone())
    return {k: torch.stack(v, 1) for k, v in out.items()}


def assert_match(got, ref, rows=slice(None)):
    torch.testing.assert_close(got["latents"][rows], ref["latents"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["reward"][rows], ref["reward"], rtol=1e-4, atol=1e-4)
    diff = (got["frames"][rows].int() - ref["frames"].int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01


@pytest.mark.parametrize("k,steps,cn,start,renoise", [(2, 2, 0.1, "noise", "ddim"), (4, 1, 0.0, "noise", "ddim"),
                                                       (2, 2, 0.1, "previous", "ddim"), (2, 3, 0.0, "previous", "fresh")])
def test_cached_sampler_matches_reference_across_ring_wrap(k, steps, cn, start, renoise):
    m = tiny_model(context_noise=cn, renoise=renoise, dynamics={"start_from": start})
    K = m.config.context_frames
    N = 3 * K  # the ring buffer wraps several times
    frames, ctx_a, acts = data(2, k, N)
    seeds = torch.tensor([11, 12])
    s = Sampler(m, batch_size=2, device="cpu", sampling_steps=steps)
    s.reset(frames, ctx_a, seeds=seeds)
    got = run(s, acts)
    ref = rollout_reference(m, frames, ctx_a, acts, seeds, sampling_steps=steps)
    assert got["frames"].shape == (2, N, 32, 32, 3) and got["frames"].dtype == torch.uint8
    assert got["reward"].dtype == torch.float32 and got["terminated"].dtype == torch.bool
    assert_match(got, ref)
    # outputs really depend on the actions and differ from frame to frame
    assert (got["latents"][:, 1:] - got["latents"][:, :-1]).abs().max() > 1e-3


def test_partial_reset_leaves_other_envs_alone():
    m = tiny_model(context_noise=0.05)
    K = m.config.context_frames
    frames, ctx_a, acts = data(2, K, 2 * K + 3, seed=1)
    new_frames, new_ctx_a, _ = data(2, 3, 1, seed=2)
    seeds = torch.tensor([5, 6])
    j = K + 1  # reset env 1 after j steps (mid-wrap)

    a = Sampler(m, 2, "cpu")
    a.reset(frames, ctx_a, seeds=seeds)
    first = run(a, acts[:, :j])
    a.reset(new_frames, new_ctx_a, mask=torch.tensor([False, True]), seeds=torch.tensor([0, 99]))
    second = run(a, acts[:, j:])

    b = Sampler(m, 2, "cpu")  # never reset mid-way
    b.reset(frames, ctx_a, seeds=seeds)
    run(b, acts[:, :j])
    b_second = run(b, acts[:, j:])
    for key in ("latents", "reward", "frames"):
        assert torch.equal(second[key][0], b_second[key][0]), key  # env 0 bit-identical
    assert not torch.allclose(second["latents"][1], b_second["latents"][1])

    ref1 = rollout_reference(m, new_frames[1:], new_ctx_a[1:], acts[1:, j:], torch.tensor([99]))
    assert_match(second, ref1, rows=slice(1, 2))
    ref0 = rollout_reference(m, frames[:1], ctx_a[:1], acts[:1], seeds[:1])
    assert_match({k: torch.cat([first[k], second[k]], 1) for k in first}, ref0, rows=slice(0, 1))


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_reset_in_row_chunks_matches_one_pass(rows):
    """A CPU reset runs the context a few envs at a time to bound RAM; the state it leaves must be the same."""
    m = tiny_model(context_noise=0.1, dynamics={"start_from": "previous"})
    K = m.config.context_frames
    frames, ctx_a, acts = data(5, K, 4, seed=3)
    new_frames, new_ctx_a, _ = data(5, 2, 1, seed=4)
    seeds, mask = torch.arange(5) + 40, torch.tensor([True, False, True, True, False])
    out = []
    for chunk in (5, rows):
        s = Sampler(m, 5, "cpu", prefill_rows=chunk)
        assert s.prefill_rows == chunk
        s.reset(frames, ctx_a, seeds=seeds)
        run(s, acts[:, :2])
        s.reset(new_frames, new_ctx_a, mask=mask, seeds=seeds + 7)  # a partial reset keeps the other rows
        out.append(({k: v.clone() for k, v in zip(("k", "v", "last"), (s.k_cache, s.v_cache, s.last_latent))},
                    run(s, acts[:, 2:])))
    (state_a, run_a), (state_b, run_b) = out
    for k in state_a:
        torch.testing.assert_close(state_b[k], state_a[k], rtol=1e-5, atol=1e-5)
    diff = (run_b["frames"].int() - run_a["frames"].int()).abs()  # batch size changes float rounding only
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01
    torch.testing.assert_close(run_b["latents"], run_a["latents"], rtol=1e-4, atol=1e-4)


def test_partial_reset_computes_only_the_rows_it_resets(monkeypatch):
    """A player's reset on a shared server must cost one row's prefill, not the batch's: count the rows encoded."""
    m = tiny_model()
    K = m.config.context_frames
    frames, ctx_a, _ = data(6, K, 1, seed=5)
    s = Sampler(m, 6, "cpu", prefill_rows=4)
    s.reset(frames, ctx_a)
    seen = []
    real = m.encode_frames

    def encode(f):
        seen.append(f.shape[0])
        return real(f)

    monkeypatch.setattr(m, "encode_frames", encode)
    s.reset(frames, ctx_a, mask=torch.tensor([False, False, False, False, True, False]))
    assert seen == [1]
    s.reset(frames, ctx_a, mask=torch.zeros(6, dtype=torch.bool))  # nothing to reset: nothing computed
    assert seen == [1]
    s.reset(frames, ctx_a)
    assert seen == [1, 4, 2]


def test_reset_prefills_with_dense_masks_whatever_rows_and_context(monkeypatch):
    """A compiled FlexAttention kernel is static per shape: the prefill of a reset (any number of rows, any context
    length) runs dense masks, so players joining a server never recompile it or fall back to unfused flex."""
    m = tiny_model()
    K = m.config.context_frames
    frames, ctx_a, _ = data(5, K, 1, seed=6)
    s = Sampler(m, 5, "cpu")
    dense_at_mask = []
    real = m.dynamics._window_mask

    def window_mask(*a, **kw):
        dense_at_mask.append(m.dynamics._dense_only)
        return real(*a, **kw)

    monkeypatch.setattr(m.dynamics, "_window_mask", window_mask)
    s.reset(frames, ctx_a)
    s.reset(frames[:, -2:], ctx_a[:, -2:], mask=torch.tensor([False, True, True, False, False]))
    assert dense_at_mask and all(dense_at_mask)
    assert m.dynamics._dense_only is False  # the setting does not outlive the reset


def test_prefill_rows_default_and_validation():
    m = tiny_model()
    assert Sampler(m, 8, "cpu").prefill_rows == 2  # bounded on a CPU
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="prefill_rows"):
            Sampler(m, 2, "cpu", prefill_rows=bad)


def test_env_output_independent_of_batch_and_deterministic():
    m = tiny_model(context_noise=0.1)
    frames, ctx_a, acts = data(3, 2, 5, seed=3)
    s3 = Sampler(m, 3, "cpu")
    s3.reset(frames, ctx_a, seeds=torch.tensor([1, 2, 3]))
    out3 = run(s3, acts)
    s1 = Sampler(m, 1, "cpu")
    s1.reset(frames[2:], ctx_a[2:], seeds=torch.tensor([3]))
    out1 = run(s1, acts[2:])
    torch.testing.assert_close(out1["latents"][0], out3["latents"][2], rtol=1e-5, atol=1e-5)
    s3.reset(frames, ctx_a, seeds=torch.tensor([1, 2, 3]))
    again = run(s3, acts)
    assert torch.equal(again["frames"], out3["frames"])
    s3.reset(frames, ctx_a, seeds=torch.tensor([7, 2, 3]))
    other = run(s3, acts)
    assert not torch.equal(other["latents"][0], out3["latents"][0])
    assert torch.equal(other["latents"][1:], out3["latents"][1:])
    # no seeds given: drawn from the sampler's generator, reproducible by its seed
    x = Sampler(m, 3, "cpu", seed=4)
    x.reset(frames, ctx_a)
    y = Sampler(m, 3, "cpu", seed=4)
    y.reset(frames, ctx_a)
    assert torch.equal(run(x, acts)["frames"], run(y, acts)["frames"])


def test_cache_memory_constant():
    m = tiny_model()
    K = m.config.context_frames
    frames, ctx_a, acts = data(2, K, 3 * K)
    s = Sampler(m, 2, "cpu")
    s.reset(frames, ctx_a, seeds=torch.tensor([0, 1]))
    ptrs = [(t.data_ptr(), tuple(t.shape)) for t in s._state()]
    nbytes = s.cache_bytes()
    for n in range(3 * K):
        f, r, t = s.step(acts[:, n])
        assert f.data_ptr() not in [p for p, _ in ptrs]  # outputs are never internal buffers
    assert [(t.data_ptr(), tuple(t.shape)) for t in s._state()] == ptrs
    assert s.cache_bytes() == nbytes
    assert s.k_cache.shape == (m.config.dynamics.n_layer, 2, m.config.dynamics.n_head, (K + 1) * m.config.dynamics.tokens_per_frame,
                               m.config.dynamics.head_dim)
    assert torch.all(s.valid == K)


def test_reset_validation():
    m = tiny_model()
    s = Sampler(m, 2, "cpu")
    frames, ctx_a, _ = data(2, 5, 1)
    with pytest.raises(ValueError, match="context frames"):
        s.reset(frames, ctx_a)  # 5 > K=4
    with pytest.raises(ValueError, match="actions"):
        s.reset(frames[:, :2], ctx_a[:, :3])
    s.reset(frames[:, :2].numpy(), ctx_a[:, :2].numpy(), mask=np.array([True, True]), seeds=np.array([1, 2]))


def test_hash_noise_is_standard_normal_and_keyed():
    seeds = torch.arange(64)
    n = hash_noise(seeds, torch.zeros(64, dtype=torch.long), 0, (4, 8, 8))
    assert n.shape == (64, 4, 8, 8)
    assert abs(n.mean().item()) < 0.03 and abs(n.std().item() - 1) < 0.03
    n2 = hash_noise(seeds, torch.ones(64, dtype=torch.long), 0, (4, 8, 8))
    n3 = hash_noise(seeds, torch.zeros(64, dtype=torch.long), 1, (4, 8, 8))
    assert abs(torch.corrcoef(torch.stack([n.flatten(), n2.flatten()]))[0, 1]) < 0.02
    assert abs(torch.corrcoef(torch.stack([n.flatten(), n3.flatten()]))[0, 1]) < 0.02
    big = hash_noise(torch.tensor([2**40 + 3, -5]), torch.tensor([10**9, 0]), 255, (3,))
    assert torch.isfinite(big).all()


def test_bf16_sampler_runs_close_to_fp32():
    m = tiny_model(context_noise=0.1)
    frames, ctx_a, acts = data(2, 3, 6, seed=4)
    s32 = Sampler(m, 2, "cpu")
    s32.reset(frames, ctx_a, seeds=torch.tensor([1, 2]))
    out32 = run(s32, acts)
    import copy

    s16 = Sampler(copy.deepcopy(m), 2, "cpu", dtype=torch.bfloat16)
    assert s16.k_cache.dtype == torch.bfloat16
    s16.reset(frames, ctx_a, seeds=torch.tensor([1, 2]))
    out16 = run(s16, acts)
    assert torch.isfinite(out16["latents"].float()).all()
    assert (out16["latents"].float() - out32["latents"]).abs().mean() < 0.05


def test_sampled_termination_follows_the_calibrated_head():
    """termination='sample' ends an episode with the head's probability, undoing the training pos_weight."""
    import math

    model = tiny_model(0)
    model.config.dynamics.term_pos_weight = 4.0
    head = model.dynamics.heads[-1]
    with torch.no_grad():  # a constant logit of log(4): calibrated probability exactly 0.5
        head.weight[1].zero_()
        head.bias[1] = math.log(4.0)
    B, k = 64, model.config.context_frames
    frames, ctx, acts = data(B, k, 8)
    outs = {}
    for mode in ("sample", "threshold"):
        s = Sampler(model, batch_size=B, device="cpu", termination=mode)
        s.reset(frames, ctx, torch.ones(B, dtype=torch.bool), seeds=torch.arange(B))
        outs[mode] = torch.stack([s.step(acts[:, t])[2] for t in range(8)])
    frac = outs["sample"].float().mean().item()
    assert abs(frac - 0.5) < 0.1, frac  # 512 draws: sd 0.022
    assert outs["threshold"].all()  # the raw logit is > 0 everywhere
    s = Sampler(model, batch_size=B, device="cpu", termination="sample")  # same seeds: same draws
    s.reset(frames, ctx, torch.ones(B, dtype=torch.bool), seeds=torch.arange(B))
    assert torch.equal(torch.stack([s.step(acts[:, t])[2] for t in range(8)]), outs["sample"])
    # the probability it drew from, for an eval to rank against real deaths
    torch.testing.assert_close(s.termination_probability(), torch.full((B,), 0.5), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="termination must be one of"):
        Sampler(model, batch_size=2, device="cpu", termination="always")


def test_a_failed_capture_falls_back_to_eager_inside_the_sampler(monkeypatch):
    """The sampler owns how it runs: a capture that fails leaves it eager, says why once, and steps on with the
    same results as an eager sampler (the env only reads `mode` / `fallback_error`)."""
    m = tiny_model()
    frames, ctx_a, acts = data(2, 3, 4)
    eager = Sampler(m, batch_size=2, device="cpu")
    eager.reset(frames, ctx_a, seeds=torch.tensor([1, 2]))
    ref = run(eager, acts)

    s = Sampler(m, batch_size=2, device="cpu")
    s._use_graph, s.mode = True, "cuda_graph"  # as configured on a GPU

    def broken_capture():
        raise RuntimeError("PassManager::run failed")

    monkeypatch.setattr(s, "_capture", broken_capture)
    s.reset(frames, ctx_a, seeds=torch.tensor([1, 2]))
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        got = run(s, acts)
    assert s.mode == "eager" and "PassManager::run failed" in s.fallback_error
    assert_match(got, ref)
    assert s.prepare() == "eager"  # nothing left to capture


def test_a_failed_decoder_compile_falls_back_to_the_plain_graph(monkeypatch):
    """A decoder that does not compile costs the speed-up, not the CUDA graph: the sampler captures again
    without it (mode "cuda_graph"), says why, and only a failure of that capture leaves it eager."""
    m = tiny_model()
    s = Sampler(m, batch_size=2, device="cpu", compile_decoder=True)
    assert s.mode == "eager"  # CPU: no graph, so no compiled decoder either
    s._use_graph, s._compiled_decoder, s.mode = True, True, "cuda_graph+compiled_decoder"  # as on a GPU
    tried = []

    def capture():
        tried.append(s._compiled_decoder)
        if s._compiled_decoder:
            raise RuntimeError("triton: PassManager::run failed")
        s._graph = "captured"

    monkeypatch.setattr(s, "_capture", capture)
    with pytest.warns(RuntimeWarning, match="compiling the decoder failed"):
        assert s.prepare() == "cuda_graph"
    assert tried == [True, False] and "PassManager" in s.fallback_error and s._graph == "captured"
    # an env asks for it by name, on CUDA only
    from odyssey_gym.envs.vector_env import WorldModelVectorEnv

    tc = WorldModel(WorldModelConfig.tiny(frame_size=(64, 64), action_dim=3, world="doom-takecover"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        WorldModelVectorEnv("doom-takecover", num_envs=1, device="cpu", weights=tc, compile="decoder")
    with pytest.raises(ValueError, match="'decoder'"):
        WorldModelVectorEnv("doom-takecover", num_envs=1, device="cpu", weights=tc, compile="fast")


def test_sampler_flags_nonfinite_latents_per_env():
    m = tiny_model()
    frames, ctx_a, acts = data(2, 3, 2)
    s = Sampler(m, batch_size=2, device="cpu")
    s.reset(frames, ctx_a, seeds=torch.tensor([1, 2]))
    s.step(acts[:, 0])
    assert s.nonfinite.tolist() == [False, False]
    s.v_cache[:, 1] = float("nan")  # env 1's context went bad
    with torch.no_grad():
        s.step(acts[:, 1])
    assert s.nonfinite.tolist()[1] is True


def test_fresh_renoise_changes_later_passes_only():
    """"fresh" draws new noise for the passes after the first: one pass is unchanged, more passes differ from DDIM,
    and the frames stay a pure function of the env's seed and history."""
    frames, ctx_a, acts = data(2, 2, 4)
    seeds = torch.tensor([5, 6])
    out = {}
    for renoise in ("ddim", "fresh"):
        for steps in (1, 3):
            m = tiny_model(renoise=renoise, dynamics={"start_from": "previous"})
            s = Sampler(m, batch_size=2, device="cpu", sampling_steps=steps)
            s.reset(frames, ctx_a, seeds=seeds)
            out[renoise, steps] = run(s, acts)["latents"]
    torch.testing.assert_close(out["ddim", 1], out["fresh", 1])
    assert (out["ddim", 3] - out["fresh", 3]).abs().max() > 1e-3
    m = tiny_model(dynamics={"start_from": "previous"})
    s = Sampler(m, batch_size=2, device="cpu", sampling_steps=3, renoise="fresh")  # the override wins over the config
    s.reset(frames, ctx_a, seeds=seeds)
    torch.testing.assert_close(run(s, acts)["latents"], out["fresh", 3])
    with pytest.raises(ValueError, match="renoise"):
        Sampler(m, batch_size=2, device="cpu", renoise="ancestral")
    with pytest.raises(ValueError, match="renoise"):
        tiny_model(renoise="ancestral")


def state_model(seed=0) -> WorldModel:
    m = tiny_model(seed, state_variables=["HEALTH", "ARMOR"], context_noise=0.1)
    m.set_state_stats([50.0, 10.0], [20.0, 5.0])
    with torch.no_grad():
        m.dynamics.state_mlp[-1].weight.normal_(0, 0.05)  # zero-initialised: give the state a visible effect
        m.dynamics.heads[-1].weight.normal_(0, 0.3)
    return m.eval()


@pytest.mark.parametrize("given", [True, False])
def test_cached_sampler_carries_the_game_state_as_the_reference_does(given):
    """With game state, each new frame is conditioned on the state the last one ended in and the clean pass's
    head gives the next; the cached sampler and the cache-free reference agree across ring wraps, from a given
    context state or from the model's own reading of the context."""
    m = state_model()
    K = m.config.context_frames
    frames, ctx_a, acts = data(2, 2, 2 * K + 1)
    state = torch.tensor([[[100.0, 0.0], [95.0, 0.0]], [[30.0, 20.0], [20.0, 20.0]]]) if given else None
    seeds = torch.tensor([3, 4])
    s = Sampler(m, batch_size=2, device="cpu", sampling_steps=2)
    s.reset(frames, ctx_a, seeds=seeds, state=state)
    if given:
        torch.testing.assert_close(s.game_state(), state[:, -1])
    got, states = {"frames": [], "reward": [], "terminated": [], "latents": []}, []
    for n in range(acts.shape[1]):
        f, r, t = s.step(acts[:, n])
        for key, v in zip(("frames", "reward", "terminated", "latents"), (f, r, t, s.last_latent.clone())):
            got[key].append(v)
        states.append(s.game_state())
    got = {k: torch.stack(v, 1) for k, v in got.items()}
    ref = rollout_reference(m, frames, ctx_a, acts, seeds, sampling_steps=2, state=state)
    assert_match(got, ref)
    torch.testing.assert_close(torch.stack(states, 1), ref["state"], rtol=1e-4, atol=1e-3)
    # the state matters: another context state, other frames
    if given:
        s.reset(frames, ctx_a, seeds=seeds, state=state + 40.0)
        other = s.step(acts[:, 0])[0]
        assert (other.int() - got["frames"][:, 0].int()).abs().max() > 0


def test_terminal_state_ends_an_episode_where_the_modelled_variable_falls_to_it():
    m = state_model()
    with torch.no_grad():  # a termination head that never fires by itself
        m.dynamics.heads[-1].weight[1].zero_()
        m.dynamics.heads[-1].bias[1] = -5.0
    frames, ctx_a, acts = data(2, 2, 1)
    s = Sampler(m, batch_size=2, device="cpu", terminal_state=("HEALTH", 1e9))  # every frame is below it
    s.reset(frames, ctx_a)
    assert s.step(acts[:, 0])[2].all()
    s = Sampler(m, batch_size=2, device="cpu", terminal_state=("HEALTH", -1e9))
    s.reset(frames, ctx_a)
    assert not s.step(acts[:, 0])[2].any()  # above it: the head alone decides, and it does not fire
    with pytest.raises(ValueError, match="does not predict"):
        Sampler(m, batch_size=2, device="cpu", terminal_state=("POSITION_X", 0.0))
    with pytest.raises(ValueError, match=r"state must be \(2, 2, 2\)"):
        s.reset(frames, ctx_a, state=torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="NaN"):
        s.reset(frames, ctx_a, state=torch.full((2, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="no game state"):
        Sampler(tiny_model(), batch_size=2, device="cpu").reset(frames, ctx_a, state=torch.zeros(2, 2, 1))


# ---------------------------------------------------------------------------- detail carry


def test_carry_detail_keeps_detail_where_the_view_is_still_and_drops_it_where_it_moved():
    from odyssey_gym.model.sampler import carry_detail

    detail = torch.full((1, 3, 12, 12), 0.1)
    prev = torch.zeros(1, 3, 12, 12)
    new = prev.clone()
    new[..., :, 8:] = 1.0  # the right third moved by half the range; the left part did not move at all
    kept = carry_detail(detail, prev, new, tau=0.2)
    assert torch.equal(kept[..., :, :6], detail[..., :, :6])  # still, and no moved pixel in the 3x3 neighbourhood
    assert torch.equal(kept[..., :, 7:], torch.zeros_like(kept[..., :, 7:]))  # moved, or beside a moved pixel
    half = carry_detail(detail, prev, prev + 0.1, tau=0.2)  # a move of half of tau keeps half the detail
    torch.testing.assert_close(half, detail * 0.5)


@pytest.mark.parametrize("carry", [0.0, 0.3])
def test_cached_sampler_with_detail_carry_matches_reference_across_resets(carry):
    m = tiny_model(context_noise=0.05, detail_carry=carry)
    K = m.config.context_frames
    frames, ctx_a, acts = data(2, K, K + 3, seed=4)
    new_frames, new_ctx_a, _ = data(2, 2, 1, seed=5)
    seeds = torch.tensor([3, 4])
    s = Sampler(m, 2, "cpu")
    s.reset(frames, ctx_a, seeds=seeds)
    first = run(s, acts[:, :3])
    s.reset(new_frames, new_ctx_a, mask=torch.tensor([False, True]), seeds=torch.tensor([0, 9]))
    second = run(s, acts[:, 3:])
    ref0 = rollout_reference(m, frames[:1], ctx_a[:1], acts[:1], seeds[:1])
    assert_match({k: torch.cat([first[k], second[k]], 1) for k in first}, ref0, rows=slice(0, 1))
    assert_match(second, rollout_reference(m, new_frames[1:], new_ctx_a[1:], acts[1:, 3:], torch.tensor([9])),
                 rows=slice(1, 2))


def test_detail_carry_shows_the_real_frames_detail_where_the_decoding_did_not_move():
    """With a tau no move reaches, the first generated frame is its decoding plus all the detail the autoencoder lost
    of the last real frame; carry 0 is the plain decoding, and the latents never depend on it."""
    m = tiny_model()
    K = m.config.context_frames
    frames, ctx_a, acts = data(2, K, 1, seed=6)
    out = {}
    for carry in (0.0, 1e6):
        s = Sampler(m, 2, "cpu", detail_carry=carry)
        s.reset(frames, ctx_a, seeds=torch.tensor([1, 2]))
        f, _, _ = s.step(acts[:, 0])
        out[carry] = (f, s.last_latent.clone())
    from odyssey_gym.model import frames_to_tensor, tensor_to_frames

    assert torch.equal(out[0.0][1], out[1e6][1])
    with torch.no_grad():
        lost = frames_to_tensor(frames[:, -1]) - m.decode_latents(m.encode_frames(frames[:, -1]))
        want = tensor_to_frames(m.decode_latents(out[0.0][1]) + lost)
    assert torch.equal(out[0.0][0], tensor_to_frames(m.decode_latents(out[0.0][1])))
    assert (out[1e6][0].int() - want.int()).abs().max() <= 1
    assert not torch.equal(out[1e6][0], out[0.0][0])


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_detail_carry_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="detail_carry"):
        WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3, world="test-world", detail_carry=bad)
    with pytest.raises(ValueError, match="detail_carry"):
        Sampler(tiny_model(), 1, "cpu", detail_carry=bad)


# ---------------------------------------------------------------------------- where the termination head reads


@pytest.mark.parametrize("term_from", ["clean", "start"])
def test_sampler_termination_logit_matches_reference(term_from):
    """The sampler's termination probability is the reference's logit, read at the pass `term_from` names: the
    clean pass (the finished frame) or the first pass (the previous frame plus noise at sigma_max)."""
    tf = {"start_from": "previous", "sigma_max": 1.0, "objective": "teacher_forcing", "p_sigma_max": 0.25}
    m = tiny_model(dynamics={**tf, "term_from": term_from})
    with torch.no_grad():
        m.dynamics.heads[-1].weight.normal_(0, 0.5)
    K = m.config.context_frames
    frames, ctx_a, acts = data(2, K, 3, seed=8)
    s = Sampler(m, 2, "cpu", sampling_steps=2)
    s.reset(frames, ctx_a, seeds=torch.tensor([4, 5]))
    probs = []
    for n in range(acts.shape[1]):
        s.step(acts[:, n])
        probs.append(s.termination_probability())
    ref = rollout_reference(m, frames, ctx_a, acts, torch.tensor([4, 5]), sampling_steps=2)
    want = torch.sigmoid(ref["term_logit"] - s._term_offset)
    torch.testing.assert_close(torch.stack(probs, 1), want, rtol=1e-4, atol=1e-5)
    other = rollout_reference(tiny_model(dynamics={**tf, "term_from": "clean" if term_from == "start" else "start"}),
                              frames, ctx_a, acts, torch.tensor([4, 5]), sampling_steps=2)
    assert not torch.allclose(other["term_logit"], ref["term_logit"])  # the two passes really differ


def test_term_from_start_needs_teacher_forcing():
    with pytest.raises(ValueError, match="term_from"):
        WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3, world="test-world", dynamics={"term_from": "middle"})
    with pytest.raises(ValueError, match="term_from 'start' needs"):
        WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3, world="test-world",
                              dynamics={"term_from": "start", "objective": "diffusion_forcing"})
