"""WorldModelVectorEnv: autoreset modes, partial resets, seeding, validation, NaN detection, render."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from tiny_weights import make_tiny_weights
from odyssey_gym.envs.vector_env import NonFiniteOutputError, WorldModelVectorEnv, start_index

WORLD = "doom-takecover"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_weights(WORLD, tmp_path_factory.mktemp("tiny_takecover"), n_starts=5, seed=0)


def make(weights, **kw):
    kw.setdefault("num_envs", 4)
    return WorldModelVectorEnv(WORLD, weights=weights, **kw)


def actions_seq(n_steps, num_envs, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 3, (n_steps, num_envs))


def force_termination(env, mask_fn):
    """Make the model's termination head say True where mask_fn(step_index) -> (B,) bool (test control)."""
    real = env.sampler.step
    counter = {"t": 0}

    def step(a):
        frames, rew, term = real(a)
        counter["t"] += 1
        return frames, rew, torch.as_tensor(mask_fn(counter["t"]), device=term.device)

    env.sampler.step = step


def bank_last_frames(env):
    return env._bank_frames[:, -1].cpu().numpy()


def test_spaces_and_metadata(weights):
    env = make(weights)
    assert env.num_envs == 4
    assert env.single_observation_space.shape == (64, 64, 3) and env.single_observation_space.dtype == np.uint8
    assert env.observation_space.shape == (4, 64, 64, 3)
    assert env.action_space.shape == (4,)
    assert env.metadata["render_modes"] == ["rgb_array"]
    assert env.metadata["render_fps"] == 9  # 35 / frame_skip 4, rounded
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 64, 64, 3) and obs.dtype == np.uint8 and obs in env.observation_space
    obs, rew, term, trunc, info = env.step(env.action_space.sample())
    assert rew.dtype == np.float32 and rew.shape == (4,)
    assert term.dtype == np.bool_ and trunc.dtype == np.bool_


def test_next_step_autoreset(weights):
    env = make(weights, max_episode_steps=3)
    obs, _ = env.reset(seed=10)
    bank = bank_last_frames(env)
    n = bank.shape[0]
    for i in range(4):
        assert np.array_equal(obs[i], bank[start_index(10 + i, 0, n)])
    acts = actions_seq(8, 4)
    for t in range(3):
        obs, rew, term, trunc, info = env.step(acts[t])
    assert trunc.all() and not term.any()
    # next step: the reset observation, reward 0, no done flags, and the action is ignored
    obs, rew, term, trunc, info = env.step(acts[3])
    assert not trunc.any() and not term.any() and (rew == 0).all()
    for i in range(4):
        assert np.array_equal(obs[i], bank[start_index(10 + i, 1, n)])
    for t in range(4, 6):
        obs, rew, term, trunc, _ = env.step(acts[t])
        assert not trunc.any()
    obs, rew, term, trunc, _ = env.step(acts[6])
    assert trunc.all()


def test_next_step_termination_only_resets_that_env(weights):
    env = make(weights, max_episode_steps=100)
    force_termination(env, lambda t: np.array([t == 2, False, False, False]))
    env.reset(seed=0)
    bank = bank_last_frames(env)
    acts = actions_seq(4, 4)
    env.step(acts[0])
    obs2, _, term, trunc, _ = env.step(acts[1])
    assert term.tolist() == [True, False, False, False] and not trunc.any()
    obs3, rew, term, trunc, _ = env.step(acts[2])
    assert np.array_equal(obs3[0], bank[start_index(0, 1, bank.shape[0])]) and rew[0] == 0
    assert not term.any()
    # the env that reset restarted its step counter; the others did not
    assert env._steps.tolist() == [0, 3, 3, 3]


def test_same_step_autoreset(weights):
    ref = make(weights, max_episode_steps=3)  # NEXT_STEP reference with the same seed/actions
    env = make(weights, max_episode_steps=3, autoreset_mode=AutoresetMode.SAME_STEP)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    ref.reset(seed=3)
    env.reset(seed=3)
    bank = bank_last_frames(env)
    acts = actions_seq(5, 4)
    for t in range(2):
        o1 = ref.step(acts[t])[0]
        o2, _, _, _, info = env.step(acts[t])
        assert np.array_equal(o1, o2) and "final_obs" not in info
    ref_obs, _, _, ref_trunc, _ = ref.step(acts[2])
    obs, rew, term, trunc, info = env.step(acts[2])
    assert trunc.all() and ref_trunc.all()
    assert info["_final_obs"].all() and info["_final_info"].all()
    for i in range(4):
        assert np.array_equal(info["final_obs"][i], ref_obs[i])  # the last frame of the episode
        assert np.array_equal(obs[i], bank[start_index(3 + i, 1, bank.shape[0])])  # already the new episode
    obs, rew, term, trunc, info = env.step(acts[3])
    assert not trunc.any() and "final_obs" not in info


def test_disabled_autoreset(weights):
    env = make(weights, max_episode_steps=2, autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    bank = bank_last_frames(env)
    env.step(np.zeros(4, np.int64))
    obs, _, _, trunc, info = env.step(np.zeros(4, np.int64))
    assert trunc.all() and info == {}
    # no autoreset: stepping on keeps the episode going (and truncated)
    obs, _, _, trunc, _ = env.step(np.zeros(4, np.int64))
    assert trunc.all()
    obs, _ = env.reset(options={"reset_mask": np.array([True, False, True, False])})
    obs, _, _, trunc, _ = env.step(np.zeros(4, np.int64))
    assert trunc.tolist() == [False, True, False, True]


def test_reset_mask_keeps_other_envs_exactly(weights):
    acts = actions_seq(10, 4, seed=1)
    a = make(weights)
    b = make(weights)
    a.reset(seed=5)
    b.reset(seed=5)
    for t in range(5):
        oa = a.step(acts[t])[0]
        ob = b.step(acts[t])[0]
        assert np.array_equal(oa, ob)
    mask = np.array([False, True, False, True])
    obs_a, _ = a.reset(options={"reset_mask": mask})
    bank = bank_last_frames(a)
    assert np.array_equal(obs_a[0], ob[0]) and np.array_equal(obs_a[2], ob[2])
    assert np.array_equal(obs_a[1], bank[start_index(6, 1, bank.shape[0])])
    assert np.array_equal(obs_a[3], bank[start_index(8, 1, bank.shape[0])])
    differs = False
    for t in range(5, 10):
        oa = a.step(acts[t])[0]
        ob = b.step(acts[t])[0]
        assert np.array_equal(oa[[0, 2]], ob[[0, 2]])
        differs |= not np.array_equal(oa[[1, 3]], ob[[1, 3]])
    assert differs  # the reset envs really restarted
    assert a._steps.tolist() == [10, 5, 10, 5]


def test_seeds_independent_of_batch_composition(weights):
    """Env i of a batch seeded s == a lone env seeded s+i (same start, same noise stream).

    Exact up to float summation order: CPU matmuls over a batch of 4 vs 1 may round differently, which
    can move a rare pixel by one uint8 level; a different seed moves most pixels by a lot."""
    acts = actions_seq(6, 4, seed=2)
    big = make(weights, num_envs=4)
    obs_big = [big.reset(seed=100)[0]]
    for t in range(6):
        obs_big.append(big.step(acts[t])[0])
    obs_big = np.stack(obs_big).astype(np.int16)  # (T, 4, H, W, 3)

    def lone(seed, i):
        one = make(weights, num_envs=1)
        seq = [one.reset(seed=seed)[0]]
        for t in range(6):
            seq.append(one.step(acts[t, i:i + 1])[0])
        return np.stack(seq)[:, 0].astype(np.int16)

    for i in range(4):
        seq = lone(100 + i, i)
        assert np.array_equal(seq[0], obs_big[0, i]), f"env {i}: start context differs"
        diff = np.abs(seq - obs_big[:, i])
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, f"env {i} of the batch differs from a lone env seeded {100 + i}"
    # the contrast that makes the check meaningful: another seed's noise gives a clearly different rollout
    other = lone(100 + 7, 0)
    assert (np.abs(other[1:] - obs_big[1:, 0]) > 1).mean() > 0.05


def test_reset_seed_is_deterministic_and_seeds_differ(weights):
    env = make(weights)
    acts = actions_seq(3, 4)
    runs = []
    for _ in range(2):
        o = [env.reset(seed=42)[0]]
        for t in range(3):
            o.append(env.step(acts[t])[0])
        runs.append(np.stack(o))
    assert np.array_equal(runs[0], runs[1])


def test_reset_from_given_context(weights):
    env = make(weights, num_envs=2)
    env.reset(seed=0)
    K = env.context_length
    ctx = np.full((K, 64, 64, 3), 77, np.uint8)
    obs, _ = env.reset(options={"context": ctx, "actions": np.zeros(K, np.int64)})
    assert (obs == 77).all()
    ctx2 = np.stack([np.full((K, 64, 64, 3), 5, np.uint8), np.full((K, 64, 64, 3), 9, np.uint8)])
    obs, _ = env.reset(options={"context": ctx2})
    assert (obs[0] == 5).all() and (obs[1] == 9).all()
    with pytest.raises(ValueError, match="context"):
        env.reset(options={"context": np.zeros((K, 32, 32, 3), np.uint8)})
    with pytest.raises(ValueError, match="uint8"):
        env.reset(options={"context": np.zeros((K, 64, 64, 3), np.float32)})


def test_bad_inputs_raise_clear_errors(weights, tmp_path):
    env = make(weights)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected actions of shape \(4,\).*got shape \(3,\)"):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"outside Discrete\(3\) for envs \[2\]"):
        env.step(np.array([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="outside"):
        env.step(np.array([0, -1, 0, 2]))
    with pytest.raises(ValueError, match="integer actions"):
        env.step(np.array([0.5, 1, 0, 2]))
    with pytest.raises(ValueError, match="expected actions of shape"):
        env.step(torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="reset_mask.*numpy bool array"):
        env.reset(options={"reset_mask": [True, False, True, False]})
    with pytest.raises(ValueError, match=r"reset_mask.*shape \(4,\)"):
        env.reset(options={"reset_mask": np.ones(3, bool)})
    with pytest.raises(TypeError, match="reset_mask.*dtype bool"):
        env.reset(options={"reset_mask": np.ones(4, np.int64)})
    with pytest.raises(ValueError, match="unknown device 'tpu:0'"):
        make(weights, device="tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            make(weights, device="cuda")
    other = make_tiny_weights("doom-health", tmp_path / "health")
    with pytest.raises(ValueError, match="trained for world 'doom-health', not 'doom-takecover'"):
        make(other)
    with pytest.raises(ValueError, match="backend"):
        make(weights, backend="jax")
    with pytest.raises(FileNotFoundError):
        make(tmp_path / "nope")


def test_multibinary_validation(tmp_path):
    w = make_tiny_weights("doom-explore", tmp_path / "explore", n_starts=2)
    env = WorldModelVectorEnv("doom-explore", num_envs=2, weights=w)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], np.int8))
    assert obs.shape == (2, 120, 160, 3)
    with pytest.raises(ValueError, match=r"outside MultiBinary\(6\) for envs \[1\]"):
        env.step(np.array([[1, 0, 1, 0, 0, 0], [0, 2, 0, 0, 0, 1]], np.int8))
    with pytest.raises(ValueError, match=r"expected actions of shape \(2, 6\)"):
        env.step(np.zeros((2, 5), np.int8))


def _poison(model):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))


def test_nan_output_raises_numpy_backend(weights):
    env = make(weights)
    env.reset(seed=0)
    env.step(np.zeros(4, np.int64))
    _poison(env.model)
    with pytest.raises(NonFiniteOutputError, match=r"NaN/inf.*envs \[0, 1, 2, 3\]"):
        env.step(np.zeros(4, np.int64))


def test_nan_flag_torch_backend(weights):
    env = make(weights, backend="torch")
    env.reset(seed=0)
    env.step(torch.zeros(4, dtype=torch.long))
    assert not env.nonfinite.any()
    env.check_errors()
    _poison(env.model)
    env.step(torch.zeros(4, dtype=torch.long))  # no sync, no raise in the hot path
    assert env.nonfinite.all()
    with pytest.raises(NonFiniteOutputError, match=r"envs \[0, 1, 2, 3\]"):
        env.check_errors()


def test_render_returns_tuple_of_copies(weights):
    env = make(weights, num_envs=3)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(np.array([0, 1, 2]))
    frames = env.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    for i, f in enumerate(frames):
        assert isinstance(f, np.ndarray) and f.shape == (64, 64, 3) and f.dtype == np.uint8
        assert np.array_equal(f, obs[i]) and not np.shares_memory(f, obs)
    frames[0][:] = 0
    obs[1][:] = 0
    again = env.render()
    assert np.array_equal(again[0], obs[0]) and not (again[0] == 0).all()
    assert np.array_equal(again[1], frames[1])
    # the next step's obs does not alias the previous one
    obs2, *_ = env.step(np.array([0, 1, 2]))
    assert not np.shares_memory(obs2, obs)


def test_torch_backend_matches_numpy(weights):
    env = make(weights, backend="torch", max_episode_steps=2)
    obs, _ = env.reset(seed=1)
    assert isinstance(obs, torch.Tensor) and obs.dtype == torch.uint8 and obs.shape == (4, 64, 64, 3)
    ref = make(weights, max_episode_steps=2)
    ref_obs, _ = ref.reset(seed=1)
    assert np.array_equal(obs.numpy(), ref_obs)
    acts = actions_seq(4, 4)
    for t in range(4):
        o, r, te, tr, _ = env.step(torch.as_tensor(acts[t]))
        ro, rr, rte, rtr, _ = ref.step(acts[t])
        assert isinstance(o, torch.Tensor) and np.array_equal(o.numpy(), ro)
        assert np.array_equal(tr.numpy(), rtr) and np.allclose(r.numpy(), rr)


def test_torch_backend_array_conversion(weights):
    import array_api_compat  # noqa: F401  (the [test] extra installs it; gymnasium's ArrayConversion needs it)
    from gymnasium.wrappers.vector import ArrayConversion

    ref_obs, _ = make(weights).reset(seed=1)
    conv = ArrayConversion(make(weights, backend="torch"), env_xp=torch, target_xp=np)
    o, _ = conv.reset(seed=1)
    assert isinstance(o, np.ndarray) and np.array_equal(o, ref_obs)
    o, r, te, tr, _ = conv.step(np.zeros(4, np.int64))
    assert isinstance(o, np.ndarray) and isinstance(r, np.ndarray)


def test_torch_backend_same_step_final_obs(weights):
    env = make(weights, backend="torch", max_episode_steps=2, autoreset_mode="SameStep")
    env.reset(seed=0)
    env.step(torch.zeros(4, dtype=torch.long))
    o, r, te, tr, info = env.step(torch.zeros(4, dtype=torch.long))
    assert tr.all() and info["_final_obs"].all()
    assert info["final_obs"].shape == (4, 64, 64, 3)
    assert not torch.equal(info["final_obs"], o)


def test_start_index_is_one_hash_for_ints_numpy_and_torch_and_uses_the_whole_seed():
    from odyssey_gym.model.sampler import seed_key

    seeds = np.arange(200, dtype=np.int64) * 7919 + 3
    counts = np.arange(200, dtype=np.int64) % 5
    as_np = start_index(seeds, counts, 97)
    as_torch = start_index(torch.from_numpy(seeds), torch.from_numpy(counts), 97).numpy()
    as_int = [start_index(int(s), int(c), 97) for s, c in zip(seeds, counts)]
    assert np.array_equal(as_np, as_torch) and as_np.tolist() == as_int
    assert ((0 <= as_np) & (as_np < 97)).all() and len(set(as_int)) > 60  # spread over the bank
    high = seeds + (1 << 40)  # the same low 32 bits: a seed's high half must change its start too
    assert (start_index(high, counts, 97) != as_np).mean() > 0.9
    assert (seed_key(torch.from_numpy(high)).numpy() != seed_key(seeds)).all()


def test_a_model_with_game_state_reports_it_takes_it_at_reset_and_ends_episodes_by_it(tmp_path):
    """info["state"] holds the modelled game variables after reset and every step; reset(options={"state"})
    starts from given ones; take_cover's episodes end where the modelled HEALTH falls to 0."""
    import gymnasium as gym

    from tiny_weights import make_tiny_weights
    from odyssey_gym.envs.vector_env import WorldModelVectorEnv

    alive = make_tiny_weights("doom-takecover", tmp_path / "alive", state=100.0)
    env = WorldModelVectorEnv("doom-takecover", num_envs=3, device="cpu", weights=alive)
    assert env.state_names == ("HEALTH",)
    _, info = env.reset(seed=0)
    assert info["state"].shape == (3, 1)
    ctx = np.zeros((3, 4, 64, 64, 3), np.uint8)
    given = np.array([[[100.0], [90], [80], [70]]] * 3, np.float32)
    _, info = env.reset(options={"context": ctx, "actions": np.zeros((3, 4), np.int64), "state": given})
    np.testing.assert_allclose(info["state"], given[:, -1], rtol=1e-5)
    _, _, term, _, info = env.step(np.zeros(3, np.int64))
    np.testing.assert_allclose(info["state"], 100.0, rtol=1e-4)  # the head's reading of the new frame
    assert not term.any()
    for bad, match in (({"state": given}, "without options\\['context'\\]"),
                       ({"context": ctx, "state": given[:, :, :0]}, "must be \\(N, 4, 1\\)"),
                       ({"context": ctx, "state": np.full_like(given, np.nan)}, "NaN")):
        with pytest.raises(ValueError, match=match):
            env.reset(options=bad)
    env.close()

    dying = make_tiny_weights("doom-takecover", tmp_path / "dying", state=-5.0)
    env = WorldModelVectorEnv("doom-takecover", num_envs=2, device="cpu", weights=dying)
    env.reset(seed=0)
    _, _, term, _, info = env.step(np.zeros(2, np.int64))
    assert term.all() and (info["state"] <= 0).all()  # HEALTH <= 0: take_cover's death, modelled
    env.close()

    one = gym.make("odyssey_gym/DoomTakeCover-v0", device="cpu", weights=str(alive))
    _, info = one.reset(seed=1, options={"context": ctx[0], "state": given[0]})
    np.testing.assert_allclose(info["state"], [70.0], rtol=1e-5)
    assert one.step(0)[4]["state"].shape == (1,)
    one.close()

    plain = WorldModelVectorEnv("doom-takecover", num_envs=1, device="cpu",
                                weights=make_tiny_weights("doom-takecover", tmp_path / "plain"))
    assert "state" not in plain.reset(seed=0)[1] and plain.state_names == ()
    with pytest.raises(ValueError, match="no game state"):
        plain.reset(options={"context": ctx[:1], "state": given[:1]})
    plain.close()


def test_detail_carry_is_an_env_option(weights):
    """`detail_carry=` reaches the sampler: 0 shows frames exactly as decoded, a large value adds the real
    context's lost detail; the latents are the same either way."""
    out = {}
    for carry in (0.0, 1e6):
        env = make(weights, num_envs=2, detail_carry=carry, backend="torch")
        env.reset(seed=3)
        obs, *_ = env.step(torch.tensor([0, 1]))
        out[carry] = (obs.clone(), env.sampler.last_latent.clone())
        assert env.sampler.detail_carry == carry
        env.close()
    assert torch.equal(out[0.0][1], out[1e6][1]) and not torch.equal(out[0.0][0], out[1e6][0])


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_detail_carry_rejects_bad_values_in_the_env(weights, bad):
    with pytest.raises(ValueError, match="detail_carry"):
        make(weights, num_envs=1, detail_carry=bad)


def test_detail_carry_reaches_the_single_env_and_make_vec(weights):
    import gymnasium as gym

    from odyssey_gym.envs.single_env import WorldModelEnv

    env = WorldModelEnv(WORLD, weights=weights, detail_carry=0.5)
    assert env.vector_env.sampler.detail_carry == 0.5
    env.close()
    venv = gym.make_vec("odyssey_gym/DoomTakeCover-v0", num_envs=2, weights=weights, detail_carry=0.0)
    assert venv.unwrapped.sampler.detail_carry == 0.0
    venv.close()
