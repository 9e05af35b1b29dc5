"""Where the termination head should read, on a toy world whose deaths are recorded the way ViZDoom records them.

    python benchmarks/termination_toy.py --steps 600

A bright square on a 64x64 frame moves left or right with the action (the third action holds it). A step that
pushes it against a wall ends the episode with probability `--hazard`, and the recorded last frame is a copy of
the frame before it: the engine shows nothing new at the fatal step, as in take_cover, where all 137 deaths of a
held-out recording are such copies. A clock dot moves every living step, so only a death repeats a frame, as in
take_cover's busy screens. A death can be foreseen (square at the wall, action into it), not seen coming for sure.

Two tiny world models are trained the same way (`odyssey-gym train`, teacher forcing from the previous frame),
one with `dynamics.term_from: clean` (the head reads the finished frame) and one with `start` (the head reads the
first sampling pass, from the previous frame and the action), then scored through the sampler on held-out toy
episodes by `eval.fidelity.head_accuracy`: how well the head's probability ranks real deaths above other steps (AUC),
and its mean at deaths and elsewhere.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

SIZE, MOVE, CLOCK = 8, 4, 4  # the square's side, its move per step and the clock dot's step, in pixels


def draw(x: int, t: int) -> np.ndarray:
    """The square at x, and a clock dot that advances every step (no living step repeats a frame)."""
    f = np.zeros((64, 64, 3), np.uint8)
    f[..., 2] = 40
    f[28:28 + SIZE, x:x + SIZE] = 255
    c = (CLOCK * t) % 64
    f[2:6, c:c + CLOCK, 1] = 255
    return f


def toy_dataset(path: Path, episodes: int, max_len: int, hazard: float, seed: int) -> Path:
    """Episodes of the toy world (doom-takecover's shapes): deaths only on a push against a wall, with probability
    `hazard`, the terminal frame a copy of the one before."""
    from odyssey_gym.data.dataset import DatasetWriter, Episode

    rng = np.random.default_rng(seed)
    with DatasetWriter(path, "doom-takecover", fsync=False) as w:
        for e in range(episodes):
            x = int(rng.integers(0, 64 - SIZE))
            frames, acts, dead = [], [], False
            frames.append(draw(x, 0))
            a_prev = int(rng.integers(0, 3))
            while len(acts) < max_len and not dead:
                a = a_prev if rng.random() < 0.7 else int(rng.integers(0, 3))  # held keys, like a player
                a_prev = a
                step = -MOVE if a == 0 else MOVE if a == 1 else 0
                pushes = (step < 0 and x <= 0) or (step > 0 and x >= 64 - SIZE)
                acts.append(a)
                if pushes and rng.random() < hazard:
                    dead = True
                    frames.append(frames[-1].copy())  # the engine's last frame: nothing new
                else:
                    x = int(np.clip(x + step, 0, 64 - SIZE))
                    frames.append(draw(x, len(acts)))
            n = len(acts)
            term = np.zeros(n, bool)
            term[-1] = dead
            w.add_episode(Episode(np.stack(frames), np.asarray(acts, np.int64), np.ones(n, np.float32), term,
                                  ~term & (np.arange(n) == n - 1), seed=seed * 1000 + e,
                                  state=np.full((n + 1, 1), 100, np.float32)))  # the world records HEALTH
    return path


def train(cfg: dict, data: Path, out: Path) -> Path:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "odyssey_gym.cli", "train", "--config", str(path), "--data", str(data),
           "--out", str(out), "--export", str(out / "export"), "--device", "cpu", "--no-progress"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out / "export"


def main(argv=None) -> list[tuple[str, dict]]:
    """Prints the table; returns [(term_from, `head_accuracy` report)] for both heads."""
    import torch

    from odyssey_gym.data.dataset import open_dataset
    from odyssey_gym.eval.fidelity import head_accuracy
    from odyssey_gym.model import Sampler, WorldModel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="dynamics steps per model")
    p.add_argument("--ae-steps", type=int, default=150, help="autoencoder steps per model")
    p.add_argument("--episodes", type=int, default=120, help="training episodes (held-out: a third as many)")
    p.add_argument("--hazard", type=float, default=0.5, help="probability that a push against a wall ends it")
    p.add_argument("--windows", type=int, default=256, help="held-out transitions scored (half end in a death)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.steps < 1 or a.ae_steps < 1 or a.episodes < 2 or not 0 < a.hazard <= 1:
        p.error("--steps >= 1, --ae-steps >= 1, --episodes >= 2 and 0 < --hazard <= 1")
    torch.manual_seed(a.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_data = toy_dataset(tmp / "train", a.episodes, 60, a.hazard, a.seed)
        held = toy_dataset(tmp / "held", max(2, a.episodes // 3), 60, a.hazard, a.seed + 1)
        flat = open_dataset(held).flat()
        for term_from in ("clean", "start"):
            cfg = {"model": {"preset": "tiny", "sampling_steps": 1, "dynamics": {
                       "objective": "teacher_forcing", "start_from": "previous", "sigma_max": 1.0, "p_sigma_max": 0.5,
                       "term_pos_weight": 5.0, "term_from": term_from}},
                   "train": {"seed": a.seed, "bf16": False, "compile": False, "ae_steps": a.ae_steps, "ae_batch_size": 16,
                             "ae_lr": 2e-3, "ae_warmup_steps": 10, "dyn_steps": a.steps, "dyn_batch_size": 16,
                             "dyn_window": 6, "dyn_lr": 1e-3, "dyn_warmup_steps": 20, "unroll_len": 0,
                             "log_every_steps": 100, "save_every_steps": 0, "save_every_seconds": 0,
                             "start_bank_size": 4}}
            weights = train(cfg, train_data, tmp / f"run-{term_from}")
            model = WorldModel.from_pretrained(weights)
            sampler = Sampler(model, 16, "cpu", termination="threshold")
            h = head_accuracy(sampler, flat, model.config.context_frames, windows=a.windows, seed=a.seed)
            rows.append((term_from, h))
    print(f"## Termination head on the toy world (hazard {a.hazard} per push against a wall, {a.steps} dynamics steps)\n")
    print("| term_from | AUC | mean probability at deaths | elsewhere | recall (logit > 0) | deaths scored |")
    print("|---|---|---|---|---|---|")
    for term_from, h in rows:
        print(f"| {term_from} | {h['termination_auc']:.3f} | {h['termination_probability_at_deaths']:.4f} | "
              f"{h['termination_probability_elsewhere']:.4f} | {h['termination_recall']:.2f} | "
              f"{h['terminal_transitions']} |")
    return rows


if __name__ == "__main__":
    main()
