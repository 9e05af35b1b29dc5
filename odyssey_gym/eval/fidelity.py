"""Fidelity of a world model against held-out real episodes (DESIGN.md section 5).

Teacher-forced at horizon h: the K real frames before frame t+h, one model step, compared with the
real frame (so it is the one-step error at the same positions as the open-loop numbers).
Open-loop at horizon h: K real frames, then h model steps on the true actions, each step
conditioned on the model's own frames. The baseline copies the last real frame it was given.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import mean_finite_db, psnr, ssim


def _gather(flat, idx: np.ndarray, device):
    """Windows of frames/actions from FlatData by a (B, L) index array, as device tensors."""
    frames = torch.from_numpy(flat.frames[idx]).to(device)
    actions = torch.from_numpy(flat.actions[idx]).to(device)
    return frames, actions


def pick_windows(flat, length: int, count: int, rng: np.random.Generator) -> np.ndarray | None:
    """Start indices of `count` windows of `length` frames inside single episodes (None if none fit)."""
    starts = flat.window_starts(length)
    if len(starts) == 0:
        return None
    return rng.choice(starts, size=min(count, len(starts)), replace=len(starts) < count)


@torch.no_grad()
def horizon_fidelity(sampler, flat, context: int, horizons=(1, 4, 16, 64), windows: int = 64, seed: int = 0) -> dict:
    """PSNR/SSIM per horizon, teacher-forced and open-loop, beside copy-last-frame."""
    device = sampler.device
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    for h in horizons:
        starts = pick_windows(flat, context + h, windows, rng)
        if starts is None:
            out[str(h)] = {"windows": 0}
            continue
        starts = starts[: sampler.B]
        b = len(starts)
        idx = starts[:, None] + np.arange(context + h)[None, :]
        frames, actions = _gather(flat, idx, device)
        mask = torch.ones(sampler.B, dtype=torch.bool, device=device)

        def pad(x):  # the sampler has a fixed batch; fill unused rows with row 0
            if x.shape[0] == sampler.B:
                return x
            reps = torch.zeros(sampler.B - x.shape[0], dtype=torch.long, device=device)
            return torch.cat([x, x[reps]], 0)

        # open loop: real start, true actions, own frames
        sampler.reset(pad(frames[:, :context]), pad(actions[:, :context]), mask)
        for i in range(h):
            gen, _, _ = sampler.step(pad(actions[:, context + i]))
        target = frames[:, context + h - 1]
        ol = gen[:b]
        ol_copy = frames[:, context - 1]
        # teacher forced: real context right before the target
        sampler.reset(pad(frames[:, h - 1 : context + h - 1]), pad(actions[:, h - 1 : context + h - 1]), mask)
        tf, _, _ = sampler.step(pad(actions[:, context + h - 1]))
        tf = tf[:b]
        tf_copy = frames[:, context + h - 2]
        out[str(h)] = {
            "windows": b,
            "teacher_forced_psnr": mean_finite_db(psnr(tf, target)),
            "teacher_forced_ssim": float(ssim(tf, target).mean()),
            "teacher_forced_copy_last_psnr": mean_finite_db(psnr(tf_copy, target)),
            "teacher_forced_copy_last_ssim": float(ssim(tf_copy, target).mean()),
            "open_loop_psnr": mean_finite_db(psnr(ol, target)),
            "open_loop_ssim": float(ssim(ol, target).mean()),
            "open_loop_copy_last_psnr": mean_finite_db(psnr(ol_copy, target)),
            "open_loop_copy_last_ssim": float(ssim(ol_copy, target).mean()),
        }
    return out


@torch.no_grad()
def head_accuracy(sampler, flat, context: int, windows: int = 256, seed: int = 0) -> dict:
    """Reward and termination heads after one teacher-forced step, against the recorded signals.

    Half the windows end on a terminal frame (when the data has any), so termination recall is measured
    on real deaths rather than on the rare ones a random draw would hit.
    """
    device = sampler.device
    rng = np.random.default_rng(seed)
    starts = flat.window_starts(context + 1)
    if len(starts) == 0:
        return {"transitions": 0}
    ends = starts + context
    term_starts = starts[flat.terminated[ends]]
    n_term = min(len(term_starts), windows // 2)
    chosen = np.concatenate(
        [rng.choice(term_starts, n_term, replace=False) if n_term else np.zeros(0, np.int64),
         rng.choice(starts, windows - n_term, replace=len(starts) < windows - n_term)]
    )
    preds_r, preds_t, true_r, true_t = [], [], [], []
    bs = sampler.B
    mask = torch.ones(bs, dtype=torch.bool, device=device)
    for i in range(0, len(chosen), bs):
        part = chosen[i : i + bs]
        if len(part) < bs:
            part = np.concatenate([part, np.repeat(part[:1], bs - len(part))])
        idx = part[:, None] + np.arange(context + 1)[None, :]
        frames, actions = _gather(flat, idx, device)
        sampler.reset(frames[:, :context], actions[:, :context], mask)
        _, r, t = sampler.step(actions[:, context])
        take = min(bs, len(chosen) - i)
        preds_r.append(r[:take].float().cpu())
        preds_t.append(t[:take].bool().cpu())
        true_r.append(torch.from_numpy(flat.rewards[idx[:take, context]]).float())
        true_t.append(torch.from_numpy(flat.terminated[idx[:take, context]]).bool())
    pr, pt, tr, tt = (torch.cat(x) for x in (preds_r, preds_t, true_r, true_t))
    return {
        "transitions": int(len(pr)),
        "terminal_transitions": int(tt.sum()),
        "reward_mae": float((pr - tr).abs().mean()),
        "reward_accuracy": float(((pr - tr).abs() < 0.5).float().mean()),
        "termination_accuracy": float((pt == tt).float().mean()),
        "termination_recall": float(pt[tt].float().mean()) if tt.any() else float("nan"),
        "termination_false_positive_rate": float(pt[~tt].float().mean()) if (~tt).any() else float("nan"),
    }


@torch.no_grad()
def autoencoder_psnr(model, flat, frames: int = 512, seed: int = 0, batch: int = 64) -> dict:
    """Reconstruction PSNR/SSIM of the frame autoencoder: the ceiling for every number above."""
    from ..model import frames_to_tensor, tensor_to_frames

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(flat.frames), size=min(frames, len(flat.frames)), replace=False)
    device = next(model.parameters()).device
    ps, ss = [], []
    for i in range(0, len(idx), batch):
        x = torch.from_numpy(flat.frames[idx[i : i + batch]]).to(device)
        rec = tensor_to_frames(model.ae.decode(model.ae.encode(frames_to_tensor(x).to(next(model.parameters()).dtype))))
        ps.append(psnr(rec, x).cpu())
        ss.append(ssim(rec, x).cpu())
    return {"frames": int(len(idx)), "psnr": mean_finite_db(torch.cat(ps)), "ssim": float(torch.cat(ss).mean())}
