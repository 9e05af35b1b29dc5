"""The data layer on the real engine: collect, the on-disk format, its failure modes, windows, Minari."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from odyssey_gym.data import dataset as dsmod
from odyssey_gym.data.dataset import Dataset, DatasetError, DatasetWriter, Episode, MultiDataset
from odyssey_gym.data.policies import StickyRandomPolicy, as_policy, make_policy
from odyssey_gym.data.recorder import collect, episode_seed
from odyssey_gym.data.windows import WindowSampler
from odyssey_gym.worlds import get_world, make_real_env

WORLD = "doom-takecover"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "takecover"
    res = collect(WORLD, out, steps=300, workers=2, seed=11, progress=False)
    assert res.error is None and not res.interrupted
    return out, res


def _copy(recorded, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(recorded[0], dst)
    return dst


def _fake_episode(spec, L, rng, seed=0):
    frames = rng.integers(0, 256, (L + 1, *spec.frame_shape), dtype=np.uint8)
    actions = rng.integers(0, spec.action_dim, L) if spec.action_kind == "discrete" else rng.integers(0, 2, (L, spec.num_buttons)).astype(np.int8)
    term = np.zeros(L, bool)
    term[-1] = True
    state = rng.uniform(0, 100, (L + 1, len(spec.state_variables))).astype(np.float32) if spec.state_variables else None
    return Episode(frames, actions, rng.random(L).astype(np.float32), term, np.zeros(L, bool), seed=seed, state=state)


def test_collect_writes_a_sound_dataset(recorded):
    out, res = recorded
    ds = Dataset(out)
    assert ds.world_name == WORLD and ds.frame_shape == (64, 64, 3)
    assert ds.verify() == []
    assert ds.num_steps == 300 == res.steps
    assert len(ds) == res.episodes and {e["worker"] for e in ds.episodes} == {0, 1}
    m = json.loads((out / "manifest.json").read_text())
    assert m["totals"]["steps"] == 300 and m["totals"]["episodes"] == len(ds)
    seeds = [e["seed"] for e in ds.episodes]
    assert len(set(seeds)) == len(seeds)
    for i in range(len(ds)):
        ep = ds.load_episode(i)
        assert ep.frames.shape == (len(ep) + 1, 64, 64, 3)
        assert ep.terminations[-1] or ep.truncations[-1]
        assert not (ep.terminations[:-1].any() or ep.truncations[:-1].any())
        assert np.abs(np.diff(ep.frames.astype(np.int16), axis=0)).mean() > 1.0  # frames really change


def test_recorded_episode_replays_exactly_in_the_engine(recorded):
    """Seed + recorded actions reproduce the recorded frames: actions line up with frames."""
    ds = Dataset(recorded[0])
    ep = ds.load_episode(0)
    assert ep.seed == episode_seed(11, 0, ds.episodes[0]["worker"], 0) or ep.seed in {
        episode_seed(11, 0, w, k) for w in (0, 1) for k in range(20)}
    env = make_real_env(WORLD)
    try:
        obs, _ = env.reset(seed=ep.seed)
        assert np.array_equal(obs, ep.frames[0])
        for t, a in enumerate(ep.actions):
            obs, r, term, trunc, _ = env.step(a)
            assert np.array_equal(obs, ep.frames[t + 1]), f"frame {t + 1} differs"
            assert r == ep.rewards[t] and term == ep.terminations[t]
    finally:
        env.close()


def test_flat_alignment_and_windows(recorded):
    ds = Dataset(recorded[0])
    spec = get_world(WORLD)
    flat = ds.flat()
    assert len(flat) == ds.num_frames and flat.actions.shape == (len(flat), 3)
    for e in range(flat.num_episodes):
        src, i = flat.source[e]
        assert src is ds
        ep = ds.load_episode(i)
        o = flat.offsets[e]
        sl = slice(o, o + len(ep) + 1)
        assert flat.first[o] and not flat.first[o + 1: o + len(ep) + 1].any()
        assert np.array_equal(flat.frames[sl], ep.frames)
        assert (flat.actions[o] == 0).all() and np.array_equal(flat.actions[o + 1: sl.stop], spec.action_to_vector(ep.actions))
        assert flat.rewards[o] == 0 and np.array_equal(flat.rewards[o + 1: sl.stop], ep.rewards)
        assert np.array_equal(flat.terminated[o + 1: sl.stop], ep.terminations)
    starts = flat.window_starts(16)
    assert (flat.episode[starts] == flat.episode[starts + 15]).all()

    lazy = WindowSampler(ds, T=16, seed=3, cache_bytes=200_000)  # a tiny cache: evictions happen
    mem = WindowSampler(flat, T=16, seed=3)
    for _ in range(5):
        a, b = lazy.sample(8), mem.sample(8)
        assert a.frames.shape == (8, 16, 64, 64, 3) and a.actions.shape == (8, 16, 3)
        assert np.array_equal(a.starts, b.starts) and np.array_equal(a.frames, b.frames)
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.first, b.first)
        assert (a.episode == a.episode[:, :1]).all()  # each window inside one episode
        assert np.array_equal(a.frames, flat.frames[a.starts[:, None] + np.arange(16)])
    assert lazy.cache.bytes <= 200_000 + 64 * 64 * 64 * 3
    again = WindowSampler(ds, T=16, seed=3).sample(8)
    first = WindowSampler(ds, T=16, seed=3).sample(8)
    assert np.array_equal(again.starts, first.starts)


def test_flat_data_does_not_depend_on_the_order_episodes_were_written(tmp_path):
    """Recording processes finish in any order; the same episodes must give the same windows for a seed."""
    spec = get_world(WORLD)
    rng = np.random.default_rng(0)
    eps = [_fake_episode(spec, L, rng, seed=s) for L, s in [(30, 7), (45, 3), (25, 11)]]
    flats = []
    for name, order in [("a", [0, 1, 2]), ("b", [2, 0, 1])]:
        with DatasetWriter(tmp_path / name, spec, chunk_frames=16) as w:
            for i in order:
                w.add_episode(eps[i])
        flats.append(Dataset(tmp_path / name).flat())
    a, b = flats
    assert [e["seed"] for e in Dataset(tmp_path / "b").episodes] == [11, 7, 3]  # written as finished
    for k in ("frames", "actions", "rewards", "terminated", "first", "episode"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert np.array_equal(a.frames[: 26], eps[1].frames[: 26])  # seed 3 comes first
    wa, wb = WindowSampler(a, T=8, seed=5), WindowSampler(b, T=8, seed=5)
    assert np.array_equal(wa.sample(4).frames, wb.sample(4).frames)


def test_corrupt_truncated_missing_chunks_named_and_isolated(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    ds = Dataset(out)
    assert len(ds) >= 3
    e1 = ds.episodes[1]
    chunk = out / e1["dir"] / e1["frames"][0]["file"]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    e2 = ds.episodes[2]
    last2 = out / e2["dir"] / e2["frames"][-1]["file"]
    last2.write_bytes(last2.read_bytes()[:10])  # truncated
    ds = Dataset(out)
    with pytest.raises(DatasetError) as err:
        ds.load_episode(1)
    assert str(chunk) in str(err.value) and "episode 1" in str(err.value) and "checksum" in str(err.value)
    with pytest.raises(DatasetError, match=r"episode 2.*truncated"):
        ds.load_episode(2)
    ds.load_episode(0)  # the others still load
    problems = ds.verify()
    assert len(problems) == 2 and "episode 1" in str(problems[0]) and "episode 2" in str(problems[1])
    with pytest.raises(DatasetError):
        ds.flat()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        flat = ds.flat(skip_corrupt=True)
    assert len(w) == 2 and flat.num_episodes == len(ds) - 2
    ws = WindowSampler(ds, T=8, seed=0, skip_corrupt=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(20):
            ws.sample(8)  # windows touching a bad chunk drop that episode and are redrawn
        assert ws.bad_episodes and {ws.flat.source[e][1] for e in ws.bad_episodes} <= {1, 2}  # flat index -> dataset's
        for _ in range(5):
            assert not np.isin(ws.sample(8).episode, list(ws.bad_episodes)).any()
    (out / e1["dir"] / "steps.zst").unlink()
    with pytest.raises(DatasetError, match=r"episode 1 .*steps\.zst: missing"):
        Dataset(out).load_episode(1)


def test_mismatched_world_or_shape_refused(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    with pytest.raises(DatasetError, match="doom-takecover.*doom-health"):
        DatasetWriter(out, "doom-health")
    with pytest.raises(DatasetError, match="doom-health"):
        Dataset(out, world="doom-health")
    with pytest.raises(DatasetError, match="doom-takecover"):
        Dataset(out).flat(spec=get_world("doom-health"))
    other = tmp_path / "health"
    DatasetWriter(other, "doom-health").close()
    with pytest.raises(DatasetError, match="together"):
        MultiDataset([out, other])
    rng = np.random.default_rng(0)
    bad = _fake_episode(get_world("doom-explore"), 5, rng)  # 120x160 frames
    with DatasetWriter(out, WORLD) as w, pytest.raises(DatasetError, match="frame shape"):
        w.add_episode(bad)
    with pytest.raises(DatasetError, match="another process"):
        with DatasetWriter(out, WORLD):
            DatasetWriter(out, WORLD)
    both = MultiDataset([out, _copy(recorded, tmp_path / "b")])
    assert len(both) == 2 * len(Dataset(out)) and both.flat().num_episodes == len(both)


def test_kill_mid_write_leaves_a_valid_dataset(tmp_path):
    out = tmp_path / "crash"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from odyssey_gym.data import dataset as d
        from odyssey_gym.worlds import get_world
        spec = get_world("{WORLD}")
        rng = np.random.default_rng(0)
        def ep(L):
            t = np.zeros(L, bool); t[-1] = True
            return d.Episode(rng.integers(0, 256, (L + 1, 64, 64, 3), dtype=np.uint8), rng.integers(0, 3, L),
                             np.ones(L, np.float32), t, np.zeros(L, bool), seed=L,
                             state=np.full((L + 1, len(spec.state_variables)), 100, np.float32))
        w = d.DatasetWriter({str(out)!r}, spec, chunk_frames=16)
        w.add_episode(ep(40)); w.add_episode(ep(50))
        calls = []
        real = d._atomic_write
        def dying(path, data, fsync=False):
            calls.append(path)
            if len(calls) == 2:  # half a chunk in a temp file, then SIGKILL
                with open(str(path) + ".tmp-9", "wb") as f: f.write(bytes(data)[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data, fsync)
        d._atomic_write = dying
        w.add_episode(ep(60))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (out / "episodes" / "e000002").exists()  # the half-written episode is on disk ...
    ds = Dataset(out)
    assert len(ds) == 2 and ds.verify() == []  # ... but not listed: the dataset is valid
    assert [len(ds.load_episode(i)) for i in range(2)] == [40, 50]
    with DatasetWriter(out, WORLD) as w:  # the next writer cleans up and appends
        w.add_episode(_fake_episode(get_world(WORLD), 7, np.random.default_rng(1)))
    ds = Dataset(out)
    assert len(ds) == 3 and ds.verify() == [] and not list(out.rglob("*.tmp-*"))


def test_enospc_leaves_a_consistent_dataset(tmp_path, monkeypatch):
    spec = get_world(WORLD)
    rng = np.random.default_rng(0)
    out = tmp_path / "full"
    w = DatasetWriter(out, spec, chunk_frames=16)
    w.add_episode(_fake_episode(spec, 30, rng))
    real = dsmod._atomic_write
    n = {"calls": 0}

    def full(path, data, fsync=False):
        n["calls"] += 1
        if n["calls"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, fsync)

    monkeypatch.setattr(dsmod, "_atomic_write", full)
    with pytest.raises(OSError, match="disk full") as e:
        w.add_episode(_fake_episode(spec, 40, rng))
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(dsmod, "_atomic_write", real)
    w.add_episode(_fake_episode(spec, 20, rng))  # space again: writing goes on
    w.close()
    ds = Dataset(out)
    assert [e["length"] for e in ds.episodes] == [30, 20] and ds.verify() == []
    assert sorted(p.name for p in (out / "episodes").iterdir()) == ["e000000", "e000001"]


def test_enospc_during_collect_reports_and_keeps_dataset(tmp_path, monkeypatch):
    real = dsmod._atomic_write
    n = {"chunks": 0}

    def full(path, data, fsync=False):
        if path.name.startswith("f"):
            n["chunks"] += 1
            if n["chunks"] > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, fsync)

    monkeypatch.setattr(dsmod, "_atomic_write", full)
    out = tmp_path / "c"
    res = collect(WORLD, out, steps=400, workers=2, seed=0, progress=False, chunk_frames=16)
    assert res.error and "disk full" in res.error
    ds = Dataset(out)
    assert ds.verify() == [] and len(ds) == res.episodes and ds.num_steps == res.steps


def test_sigint_during_collect_keeps_finished_episodes(tmp_path):
    out = tmp_path / "int"
    p = subprocess.Popen([sys.executable, "-m", "odyssey_gym.cli", "collect", "--world", WORLD, "--steps", "10000000",
                          "--workers", "2", "--out", str(out), "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            m = out / "manifest.json"
            if m.exists() and len(json.loads(m.read_text())["episodes"]) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no episodes recorded within 90 s")
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    assert "interrupted" in stdout
    ds = Dataset(out)
    assert len(ds) >= 2 and ds.verify() == []
    assert not list(out.rglob("*.tmp-*"))


def test_append_continues_with_fresh_seeds(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    before = Dataset(out)
    res = collect(WORLD, out, steps=100, workers=1, seed=11, progress=False)  # same seed as the first run
    ds = Dataset(out)
    assert len(ds) == len(before) + res.episodes and ds.num_steps == before.num_steps + 100
    old = {e["seed"] for e in before.episodes}
    new = [e for e in ds.episodes[len(before):]]
    assert all(e["run"] == 1 for e in new) and not old & {e["seed"] for e in new}
    assert [e["id"] for e in ds.episodes] == list(range(len(ds)))
    assert ds.verify() == []


def test_collect_gym_world(tmp_path):
    res = collect("gym:CartPole-v1", tmp_path / "cp", steps=60, workers=1, seed=0, policy="random", progress=False)
    ds = Dataset(tmp_path / "cp")
    assert res.error is None and ds.num_steps == 60 and ds.frame_shape == (64, 64, 3)
    assert ds.flat().actions.shape[1] == 2


def test_sticky_policy_holds_keys_and_escapes_walls():
    spec = get_world("doom-explore")
    pol = StickyRandomPolicy(spec, np.random.default_rng(0))
    pol.reset()
    fwd, back = spec.buttons.index("MOVE_FORWARD"), spec.buttons.index("MOVE_BACKWARD")
    still = np.zeros(spec.frame_shape, np.uint8)  # a frame that never changes: stuck against a wall
    actions = np.stack([pol.act(still) for _ in range(600)])
    assert spec.action_space().contains(actions[0])
    assert not (actions[:, fwd] & actions[:, back]).any()
    changes = np.flatnonzero((actions[1:] != actions[:-1]).any(1))
    assert len(changes) > 5 and np.diff(changes).max() > 3  # held keys, of varied length
    assert pol.escapes > 0
    # a policy that is never stuck (fresh noise each step) does not escape
    pol2 = StickyRandomPolicy(spec, np.random.default_rng(0))
    pol2.reset()
    rng = np.random.default_rng(1)
    for _ in range(300):
        pol2.act(rng.integers(0, 256, spec.frame_shape, dtype=np.uint8))
    assert pol2.escapes == 0


def test_sticky_policy_holds_the_combos_of_the_world_s_held_keys_table():
    """The world's `held_keys` is what the sticky policy holds: a world with its own table gets that table's combos
    in its proportions, and buttons the table leaves out held alone."""
    import dataclasses

    base = get_world("doom-explore")
    spec = dataclasses.replace(base, held_keys=((("TURN_LEFT",), 1.0), (("MOVE_FORWARD", "TURN_RIGHT"), 8.0)))
    pol = StickyRandomPolicy(spec, np.random.default_rng(0))
    pol.reset()
    acts = np.stack([pol.act(None) for _ in range(3000)])
    held = [frozenset(spec.buttons[j] for j in np.flatnonzero(a)) for a in acts]
    alone = {frozenset({b}) for b in ("MOVE_BACKWARD", "MOVE_LEFT", "MOVE_RIGHT")}
    assert set(held) <= {frozenset({"TURN_LEFT"}), frozenset({"MOVE_FORWARD", "TURN_RIGHT"})} | alone
    assert held.count(frozenset({"MOVE_FORWARD", "TURN_RIGHT"})) > held.count(frozenset({"TURN_LEFT"}))
    assert frozenset({"MOVE_FORWARD"}) not in held  # explore's default table is not used


@pytest.mark.parametrize("profile", ["walker", "human"])
def test_human_like_policy_on_a_world_without_doom_buttons_falls_back_to_held_keys(profile):
    """A world whose buttons are none of the modes' (a Gymnasium game's BUTTON_i) plays the sticky policy's held
    keys, not a chain of stops with nothing to choose after one."""
    import dataclasses

    base = get_world("doom-explore")
    buttons = tuple(f"BUTTON_{i}" for i in range(3))
    spec = dataclasses.replace(base, name="buttons", buttons=buttons, held_keys=((("BUTTON_0", "BUTTON_2"), 1.0),))
    pol = make_policy(profile, spec, np.random.default_rng(0))
    pol.reset()
    acts = np.stack([pol.act(None) for _ in range(400)])
    assert acts.shape == (400, 3) and acts.any(axis=1).mean() > 0.9


@pytest.mark.parametrize("profile", ["walker", "human"])
def test_human_like_policy_walks_turns_strafes_and_stops(profile):
    """Human-like play: mostly long forward walks, turns while walking, and stops, held for seconds, not tics."""
    spec = get_world("doom-explore")
    pol = make_policy(profile, spec, np.random.default_rng(0))
    pol.reset()
    rng = np.random.default_rng(1)
    acts = np.stack([pol.act(rng.integers(0, 256, spec.frame_shape, dtype=np.uint8)) for _ in range(90 * 35)])
    assert all(spec.action_space().contains(a) for a in acts[:50])
    b = {n: acts[:, spec.buttons.index(n)].astype(bool) for n in spec.buttons}
    assert not (b["MOVE_FORWARD"] & b["MOVE_BACKWARD"]).any() and not (b["TURN_LEFT"] & b["TURN_RIGHT"]).any()
    assert b["MOVE_FORWARD"].mean() > 0.5  # people walk forward most of the time
    assert (b["MOVE_FORWARD"] & (b["TURN_LEFT"] | b["TURN_RIGHT"])).any()  # turning while walking
    assert (~acts.astype(bool).any(1)).any()  # stops
    runs = np.diff(np.flatnonzero(np.r_[True, (acts[1:] != acts[:-1]).any(1), True]))
    assert np.median(runs) >= 0.15 * 35  # holds last seconds, not single tics (sticky-random's median is shorter)
    # two profiles are two processes: the eval yardstick is not the recording policy
    other = make_policy("human" if profile == "walker" else "walker", spec, np.random.default_rng(0))
    other.reset()
    acts2 = np.stack([other.act(rng.integers(0, 256, spec.frame_shape, dtype=np.uint8)) for _ in range(len(acts))])
    assert not np.array_equal(acts, acts2)
    # a world without walking keys still gets valid actions (take_cover: left / right only)
    tc = get_world("doom-takecover")
    p2 = make_policy(profile, tc, 0)
    p2.reset()
    assert all(tc.action_space().contains(p2.act(None)) for _ in range(200))
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("people", spec)


def test_policy_adapters():
    class Model:
        def predict(self, obs, deterministic=False):
            return np.int64(2), None

    assert as_policy(Model()).act(None) == 2
    assert as_policy(lambda obs: 1).act(None) == 1
    with pytest.raises(TypeError):
        as_policy(3)


def test_minari_round_trip(recorded, tmp_path, monkeypatch):
    import h5py  # noqa: F401  (minari's default storage backend; the [test] extra installs minari[hdf5])
    from odyssey_gym.data.minari_io import export_minari, import_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    src = Dataset(recorded[0])
    path = export_minari(src, "odyssey/takecover/test-v0")
    assert path.is_dir() and str(tmp_path / "minari") in str(path)
    back = import_minari("odyssey/takecover/test-v0", tmp_path / "back", WORLD)
    assert len(back) == len(src)
    for i in range(len(src)):
        a, b = src.load_episode(i), back.load_episode(i)
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
        assert np.array_equal(a.rewards, b.rewards) and np.array_equal(a.terminations, b.terminations)
        assert np.array_equal(a.truncations, b.truncations) and a.seed == b.seed
        assert a.state is not None and np.array_equal(a.state, b.state)  # the game state travels in infos
    with pytest.raises(DatasetError, match="frames of world"):
        import_minari(path, tmp_path / "wrong", "doom-explore")


def test_engine_only_by_steps_or_by_seconds():
    """The speed baseline that collect and bench share: a step budget, or seconds per worker after all are up."""
    from odyssey_gym.data.recorder import engine_only

    by_steps = engine_only(WORLD, steps=60, workers=2)
    assert by_steps["steps"] == 60 and by_steps["workers"] == 2 and by_steps["steps_per_s"] > 0
    by_time = engine_only(WORLD, workers=1, seconds=0.5)
    assert by_time["steps"] > 0 and 0.4 < by_time["seconds"] < 5
    with pytest.raises(ValueError, match="steps or seconds"):
        engine_only(WORLD, workers=1)
    with pytest.raises(ValueError, match="seconds > 0"):
        engine_only(WORLD, workers=1, seconds=0)


def test_pick_windows_draws_distinct_windows_inside_episodes():
    from odyssey_gym.data.windows import FlatData

    lengths = [5, 9, 3]  # windows of 4 fit 2 + 6 + 0 ways
    episode = np.concatenate([np.full(n, i, np.int32) for i, n in enumerate(lengths)])
    first = np.concatenate([[True] + [False] * (n - 1) for n in lengths])
    N = len(episode)
    flat = FlatData(frames=None, actions=np.zeros((N, 2), np.float32), rewards=np.zeros(N, np.float32),
                    terminated=np.zeros(N, bool), first=first, episode=episode)
    all_starts = set(flat.window_starts(4).tolist())
    assert len(all_starts) == 8
    got = flat.pick_windows(4, 5, np.random.default_rng(0))
    assert len(got) == 5 and len(set(got.tolist())) == 5 and set(got.tolist()) <= all_starts
    for s in got:  # each window lies inside one episode
        assert len(set(episode[s: s + 4].tolist())) == 1
    assert np.array_equal(got, flat.pick_windows(4, 5, np.random.default_rng(0)))  # a seed picks the same windows
    few = flat.pick_windows(4, 20, np.random.default_rng(1))
    assert sorted(few.tolist()) == sorted(all_starts)  # every start once when there are fewer than asked
    many = flat.pick_windows(4, 20, np.random.default_rng(1), repeat=True)
    assert len(many) == 20 and set(many.tolist()) <= all_starts
    assert len(flat.pick_windows(10, 3, np.random.default_rng(0))) == 0  # no episode is 10 frames long
    # episode_start: only windows at an episode's first frame, one per episode that is long enough
    at_start = flat.pick_windows(4, 5, np.random.default_rng(0), episode_start=True)
    assert sorted(at_start.tolist()) == [0, 5]  # the 3-frame episode has no 4-frame window
    assert len(flat.pick_windows(4, 1, np.random.default_rng(0), episode_start=True)) == 1
    assert len(flat.pick_windows(6, 5, np.random.default_rng(0), episode_start=True)) == 1  # only the 9-frame one


def test_recordings_carry_the_game_state_a_death_follows_from(recorded):
    """take_cover records HEALTH beside every frame: full at the start, at or below 0 on the frame of a death."""
    ds = Dataset(recorded[0])
    assert ds.state_variables == ("HEALTH",) and ds.manifest["format_version"] == 2
    deaths = 0
    for i in range(len(ds)):
        ep = ds.load_episode(i)
        assert ep.state.shape == (len(ep) + 1, 1) and ep.state.dtype == np.float32
        assert ep.state[0, 0] == 100
        if ep.terminations[-1]:
            deaths += 1
            assert ep.state[-1, 0] <= 0 < ep.state[-2, 0]
    assert deaths >= 1
    flat = ds.flat()
    assert flat.state.shape == (len(flat), 1) and flat.state_variables == ("HEALTH",)
    assert np.array_equal(flat.state[flat.offsets], np.full((len(ds), 1), 100, np.float32))


def test_game_state_is_checked_on_write_and_read(tmp_path):
    spec = get_world(WORLD)
    rng = np.random.default_rng(0)
    ep = _fake_episode(spec, 6, rng)
    with DatasetWriter(tmp_path / "a", WORLD) as w:
        for bad, match in ((None, "this episode has none"), (np.full((7, 2), 1, np.float32), r"state must be float \(7, 1\)"),
                           (np.full((7, 1), np.nan, np.float32), "state must be finite; frame 0")):
            ep.state = bad
            with pytest.raises(DatasetError, match=match):
                w.add_episode(ep)
        assert w.num_episodes == 0
    # a format-1 dataset (no game state) still reads, refuses appends of state, and reads beside a format-2 one
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "a", old)
    m = json.loads((old / "manifest.json").read_text())
    m["format_version"] = 1
    del m["state_variables"]
    (old / "manifest.json").write_text(json.dumps(m))
    assert Dataset(old).state_variables == ()
    assert MultiDataset([old, tmp_path / "a"]).state_variables == ()  # mixed: read without state
    with pytest.raises(DatasetError, match="record into a new directory"):
        DatasetWriter(old, WORLD)


def test_the_data_layer_runs_one_way_storage_over_the_flat_view():
    """dataset.py imports windows.py (FlatData is built there); windows.py and errors.py never import dataset.py."""
    import ast
    from pathlib import Path

    import odyssey_gym.data as data

    def imported(name: str) -> set[str]:
        tree = ast.parse((Path(data.__file__).parent / name).read_text())
        return {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    assert "windows" in imported("dataset.py")
    for lower in ("windows.py", "errors.py"):
        assert not any(m.split(".")[-1] == "dataset" for m in imported(lower)), lower
