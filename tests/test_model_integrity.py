"""Weights that are corrupt, altered or for another world fail at load, with an error naming the file and key."""

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import odyssey_gym.model as om
from tiny_weights import make_tiny_weights
from odyssey_gym.envs.vector_env import WorldModelVectorEnv
from odyssey_gym.model import WorldModel, WorldModelConfig, record_shard_hashes
from odyssey_gym.worlds import get_world

TAKECOVER = get_world("doom-takecover")


def tiny(world="doom-takecover", frame_size=(64, 64), action_dim=3, seed=0) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(WorldModelConfig.tiny(frame_size=frame_size, action_dim=action_dim, world=world))


@pytest.fixture
def saved(tmp_path):
    """A tiny doom-takecover export in several fp32 shards."""
    d = tmp_path / "w"
    tiny().save_pretrained(d, dtype=torch.float32, max_shard_bytes=128 * 1024)
    return d


def _cfg(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def _edit(d: Path, fn):
    cfg = _cfg(d)
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def _flip_data_byte(f: Path):
    """Flip one byte of tensor data (past the safetensors header), so the file still parses."""
    raw = bytearray(f.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    raw[header + (len(raw) - header) // 2] ^= 0x01
    f.write_bytes(bytes(raw))


# -------------------------------------------------------------------------- shard hashes


def test_save_records_each_shard_sha256(saved):
    w = _cfg(saved)["weights"]
    assert len(w["shards"]) >= 3 and list(w)[-1] == "sha256"
    assert w["sha256"] == {n: hashlib.sha256((saved / n).read_bytes()).hexdigest() for n in w["shards"]}


def test_flipped_byte_in_a_shard_is_refused_naming_it(saved):
    victim = saved / _cfg(saved)["weights"]["shards"][1]
    _flip_data_byte(victim)
    with pytest.raises(ValueError, match=rf"{victim.name}: sha256 does not match.*config\.json"):
        WorldModel.from_pretrained(saved)


def test_export_without_hashes_loads_and_record_shard_hashes_matches_the_saver(saved, tmp_path):
    written = (saved / "config.json").read_text()
    _edit(saved, lambda c: c["weights"].pop("sha256"))
    (saved / "config.json").write_text(json.dumps(_cfg(saved), indent=2) + "\n")  # an older export
    WorldModel.from_pretrained(saved)
    record_shard_hashes(saved)
    assert (saved / "config.json").read_text() == written  # same bytes as save_pretrained wrote
    assert record_shard_hashes(saved) == _cfg(saved)["weights"]["sha256"]  # idempotent
    _flip_data_byte(saved / _cfg(saved)["weights"]["shards"][0])
    with pytest.raises(ValueError, match="sha256 does not match"):
        record_shard_hashes(saved)


def test_hash_table_must_cover_the_shards(saved):
    _edit(saved, lambda c: c["weights"]["sha256"].popitem())
    with pytest.raises(ValueError, match=r"config\.json: 'weights\.sha256'"):
        WorldModel.from_pretrained(saved)


# -------------------------------------------------------------------------- the standard safetensors index


def test_the_standard_index_alone_reads_the_weights(saved):
    """Another tool reads model.safetensors.index.json and the shards it names, without our loader."""
    from safetensors import safe_open

    index = json.loads((saved / "model.safetensors.index.json").read_text())
    expected = tiny().state_dict()
    assert set(index["weight_map"]) == set(expected)
    assert set(index["weight_map"].values()) == set(_cfg(saved)["weights"]["shards"])
    got, nbytes = {}, 0
    for name in sorted(set(index["weight_map"].values())):
        with safe_open(str(saved / name), framework="pt") as f:
            for k in f.keys():
                assert index["weight_map"][k] == name
                got[k] = f.get_tensor(k)
                nbytes += got[k].numel() * got[k].element_size()
    assert index["metadata"]["total_size"] == nbytes
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


def test_an_index_that_disagrees_with_the_shards_is_refused_and_can_be_rebuilt(saved):
    f = saved / "model.safetensors.index.json"
    written = f.read_text()
    index = json.loads(written)
    k = next(iter(index["weight_map"]))
    other = next(n for n in _cfg(saved)["weights"]["shards"] if n != index["weight_map"][k])
    index["weight_map"][k] = other
    f.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"model\.safetensors\.index\.json: does not match the shards.*{k}"):
        WorldModel.from_pretrained(saved)
    f.write_text("{not json")
    with pytest.raises(ValueError, match="not a safetensors index"):
        WorldModel.from_pretrained(saved)
    om.write_safetensors_index(saved)
    assert f.read_text() == written  # the same bytes save_pretrained wrote
    WorldModel.from_pretrained(saved)
    f.unlink()  # an export made before the index loads as before
    WorldModel.from_pretrained(saved)


def test_shipped_weights_carry_a_matching_index():
    for world in om.available_worlds():
        d = om.weights_dir(world)
        index = json.loads((d / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"].values()) == set(_cfg(d)["weights"]["shards"]), world


# -------------------------------------------------------------------------- shard names


@pytest.mark.parametrize("name", ["../outside.safetensors", "ABS", "sub/model.safetensors", "..", ""])
def test_shard_names_stay_inside_the_weights_folder(saved, tmp_path, name):
    outside = tmp_path / "outside.safetensors"
    first = _cfg(saved)["weights"]["shards"][0]
    shutil.copy(saved / first, outside)  # a readable shard really is there
    if name == "ABS":
        name = str(outside)
    _edit(saved, lambda c: c["weights"].update(shards=[name, *c["weights"]["shards"][1:]]))
    with pytest.raises(ValueError, match=r"config\.json: weights\.shards entry .* is not a file name inside"):
        WorldModel.from_pretrained(saved)


# -------------------------------------------------------------------------- world checks


def test_load_checks_the_requested_world(tmp_path):
    d = tmp_path / "w"
    tiny().save_pretrained(d)
    assert om.load("doom-takecover", weights_dir=d).config.world == "doom-takecover"
    with pytest.raises(ValueError, match=r"config\.json: these weights were trained for world 'doom-takecover', "
                                         r"not 'doom-health'"):
        om.load("doom-health", weights_dir=d)
    with pytest.raises(KeyError, match="unknown world 'zzz'"):
        om.load("zzz", weights_dir=d)
    _edit(d, lambda c: c.update(world="zzz"))
    with pytest.raises(ValueError, match="trained for world 'zzz', not 'doom-takecover'"):
        om.load("doom-takecover", weights_dir=d)
    _edit(d, lambda c: c.pop("world"))
    with pytest.raises(ValueError, match=r"config\.json: 'world' must name the world"):
        om.load("doom-explore", weights_dir=d)  # not silently doom-explore
    with pytest.raises(ValueError, match=r"config\.json: 'world'"):
        WorldModel.from_pretrained(d)


def test_load_checks_frame_size_and_action_dim_against_the_world(tmp_path):
    tiny(frame_size=(32, 32)).save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match=r"frame_size \(32, 32\) does not match world 'doom-takecover'.*\(64, 64\)"):
        om.load("doom-takecover", weights_dir=tmp_path / "small")
    tiny(action_dim=4).save_pretrained(tmp_path / "a4")
    with pytest.raises(ValueError, match=r"action_dim 4 does not match world 'doom-takecover'.*action_dim 3"):
        om.load("doom-takecover", weights_dir=tmp_path / "a4")
    with pytest.raises(ValueError, match="action_dim 4 does not match"):
        WorldModelVectorEnv("doom-takecover", weights=tmp_path / "a4", num_envs=1)
    with pytest.raises(ValueError, match="action_dim 4 does not match"):
        WorldModelVectorEnv("doom-takecover", weights=WorldModel.from_pretrained(tmp_path / "a4"), num_envs=1)
    spec = dataclasses.replace(TAKECOVER, name="tc32", frame_size=(32, 32))  # a WorldSpec is accepted as is
    tiny(world="tc32", frame_size=(32, 32)).save_pretrained(tmp_path / "tc32")
    assert om.load(spec, weights_dir=tmp_path / "tc32").config.frame_size == (32, 32)


def test_env_weights_dir_is_checked_like_load(tmp_path):
    d = make_tiny_weights("doom-takecover", tmp_path / "w")
    _edit(d, lambda c: c.pop("world"))
    with pytest.raises(ValueError, match=r"config\.json: 'world'"):
        WorldModelVectorEnv("doom-takecover", weights=d, num_envs=1)


# -------------------------------------------------------------------------- config values

NAN = float("nan")
BAD_VALUES = {
    "sampling_steps 0": (lambda c: c.update(sampling_steps=0), "sampling_steps"),
    "sampling_steps 1.5": (lambda c: c.update(sampling_steps=1.5), "sampling_steps"),
    "sigma_max 0": (lambda c: c["dynamics"].update(sigma_max=0.0), r"dynamics\.sigma_max"),
    "sigma_max < 0": (lambda c: c["dynamics"].update(sigma_max=-1.0), r"dynamics\.sigma_max"),
    "latent_std 0": (lambda c: c["latent_std"].__setitem__(2, 0.0), r"latent_std\[2\]"),
    "latent_std < 0": (lambda c: c["latent_std"].__setitem__(0, -0.5), r"latent_std\[0\]"),
    "latent_std NaN": (lambda c: c["latent_std"].__setitem__(1, NAN), r"latent_std\[1\]"),
    "latent_mean NaN": (lambda c: c["latent_mean"].__setitem__(3, NAN), r"latent_mean\[3\]"),
    "latent_mean short": (lambda c: c["latent_mean"].pop(), "latent_mean"),
    "rope_base str": (lambda c: c["dynamics"].update(rope_base="abc"), r"dynamics\.rope_base"),
    "rope_base inf": (lambda c: c["dynamics"].update(rope_base=math.inf), r"dynamics\.rope_base"),
    "n_layer bool": (lambda c: c["dynamics"].update(n_layer=True), r"dynamics\.n_layer"),
    "context_noise < 0": (lambda c: c.update(context_noise=-0.1), "context_noise"),
    "shards str": (lambda c: c["weights"].update(shards="model-00001-of-00001.safetensors"), r"weights\.shards"),
    "shards empty": (lambda c: c["weights"].update(shards=[]), r"weights\.shards"),
    "weights list": (lambda c: c.update(weights=[]), "'weights'"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_config_values_name_config_json_and_the_key(tmp_path, case):
    m = tiny()
    m.set_latent_stats([0.1, -0.2, 0.3, 0.0], [1.5, 0.5, 1.0, 2.0])
    m.save_pretrained(tmp_path)
    edit, key = BAD_VALUES[case]
    _edit(tmp_path, edit)
    with pytest.raises(ValueError, match=rf"config\.json: .*{key}"):
        WorldModel.from_pretrained(tmp_path)


def test_config_json_must_be_an_object(tmp_path):
    tiny().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps([_cfg(tmp_path)]))
    with pytest.raises(ValueError, match=r"config\.json: expected a JSON object, got a list"):
        WorldModel.from_pretrained(tmp_path)


def test_set_latent_stats_refuses_nan_and_nonpositive_std():
    m = tiny()
    with pytest.raises(ValueError, match=r"latent_std\[1\]"):
        m.set_latent_stats([0.0] * 4, [1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"latent_mean\[0\]"):
        m.set_latent_stats([NAN, 0.0, 0.0, 0.0], [1.0] * 4)


# -------------------------------------------------------------------------- start bank


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_start_bank_names_the_file(tmp_path, damage):
    d = make_tiny_weights("doom-takecover", tmp_path / "w")
    f = d / "start_bank.npz"
    raw = bytearray(f.read_bytes())
    if damage == "garbage":
        raw = bytearray(b"not a zip file at all" * 10)
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 3] ^= 0xFF  # inside the compressed frames: CRC or inflate fails
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"start_bank\.npz: cannot read start bank"):
        om.load_start_bank(d)
    with pytest.raises(ValueError, match=r"start_bank\.npz"):
        WorldModelVectorEnv("doom-takecover", weights=d, num_envs=1)


def test_start_bank_with_nan_actions_is_refused(tmp_path):
    d = make_tiny_weights("doom-takecover", tmp_path / "w")
    with np.load(d / "start_bank.npz") as z:
        frames, actions = z["frames"], z["actions"].copy()
    actions[0, 0, 0] = np.nan
    np.savez(d / "start_bank.npz", frames=frames, actions=actions)
    with pytest.raises(ValueError, match=r"start_bank\.npz: actions hold NaN"):
        om.load_start_bank(d)
