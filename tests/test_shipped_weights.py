"""Smoke test of the shipped doom-explore weights on CPU (skipped when odyssey_gym/weights/ lacks them).

Every other test builds tiny weights of its own; this one only checks that the real shipped model loads
through `odyssey_gym.model.load` and generates a few finite frames from its shipped start bank.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odyssey_gym.model import Sampler, load, load_start_bank, weights_dir

WORLD = "doom-explore"

pytestmark = pytest.mark.skipif(
    not (weights_dir(WORLD) / "config.json").is_file() or not (weights_dir(WORLD) / "start_bank.npz").is_file(),
    reason=f"no shipped weights + start bank in {weights_dir(WORLD)}",
)


def test_shipped_doom_explore_generates_finite_frames():
    model = load(WORLD, device="cpu", dtype=torch.float32)
    assert model.config.world == WORLD
    bank = load_start_bank(WORLD)
    assert bank is not None
    frames, actions = bank
    K = model.config.dynamics.context_frames
    H, W = model.config.ae.frame_size
    A = model.config.dynamics.action_dim
    assert frames.shape[2:] == (H, W, 3) and 1 <= frames.shape[1] <= K
    if actions is None:
        actions = np.zeros((*frames.shape[:2], A), np.float32)
    assert actions.shape[-1] == A

    # one env, a short context (keeps it quick on CPU), a few generated frames
    ctx = min(4, frames.shape[1])
    s = Sampler(model, batch_size=1, device="cpu")
    s.reset(frames[:1, -ctx:], actions[:1, -ctx:], seeds=torch.tensor([0]))
    assert torch.isfinite(s.last_latent).all()
    act = torch.as_tensor(actions[0, -1:]).float()
    out = []
    for _ in range(3):
        f, reward, term = s.step(act)
        assert torch.isfinite(s.last_latent).all(), "non-finite latent"
        assert torch.isfinite(reward).all(), "non-finite reward"
        assert f.shape == (1, H, W, 3) and f.dtype == torch.uint8
        assert term.dtype == torch.bool and term.shape == (1,)
        out.append(f)
    # a NaN decode clamps to a flat image: real frames have structure
    assert all(int(f.max()) > int(f.min()) for f in out)


def test_shipped_configs_record_every_shard_sha256():
    """Shipped shards are verified at every load: each config.json records the hash of each of its shards."""
    import hashlib
    import json

    from odyssey_gym.model import available_worlds

    for world in available_worlds():
        d = weights_dir(world)
        w = json.loads((d / "config.json").read_text())["weights"]
        assert set(w.get("sha256", {})) == set(w["shards"]), world
        for name in w["shards"]:
            assert hashlib.sha256((d / name).read_bytes()).hexdigest() == w["sha256"][name], (world, name)
