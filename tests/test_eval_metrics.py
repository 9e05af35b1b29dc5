"""Eval metrics on tiny synthetic worlds where the right answer is known.

The toy world: 16x16 frames, dim noisy background, a bright 3x3 square; action LEFT moves it 2 px left,
RIGHT 2 px right, NOOP leaves it (an action that would leave the frame is never drawn). The shuffled world
has the same frames with the actions permuted across all transitions, so actions are independent of motion.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odyssey_gym.data.windows import FlatData
from odyssey_gym.eval.metrics import psnr, ssim
from odyssey_gym.eval.probe import Probe, controllability, probe_accuracy, real_pairs, train_probe
from odyssey_gym.eval.realism import frame_features, frechet_distance, realism_distance
from odyssey_gym.worlds.spec import WorldSpec

TOY = WorldSpec(name="toy-square", version=1, env_id="none", engine="gymnasium", scenario="none", doom_map=None,
                buttons=("MOVE_LEFT", "MOVE_RIGHT"), action_kind="discrete", discrete_actions=((1, 0), (0, 1), (0, 0)),
                frame_size=(16, 16))
TOY_MB = WorldSpec(name="toy-square-mb", version=1, env_id="none", engine="gymnasium", scenario="none", doom_map=None,
                   buttons=("MOVE_RIGHT", "MOVE_DOWN"), action_kind="multibinary", frame_size=(16, 16))
S, SQ, STEP = 16, 3, 2


def _draw(rng, y, x):
    f = rng.integers(0, 40, size=(S, S, 3)).astype(np.uint8)
    f[y: y + SQ, x: x + SQ] = 230
    return f


def toy_world(seed: int, episodes: int = 20, length: int = 40, shuffled: bool = False, multibinary: bool = False) -> FlatData:
    rng = np.random.default_rng(seed)
    frames, actions, ep = [], [], []
    hi = S - SQ
    for e in range(episodes):
        y, x = rng.integers(0, hi + 1, size=2)
        for t in range(length):
            a = np.zeros(2 if multibinary else 3, np.float32)
            if t > 0:
                if multibinary:  # button 0: right by STEP (wraps to 0 past the edge), button 1: down likewise
                    bx, by = rng.integers(0, 2, size=2)
                    x = (x + STEP * bx) if x + STEP * bx <= hi else 0
                    y = (y + STEP * by) if y + STEP * by <= hi else 0
                    a[:] = (bx, by)
                else:
                    ok = [c for c, dx in enumerate((-STEP, STEP, 0)) if 0 <= x + dx <= hi]
                    c = int(rng.choice(ok))
                    x += (-STEP, STEP, 0)[c]
                    a[c] = 1
            frames.append(_draw(rng, y, x))
            actions.append(a)
            ep.append(e)
    actions = np.stack(actions)
    ep = np.array(ep, np.int32)
    first = np.r_[True, ep[1:] != ep[:-1]]
    if shuffled:  # permute the actions of all non-first frames: same marginals, independent of the motion
        idx = np.flatnonzero(~first)
        actions[idx] = actions[rng.permutation(idx)]
    n = len(ep)
    return FlatData(frames=np.stack(frames), actions=actions, rewards=np.zeros(n, np.float32),
                    terminated=np.zeros(n, bool), first=first, episode=ep)


def _pairs(flat):
    return real_pairs(flat, flat.window_starts(2))


# ------------------------------------------------------------------ PSNR / SSIM


def test_psnr_ssim_identical_and_different():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8))
    assert torch.isinf(psnr(a, a.clone())).all()
    assert torch.allclose(ssim(a, a.clone()), torch.ones(4, dtype=torch.float64), atol=1e-12)
    b = a.clone()
    b[..., 0] ^= 0x40  # a real difference: finite PSNR, SSIM below 1
    assert torch.isfinite(psnr(a, b)).all()
    assert (ssim(a, b) < 0.99).all()
    # known value: a constant error of 1 level everywhere -> 10 log10(255^2) dB
    c = torch.full((1, 8, 8, 3), 100, dtype=torch.uint8)
    assert float(psnr(c, c + 1)) == pytest.approx(20 * math.log10(255), abs=1e-9)


# ------------------------------------------------------------------ Fréchet distance


def test_frechet_identical_zero_and_shift_grows():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-8)
    # closed form for Gaussians with equal covariance: d = |mu_a - mu_b|^2
    assert frechet_distance(a, a + 3.0) == pytest.approx(8 * 9.0, rel=1e-9)
    # diagonal covariances: d = sum (sqrt(va) - sqrt(vb))^2 when the means agree
    x = rng.normal(size=(4000, 3)) * np.array([1.0, 2.0, 3.0])
    x -= x.mean(0)
    y = x * 2.0
    va, vb = x.var(0, ddof=1), y.var(0, ddof=1)
    assert frechet_distance(x, y) == pytest.approx(float(((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()), rel=1e-6)


@pytest.fixture(scope="module")
def toy_probe():
    return train_probe(toy_world(0), TOY, steps=300, batch=64, seed=0)


def test_realism_on_probe_features(toy_probe):
    real = toy_world(1).frames
    feats = frame_features(toy_probe, real)
    assert feats.shape == (len(real), toy_probe.config.feature_dim) and np.isfinite(feats).all()
    same = realism_distance(toy_probe, real, real.copy())
    assert same == pytest.approx(0.0, abs=1e-6)
    other_real = realism_distance(toy_probe, real, toy_world(2).frames)  # same distribution, other samples
    # shifted distribution: the square is gone (only the dim background), frames are darker
    shifted = np.random.default_rng(3).integers(0, 40, size=real.shape).astype(np.uint8)
    far = realism_distance(toy_probe, real, shifted)
    assert far > 10 * max(other_real, 1e-6)


# ------------------------------------------------------------------ inverse-dynamics probe / controllability


def test_probe_learns_controllable_world(toy_probe, tmp_path):
    test = toy_world(5)
    ft, ft1, act = _pairs(test)
    acc = probe_accuracy(toy_probe, ft, ft1, act)
    assert acc["transitions"] == len(ft)
    assert set(acc["per_action"]) == {"MOVE_LEFT", "MOVE_RIGHT", "NOOP"}
    assert acc["mean"] > 0.9, acc
    assert min(acc["per_action"].values()) > 0.8, acc
    assert acc["mean_chance"] == pytest.approx(1 / 3)
    assert np.array(acc["confusion"]).sum() == len(ft)
    # save / load round trip gives the same predictions
    loaded = Probe.load(toy_probe.save(tmp_path / "probe"))
    assert probe_accuracy(loaded, ft, ft1, act) == acc
    # "generated" transitions whose second frame ignores the action (copy of frame t): controllability collapses
    gen = probe_accuracy(toy_probe, ft, ft, act)
    ctrl = controllability(gen, acc)
    assert ctrl["mean"] < 0.6 and controllability(acc, acc)["mean"] == 1.0


def test_shuffled_action_world_is_chance_level():
    """A probe that cannot see the action in the frames scores chance.

    The balanced accuracy (mean per-action recall) of any predictor independent of the true labels has
    expectation exactly 1/K. On held-out shuffled data the labels are independent of the frames, so the
    prediction is independent of the label; each recall is a mean of n_c independent Bernoullis, variance
    <= 1/(4 n_c), so the balanced accuracy has sd <= sqrt(sum_c 1/(4 n_c)) / K ~ 0.5/sqrt(n) for balanced
    classes. With n ~ 1500 held-out transitions, sd <= ~0.013; we allow 0.08 (> 5 sd).
    """
    probe = train_probe(toy_world(10, shuffled=True), TOY, steps=300, batch=64, seed=0)
    test = toy_world(11, episodes=40, shuffled=True)
    ft, ft1, act = _pairs(test)
    acc = probe_accuracy(probe, ft, ft1, act)
    assert acc["transitions"] >= 1500
    assert abs(acc["mean"] - 1 / 3) < 0.08, acc
    # the same held-out frames with their true (unshuffled) actions are still not predictable by this probe
    true = toy_world(11, episodes=40)
    assert abs(probe_accuracy(probe, *_pairs(true))["mean"] - 1 / 3) < 0.08


def test_multibinary_probe_and_shuffle():
    flat = toy_world(20, multibinary=True)
    probe = train_probe(flat, TOY_MB, steps=300, batch=64, seed=0)
    ft, ft1, act = _pairs(toy_world(21, multibinary=True))
    acc = probe_accuracy(probe, ft, ft1, act)
    assert set(acc["per_action"]) == {"MOVE_RIGHT", "MOVE_DOWN"}
    assert acc["mean"] > 0.9, acc
    assert np.array(acc["confusion"]["MOVE_RIGHT"]).sum() == len(ft)
    # shuffled: a per-button prediction independent of the label scores q*p + (1-q)*(1-p) <= max(p, 1-p), the
    # reported chance; with n ~ 780 held-out transitions its sd is <= 0.5/sqrt(n) ~ 0.018, we allow 0.09 (5 sd)
    probe = train_probe(toy_world(22, multibinary=True, shuffled=True), TOY_MB, steps=300, batch=64, seed=0)
    shuf = probe_accuracy(probe, *_pairs(toy_world(23, multibinary=True, shuffled=True)))
    for name, v in shuf["per_action"].items():
        assert v < shuf["chance"][name] + 0.09, shuf


def test_cli_probe_hook_on_tiny_model(toy_probe, tmp_path):
    """The optional `eval --probe` path: real vs one-step generated transitions of a random tiny model."""
    from tiny_weights import make_tiny_weights
    from odyssey_gym.eval.cli import _minute_realism, _probe_eval, render_markdown
    from odyssey_gym.model import Sampler, WorldModel

    model = WorldModel.from_pretrained(make_tiny_weights(TOY, tmp_path / "w"), device="cpu", dtype=torch.float32)
    k = model.config.context_frames
    flat = toy_world(6)
    res = _probe_eval(Sampler(model, batch_size=8, device="cpu"), flat, k, toy_probe, n=20, seed=0)
    assert res["transitions"] == 20
    assert res["real"]["mean"] > 0.9  # real transitions of the toy world are fully controllable
    # a random-init model does not move the square on command: far below the real accuracy
    assert res["ratio"]["mean"] < 0.8 and res["one_step_realism_frechet"] > 0
    from odyssey_gym.eval.realism import frame_features

    real_minute = frame_features(toy_probe, toy_world(7).frames[:300])
    noise_minute = frame_features(toy_probe, np.random.default_rng(0).integers(0, 255, (300, 32, 32, 3), dtype=np.uint8))
    rz = _minute_realism(toy_probe, flat, [real_minute, real_minute, noise_minute, None, real_minute], seed=0)
    per = rz["per_minute"]
    assert per[3] is None and per[0] == per[1] == per[4]
    assert per[2] > 10 * per[0]  # a minute of noise is far from the real frames; real minutes are close
    assert rz["real_floor"] is not None and rz["real_floor"] < per[2]
    assert rz["minute5_vs_minute1"] == 0.0
    md = render_markdown({"world": "toy", "device": "cpu", "data": {"frames": 1, "episodes": 1}, "fidelity": {},
                          "autoencoder": {"psnr": 1.0, "ssim": 1.0, "frames": 1}, "heads": {}, "speed": {},
                          "controllability": res})
    assert "Controllability" in md and "MOVE_LEFT" in md


def test_long_rollout_collects_probe_features_every_minute(toy_probe, tmp_path):
    """Realism features come from every env, spread over each minute, and stay on the device until it ends."""
    from tiny_weights import make_tiny_weights, synthetic_start_bank
    from odyssey_gym.eval.realism import device_features
    from odyssey_gym.eval.stability import long_rollout
    from odyssey_gym.model import Sampler, WorldModel

    model = WorldModel.from_pretrained(make_tiny_weights(TOY, tmp_path / "w"), device="cpu", dtype=torch.float32)
    k = model.config.context_frames
    f, a = synthetic_start_bank(TOY, 3, k)
    sampler = Sampler(model, batch_size=3, device="cpu")
    per_min = int(round(TOY.fps * 60))
    steps = per_min + per_min // 2
    calls = []

    def feats(frames):
        calls.append(frames.shape[0])
        return device_features(toy_probe, frames)

    roll = long_rollout(sampler, TOY, torch.from_numpy(f), torch.from_numpy(a), steps=steps, features=feats,
                        features_per_minute=3 * per_min // 4)
    mf = roll["minute_features"]
    assert len(mf) == 2 and set(calls) == {3}
    assert mf[0].shape == (3 * ((per_min + 3) // 4), toy_probe.config.feature_dim)  # every 4th step, all 3 envs
    assert np.isfinite(mf[0]).all() and len(mf[1]) > 0
    assert long_rollout(sampler, TOY, torch.from_numpy(f), torch.from_numpy(a), steps=4)["minute_features"] is None


def test_eval_plots_written(toy_probe, tmp_path):
    from odyssey_gym.eval.plots import plot_confusion, plot_psnr, plot_realism

    flat = toy_world(8)
    ft, ft1, act = _pairs(flat)
    real = probe_accuracy(toy_probe, ft, ft1, act)
    gen = probe_accuracy(toy_probe, ft, ft, act)
    report = {"world": "toy", "fidelity": {"1": {"windows": 4, "teacher_forced_psnr": 30.0, "open_loop_psnr": 30.0,
                                                 "open_loop_copy_last_psnr": 28.0}},
              "controllability": {"transitions": len(ft), "real": real, "generated": gen, "ratio": controllability(gen, real)},
              "stability": {"realism": {"per_minute": [1.0, 1.05, None, 1.2, 1.1], "real_floor": 0.5}}}
    for fn, name in ((plot_psnr, "p.png"), (plot_confusion, "c.png"), (plot_realism, "r.png")):
        assert fn(report, tmp_path / name) and (tmp_path / name).stat().st_size > 1000
    # multibinary confusion (per button 2x2)
    mb = toy_world(20, multibinary=True)
    probe = train_probe(mb, TOY_MB, steps=20, batch=16, seed=0)
    ft, ft1, act = _pairs(mb)
    acc = probe_accuracy(probe, ft, ft1, act)
    report["controllability"] = {"transitions": len(ft), "real": acc, "generated": acc, "ratio": controllability(acc, acc)}
    assert plot_confusion(report, tmp_path / "mb.png")
    # absent sections draw nothing
    assert not plot_confusion({"world": "toy"}, tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    assert not plot_realism({"world": "toy", "stability": {}}, tmp_path / "none.png")


def test_fidelity_goes_through_the_env_api_and_matches_the_sampler():
    """`horizon_fidelity` drives the public vector env; on the same windows a hand-driven Sampler gives the same
    frames, and copy-last is exact when the world stands still."""
    import numpy as np
    import torch
    from gymnasium.vector import AutoresetMode

    from odyssey_gym.data.windows import FlatData
    from tiny_weights import make_tiny_weights
    from odyssey_gym.envs.vector_env import WorldModelVectorEnv
    from odyssey_gym.eval.fidelity import blur2, horizon_fidelity
    from odyssey_gym.eval.metrics import psnr, rms_distance
    from odyssey_gym.model import Sampler, WorldModel

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        w = make_tiny_weights("doom-takecover", Path(d) / "w")
        model = WorldModel.from_pretrained(w)
        rng = np.random.default_rng(0)
        N = 40
        frames = rng.integers(0, 256, (N, 64, 64, 3), dtype=np.uint8)
        frames[20:] = frames[20]  # a still stretch: copy-last is exact there
        acts = np.eye(3, dtype=np.float32)[rng.integers(0, 3, N)]
        first = np.zeros(N, bool)
        first[0] = True
        flat = FlatData(frames=frames, actions=acts, rewards=np.zeros(N, np.float32), terminated=np.zeros(N, bool),
                        first=first, episode=np.zeros(N, np.int32))
        K = model.config.context_frames
        env = WorldModelVectorEnv("doom-takecover", num_envs=2, weights=model, backend="torch", max_episode_steps=0,
                                  autoreset_mode=AutoresetMode.DISABLED, termination="threshold")
        seeds_used, reset = [], env.sampler.reset

        def recording_reset(*args, **kw):  # the seeds of each context the eval gives the sampler
            seeds_used.append(kw["seeds"].clone())
            return reset(*args, **kw)

        env.sampler.reset = recording_reset
        rep = horizon_fidelity(env, flat, K, horizons=(1, 2), windows=2, seed=3)
        assert rep["1"]["windows"] == 2 and np.isfinite(rep["1"]["teacher_forced_psnr"])
        # the same windows by hand through the sampler, with the env's seeding
        pick = np.random.default_rng(3).choice(flat.window_starts(K + 1), size=2, replace=False)
        idx = pick[:, None] + np.arange(K + 1)
        s = Sampler(model, batch_size=2)
        seeds = seeds_used[1]  # after the env's own reset(seed=3): h = 1, open loop, first draw
        s.reset(torch.from_numpy(frames[idx[:, :K]]), torch.from_numpy(acts[idx[:, :K]]), seeds=seeds)
        gen, _, _ = s.step(torch.from_numpy(acts[idx[:, K]]))
        want = float(psnr(gen, torch.from_numpy(frames[idx[:, K]])).clamp_max(100).mean())
        assert rep["1"]["open_loop_psnr"] == pytest.approx(want, abs=0.05)
        # the second draw is another sample of the same frame, and the energy score sees both
        assert len(seeds_used) == 1 + 4 * 2 and not torch.equal(seeds_used[1], seeds_used[3])
        r1 = rep["1"]
        assert r1["teacher_forced_spread"] > 0 and 0 < r1["teacher_forced_energy"] < 1
        assert r1["open_loop_copy_last_energy"] == pytest.approx(
            float(rms_distance(torch.from_numpy(frames[idx[:, K - 1]]), torch.from_numpy(frames[idx[:, K]])).mean()))
    still = torch.from_numpy(frames[30:32])
    assert float(psnr(blur2(still), still).mean()) < 40  # a blur is not a copy: it loses detail


def test_termination_precision_is_given_at_the_datas_death_rate():
    """Deaths are over-sampled (half the windows) to measure recall; precision must be what a dream policy meets,
    at the data's own death rate: an always-terminal head gets precision = that rate, not 0.5."""
    from odyssey_gym.eval.fidelity import head_accuracy

    n, L = 200, 20  # 10 episodes of 20 frames, each ending in a death
    ep = np.repeat(np.arange(n // L, dtype=np.int32), L)
    first = np.r_[True, ep[1:] != ep[:-1]]
    term = np.r_[ep[1:] != ep[:-1], True]
    flat = FlatData(frames=np.zeros((n, 8, 8, 3), np.uint8), actions=np.zeros((n, 2), np.float32),
                    rewards=np.zeros(n, np.float32), terminated=term, first=first, episode=ep)

    class Fixed:  # a sampler whose termination head always says `verdict`
        B, device, state_names = 4, torch.device("cpu"), ()

        def __init__(self, verdict):
            self.verdict = verdict

        def reset(self, frames, actions, mask):
            pass

        def step(self, actions):
            return None, torch.zeros(self.B), torch.full((self.B,), self.verdict)

        def termination_probability(self):
            return torch.full((self.B,), float(self.verdict))

    k = 3
    rate = term[flat.window_starts(k + 1) + k].mean()
    always = head_accuracy(Fixed(True), flat, k, windows=32)
    assert always["termination_recall"] == 1.0 and always["termination_false_positive_rate"] == 1.0
    assert always["death_rate"] == pytest.approx(rate) and always["termination_precision"] == pytest.approx(rate)
    assert always["terminal_transitions"] >= 10  # every death, though random windows hit deaths too
    never = head_accuracy(Fixed(False), flat, k, windows=32)
    assert never["termination_recall"] == 0.0 and np.isnan(never["termination_precision"])
    # a constant probability orders nothing: AUC one half, the same at deaths as elsewhere
    assert always["termination_auc"] == pytest.approx(0.5) and never["termination_auc"] == pytest.approx(0.5)
    assert always["termination_probability_at_deaths"] == always["termination_probability_elsewhere"] == 1.0


def test_held_key_rollouts_derive_their_keys_from_the_world_s_button_names():
    """The long-rollout player picks combos by button name: doom-explore's are its `held_keys` table in its button
    order, the same buttons in another order give the same combos permuted, and a world of unnamed buttons holds
    each alone (or none), never explore's combos just because it also has six buttons."""
    import dataclasses

    from odyssey_gym.eval.actions import held_key_actions, held_key_choice_array
    from odyssey_gym.worlds import get_world

    explore = get_world("doom-explore")
    rows, p = held_key_choice_array(explore)
    assert rows.tolist()[:3] == [[1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], [1, 0, 0, 1, 0, 0]]
    table = explore.held_keys
    assert len(rows) == len(table) and p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(table[0][1] / sum(w for _, w in table))
    assert [{explore.buttons[j] for j in np.flatnonzero(r)} for r in rows] == [set(c) for c, _ in table]
    assert not (rows[:, 0] & rows[:, 1]).any()  # never forward and back together

    order = (5, 2, 0, 4, 1, 3)
    shuffled = dataclasses.replace(explore, buttons=tuple(explore.buttons[i] for i in order))
    rows2, p2 = held_key_choice_array(shuffled)
    np.testing.assert_array_equal(rows2, rows[:, list(order)])
    np.testing.assert_allclose(p2, p)

    unnamed = dataclasses.replace(explore, buttons=tuple(f"BUTTON_{i}" for i in range(6)))
    rows3, _ = held_key_choice_array(unnamed)
    assert sorted(map(tuple, rows3.tolist())) == sorted([(0,) * 6] + [tuple(np.eye(6, dtype=int)[i]) for i in range(6)])

    takecover = get_world("doom-takecover")
    acts = held_key_actions(takecover, 500, 3, seed=1)
    assert acts.shape == (500, 3) and set(np.unique(acts)) <= {0, 1, 2}


@pytest.mark.parametrize("world", ["doom-explore", "doom-takecover", "doom-health"])
def test_eval_held_keys_are_the_sticky_recording_policy_s_process(world):
    """One held-key process: env 0 of eval's held-key rollout is, step for step, what the sticky recording policy
    plays from the same seed when it never sees a wall (same combos, same probabilities, same hold lengths)."""
    from odyssey_gym.data.policies import HeldKeys, StickyRandomPolicy
    from odyssey_gym.eval.actions import held_key_actions, held_key_choice_array
    from odyssey_gym.worlds import get_world

    spec = get_world(world)
    holds = HeldKeys(spec)
    pol = StickyRandomPolicy(spec, np.random.default_rng([5, 0]))  # env 0's own stream
    assert pol.holds.combos == holds.combos and np.array_equal(pol.holds.p, holds.p)
    rows, p = held_key_choice_array(spec)
    np.testing.assert_array_equal(p, holds.p)
    assert len(rows) == len(holds.combos)

    pol.reset()
    played = np.stack([np.asarray(pol.act(None)) for _ in range(400)])
    acts = held_key_actions(spec, 400, 2, seed=5)
    np.testing.assert_array_equal(acts[:, 0], played)
    assert not np.array_equal(acts[:, 1], played)  # env 1 plays its own stream, not a copy of env 0
    # an env's first steps do not depend on how long the rollout is, nor on how many envs play
    np.testing.assert_array_equal(held_key_actions(spec, 150, 3, seed=5), held_key_actions(spec, 400, 3, seed=5)[:150])
    np.testing.assert_array_equal(held_key_actions(spec, 150, 1, seed=5)[:, 0], acts[:150, 0])
    # holds last 2 steps up to 60 game tics (rounded), at any frame skip
    lengths = np.array([holds.draw(np.random.default_rng(i))[1] for i in range(500)])
    assert lengths.min() >= 2 and lengths.max() <= max(2, 60 // spec.frame_skip) + 1
    assert len(np.unique(lengths)) > 5


def test_random_actions_are_seeded_raw_actions_of_the_asked_shape():
    from odyssey_gym.eval.actions import random_actions

    d = random_actions(50, 4, 3, discrete=True, seed=2)
    assert d.shape == (50, 4) and set(np.unique(d)) == {0, 1, 2}
    m = random_actions(50, 4, 6, discrete=False, seed=2)
    assert m.shape == (50, 4, 6) and set(np.unique(m)) == {0, 1}
    np.testing.assert_array_equal(m, random_actions(50, 4, 6, discrete=False, seed=2))
    assert not np.array_equal(m, random_actions(50, 4, 6, discrete=False, seed=3))


def test_heads_of_a_model_with_game_state_start_from_the_recorded_state_and_score_it(tmp_path):
    """With state, each window starts from the recorded state of its context, a modelled HEALTH <= 0 is a death
    (the world's terminal_state), and the state after the step is scored against the recorded one."""
    from tiny_weights import make_tiny_weights

    from odyssey_gym.eval.fidelity import head_accuracy
    from odyssey_gym.model import Sampler, WorldModel

    n, L = 120, 20
    ep = np.repeat(np.arange(n // L, dtype=np.int32), L)
    first = np.r_[True, ep[1:] != ep[:-1]]
    term = np.r_[ep[1:] != ep[:-1], True]
    health = np.where(term, 0.0, 100.0).astype(np.float32)[:, None]
    flat = FlatData(frames=np.zeros((n, 64, 64, 3), np.uint8), actions=np.zeros((n, 3), np.float32),
                    rewards=np.zeros(n, np.float32), terminated=term, first=first, episode=ep,
                    state=health, state_variables=("HEALTH",))
    m = WorldModel.from_pretrained(make_tiny_weights("doom-takecover", tmp_path / "w", state=-5.0))
    s = Sampler(m, batch_size=4, device="cpu", terminal_state=("HEALTH", 0.0))
    out = head_accuracy(s, flat, 3, windows=16)
    assert out["termination_recall"] == 1.0 and out["termination_false_positive_rate"] == 1.0  # always "dead"
    assert set(out["state_mae"]) == {"HEALTH"} and out["state_mae"]["HEALTH"] > 0


def test_energy_score_prefers_draws_from_the_worlds_own_distribution_to_its_mean_or_misplaced_noise():
    """Half of each next frame is certain, half shows +-a by a coin: the draws of a model that learned the coin
    score best, the mean (a blur of the two) and spread in the certain half score worse, though the mean has
    the best PSNR. A model that gives the same frame twice scores its RMS error, with no spread."""
    from odyssey_gym.eval.metrics import energy_score, rms_distance

    gen = torch.Generator().manual_seed(0)
    n, a = 512, 40

    def frames(coin, region):
        x = torch.full((n, 8, 8, 3), 128, dtype=torch.int16)
        x[:, region] += (coin * a).view(n, 1, 1, 1).to(torch.int16)
        return x.clamp(0, 255).to(torch.uint8)

    def coin():
        return torch.randint(0, 2, (n,), generator=gen) * 2 - 1

    top, bottom = slice(0, 4), slice(4, 8)
    truth = frames(coin(), top)
    score = {name: float(energy_score(d1, d2, truth)[0].mean()) for name, (d1, d2) in {
        "draws": (frames(coin(), top), frames(coin(), top)),
        "mean": (frames(torch.zeros(n), top),) * 2,
        "misplaced": (frames(coin(), bottom), frames(coin(), bottom)),
    }.items()}
    assert score["draws"] < 0.75 * score["mean"] and score["draws"] < 0.75 * score["misplaced"], score
    draw, mean = frames(coin(), top), frames(torch.zeros(n), top)
    assert rms_distance(draw, truth).pow(2).mean() > rms_distance(mean, truth).pow(2).mean()  # the mean's lower MSE
    e, spread = energy_score(draw, draw, truth)
    assert torch.equal(spread, torch.zeros(n, dtype=spread.dtype)) and torch.allclose(e, rms_distance(draw, truth))
    with pytest.raises(ValueError, match="shapes differ"):
        rms_distance(draw, truth[:, :4])


def test_gap_standard_error_is_over_paired_window_differences():
    from odyssey_gym.eval.fidelity import gap_standard_error

    copy = torch.tensor([20.0, 25.0, 30.0, 35.0])
    # the same +2 dB on every window: the windows disagree on nothing, however far apart their PSNRs lie
    assert gap_standard_error(copy + 2.0, copy) == pytest.approx(0.0, abs=1e-12)
    # differences 1, 3, 1, 3: sample std 2/sqrt(3), over sqrt(4) windows
    se = gap_standard_error(copy + torch.tensor([1.0, 3.0, 1.0, 3.0]), copy)
    assert se == pytest.approx((2 / math.sqrt(3)) / 2)
    # an identical frame (PSNR +inf) is capped as in the mean, not made infinite
    assert math.isfinite(gap_standard_error(torch.tensor([float("inf"), 30.0]), torch.tensor([20.0, 20.0])))
    assert math.isnan(gap_standard_error(torch.tensor([30.0]), torch.tensor([20.0])))


def test_rank_auc_orders_deaths_above_other_steps():
    from odyssey_gym.eval.fidelity import rank_auc

    assert rank_auc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2, 0.3])) == pytest.approx(1.0)
    assert rank_auc(torch.tensor([0.1]), torch.tensor([0.5, 0.6])) == pytest.approx(0.0)
    assert rank_auc(torch.tensor([0.5, 0.5]), torch.tensor([0.5])) == pytest.approx(0.5)  # ties count half
    # one of two deaths above the one other step, the other below: 0.5
    assert rank_auc(torch.tensor([0.7, 0.1]), torch.tensor([0.4])) == pytest.approx(0.5)
    assert math.isnan(rank_auc(torch.tensor([]), torch.tensor([0.4])))
