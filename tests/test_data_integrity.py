"""Datasets whose manifest or step values are wrong are refused or reported, naming the file and episode.

File damage (sha256, size, zstd) is covered in test_data.py; here the files are intact but say the wrong
thing, as a buggy or hand-edited writer would leave them. No engine: episodes are synthetic.
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest

from odyssey_gym.data import dataset as dsmod
from odyssey_gym.data.dataset import Dataset, DatasetError, DatasetWriter, Episode, MultiDataset
from odyssey_gym.data.windows import WindowSampler
from odyssey_gym.worlds import get_world


def _episode(spec, L, rng):
    frames = rng.integers(0, 256, (L + 1, *spec.frame_shape), dtype=np.uint8)
    if spec.action_kind == "discrete":
        actions = rng.integers(0, spec.action_dim, L)
    else:
        actions = rng.integers(0, 2, (L, spec.num_buttons)).astype(np.int8)
    term = np.zeros(L, bool)
    term[-1] = True
    state = rng.uniform(0, 100, (L + 1, len(spec.state_variables))).astype(np.float32) if spec.state_variables else None
    return Episode(frames, actions, rng.random(L).astype(np.float32), term, np.zeros(L, bool), seed=L, state=state)


def _make(path: Path, world="doom-takecover", lengths=(20, 30, 25)) -> Path:
    spec = get_world(world)
    rng = np.random.default_rng(0)
    with DatasetWriter(path, spec, chunk_frames=8, fsync=False) as w:
        for L in lengths:
            w.add_episode(_episode(spec, L, rng))
    return path


@pytest.fixture
def takecover(tmp_path):
    return _make(tmp_path / "tc")


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _edit_manifest(d: Path, fn):
    m = _manifest(d)
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


def _rewrite_steps(d: Path, i: int, **changes):
    """Rewrite episode i's steps.zst with some arrays changed and its hash updated (the file is intact)."""
    import zstandard

    m = _manifest(d)
    e = m["episodes"][i]
    f = d / e["dir"] / e["steps"]["file"]
    with np.load(io.BytesIO(zstandard.ZstdDecompressor().decompress(f.read_bytes()))) as z:
        arrays = {k: z[k] for k in z.files}
    for k, fn in changes.items():
        arrays[k] = fn(arrays[k].copy())
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = zstandard.ZstdCompressor().compress(buf.getvalue())
    f.write_bytes(data)
    e["steps"].update(sha256=dsmod._sha256(data), bytes=len(data))
    (d / "manifest.json").write_text(json.dumps(m))


def _one_problem(d: Path, episode: int) -> str:
    problems = Dataset(d).verify()
    assert len(problems) == 1, problems
    msg = str(problems[0])
    assert msg.startswith(f"episode {episode} (id ") and "\n" not in msg
    return msg


# -------------------------------------------------------------------------- step values


def _set(idx, value):
    def fn(a):
        a[idx] = value
        return a
    return fn


@pytest.mark.parametrize("change, expect", [
    (dict(rewards=_set(3, np.nan)), r"steps\.zst: rewards must be finite; step 3 holds nan"),
    (dict(rewards=_set(0, np.inf)), r"steps\.zst: rewards must be finite; step 0 holds inf"),
    (dict(actions=_set(5, 3)), r"steps\.zst: actions must lie in \[0, 3\); step 5 holds 3"),
    (dict(actions=_set(2, -1)), r"steps\.zst: actions must lie in \[0, 3\); step 2 holds -1"),
    (dict(actions=lambda a: a.astype(np.float32)), r"steps\.zst: actions are float32"),
    (dict(terminations=_set(4, True)), r"steps\.zst: the episode ends before its last step \(step 4\)"),
    (dict(terminations=_set(-1, False)), r"steps\.zst: neither terminated nor truncated"),
    (dict(rewards=lambda r: r + 1.0), r"steps\.zst: rewards sum to .* the manifest's return is"),
])
def test_verify_checks_step_values_naming_episode_and_file(takecover, change, expect):
    _rewrite_steps(takecover, 1, **change)
    msg = _one_problem(takecover, 1)
    assert str(takecover / "episodes" / "e000001" / "steps.zst") in msg
    with pytest.raises(DatasetError, match=expect):
        Dataset(takecover).load_steps(1)
    with pytest.raises(DatasetError, match=expect):
        Dataset(takecover).flat()
    with pytest.warns(UserWarning, match="skipping corrupt episode"):
        flat = Dataset(takecover).flat(skip_corrupt=True)
    assert flat.num_episodes == 2


def test_multibinary_actions_must_be_zero_or_one(tmp_path):
    d = _make(tmp_path / "ex", world="doom-explore", lengths=(10, 12))
    assert Dataset(d).verify() == []
    _rewrite_steps(d, 0, actions=_set((6, 2), 2))
    msg = _one_problem(d, 0)
    assert "actions must be 0/1 per button; step 6 holds" in msg


# -------------------------------------------------------------------------- manifest entries


def _chunks(i):
    return lambda m: m["episodes"][i]["frames"]


@pytest.mark.parametrize("edit, expect", [
    (lambda m: m["episodes"][1]["frames"][1].update(start=9), r"starts at frame 9, expected 8"),  # a gap
    (lambda m: m["episodes"][1]["frames"][1].update(start=7), r"starts at frame 7, expected 8"),  # an overlap
    (lambda m: m["episodes"][1]["frames"].pop(), r"chunks hold 24 frames, an episode of 30 steps has 31"),
    (lambda m: m["episodes"][1].update(length=29), r"chunks hold 31 frames, an episode of 29 steps has 30"),
    (lambda m: m["episodes"][1]["frames"][1].update(count=0), r"count 0"),
    (lambda m: m["episodes"][1]["frames"][2].update(file="f0001.zst"), r"a file is listed twice"),
    (lambda m: m["episodes"][1].update(dir="../elsewhere"), r"dir '\.\./elsewhere' is not a relative path inside"),
    (lambda m: m["episodes"][1].update(dir="/tmp/elsewhere"), r"dir '/tmp/elsewhere' is not a relative path inside"),
    (lambda m: m["episodes"][1]["frames"][0].update(file="../e000000/f0000.zst"), r"is not a file name inside"),
    (lambda m: m["episodes"][1]["steps"].update(file="/etc/passwd"), r"is not a file name inside"),
    (lambda m: m["episodes"][1].pop("length"), r"entry lacks key\(s\) \['length'\]"),
    (lambda m: m["episodes"][1].update(id="one"), r"id must be an integer"),
])
def test_bad_entries_are_reported_and_refused_on_read(takecover, edit, expect):
    _edit_manifest(takecover, edit)
    ds = Dataset(takecover)  # opens: one bad entry spoils only its episode
    msg = _one_problem(takecover, 1)
    assert "manifest.json" in msg
    with pytest.raises(DatasetError, match=expect):
        ds.chunk_layout(1)
    with pytest.raises(DatasetError, match=expect):
        ds.read_chunk(1, 0)
    with pytest.raises(DatasetError, match=expect):
        ds.load_episode(1)
    ds.load_episode(0), ds.load_episode(2)
    with pytest.warns(UserWarning, match="skipping corrupt episode"):
        assert ds.flat(skip_corrupt=True).num_episodes == 2


def test_a_gap_in_the_layout_never_reaches_a_window(takecover):
    """A gap used to hand np.empty garbage to training windows; now the episode is refused."""
    _edit_manifest(takecover, lambda m: m["episodes"][0]["frames"][1].update(start=9))
    with pytest.raises(DatasetError, match="starts at frame 9"):
        WindowSampler(Dataset(takecover), T=4)
    with pytest.warns(UserWarning, match="skipping corrupt episode"):
        s = WindowSampler(Dataset(takecover), T=4, skip_corrupt=True)
    assert set(np.unique(s.sample(64).episode)) <= {0, 1}  # the two sound episodes, renumbered


@pytest.mark.parametrize("key", ["dir", "id"])
def test_duplicated_episode_entries_are_reported(takecover, key):
    def dup(m):
        e = json.loads(json.dumps(m["episodes"][0]))
        if key == "id":
            e["dir"] = m["episodes"][2]["dir"] + "x"  # only the id repeats
        else:
            e["id"] = 99
        m["episodes"].append(e)
    _edit_manifest(takecover, dup)
    problems = Dataset(takecover).verify()
    assert len(problems) == 1
    assert f"episode 3 (id {0 if key == 'id' else 99})" in str(problems[0])
    assert f"duplicates episode 0 (same {key}" in str(problems[0])
    with pytest.raises(DatasetError, match="refusing to append: episode 3: duplicates episode 0"):
        DatasetWriter(takecover, get_world("doom-takecover"), fsync=False)


# -------------------------------------------------------------------------- the manifest itself


@pytest.mark.parametrize("edit, expect", [
    (lambda m: [m], r"expected a JSON object, got a list"),
    (lambda m: {k: v for k, v in m.items() if k != "chunk_frames"}, r"missing key\(s\) \['chunk_frames'\]"),
    (lambda m: {k: v for k, v in m.items() if k != "episodes"}, r"missing key\(s\) \['episodes'\]"),
    (lambda m: {**m, "action_dtype": "nope"}, r"'action_dtype' must name an integer numpy dtype, got 'nope'"),
    (lambda m: {**m, "action_dtype": "float32"}, r"'action_dtype' must name an integer numpy dtype, got 'float32'"),
    (lambda m: {**m, "action_dtype": 7}, r"'action_dtype' must name an integer numpy dtype"),
    (lambda m: {**m, "frame_shape": [64, 64]}, r"'frame_shape' must be \[H, W, 3\]"),
    (lambda m: {**m, "action_dim": 0}, r"'action_dim' must be a positive integer"),
    (lambda m: {**m, "world": "doom-takecover"}, r"'world' must be an object"),
    (lambda m: {**m, "episodes": {}}, r"'episodes' must be a list"),
    (lambda m: {**m, "format_version": "1"}, r"'format_version' must be an integer"),
])
def test_bad_manifest_gives_a_one_line_error(takecover, edit, expect):
    (takecover / "manifest.json").write_text(json.dumps(edit(_manifest(takecover))))
    with pytest.raises(DatasetError, match=r"manifest\.json: " + expect) as err:
        Dataset(takecover)
    assert "\n" not in str(err.value)
    with pytest.raises(DatasetError, match=expect):
        DatasetWriter(takecover, get_world("doom-takecover"), fsync=False)


def test_dataset_of_a_different_action_dim_is_refused_for_the_world(takecover):
    _edit_manifest(takecover, lambda m: m.update(action_dim=4))
    with pytest.raises(DatasetError, match="of dim 4 != world 'doom-takecover'"):
        Dataset(takecover, world="doom-takecover")


def test_multidataset_counts_and_verifies_across_directories(tmp_path):
    a, b = _make(tmp_path / "a", lengths=(10, 12)), _make(tmp_path / "b", lengths=(7,))
    _rewrite_steps(b, 0, rewards=_set(2, np.nan))
    md = MultiDataset([a, b])
    assert md.num_steps == 29 and md.num_frames == 32
    problems = md.verify()
    assert len(problems) == 1 and "rewards must be finite" in str(problems[0]) and str(b) in str(problems[0])


@pytest.mark.parametrize("extra,match", [
    (["--chunk-frames", "0"], "--chunk-frames must be >= 1"),
    (["--chunk-frames", "-3"], "--chunk-frames must be >= 1"),
    (["--level", "99"], "--level must be a zstd level"),
    (["--level", "0"], "--level must be a zstd level"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_collect_refuses_bad_arguments_once(tmp_path, capsys, extra, match):
    from odyssey_gym.cli import main

    args = ["collect", "--world", "doom-takecover", "--steps", "10", "--workers", "2", "--out", str(tmp_path / "d")]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.count(match) == 1 and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_collect_refuses_a_file_as_out(tmp_path, capsys):
    from odyssey_gym.cli import main

    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main(["collect", "--world", "doom-takecover", "--steps", "10", "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err and f.read_text() == "keep me"


@pytest.mark.parametrize("seed", ["abc", 1.5, True, [1]])
def test_a_non_integer_episode_seed_is_refused(takecover, seed):
    _edit_manifest(takecover, lambda m: m["episodes"][1].update(seed=seed))
    problems = Dataset(takecover).verify()
    assert len(problems) == 1 and "seed must be an integer" in str(problems[0]) and "episode 1" in str(problems[0])
    with pytest.raises(DatasetError, match="seed must be an integer"):
        WindowSampler(Dataset(takecover), T=4)
