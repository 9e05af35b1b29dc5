"""Fidelity of a world model against held-out real episodes (docs/ARCHITECTURE.md, "How we measure").

Teacher-forced at horizon h: the K real frames before frame t+h, one model step, compared with the
real frame (so it is the one-step error at the same positions as the open-loop numbers).
Open-loop at horizon h: K real frames, then h model steps on the true actions, each step
conditioned on the model's own frames. The baseline copies the last real frame it was given.
Each is drawn twice (the sampler's noise differs from reset to reset): PSNR and SSIM score the first draw, the
energy score both (see `metrics.energy_score`: a blur cannot pass for it).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
from tqdm import tqdm

from .metrics import PSNR_CAP_DB, energy_score, mean_finite_db, psnr, rms_distance, ssim


def _gather(flat, idx: np.ndarray, device):
    """Windows of frames/actions from FlatData by a (B, L) index array, as device tensors."""
    frames = torch.from_numpy(flat.frames[idx]).to(device)
    actions = torch.from_numpy(flat.actions[idx]).to(device)
    return frames, actions


def _env_actions(spec, vectors: torch.Tensor):
    """Model action vectors (B, A) -> the env's raw actions (what a user passes to `step`)."""
    v = vectors.float()
    if spec.action_kind == "discrete":
        return v.argmax(-1)
    return (v > 0.5).to(torch.int8)


def blur2(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> the same frames blurred by a Gaussian of sigma 2 px: the yardstick a generated
    frame must beat (a blur can score a fair PSNR; it must not pass as a good prediction)."""
    import torch.nn.functional as F

    x = frames.movedim(-1, -3).float()
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    r = torch.arange(-6, 7, device=x.device, dtype=torch.float32)
    k = torch.exp(-(r**2) / (2 * 2.0**2))
    k = k / k.sum()
    C = x.shape[1]
    x = F.conv2d(F.pad(x, (6, 6, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    x = F.conv2d(F.pad(x, (0, 0, 6, 6), mode="replicate"), k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)
    return x.round().clamp(0, 255).to(torch.uint8).reshape(*lead, *x.shape[1:]).movedim(-3, -1)


def gap_standard_error(model_db: torch.Tensor, copy_db: torch.Tensor, cap: float = PSNR_CAP_DB) -> float:
    """Standard error of the mean gap (model minus copy-last, dB) over windows, from the per-window differences.

    Why: the windows of one recording are a sample, and another draw moves the gap; the same windows pair model and
    copy-last, so the differences, not the two means, carry the uncertainty. NaN with fewer than two windows."""
    d = model_db.double().clamp(max=cap) - copy_db.double().clamp(max=cap)
    return float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else math.nan


@torch.no_grad()
def horizon_fidelity(env, flat, context: int, horizons=(1, 4, 16, 64), windows: int = 64, seed: int = 0) -> dict:
    """PSNR/SSIM and the energy score per horizon, teacher-forced and open-loop, beside copy-last-frame, through the
    public env API.

    `env` is a `WorldModelVectorEnv` (torch backend, autoreset disabled, no time limit inside a window): each
    window is `reset(options={"context": K real frames, "actions": the actions into them})`, then `step(true
    action)` as a user would call it. Also reports the gap to copy-last and the PSNR of the real frame blurred
    by a 2-px Gaussian (a model that scores below that blur is not yet predicting detail).
    """
    device = env.device
    B = env.num_envs
    spec = env.world
    rng = np.random.default_rng(seed)
    out: dict[str, dict] = {}
    env.reset(seed=seed)
    # the slowest part of an eval on a CPU (four context prefills and 2 (h + 1) steps a horizon): show how far it is
    bar = tqdm(total=sum(2 * (h + 1) for h in horizons), desc=f"{spec.name} fidelity", unit="step", file=sys.stderr,
               mininterval=2, dynamic_ncols=True)
    for h in horizons:
        starts = flat.pick_windows(context + h, windows, rng)
        if len(starts) == 0:
            out[str(h)] = {"windows": 0}
            continue
        starts = starts[:B]
        b = len(starts)
        idx = starts[:, None] + np.arange(context + h)[None, :]
        frames, actions = _gather(flat, idx, device)

        def pad(x):  # the env has a fixed batch; fill unused rows with row 0
            if x.shape[0] == B:
                return x
            reps = torch.zeros(B - x.shape[0], dtype=torch.long, device=device)
            return torch.cat([x, x[reps]], 0)

        def open_loop():  # real start, true actions, own frames
            env.reset(options={"context": pad(frames[:, :context]), "actions": pad(actions[:, :context])})
            for i in range(h):
                gen, *_ = env.step(_env_actions(spec, pad(actions[:, context + i])))
                bar.update(1)
            return torch.as_tensor(gen).to(device)[:b]

        def teacher_forced():  # real context right before the target
            env.reset(options={"context": pad(frames[:, h - 1 : context + h - 1]),
                               "actions": pad(actions[:, h - 1 : context + h - 1])})
            gen, *_ = env.step(_env_actions(spec, pad(actions[:, context + h - 1])))
            bar.update(1)
            return torch.as_tensor(gen).to(device)[:b]

        target = frames[:, context + h - 1]
        ol, tf = open_loop(), teacher_forced()
        ol2, tf2 = open_loop(), teacher_forced()  # second draws, for the energy score
        ol_copy, tf_copy = frames[:, context - 1], frames[:, context + h - 2]
        ol_energy, ol_spread = energy_score(ol, ol2, target)
        tf_energy, tf_spread = energy_score(tf, tf2, target)
        tf_db, tf_copy_db = psnr(tf, target), psnr(tf_copy, target)  # per window: the means and the gaps' errors
        ol_db, ol_copy_db = psnr(ol, target), psnr(ol_copy, target)
        r = {
            "windows": b,
            "teacher_forced_psnr": mean_finite_db(tf_db),
            "teacher_forced_ssim": float(ssim(tf, target).mean()),
            "teacher_forced_copy_last_psnr": mean_finite_db(tf_copy_db),
            "teacher_forced_copy_last_ssim": float(ssim(tf_copy, target).mean()),
            "open_loop_psnr": mean_finite_db(ol_db),
            "open_loop_ssim": float(ssim(ol, target).mean()),
            "open_loop_copy_last_psnr": mean_finite_db(ol_copy_db),
            "open_loop_copy_last_ssim": float(ssim(ol_copy, target).mean()),
            "blurred_real_psnr": mean_finite_db(psnr(blur2(target), target)),
            "teacher_forced_energy": float(tf_energy.mean()),
            "teacher_forced_spread": float(tf_spread.mean()),
            "teacher_forced_copy_last_energy": float(rms_distance(tf_copy, target).mean()),
            "open_loop_energy": float(ol_energy.mean()),
            "open_loop_spread": float(ol_spread.mean()),
            "open_loop_copy_last_energy": float(rms_distance(ol_copy, target).mean()),
            "blurred_real_energy": float(rms_distance(blur2(target), target).mean()),
        }
        r["teacher_forced_gap_db"] = r["teacher_forced_psnr"] - r["teacher_forced_copy_last_psnr"]
        r["open_loop_gap_db"] = r["open_loop_psnr"] - r["open_loop_copy_last_psnr"]
        r["teacher_forced_gap_se_db"] = gap_standard_error(tf_db, tf_copy_db)
        r["open_loop_gap_se_db"] = gap_standard_error(ol_db, ol_copy_db)
        out[str(h)] = r
    bar.close()
    return out


def rank_auc(positives: torch.Tensor, negatives: torch.Tensor) -> float:
    """The chance that a random positive scores above a random negative (ties count half): the area under the ROC
    curve. Why: a sampled termination is only as good as how its probability orders real deaths above other steps,
    which a recall at one threshold does not show. NaN without both kinds."""
    if positives.numel() == 0 or negatives.numel() == 0:
        return float("nan")
    p, n = positives.double()[:, None], negatives.double()[None, :]
    return float(((p > n).double() + 0.5 * (p == n).double()).mean())


@torch.no_grad()
def head_accuracy(sampler, flat, context: int, windows: int = 256, seed: int = 0) -> dict:
    """Reward and termination heads after one teacher-forced step, against the recorded signals.

    Half the windows end on a terminal frame (when the data has any), so termination recall is measured
    on real deaths rather than on the rare ones a random draw would hit; that is why it picks its windows itself
    and not with `FlatData.pick_windows`, whose draw is uniform over all windows. A model with game state starts
    from the recorded state of the context (so a death by HEALTH <= 0 is the sampler's `terminal_state` rule seeing
    the modelled HEALTH) and its state after the step is scored per variable (`state_mae`).
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
    names = list(sampler.state_names)
    have = list(getattr(flat, "state_variables", ()) or ())
    with_state = bool(names) and flat.state is not None and all(n in have for n in names)
    cols = [have.index(n) for n in names] if with_state else []
    preds_r, preds_t, probs, true_r, true_t, state_err = [], [], [], [], [], []
    bs = sampler.B
    mask = torch.ones(bs, dtype=torch.bool, device=device)
    for i in range(0, len(chosen), bs):
        part = chosen[i : i + bs]
        if len(part) < bs:
            part = np.concatenate([part, np.repeat(part[:1], bs - len(part))])
        idx = part[:, None] + np.arange(context + 1)[None, :]
        frames, actions = _gather(flat, idx, device)
        state = torch.from_numpy(flat.state[idx][..., cols]).to(device) if with_state else None
        kw = {} if state is None else {"state": state[:, :context]}
        sampler.reset(frames[:, :context], actions[:, :context], mask, **kw)
        _, r, t = sampler.step(actions[:, context])
        take = min(bs, len(chosen) - i)
        if with_state:
            state_err.append((sampler.game_state()[:take] - state[:take, context].float()).abs().cpu())
        preds_r.append(r[:take].float().cpu())
        preds_t.append(t[:take].bool().cpu())
        probs.append(sampler.termination_probability()[:take].float().cpu())
        true_r.append(torch.from_numpy(flat.rewards[idx[:take, context]]).float())
        true_t.append(torch.from_numpy(flat.terminated[idx[:take, context]]).bool())
    pr, pt, pp, tr, tt = (torch.cat(x) for x in (preds_r, preds_t, probs, true_r, true_t))
    recall = float(pt[tt].float().mean()) if tt.any() else float("nan")
    fpr = float(pt[~tt].float().mean()) if (~tt).any() else float("nan")
    # the windows over-sample deaths; precision is given at the data's own death rate, from recall and the
    # false-positive rate: what a policy in the dream meets
    rate = float(flat.terminated[ends].mean())
    hits, false = recall * rate, fpr * (1.0 - rate)
    return {
        "transitions": int(len(pr)),
        "terminal_transitions": int(tt.sum()),
        "reward_mae": float((pr - tr).abs().mean()),
        "reward_accuracy": float(((pr - tr).abs() < 0.5).float().mean()),
        "termination_accuracy": float((pt == tt).float().mean()),
        "termination_recall": recall,
        "termination_false_positive_rate": fpr,
        "death_rate": rate,
        "termination_precision": hits / (hits + false) if hits + false > 0 else float("nan"),
        "termination_auc": rank_auc(pp[tt], pp[~tt]),
        "termination_probability_at_deaths": float(pp[tt].mean()) if tt.any() else float("nan"),
        "termination_probability_elsewhere": float(pp[~tt].mean()) if (~tt).any() else float("nan"),
        **({"state_mae": dict(zip(names, torch.cat(state_err).mean(0).tolist()))} if state_err else {}),
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
