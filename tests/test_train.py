"""Training loop tests (CPU, the real tiny model, tiny synthetic dataset written with the real dataset writer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from odyssey_gym.train import checkpoint as ckpt
from odyssey_gym.train.config import ConfigError, from_dict, load_config
from odyssey_gym.train.steps import model_config
from odyssey_gym.worlds import get_world

ROOT = Path(__file__).resolve().parents[1]


# ============================================================================ data + config helpers


def make_dataset(path: Path, episodes: int = 6, length: int = 40, seed: int = 0, move: int = 3, size: int = 8,
                 reward: float = 4.0) -> Path:
    """doom-takecover-shaped (64x64, 3 discrete actions) data: a bright square of `size` px moved `move` px
    left / right by the actions (the third action keeps it still); every step's reward is `reward`."""
    from odyssey_gym.data.dataset import DatasetWriter, Episode

    rng = np.random.default_rng(seed)
    with DatasetWriter(path, "doom-takecover", fsync=False) as w:
        for e in range(episodes):
            x = int(rng.integers(8, 56 - size))
            acts = rng.integers(0, 3, size=length)
            frames = np.zeros((length + 1, 64, 64, 3), np.uint8)
            frames[..., 2] = 40
            for i in range(length + 1):
                if i > 0:
                    x = int(np.clip(x + (-move if acts[i - 1] == 0 else move if acts[i - 1] == 1 else 0), 0, 64 - size))
                frames[i, 28:28 + size, x:x + size] = 255
            term = np.zeros(length, bool)
            term[-1] = e % 2 == 0
            w.add_episode(Episode(frames, acts.astype(np.int64), np.full(length, reward, np.float32), term,
                                  ~term & (np.arange(length) == length - 1), seed=seed * 100 + e,
                                  state=np.full((length + 1, 1), 100, np.float32)))
    return path


TINY = {
    "model": {"preset": "tiny"},
    "train": {
        "seed": 0, "bf16": False, "compile": False,
        "ae_steps": 30, "ae_batch_size": 8, "ae_lr": 2e-3, "ae_warmup_steps": 3,
        "dyn_steps": 40, "dyn_batch_size": 8, "dyn_window": 6, "dyn_lr": 1e-3, "dyn_warmup_steps": 4,
        "unroll_start_frac": 0.8, "unroll_len": 2, "unroll_batch_frac": 0.5,
        "ema_decay": 0.99, "log_every_steps": 10, "save_every_steps": 10, "save_every_seconds": 0,
        "start_bank_size": 4,
    },
}


def write_config(path: Path, d=TINY, **train_overrides) -> Path:
    import yaml

    d = {**d, "train": {**d["train"], **train_overrides}}
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "takecover")


def run_inproc(cfg_path, data, out, *extra, monkeypatch=None):
    from odyssey_gym.cli import main

    return main(["train", "--config", str(cfg_path), "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--no-progress", *map(str, extra)])


def final_state(out: Path) -> dict:
    path = ckpt.list_checkpoints(out)[-1]
    return torch.load(path, map_location="cpu", weights_only=True)  # checkpoints hold tensors and plain values only


# ============================================================================ tests


def test_config_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  ae_step: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*ae_step \(did you mean ae_steps\?\)"):
        load_config(bad)
    bad.write_text("train:\n  dyn_window: 4\n  unroll_len: 4\n")
    with pytest.raises(ConfigError, match="unroll_len"):
        load_config(bad)
    bad.write_text("wrld: x\n")
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_config(bad)
    bad.write_text("train:\n  ae_lr: fast\n")
    with pytest.raises(ConfigError, match="train.ae_lr must be float"):
        load_config(bad)
    bad.write_text("train:\n  peak_tflops: fast\n")
    with pytest.raises(ConfigError, match="train.peak_tflops must be a number or null"):
        load_config(bad)
    bad.write_text("train:\n  peak_tflops: 989\n")
    assert load_config(bad).train.peak_tflops == 989.0
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    # every shipped config loads (a recipe the model card names must stay runnable)
    shipped = sorted((ROOT / "configs").glob("*.yaml"))
    assert {"tiny.yaml", "doom-explore.yaml", "doom-takecover.yaml"} <= {p.name for p in shipped}
    for path in shipped:
        cfg = load_config(path)
        assert cfg.train.dyn_steps > 0 or "decoder" in path.name, path.name  # a decoder leg trains no dynamics
        if "decoder" in path.name:
            assert cfg.train.ae_steps > 0, path.name
        if cfg.world is not None:  # its model builds, and its config.json gives the same config back
            mcfg = model_config(cfg.model, get_world(cfg.world))
            assert type(mcfg).from_dict(json.loads(json.dumps(mcfg.to_dict()))) == mcfg, path.name
    assert load_config(ROOT / "configs" / "tiny.yaml").world is None


def test_cli_errors(tmp_path, dataset, capsys, monkeypatch):
    cfg = write_config(tmp_path / "c.yaml")
    rc = run_inproc(cfg, dataset, tmp_path / "run", "--resume", monkeypatch=monkeypatch)
    assert rc == 2 and "no checkpoint found" in capsys.readouterr().err
    rc = run_inproc(cfg, tmp_path / "nodata", tmp_path / "run", monkeypatch=monkeypatch)
    assert rc == 2 and "nodata" in capsys.readouterr().err
    wrong_world = write_config(tmp_path / "w.yaml", {**TINY, "world": "doom-explore"})
    rc = run_inproc(wrong_world, dataset, tmp_path / "run", monkeypatch=monkeypatch)
    assert rc == 2 and "holds 'doom-takecover'" in capsys.readouterr().err


def test_train_loss_down_resume_checks_and_export(tmp_path, dataset, capsys, monkeypatch):
    cfg = write_config(tmp_path / "c.yaml", peak_tflops=0.05)  # a peak given in the config counts on any device
    out = tmp_path / "run"
    exp = tmp_path / "export"
    assert run_inproc(cfg, dataset, out, "--export", exp, monkeypatch=monkeypatch) == 0
    err = capsys.readouterr().err
    # losses went down (tensorboard scalars are the record)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    for tag in ("ae/loss", "dyn/loss"):
        vals = [e.value for e in ea.Scalars(tag)]
        assert len(vals) >= 3 and vals[-1] < vals[0], (tag, vals)
    # throughput: log lines and scalars; tflops / mfu agree with the peak
    import re

    line = re.search(r"^dyn 40/40 loss=\S+ .*lr=\S+ steps_per_s=\S+ frames_per_s=(\S+) tflops=(\S+) mfu=(\S+)%$", err, re.M)
    assert line, err
    frames, tflops, mfu = map(float, line.groups())
    assert frames > 0 and tflops > 0 and mfu == pytest.approx(100 * tflops / 0.05, rel=0.01)
    for tag in ("ae/frames_per_s", "ae/tflops", "ae/mfu", "dyn/frames_per_s", "dyn/tflops", "dyn/mfu"):
        assert all(e.value > 0 for e in ea.Scalars(tag)), tag
    steps_per_s = [e.value for e in ea.Scalars("dyn/steps_per_s")]
    fps = [e.value for e in ea.Scalars("dyn/frames_per_s")]
    assert fps == pytest.approx([8 * (6 - 1) * v for v in steps_per_s])  # teacher forcing: every frame but the first
    assert len(ckpt.list_checkpoints(out)) == 2  # keep the last 2
    # export loads
    from odyssey_gym.model import WorldModel

    m = WorldModel.from_pretrained(exp)
    assert m.config.latent_mean is not None
    bank = np.load(exp / "start_bank.npz")
    assert bank["frames"].dtype == np.uint8 and bank["frames"].shape[0] == 4 and bank["frames"].shape[2:] == (64, 64, 3)
    assert bank["actions"].dtype == np.float32 and bank["actions"].shape[:2] == bank["frames"].shape[:2]
    summary = json.loads((exp / "train_summary.json").read_text())
    leg = summary["legs"][-1]
    assert leg["data"]["episodes"] == 6 and leg["steps"]["dyn"] == 40 and "dyn" in leg["final_losses"]
    assert summary["totals"]["steps"]["dyn"] == 40 and summary["data"]["seeds"] == leg["data"]["seeds"]
    assert all(p.stat().st_size <= 16 << 20 for p in exp.glob("*.safetensors"))

    # a changed config is refused, naming the file and the key
    cfg2 = write_config(tmp_path / "c2.yaml", dyn_lr=5e-4, log_every_steps=5)
    assert run_inproc(cfg2, dataset, out, "--resume", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert "c2.yaml" in err and "train.dyn_lr" in err and "log_every_steps" not in err

    # a corrupt newest checkpoint: named, and the previous good one is used
    newest = ckpt.list_checkpoints(out)[-1]
    newest.write_bytes(b"garbage")
    assert run_inproc(cfg, dataset, out, "--resume", monkeypatch=monkeypatch) == 0
    err = capsys.readouterr().err
    assert str(newest) in err and "previous good checkpoint" in err


def test_kill_and_resume_matches_uninterrupted(tmp_path, dataset, monkeypatch):
    cfg = write_config(tmp_path / "c.yaml", save_every_steps=5)
    # uninterrupted reference (in-process)
    ref = tmp_path / "ref"
    assert run_inproc(cfg, dataset, ref, monkeypatch=monkeypatch) == 0
    ref_state = final_state(ref)

    # same run in a subprocess, killed -9 once a mid-dynamics checkpoint appears, then resumed
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "odyssey_gym.cli", "train", "--config", str(cfg), "--data", str(dataset), "--out", str(out),
            "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = out / "checkpoints" / f"ckpt-{30 + 15:09d}.pt"  # dyn step 15 of 40
    t0 = time.monotonic()
    while not target.exists() and p.poll() is None and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert killed, "the run finished before it could be killed: " + p.stderr.read().decode()[-2000:]
    last = ckpt.list_checkpoints(out)[-1]
    assert "done" != torch.load(last, weights_only=True)["phase"]

    r = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr
    state = final_state(out)
    assert ref_state["phase"] == state["phase"] == "done"
    assert state["global_step"] == ref_state["global_step"] == 30 + 40 + 1
    for key in ("model", "ema"):
        for k, v in ref_state[key].items():
            assert torch.equal(v, state[key][k]), f"{key}.{k} differs after kill + resume"


def test_non_finite_loss_stops_the_run_by_name_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """The autoencoder trains, then the first dynamics step's loss is NaN (a dataset holding NaN is refused
    before training; here the dynamics loss itself goes non-finite, as a diverging run's would)."""
    from odyssey_gym.model.dynamics import Dynamics

    real_loss = Dynamics.loss

    def nan_loss(self, *a, **kw):
        loss, metrics = real_loss(self, *a, **kw)
        return loss * float("nan"), metrics

    monkeypatch.setattr(Dynamics, "loss", nan_loss)
    data = make_dataset(tmp_path / "data")
    cfg = write_config(tmp_path / "c.yaml")
    out, exp = tmp_path / "run", tmp_path / "export"
    assert run_inproc(cfg, data, out, "--export", exp) == 2
    err = capsys.readouterr().err
    good = ckpt.checkpoint_dir(out) / f"ckpt-{30:09d}.pt"  # written when the autoencoder finished, before dynamics
    assert "non-finite" in err and "phase dyn at step 1/40" in err and f"newest good checkpoint is {good}" in err, err
    assert ckpt.list_checkpoints(out)[-1] == good and not exp.exists()  # nothing written after the NaN
    state = torch.load(good, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # the guard also reads the weights themselves before writing anything
    from odyssey_gym.train import trainer

    with pytest.raises(trainer.NonFiniteError, match="EMA weights hold non-finite values.*no checkpoint was written"):
        run = trainer.RunState(model=torch.nn.Linear(2, 2), ema=torch.nn.Linear(2, 2), phase="dyn", step=3,
                               latent_stats=None, last_metrics={}, seconds_before=0.0)
        run.ema.weight.data[0, 0] = float("inf")
        trainer.check_finite(SimpleNamespace(info=trainer.DistInfo()), run, weights=True)


class _OpensAFile:
    """Unpickling this creates a file: what reading a checkpoint must never do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_unsafe_or_old_checkpoint_is_refused_by_name(tmp_path, dataset, capsys):
    cfg = write_config(tmp_path / "c.yaml")
    marker = tmp_path / "code-ran"
    cases = {  # name: (file content, the global the error names)
        "code": ({"format_version": ckpt.FORMAT_VERSION, "payload": _OpensAFile(marker)}, "open"),
        "old": ({"format_version": 1, "rng": [{"numpy": np.random.get_state()}]}, "numpy"),  # RNG state as numpy
    }
    for name, (state, global_name) in cases.items():
        out = tmp_path / name
        path = ckpt.checkpoint_dir(out) / "ckpt-000000010.pt"
        path.parent.mkdir(parents=True)
        torch.save(state, path)
        assert run_inproc(cfg, dataset, out, "--resume") == 2
        err = capsys.readouterr().err
        assert str(path) in err and "weights-only load refuses" in err and "--init-from" in err, err
        assert global_name in err.split("refuses")[0] and not marker.exists(), err
    torch.load(ckpt.checkpoint_dir(tmp_path / "code") / "ckpt-000000010.pt", weights_only=False)
    assert marker.exists()  # the file was hostile indeed: a full unpickle runs it


@pytest.mark.parametrize("objective", ["teacher_forcing", "diffusion_forcing"])
def test_unroll_context_replaces_only_the_tail(objective):
    from odyssey_gym.train.steps import unroll_context

    from odyssey_gym.model import Dynamics, DynamicsConfig, karras_sigmas

    torch.manual_seed(0)
    dyn = Dynamics(DynamicsConfig(latent_channels=4, latent_size=(2, 2), patch_size=1, n_layer=1, n_head=2, n_embd=32,
                                  action_dim=3, context_frames=4, max_frames=6, objective=objective))
    with torch.no_grad():  # the output layer starts at zero; randomise it so generated frames differ from the input
        dyn.out.weight.normal_(0, 0.5)
        dyn.out.bias.normal_(0, 0.5)
    z = torch.randn(4, 6, 4, 2, 2)
    b = {"z": z, "actions": torch.rand(4, 6, 3)}
    kw = unroll_context(dyn, b, n_rows=2, unroll_len=2, sigmas=karras_sigmas(2, 5.0, 0.002, 7.0))
    z2 = kw["context_z" if objective == "teacher_forcing" else "z"]
    assert torch.equal(z2[2:], z[2:]) and torch.equal(z2[:2, :3], z[:2, :3]) and torch.equal(z2[:, 5], z[:, 5])
    assert not torch.equal(z2[:2, 3:5], z[:2, 3:5])
    if objective == "teacher_forcing":  # the targets stay the true frames: every frame still trains
        assert set(kw) == {"context_z"}
        dyn.loss(z, b["actions"], **kw)[0].backward()
    else:
        mask = kw["loss_mask"]
        assert mask[:2].tolist() == [[False] * 5 + [True]] * 2 and mask[2:].all()


def test_gpu_residency_counts_a_tensor_already_on_the_gpu_as_used(monkeypatch):
    """Latents encoded on a GPU that another job shares: their own bytes are not 'free', so only the budget
    fraction decides (the free-memory check would send them to the host, where they would have to be moved)."""
    from types import SimpleNamespace

    from odyssey_gym.train import resident

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=140 * gib))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (2 * gib, 140 * gib))
    cuda = torch.device("cuda")
    assert not resident._fits(3 * gib, cuda, 0.3)  # a host tensor: 3 GiB would not fit the 2 GiB free
    assert resident._fits(3 * gib, cuda, 0.3, already_there=True)  # already on the GPU: stays
    assert not resident._fits(50 * gib, cuda, 0.3, already_there=True)  # over the budget fraction: moves out
    assert resident._fits(50 * gib, torch.device("cpu"), 0.3)


def test_unroll_depth_compounds_errors_as_open_loop():
    """Each further pass re-samples the unrolled frames from the last pass's: frame k of the unroll changes
    until pass k + 1 and then stays (the sequential rollout's fixed point); depth 1 is the one-step unroll."""
    from odyssey_gym.train.steps import unroll_context

    from odyssey_gym.model import Dynamics, DynamicsConfig

    torch.manual_seed(0)
    dyn = Dynamics(DynamicsConfig(latent_channels=4, latent_size=(2, 2), patch_size=1, n_layer=1, n_head=2, n_embd=32,
                                  action_dim=3, context_frames=6, max_frames=8, objective="teacher_forcing",
                                  start_from="previous"))
    with torch.no_grad():
        dyn.out.weight.normal_(0, 0.5)
        dyn.out.bias.normal_(0, 0.5)
    z = torch.randn(2, 8, 4, 2, 2)
    b = {"z": z, "actions": torch.rand(2, 8, 3)}
    sigmas = [1e-6, 0.0]  # starting noise too small to matter: the passes are comparable frame by frame
    u, lo = 3, 8 - 1 - 3
    out = {d: unroll_context(dyn, b, n_rows=2, unroll_len=u, sigmas=sigmas, depth=d)["context_z"] for d in (1, 2, 3, 4)}
    close = lambda d1, d2, k: torch.allclose(out[d1][:, lo + k], out[d2][:, lo + k], atol=1e-4)  # noqa: E731
    assert all(torch.equal(o[:, :lo], z[:, :lo]) and torch.equal(o[:, 7], z[:, 7]) for o in out.values())
    assert close(1, 4, 0) and not close(1, 4, 1) and not close(1, 4, 2)  # depth 1: only frame 0 is final
    assert close(2, 4, 1) and not close(2, 4, 2)  # depth 2: frames 0-1 final
    assert close(3, 4, 2)  # depth >= unroll_len: the whole unroll is the sequential rollout
    from odyssey_gym.train.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="unroll_depth"):
        TrainConfig(unroll_depth=0).validate()


def _flat(lengths):
    from odyssey_gym.data.windows import FlatData

    n = sum(lengths)
    episode = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    first = np.concatenate([[True] + [False] * (k - 1) for k in lengths])
    frames = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 3)).copy()
    return FlatData(frames=frames, actions=np.arange(n, dtype=np.float32)[:, None], rewards=np.zeros(n, np.float32),
                    terminated=np.zeros(n, bool), first=first, episode=episode)


def test_start_bank_draws_windows_inside_one_episode_from_episode_starts_when_it_can():
    """The start bank draws through `FlatData.pick_windows`: with enough long episodes, each context is an
    episode's first K frames (a reset state), one per episode; with too few, any windows (repeated if need be);
    every context lies inside one episode, and a seed gives the same bank."""
    from odyssey_gym.train.steps import DataError, start_bank

    def contexts(flat, bank):  # flat indices of each context's frames, read back from the frame values
        idx = bank["frames"][:, :, 0, 0, 0].astype(np.int64)
        assert np.array_equal(bank["actions"][..., 0], idx.astype(np.float32))
        assert (np.diff(idx, axis=1) == 1).all()  # consecutive frames
        return idx

    flat = _flat([12, 3, 20, 15, 9, 30])
    bank = start_bank(flat, 3, 8, seed=4)
    idx = contexts(flat, bank)
    assert len(idx) == 3 and flat.first[idx[:, 0]].all()
    assert len({int(flat.episode[i]) for i in idx[:, 0]}) == 3  # distinct episodes
    assert all(len(set(flat.episode[row].tolist())) == 1 for row in idx)
    assert np.array_equal(bank["frames"], start_bank(flat, 3, 8, seed=4)["frames"])
    # the same draw as eval's and the probe's: the seed's pick of episode-start windows
    assert idx[:, 0].tolist() == sorted(flat.pick_windows(8, 3, np.random.default_rng(4), episode_start=True).tolist())

    few = contexts(flat, start_bank(flat, 12, 8, seed=4))  # 5 episodes reach 8 frames: any windows, some repeated
    assert len(few) == 12 and not flat.first[few[:, 0]].all()
    assert all(len(set(flat.episode[row].tolist())) == 1 for row in few)
    with pytest.raises(DataError, match="40 frames"):
        start_bank(flat, 2, 40, seed=0)


def test_campaign_legs_append_to_the_summary(dataset, tmp_path):
    """A leg from landed weights continues their campaign log: legs, cumulative totals, every seed, no paths."""
    from odyssey_gym.train.campaign import load_summary

    cfg = write_config(tmp_path / "c.yaml")
    a, b = tmp_path / "w1", tmp_path / "w2"
    assert run_inproc(cfg, dataset, tmp_path / "r1", "--export", a) == 0
    cfg2 = write_config(tmp_path / "c2.yaml", ae_steps=0, dyn_steps=10)
    assert run_inproc(cfg2, dataset, tmp_path / "r2", "--phase", "dyn", "--init-from", a, "--export", b) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tmp_path / "r1" / "tb"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert "dyn/tflops" in tags and not any(t.endswith("/mfu") for t in tags)  # CPU, no peak given: no mfu
    s1, s2 = load_summary(a), load_summary(b)
    assert [leg["leg"] for leg in s2["legs"]] == [1, 2] and s2["legs"][0] == s1["legs"][0]
    assert s2["legs"][1]["steps"] == {"ae": 0, "dyn": 10} and s2["legs"][1]["init_from"] == "weights"
    assert s2["totals"]["steps"]["dyn"] == 40 + 10 and s2["totals"]["legs"] == 2
    assert s2["totals"]["gpu_minutes"] == pytest.approx(sum(leg["gpu_minutes"] for leg in s2["legs"]), abs=0.011)
    assert s2["data"]["seeds"] == sorted(set(s1["legs"][0]["data"]["seeds"]))  # what train-probe refuses
    ds = s2["legs"][1]["data"]["datasets"]
    assert ds[0]["name"] == "takecover" and ds[0]["frames"] > 0
    assert str(tmp_path) not in (b / "train_summary.json").read_text()  # datasets by name, not by path


def test_max_steps_stops_a_leg_where_a_time_limit_stopped_it_with_the_same_schedule(dataset, tmp_path):
    """--max-steps N replays a time-limited leg: N dynamics steps of a schedule planned for dyn_steps, exported
    as a partial leg; the run resumes to the end like a time-limited one."""
    from odyssey_gym.train.campaign import load_summary

    cfg = write_config(tmp_path / "c.yaml")
    w = tmp_path / "w"
    assert run_inproc(cfg, dataset, tmp_path / "r1", "--export", w) == 0
    cfg2 = write_config(tmp_path / "c2.yaml", ae_steps=0, dyn_steps=10)
    out, cut, full = tmp_path / "r2", tmp_path / "cut", tmp_path / "full"
    assert run_inproc(cfg2, dataset, out, "--phase", "dyn", "--init-from", w, "--max-steps", 4, "--export", cut) == 0
    leg = load_summary(cut)["legs"][-1]
    assert leg["steps"]["dyn"] == 4 and leg["dyn_steps_planned"] == 10
    state = final_state(out)
    assert state["step"] == 4 and state["phase"] == "dyn"
    assert run_inproc(cfg2, dataset, out, "--phase", "dyn", "--init-from", w, "--resume", "--export", full) == 0
    assert final_state(out)["phase"] == "done"
    assert run_inproc(cfg2, dataset, out, "--max-steps", 0) == 2  # refused by name


def test_old_single_run_summary_upgrades_to_legs(tmp_path):
    from odyssey_gym.train.campaign import load_summary

    (tmp_path / "train_summary.json").write_text(json.dumps(
        {"world": "doom-explore", "world_version": 1, "steps": {"ae": 5, "dyn": 7}, "gpu_minutes": 1.5,
         "data": {"frames": 10, "episodes": 1, "seeds": [3, 1], "dirs": ["/somewhere/data/explore"]}}))
    s = load_summary(tmp_path)
    assert len(s["legs"]) == 1 and s["legs"][0]["data"]["datasets"] == [{"name": "explore"}]
    assert "dirs" not in s["legs"][0]["data"] and s["data"]["seeds"] == [1, 3]
    assert s["totals"] == {"legs": 1, "gpu_minutes": 1.5, "steps": {"ae": 5, "dyn": 7}, "largest_dataset_frames": 10}
    (tmp_path / "train_summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_summary(tmp_path)


def test_adamw_is_fused_on_cuda_and_falls_back(monkeypatch):
    from odyssey_gym.train import trainer

    params = [torch.nn.Parameter(torch.zeros(3))]
    assert trainer.make_adamw(params, 1e-3, 0.0, (0.9, 0.99), use_cuda=False).defaults["fused"] is False
    real = torch.optim.AdamW

    def no_fused_kernel(*a, fused=None, **kw):  # a torch (or a parameter) without the fused kernel
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(*a, fused=fused, **kw)

    signature = trainer.inspect.signature(real)
    monkeypatch.setattr(trainer.inspect, "signature", lambda f: signature)
    monkeypatch.setattr(torch.optim, "AdamW", no_fused_kernel)
    assert trainer.make_adamw(params, 1e-3, 0.0, (0.9, 0.99), use_cuda=True).defaults["fused"] is False
    monkeypatch.setattr(torch.optim, "AdamW", real)
    if torch.cuda.is_available():
        cuda_params = [torch.nn.Parameter(torch.zeros(3, device="cuda"))]
        assert trainer.make_adamw(cuda_params, 1e-3, 0.0, (0.9, 0.99), use_cuda=True).defaults["fused"] is True


def test_peak_tflops_from_the_config_or_the_device_name(monkeypatch):
    from odyssey_gym.train.config import TrainConfig
    from odyssey_gym.train.trainer import peak_tflops

    cuda = torch.device("cuda", 0)
    assert peak_tflops(TrainConfig(), torch.device("cpu")) is None
    assert peak_tflops(TrainConfig(peak_tflops=123.0), cuda) == 123.0
    for name, peak in (("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                       ("Tesla T4", None)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_tflops(TrainConfig(), cuda) == peak, name


# ============================================================================ rolling self-forcing


def _bank_setup(dataset, rows=3, window=6, context=4, max_age=5, advance=1, seed=0):
    from odyssey_gym.data.dataset import open_dataset
    from odyssey_gym.model import Dynamics, DynamicsConfig
    from odyssey_gym.train.resident import ResidentData
    from odyssey_gym.train.rollout_bank import RolloutBank

    flat = open_dataset(dataset).flat()
    data = ResidentData(flat, "cpu", seed=0)
    data.set_latents(torch.randn(data.n, 4, 2, 2, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(0)
    dyn = Dynamics(DynamicsConfig(latent_channels=4, latent_size=(2, 2), patch_size=1, n_layer=1, n_head=2, n_embd=32,
                                  action_dim=data.actions.shape[1], context_frames=context, max_frames=window,
                                  start_from="previous", sigma_max=1.0))
    with torch.no_grad():  # the output layer starts at zero; randomise it so generated frames differ from real ones
        dyn.out.weight.normal_(0, 0.5)
        dyn.out.bias.normal_(0, 0.5)
    return flat, data, dyn, RolloutBank(data, rows, window, context, max_age, advance, seed)


def test_rollout_bank_rows_follow_real_play_with_the_models_own_frames(dataset):
    """Each row is a real window of one episode whose context stream is the model's own rollout under the
    true actions: a step slides it one frame, the new frame is `generate_next` from its last K frames; rows
    restart (real frames again) when their life or episode runs out, so every age up to max_age occurs."""
    flat, data, dyn, bank = _bank_setup(dataset)
    sigmas = [1.0, 0.0]
    first = np.asarray(flat.first, bool)
    assert torch.equal(bank.z, data.latents[bank.idx[:, None] + torch.arange(6)])  # fresh rows: real frames
    ages, restarts = set(), 0
    for _ in range(120):
        idx0, z0, age0 = bank.idx.clone(), bank.z.clone(), bank.age.clone()
        gen_state = bank.gen.get_state()
        bank.advance(dyn, sigmas)
        moved = bank.idx == idx0 + 1
        # what the sampler would have made: the same noise (the bank's generator), the last K frames, true actions
        g = torch.Generator().set_state(gen_state)
        noise = torch.randn(z0[:, 0].shape, generator=g)
        nxt = idx0 + 6
        want = dyn.generate_next(z0[:, -4:], data.actions[(nxt[:, None] - 4 + torch.arange(4)).clamp_min(0)],
                                 data.actions[nxt.clamp_max(data.n - 1)], noise=noise, sigmas=sigmas)
        for r in range(bank.rows):
            if moved[r]:
                assert bank.age[r] == age0[r] + 1
                assert torch.equal(bank.z[r, :-1], z0[r, 1:])
                assert torch.allclose(bank.z[r, -1], want[r], atol=1e-5)
                assert not torch.allclose(bank.z[r, -1], data.latents[nxt[r]])
            else:
                restarts += 1
                assert bank.age[r] == 0 and torch.equal(bank.z[r], data.latents[bank.idx[r] + torch.arange(6)])
            i = int(bank.idx[r])
            assert not first[i + 1:i + 6].any() and i + 6 <= len(first)  # one episode
            assert 0 <= int(bank.age[r]) <= 5
        ages |= set(bank.age.tolist())
    assert restarts > 10 and ages == set(range(6))
    b = bank.batch()
    assert torch.equal(b["z"], data.latents[bank.idx[:, None] + torch.arange(6)].float())
    assert torch.equal(b["rollout_z"], bank.z.float()) and b["actions"].shape[:2] == (3, 6)


def test_rollout_rows_are_the_context_stream_of_the_batch(dataset, monkeypatch):
    """dyn_objective hands the loss the bank's frames as the last rows' context and the true frames as targets,
    after the unroll changed the first rows (both at once: neither overwrites the other)."""
    from odyssey_gym.train import steps, trainer

    seen = {}
    monkeypatch.setattr(steps, "dyn_loss", lambda dyn, b, **kw: seen.update(b=b, kw=kw) or (torch.zeros(()), {}))
    z = torch.randn(5, 6, 4, 2, 2)
    roll = torch.randn(2, 6, 4, 2, 2)
    b = {"z": z, "actions": torch.rand(5, 6, 3), "unroll": 2, "rollout_z": roll}
    monkeypatch.setattr(steps, "unroll_context", lambda dyn, b, n, *a: {"context_z": torch.cat([b["z"][:n] + 1, b["z"][n:]])})
    trainer.dyn_objective(None, b, unroll_len=2, unroll_sigmas=[1.0, 0.0])
    ctx = seen["kw"]["context_z"]
    assert torch.equal(seen["b"]["z"], z) and torch.equal(ctx[:2], z[:2] + 1)
    assert torch.equal(ctx[2], z[2]) and torch.equal(ctx[3:], roll)


def test_training_with_a_rollout_bank_runs_and_checks_its_config(tmp_path, dataset, capsys):
    cfg = write_config(tmp_path / "c.yaml", rollout_rows=3, rollout_max_age=4, rollout_advance=2, unroll_batch_frac=0.25)
    out = tmp_path / "run"
    assert run_inproc(cfg, dataset, out) == 0
    err = capsys.readouterr().err
    assert "rollout bank: 3 rows, 2 frames a step, lives up to 4 frames" in err
    assert final_state(out)["phase"] == "done"
    from odyssey_gym.train.config import TrainConfig

    with pytest.raises(ConfigError, match="rollout_rows"):
        TrainConfig(dyn_batch_size=8, rollout_rows=9).validate()
    with pytest.raises(ConfigError, match="rollout_rows.*unrolled rows"):
        TrainConfig(dyn_batch_size=8, unroll_batch_frac=0.5, rollout_rows=5).validate()
    with pytest.raises(ConfigError, match="rollout_max_age"):
        TrainConfig(rollout_max_age=0).validate()


def test_a_checkpoint_from_before_a_train_field_existed_still_resumes():
    """A field the checkpoint's config lacks counts as its default: resuming with the default is the same run,
    resuming with another value is refused by name."""
    from odyssey_gym.train.config import TrainConfig, diff_configs

    old = from_dict(TINY).flat()
    del old["train.rollout_rows"], old["train.rollout_max_age"]
    assert diff_configs(old, from_dict(TINY).flat()) == []
    changed = from_dict({**TINY, "train": {**TINY["train"], "rollout_rows": 2}}).flat()
    assert diff_configs(old, changed) == ["train.rollout_rows"]
    assert diff_configs({**old, "train.dyn_lr": 1.0}, from_dict(TINY).flat()) == ["train.dyn_lr"]
    assert TrainConfig().rollout_rows == 0


def test_train_compile_compiles_the_dynamics_window_forwards_and_the_whole_autoencoder_objective(monkeypatch):
    """`train.compile` on the dynamics compiles its transformer (Inductor cannot compile its loss) and keeps the
    objective eager around it; a module without window forwards gets the whole objective compiled."""
    from odyssey_gym.model import WorldModel, WorldModelConfig
    from odyssey_gym.model.dynamics import Dynamics
    from odyssey_gym.train.trainer import Objective, compile_objective

    m = WorldModel(WorldModelConfig.tiny(frame_size=(32, 32), action_dim=3, world="test-world"))
    compiled = []
    monkeypatch.setattr(Dynamics, "compile_window_forwards", lambda self: compiled.append(self))
    monkeypatch.setattr(torch, "compile", lambda fn: ("compiled", fn))
    dyn_obj = Objective(m.dynamics, lambda mod, b: None)
    assert compile_objective(m.dynamics, dyn_obj) is dyn_obj and compiled == [m.dynamics]
    ae_obj = Objective(m.ae, lambda mod, b: None)
    assert compile_objective(m.ae, ae_obj) == ("compiled", ae_obj) and compiled == [m.dynamics]


def make_state_dataset(path: Path, episodes: int = 6, length: int = 40, seed: int = 0) -> Path:
    """As `make_dataset`, with HEALTH = the square's x position: a game variable the frames show."""
    from odyssey_gym.data.dataset import DatasetWriter, Episode

    rng = np.random.default_rng(seed)
    with DatasetWriter(path, "doom-takecover", fsync=False) as w:
        for e in range(episodes):
            x = int(rng.integers(8, 48))
            acts = rng.integers(0, 3, size=length)
            frames = np.zeros((length + 1, 64, 64, 3), np.uint8)
            health = np.zeros((length + 1, 1), np.float32)
            for i in range(length + 1):
                if i > 0:
                    x = int(np.clip(x + (-3 if acts[i - 1] == 0 else 3 if acts[i - 1] == 1 else 0), 0, 56))
                frames[i, 28:36, x:x + 8] = 255
                health[i] = 2 * x
            w.add_episode(Episode(frames, acts.astype(np.int64), np.zeros(length, np.float32), np.zeros(length, bool),
                                  np.arange(length) == length - 1, seed=seed * 100 + e, state=health))
    return path


def test_a_model_with_game_state_trains_its_state_head_and_exports_the_stats(tmp_path, dataset):
    """`model.state_variables` names the game variables: the trainer normalises the data's by their stats, the
    state head learns them (its error falls), and the export carries names and stats; a stateless model's
    weights grow the state layers under --init-from, and data without the variable is refused by name."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from odyssey_gym.model import WorldModel

    data = make_state_dataset(tmp_path / "state-data")
    cfg = write_config(tmp_path / "s.yaml", {**TINY, "model": {"preset": "tiny", "state_variables": ["HEALTH"]}},
                       dyn_steps=60, unroll_len=0)
    out, exp = tmp_path / "run", tmp_path / "export"
    assert run_inproc(cfg, data, out, "--export", exp) == 0
    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    mse = [e.value for e in ea.Scalars("dyn/state_mse")]
    assert len(mse) >= 3 and mse[-1] < 0.7 * mse[0], mse
    m = WorldModel.from_pretrained(exp)
    assert m.config.state_variables == ["HEALTH"] and m.config.dynamics.state_dim == 1
    assert 40 < m.config.state_mean[0] < 72 and m.config.state_std[0] > 5  # HEALTH = 2x, x in [0, 56]
    torch.testing.assert_close(m.denormalize_state(m.normalize_state(torch.tensor([[30.0]]))), torch.tensor([[30.0]]))

    # the stateless weights of an ordinary run grow the state layers (reward/termination rows kept)
    plain = tmp_path / "plain"
    assert run_inproc(write_config(tmp_path / "p.yaml", ae_steps=10, dyn_steps=4), dataset, tmp_path / "prun",
                      "--export", plain) == 0
    grown = tmp_path / "grown"
    assert run_inproc(write_config(tmp_path / "g.yaml", {**TINY, "model": {"preset": "tiny",
                                                                          "state_variables": ["HEALTH"]}},
                                   dyn_steps=4, unroll_len=0),
                      data, tmp_path / "grun", "--phase", "dyn", "--init-from", plain, "--export", grown) == 0
    src, dst = WorldModel.from_pretrained(plain), WorldModel.from_pretrained(grown)
    assert dst.dynamics.heads[-1].out_features == 3 and src.dynamics.heads[-1].out_features == 2

    # data that does not record the variable
    with pytest.raises(Exception, match="HEALTH"):
        from odyssey_gym.train.steps import data_state

        data_state(SimpleNamespace(state=None, state_variables=()), ["HEALTH"])


def test_energy_target_loss_trains_through_the_unroll_and_game_state(tmp_path, dataset):
    """`dynamics.target_loss: energy` runs the trainer end to end (the unroll on the model's own samples, a model
    with game state), logs the two samples' spread, and the export keeps the setting."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from odyssey_gym.model import WorldModel

    data = make_state_dataset(tmp_path / "state-data")
    model = {"preset": "tiny", "state_variables": ["HEALTH"],
             "dynamics": {"target_loss": "energy", "energy_lambda": 0.8, "start_from": "previous", "sigma_max": 1.0}}
    cfg = write_config(tmp_path / "e.yaml", {**TINY, "model": model}, dyn_steps=12, unroll_start_frac=0.5)
    out, exp = tmp_path / "run", tmp_path / "export"
    assert run_inproc(cfg, data, out, "--export", exp) == 0
    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    spread = [e.value for e in ea.Scalars("dyn/spread")]
    assert spread and all(s > 0 for s in spread), spread
    m = WorldModel.from_pretrained(exp)
    assert m.config.dynamics.target_loss == "energy" and m.config.dynamics.energy_lambda == 0.8


def test_decoder_phase_trains_only_the_decoder_and_logs_the_leg(dataset, tmp_path, capsys):
    """`--phase decoder` fine-tunes the frame decoder of --init-from weights: encoder, latent statistics and dynamics
    come back bit for bit, the decoder moved and reconstructs better, and the campaign log gains a decoder leg."""
    from odyssey_gym.model import WorldModel, frames_to_tensor
    from odyssey_gym.train.campaign import load_summary

    a, b = tmp_path / "w1", tmp_path / "w2"
    assert run_inproc(write_config(tmp_path / "c.yaml", ae_steps=10), dataset, tmp_path / "r1", "--export", a) == 0
    assert run_inproc(write_config(tmp_path / "c2.yaml", ae_steps=30, ae_lr=2e-3), dataset, tmp_path / "r2",
                      "--phase", "decoder", "--init-from", a, "--export", b) == 0
    wa, wb = WorldModel.from_pretrained(a), WorldModel.from_pretrained(b)
    sa, sb = wa.state_dict(), wb.state_dict()
    for k in sa:
        if not k.startswith("ae.decoder."):
            assert torch.equal(sa[k], sb[k]), k
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("ae.decoder."))
    assert wa.config.latent_mean == wb.config.latent_mean and wa.config.latent_std == wb.config.latent_std
    from odyssey_gym.data.dataset import open_dataset

    frames = torch.from_numpy(open_dataset(dataset).flat().frames[:64])
    with torch.no_grad():
        err = [(m.decode_latents(m.encode_frames(frames)) - frames_to_tensor(frames)).abs().mean() for m in (wa, wb)]
    assert err[1] < err[0]
    s = load_summary(b)
    assert s["legs"][-1]["steps"] == {"decoder": 30} and s["legs"][-1]["recipe"]["phase"] == "decoder"
    assert s["legs"][-1]["decoder_steps_planned"] == 30
    assert s["totals"]["steps"]["decoder"] == 30 and s["totals"]["steps"]["dyn"] == s["legs"][0]["steps"]["dyn"]
    capsys.readouterr()
    assert run_inproc(write_config(tmp_path / "c3.yaml"), dataset, tmp_path / "r3", "--phase", "decoder") != 0
    assert "--phase decoder needs" in capsys.readouterr().err

    # half of each batch decoded from the dynamics' own one-step predictions: the same parts frozen, and the
    # decoder's error on those predictions falls
    c = tmp_path / "w3"
    assert run_inproc(write_config(tmp_path / "c4.yaml", ae_steps=30, ae_lr=2e-3, decoder_predicted_frac=0.5),
                      dataset, tmp_path / "r4", "--phase", "decoder", "--init-from", a, "--export", c) == 0
    sc = WorldModel.from_pretrained(c).state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa if not k.startswith("ae.decoder."))
    out = "".join(capsys.readouterr())
    pred = [float(line.split("pred_psnr=")[1].split()[0]) for line in out.splitlines() if "pred_psnr=" in line]
    assert len(pred) >= 2 and pred[-1] > pred[0], out[-2000:]
    with pytest.raises(Exception, match="decoder_predicted_frac"):
        from odyssey_gym.train.config import load_config

        load_config(write_config(tmp_path / "c5.yaml", decoder_predicted_frac=1.5))

    # cut at step 10 (as a time limit would) and resumed: the same EMA decoder as the uninterrupted run
    cfg6 = write_config(tmp_path / "c6.yaml", ae_steps=20, ae_lr=2e-3, decoder_predicted_frac=0.5, save_every_steps=5)
    full, cut = tmp_path / "w6", tmp_path / "w7"
    assert run_inproc(cfg6, dataset, tmp_path / "r6", "--phase", "decoder", "--init-from", a, "--export", full) == 0
    assert run_inproc(cfg6, dataset, tmp_path / "r7", "--phase", "decoder", "--init-from", a, "--max-steps", 10,
                      "--export", cut) == 0
    assert load_summary(cut)["legs"][-1]["steps"] == {"decoder": 10}
    assert run_inproc(cfg6, dataset, tmp_path / "r7", "--phase", "decoder", "--init-from", a, "--resume",
                      "--export", cut) == 0
    sf, sc = WorldModel.from_pretrained(full).state_dict(), WorldModel.from_pretrained(cut).state_dict()
    assert all(torch.equal(sf[k], sc[k]) for k in sf), "a resumed decoder run exports what an uninterrupted one does"
    capsys.readouterr()
    assert run_inproc(cfg6, dataset, tmp_path / "r7", "--phase", "dyn", "--init-from", a, "--resume") != 0
    assert "decoder-only run" in capsys.readouterr().err


def test_adversarial_decoder_leg_freezes_the_rest_and_resumes_the_same_game(dataset, tmp_path, capsys):
    """`decoder_adv_weight`: the decoder phase also plays against a patch discriminator. Encoder and dynamics come
    back bit for bit, the discriminator never reaches the exported weights, the log shows both sides, and a leg cut
    and resumed exports what an uninterrupted one does (the discriminator and its optimiser are in the checkpoint)."""
    from odyssey_gym.model import WorldModel

    a = tmp_path / "w1"
    assert run_inproc(write_config(tmp_path / "c.yaml", ae_steps=10), dataset, tmp_path / "r1", "--export", a) == 0
    cfg = write_config(tmp_path / "c2.yaml", ae_steps=12, ae_lr=2e-3, decoder_predicted_frac=0.25,
                       decoder_adv_weight=0.1, decoder_adv_start=4, disc_channels=8, save_every_steps=3,
                       log_every_steps=2)
    full, cut = tmp_path / "w2", tmp_path / "w3"
    capsys.readouterr()
    assert run_inproc(cfg, dataset, tmp_path / "r2", "--phase", "decoder", "--init-from", a, "--export", full) == 0
    log = capsys.readouterr().err
    assert "adv_d=" in log and "adv_g=" in log and "pred_psnr=" in log, log[-2000:]
    sa, sf = WorldModel.from_pretrained(a).state_dict(), WorldModel.from_pretrained(full).state_dict()
    assert set(sa) == set(sf), "the discriminator is a training aid: it is never exported"
    assert all(torch.equal(sa[k], sf[k]) for k in sa if not k.startswith("ae.decoder."))
    assert any(not torch.equal(sa[k], sf[k]) for k in sa if k.startswith("ae.decoder."))
    assert final_state(tmp_path / "r2")["adversary"] is None  # the finished phase keeps no optimiser state

    assert run_inproc(cfg, dataset, tmp_path / "r3", "--phase", "decoder", "--init-from", a, "--max-steps", 6,
                      "--export", cut) == 0
    saved = final_state(tmp_path / "r3")["adversary"]
    assert saved is not None and saved["updates"] == 6
    assert run_inproc(cfg, dataset, tmp_path / "r3", "--phase", "decoder", "--init-from", a, "--resume",
                      "--export", cut) == 0
    sc = WorldModel.from_pretrained(cut).state_dict()
    assert all(torch.equal(sf[k], sc[k]) for k in sf), "a resumed adversarial leg exports what an uninterrupted one does"

    # real frames only (no predicted latents) also works with the adversary
    capsys.readouterr()
    assert run_inproc(write_config(tmp_path / "c3.yaml", ae_steps=4, decoder_adv_weight=0.1, decoder_adv_start=0,
                                   disc_channels=8, log_every_steps=2),
                      dataset, tmp_path / "r4", "--phase", "decoder", "--init-from", a) == 0
    log = capsys.readouterr().err
    assert "adv_d=" in log and "pred_psnr=" not in log
    from odyssey_gym.train.config import load_config

    for bad in ({"decoder_adv_weight": -0.1}, {"disc_channels": 0}, {"disc_lr": 0.0}):
        with pytest.raises(Exception, match=next(iter(bad))):
            load_config(write_config(tmp_path / "c5.yaml", **bad))


def test_adversary_tells_real_frames_from_blurred_ones_and_waits_for_its_start():
    """The discriminator learns what separates sharp frames from their blur (the decoder's failure it is there to
    punish), and its term for the decoder is zero until it has made `start` updates."""
    import contextlib

    import torch.nn.functional as F

    from odyssey_gym.train.adversary import Adversary

    torch.manual_seed(0)
    real = (torch.rand(16, 3, 32, 32) > 0.5).float() * 2 - 1  # sharp: every pixel black or white
    blurred = F.avg_pool2d(F.pad(real, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    adv = Adversary(channels=8, lr=1e-3, betas=(0.5, 0.9), weight=0.5, start=3, device=torch.device("cpu"),
                    amp=contextlib.nullcontext(), seed=1)
    out = blurred.clone().requires_grad_(True)  # stands in for the decoder's output layer
    recon = (out - real).abs().mean()
    term, m = adv.generator_loss(out, recon, out)
    assert float(term.detach()) == 0.0 and torch.isfinite(m["adv_g"]) and "adv_w" not in m
    losses = [float(adv.update(real, blurred)["adv_d"]) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    with torch.no_grad():
        assert adv.disc(real).mean() > adv.disc(blurred).mean()
    term, m = adv.generator_loss(out, recon, out)
    g_rec = torch.autograd.grad(recon, out, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(-adv.disc(out).mean(), out)[0].norm()
    assert float(m["adv_w"]) == pytest.approx(float(g_rec / (g_adv + 1e-4)), rel=1e-4)
    assert float(term.detach()) == pytest.approx(0.5 * float(m["adv_w"]) * float(m["adv_g"]), rel=1e-5)
    assert not any(p.requires_grad for p in adv.disc.parameters()), "the decoder's backward must not touch it"
    with pytest.raises(ValueError, match="channels"):
        Adversary(channels=0, lr=1e-3, betas=(0.5, 0.9), weight=0.5, start=0, device=torch.device("cpu"),
                  amp=contextlib.nullcontext(), seed=1)
