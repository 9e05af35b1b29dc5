import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import odyssey_gym.model as om
from odyssey_gym.model import MODEL_VERSION, WorldModel, WorldModelConfig
from odyssey_gym.worlds import get_world

# the tiny model's world: doom-takecover's 3 actions at 32x32
TEST_WORLD = dataclasses.replace(get_world("doom-takecover"), name="test-world", frame_size=(32, 32))


def tiny(seed=0, **kw) -> WorldModel:
    torch.manual_seed(seed)
    m = WorldModel(WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3, world="test-world", **kw))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # no exact zeros/ones: a real round-trip check
    m.set_latent_stats([0.1, -0.2, 0.3, 0.0], [1.5, 0.5, 1.0, 2.0])
    return m


def test_save_load_round_trip_fp32_bit_exact(tmp_path):
    m = tiny()
    written = m.save_pretrained(tmp_path, dtype=torch.float32)
    assert (tmp_path / "config.json") in written
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["format"] == "odyssey-gym-weights" and cfg["model_version"] == MODEL_VERSION and cfg["world"] == "test-world"
    assert not list(tmp_path.glob(".*tmp*"))
    m2 = WorldModel.from_pretrained(tmp_path)
    assert m2.config == m.config
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    assert torch.equal(m2.latent_std, m.latent_std)
    assert m2.pretrained_dir == tmp_path
    frames = torch.randint(0, 256, (1, 2, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(m.encode_frames(frames), m2.encode_frames(frames))


def test_bf16_save_and_load_dtype(tmp_path):
    m = tiny()
    m.save_pretrained(tmp_path)  # default bf16
    assert json.loads((tmp_path / "config.json").read_text())["weights"]["dtype"] == "bfloat16"
    m2 = WorldModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert m2.dtype == torch.bfloat16
    ref = m.to(torch.bfloat16).state_dict()
    for k, v in m2.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert WorldModel.from_pretrained(tmp_path).dtype == torch.float32


def test_sharding_and_stale_shards(tmp_path):
    m = tiny()
    m.save_pretrained(tmp_path, dtype=torch.float32, max_shard_bytes=128 * 1024)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 3
    n = len(shards)
    assert [s.name for s in shards] == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert all(s.stat().st_size <= 128 * 1024 for s in shards)
    m2 = WorldModel.from_pretrained(tmp_path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    with pytest.raises(ValueError, match="cannot fit"):
        m.save_pretrained(tmp_path / "x", max_shard_bytes=1024)
    m.save_pretrained(tmp_path, dtype=torch.float32)  # one shard now: old ones removed
    assert [s.name for s in tmp_path.glob("model-*.safetensors")] == ["model-00001-of-00001.safetensors"]
    WorldModel.from_pretrained(tmp_path)


def _edit_config(path: Path, fn):
    cfg = json.loads((path / "config.json").read_text())
    fn(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def test_wrong_model_version(tmp_path):
    tiny().save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda c: c.update(model_version=MODEL_VERSION + 1))
    with pytest.raises(ValueError, match=r"config\.json.*model_version"):
        WorldModel.from_pretrained(tmp_path)


def test_wrong_format_and_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        WorldModel.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda c: c.update(format="something-else"))
    with pytest.raises(ValueError, match="format"):
        WorldModel.from_pretrained(tmp_path)


def test_missing_shard(tmp_path):
    tiny().save_pretrained(tmp_path, dtype=torch.float32, max_shard_bytes=128 * 1024)
    victim = sorted(tmp_path.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        WorldModel.from_pretrained(tmp_path)


def test_config_weights_mismatch(tmp_path):
    tiny().save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda c: c["dynamics"].update(n_embd=128))
    with pytest.raises(ValueError, match=r"model-00001-of-00001\.safetensors.*shape"):
        WorldModel.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda c: c["dynamics"].update(n_layer=3))
    with pytest.raises(ValueError, match="do not match"):
        WorldModel.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda c: c["dynamics"].update(n_layer=1))
    with pytest.raises(ValueError, match=r"safetensors: unexpected tensor"):
        WorldModel.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda c: c["ae"].update(no_such_key=1))
    with pytest.raises(ValueError, match=r"config\.json.*no_such_key"):
        WorldModel.from_pretrained(tmp_path)


def test_config_dict_round_trip_and_presets():
    for fs, A in [((120, 160), 6), ((64, 64), 3)]:
        for preset in ("tiny", "base"):
            cfg = WorldModelConfig.preset(preset, frame_size=fs, action_dim=A, world="w")
            d = cfg.to_dict()
            json.dumps(d)
            assert WorldModelConfig.from_dict(d) == cfg
    base = WorldModelConfig.base(frame_size=(120, 160), action_dim=6)
    assert base.ae.latent_size == (16, 20) and base.dynamics.tokens_per_frame == 80
    assert WorldModelConfig.base(frame_size=(64, 64), action_dim=3).dynamics.tokens_per_frame == 64
    # YAML-style: preset + overrides, partial sections
    c = WorldModelConfig.from_dict({"preset": "tiny", "frame_size": [64, 64], "action_dim": 3, "world": "doom-takecover",
                                    "sampling_steps": 3, "dynamics": {"n_layer": 3}, "ae": {"latent_channels": 6}})
    assert c.dynamics.n_layer == 3 and c.sampling_steps == 3 and c.dynamics.latent_channels == 6
    assert c.action_dim == 3 and c.frame_size == (64, 64) and c.world == "doom-takecover"
    with pytest.raises(ValueError, match="unknown"):
        WorldModelConfig.tiny(frame_size=(64, 64), action_dim=3, bogus=1)
    with pytest.raises(ValueError, match="preset"):
        WorldModelConfig.preset("huge")


def test_base_param_budget():
    for fs, A in [((120, 160), 6), ((64, 64), 3)]:
        m = WorldModel(WorldModelConfig.base(frame_size=fs, action_dim=A))
        n = m.num_params()["total"]
        assert n <= 25_000_000 and n * 2 <= 64 * 2**20, n


def test_load_and_start_bank(tmp_path, monkeypatch):
    root = tmp_path / "weights"
    monkeypatch.setattr(om, "WEIGHTS_ROOT", root)
    with pytest.raises(FileNotFoundError, match=r"no weights for world 'test-world'.*none"):
        om.load(TEST_WORLD)
    m = tiny()
    m.save_pretrained(root / "test-world")
    with pytest.raises(FileNotFoundError, match=r"\['test-world'\]"):
        om.load("doom-health")
    loaded = om.load(TEST_WORLD, dtype=torch.float32)
    assert loaded.config.world == "test-world"
    assert om.load(TEST_WORLD, weights_dir=root / "test-world").config.world == "test-world"
    assert om.available_worlds() == ["test-world"]
    assert om.load_start_bank("test-world") is None
    frames = np.zeros((5, 4, 32, 32, 3), np.uint8)
    actions = np.ones((5, 4, 3), np.float32)
    np.savez(root / "test-world" / "start_bank.npz", frames=frames, actions=actions)
    f, a = om.load_start_bank("test-world")
    assert f.shape == frames.shape and f.dtype == np.uint8 and a.dtype == np.float32 and a.shape == (5, 4, 3)
    f2, _ = om.load_start_bank(root / "test-world")
    assert f2.shape == frames.shape


def test_model_package_is_pure_torch():
    """model/ must not import gymnasium, vizdoom or other odyssey_gym layers; the world specs are the one
    exception (torch- and engine-free by design), so `load` can check weights against their world."""
    banned = {"gymnasium", "gym", "vizdoom"}
    for f in Path(om.__file__).parent.glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level >= 2:
                    raise AssertionError(f"{f.name}: relative import outside model/")
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in banned, (f.name, n)
                allowed = ("odyssey_gym.model", "odyssey_gym.worlds")
                assert not (n.startswith("odyssey_gym.") and not n.startswith(allowed)), (f.name, n)
