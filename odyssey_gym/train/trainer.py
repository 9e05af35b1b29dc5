"""The training loop, top to bottom: autoencoder phase, encode once, dynamics phase (+ unroll), export.

Run it with `odyssey-gym train` (see `cli.py`), single-process or under `torchrun`.
Every hyperparameter lives in `TrainConfig` (YAML `train:`); the model's own config in YAML `model:`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from . import steps
from .config import RunConfig
from .dist import DistInfo, any_flag, barrier, gather_objects, init_distributed, mean_metrics, shutdown_distributed
from .resident import ResidentData


@dataclass
class TrainArgs:
    """What the command line adds to the YAML config."""

    data: list[str]
    out: str
    resume: bool = False
    max_minutes: float | None = None
    phase: str = "all"  # ae | dyn | all
    init_from: str | None = None
    export: str | None = None
    device: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class TrainingError(RuntimeError):
    pass


class Objective(torch.nn.Module):
    """`forward(batch, step) -> (loss, metrics)` = `loss_fn(module, batch, step)`: the unit DDP and
    torch.compile wrap, so model methods like `Dynamics.loss` run inside a DDP forward."""

    def __init__(self, module: torch.nn.Module, loss_fn):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, batch, step: int):
        return self.loss_fn(self.module, batch, step)


# ============================================================================ small pieces


def lr_lambda(warmup: int, total: int, schedule: str, min_frac: float):
    """Linear warmup, then cosine (or constant) to min_frac of the peak LR by `total` steps."""

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * p))

    return f


@torch.no_grad()
def ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), live.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema.buffers(), live.buffers()):
        e.copy_(b)


def ema_decay_at(step: int, cfg) -> float:
    if cfg.ema_warmup:
        return min(cfg.ema_decay, (1 + step) / (10 + step))
    return cfg.ema_decay


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_logger(run_dir: Path, info: DistInfo):
    """Rank-0 printing + TensorBoard scalars when tensorboard is importable."""
    writer = None
    if info.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))
        except Exception:  # tensorboard is optional
            writer = None

    def log(msg: str) -> None:
        if info.is_main:
            print(msg, file=sys.stderr, flush=True)

    def scalars(metrics: dict[str, float], step: int, prefix: str) -> None:
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"{prefix}/{k}", v, step)

    def close() -> None:
        if writer is not None:
            writer.close()

    return log, scalars, close


# ============================================================================ the run


def train(cfg: RunConfig, args: TrainArgs) -> int:
    t_start = time.monotonic()
    tc = cfg.train
    device_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    info, device = init_distributed(device_name)
    run_dir = Path(args.out)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    log, scalars, close_log = make_logger(run_dir, info)
    use_cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if (use_cuda and tc.bf16) else contextlib.nullcontext()
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    deadline = t_start + args.max_minutes * 60.0 if args.max_minutes else None

    # ---------------------------------------------------------------- data -> resident tensors
    flat, data_info = steps.load_data(args.data)
    world = steps.resolve_world(cfg.world, data_info, cfg.source)
    log(f"data: {data_info['frames']} frames, {data_info['episodes']} episodes of {world.name} from {', '.join(args.data)}")
    data = ResidentData(flat, device, seed=tc.seed * 1000 + info.rank, gpu_resident_frac=tc.gpu_resident_frac, log=log)

    # ---------------------------------------------------------------- model (+ EMA copy)
    seed_everything(tc.seed)  # same init on every rank
    model = steps.build_model(cfg.model, world)
    if args.init_from:
        steps.load_pretrained_weights(model, args.init_from)
        log(f"initialised weights from {args.init_from}")
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    seed_everything(tc.seed * 1000 + info.rank)  # per-rank randomness from here on

    # ---------------------------------------------------------------- resume
    ae_total, dyn_total = tc.ae_steps, tc.dyn_steps
    phase, step = "ae", 0
    if args.phase == "dyn":
        phase = "dyn"
    if args.phase == "dyn" and not args.init_from and not args.resume:
        raise TrainingError("--phase dyn needs a trained autoencoder: pass --init-from WEIGHTS_DIR or --resume a run")
    state = None
    latent_stats = None
    if args.init_from and args.phase == "dyn" and model.config.latent_mean is not None:
        # the autoencoder stays as loaded: keep the normalisation the initial dynamics were trained with
        # (the new data's own stats would shift every latent the pretrained dynamics see)
        latent_stats = {"mean": list(model.config.latent_mean), "std": list(model.config.latent_std)}
    gpu_seconds_before = 0.0
    if args.resume:
        state, path = ckpt.load_latest(run_dir, cfg, log=log)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        phase, step = state["phase"], int(state["step"])
        latent_stats = state.get("latent_stats")
        gpu_seconds_before = float(state.get("train_seconds", 0.0))
        rngs = state["rng"]
        if len(rngs) != info.world_size:
            log(f"warning: checkpoint was written by {len(rngs)} rank(s), now {info.world_size}: RNG streams differ")
        ckpt.set_rng_state(rngs[info.rank % len(rngs)], {"data": data.gen})
        log(f"resumed from {path}: phase {phase}, step {step}")
    if args.phase == "dyn" and phase == "ae":
        phase, step = "dyn", 0

    gpu_seconds = lambda: gpu_seconds_before + (time.monotonic() - t_start)  # noqa: E731
    last_metrics: dict[str, dict[str, float]] = dict(state.get("last_metrics", {})) if state else {}

    def make_opt(module: torch.nn.Module, lr: float, wd: float, warmup: int, total: int):
        opt = torch.optim.AdamW(
            [p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=wd,
            betas=(tc.adam_beta1, tc.adam_beta2), fused=use_cuda,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, tc.lr_schedule, tc.min_lr_frac))
        return opt, sched

    def save(phase: str, step: int, opt, sched) -> None:
        rng = gather_objects(ckpt.get_rng_state({"data": data.gen}), info)
        if info.is_main:
            path = ckpt.save_checkpoint(
                run_dir,
                {
                    "config": cfg.to_dict(), "config_flat": cfg.flat(), "config_hash": cfg.hash(),
                    "world": world.name, "phase": phase, "step": step,
                    "global_step": {"ae": 0, "dyn": ae_total, "done": ae_total + 1}[phase] + step,
                    "model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": opt.state_dict() if opt else None, "scheduler": sched.state_dict() if sched else None,
                    "latent_stats": latent_stats, "rng": rng, "world_size": info.world_size,
                    "train_seconds": gpu_seconds(), "last_metrics": last_metrics, "data": data_info,
                },
                keep=tc.keep_checkpoints,
            )
            log(f"checkpoint {path}")
        barrier(info)

    stopped = False

    reached: dict[str, int] = {}

    def run_phase(name, module, total, lr, wd, warmup, step0, batch_fn, loss_fn, ema_module, live_module):
        """One optimisation phase: the plain loop (batch, loss, backward, clip, step, EMA, log, save)."""
        nonlocal stopped
        train_module = Objective(module, loss_fn)
        if info.enabled:
            train_module = torch.nn.parallel.DistributedDataParallel(
                train_module, device_ids=[device.index] if use_cuda else None, find_unused_parameters=False
            )
        fwd = train_module
        if tc.compile and use_cuda:
            fwd = torch.compile(train_module)
        opt, sched = make_opt(module, lr, wd, warmup, total)
        if state is not None and state["phase"] == name and state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        module.train()
        t_log, t_save, n_log, t_log_start = time.monotonic(), time.monotonic(), 0, time.monotonic()
        acc: dict[str, torch.Tensor] = {}
        bar = None
        if args.progress and info.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=step0, desc=name, dynamic_ncols=True, file=sys.stderr)
        step = step0
        while step < total:
            batch = batch_fn(step)
            with amp:
                loss, metrics = fwd(batch, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(module.parameters(), tc.grad_clip)
            opt.step()
            sched.step()
            ema_update(ema_module, live_module, ema_decay_at(step, tc))
            step += 1
            metrics = {"loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}}
            for k, v in metrics.items():
                acc[k] = acc.get(k, 0) + v.float()
            n_log += 1

            now = time.monotonic()
            do_log = (tc.log_every_steps and step % tc.log_every_steps == 0) or (
                tc.log_every_seconds and now - t_log >= tc.log_every_seconds) or step == total
            if do_log:
                m = mean_metrics({k: v / n_log for k, v in acc.items()}, info)
                m["lr"] = sched.get_last_lr()[0]
                m["steps_per_s"] = n_log / max(1e-9, now - t_log_start)
                last_metrics[name] = m
                scalars(m, step, name)
                if bar is not None:
                    bar.set_postfix(loss=f"{m['loss']:.4f}", sps=f"{m['steps_per_s']:.1f}")
                elif info.is_main and args.progress is False:
                    pass
                acc, n_log, t_log, t_log_start = {}, 0, now, now
            if bar is not None:
                bar.update(1)

            # Time limit and save triggers: rank 0's clock decides, all ranks agree (one tiny all_reduce).
            out_of_time = deadline is not None and now >= deadline
            save_due = (tc.save_every_steps and step % tc.save_every_steps == 0) or (
                tc.save_every_seconds and now - t_save >= tc.save_every_seconds)
            if info.enabled:
                out_of_time = any_flag(out_of_time and info.is_main, info, device)
                save_due = any_flag(bool(save_due) and info.is_main, info, device)
            if out_of_time and step < total:
                save(name, step, opt, sched)
                log(f"time limit reached ({args.max_minutes} min) in phase {name} at step {step}/{total}; "
                    f"continue with --resume")
                stopped = True
                break
            if save_due and step < total:
                save(name, step, opt, sched)
                t_save = time.monotonic()
        if bar is not None:
            bar.close()
        reached[name] = step  # where a time-limited call stopped (the export names it)
        return opt, sched

    # ================================================================ phase 1: autoencoder
    if phase == "ae":
        ae = model.ae

        def ae_batch(_step):
            return data.sample_frames(tc.ae_batch_size)

        def ae_loss(ae, x, _step):
            return steps.ae_loss(ae, x)

        log(f"phase ae: {ae_total} steps, batch {tc.ae_batch_size}")
        opt, sched = run_phase("ae", ae, ae_total, tc.ae_lr, tc.ae_weight_decay, tc.ae_warmup_steps, step,
                               ae_batch, ae_loss, ema.ae, ae)
        if stopped:  # nothing to export yet: the dynamics have not trained
            return _finish(info, close_log, 0)
        # The EMA autoencoder becomes the autoencoder (what latents, the dynamics and export all use).
        model.ae.load_state_dict(ema.ae.state_dict())
        phase, step, state = "dyn", 0, None
        save("dyn", 0, None, None)
        if args.phase == "ae":
            log("phase ae done (--phase ae): stopping before dynamics")
            if args.export and info.is_main:
                steps.export(model, ema, world, data, flat, data_info, args.export, tc, last_metrics, gpu_seconds(), log,
                             init_from=args.init_from, config_name=Path(cfg.source).name)
            return _finish(info, close_log, 0)

    # ================================================================ encode every frame once
    model.ae.requires_grad_(False).eval()
    ema.ae.load_state_dict(model.ae.state_dict())
    t0 = time.monotonic()
    z = steps.encode_all(model.ae, data, batch_size=256 if use_cuda else 64, amp=amp)
    if latent_stats is None:
        latent_stats = steps.latent_stats(z)
    steps.set_latent_stats(model, latent_stats)
    steps.set_latent_stats(ema, latent_stats)
    data.set_latents(steps.normalize(z, latent_stats))
    del z
    log(f"encoded {data.n} frames to latents {tuple(data.latents.shape[1:])} in {time.monotonic() - t0:.1f}s "
        f"(mean {np.mean(latent_stats['mean']):.3f}, std {np.mean(latent_stats['std']):.3f}); "
        f"latents on {data.latents.device}")

    # ================================================================ phase 2: dynamics (+ unroll)
    if phase == "dyn":
        dyn = model.dynamics
        T = tc.dyn_window
        unroll_from = int(round(tc.unroll_start_frac * dyn_total)) if tc.unroll_len > 0 else dyn_total
        n_unroll = int(round(tc.unroll_batch_frac * tc.dyn_batch_size))

        def dyn_batch(step):
            b = data.sample_windows(tc.dyn_batch_size, T)
            b["unroll"] = n_unroll if step >= unroll_from else 0
            return b

        unroll_sigmas = model.config.sigma_schedule(tc.unroll_steps)

        def dyn_loss(dyn, b, step):
            if b["unroll"]:
                # self-forcing-lite: the last `unroll_len` context frames of the first rows become the
                # model's own samples (no grad); the targets stay the true frames.
                kw = steps.unroll_context(dyn, b, b["unroll"], tc.unroll_len, unroll_sigmas)
                if "z" in kw:
                    b = {**b, "z": kw.pop("z")}
                return steps.dyn_loss(dyn, b, **kw)
            return steps.dyn_loss(dyn, b)

        log(f"phase dyn: {dyn_total} steps, batch {tc.dyn_batch_size}, window {T}, unroll from step {unroll_from}")
        opt, sched = run_phase("dyn", dyn, dyn_total, tc.dyn_lr, tc.dyn_weight_decay, tc.dyn_warmup_steps, step,
                               dyn_batch, dyn_loss, ema.dynamics, dyn)
        if stopped:
            # A time-limited call still leaves usable weights behind (the run itself resumes from the checkpoint).
            if args.export and info.is_main:
                steps.export(model, ema, world, data, flat, data_info, args.export, tc, last_metrics, gpu_seconds(), log,
                             init_from=args.init_from, config_name=Path(cfg.source).name, partial_step=reached.get("dyn", step))
            return _finish(info, close_log, 0)
        phase, step = "done", dyn_total
        save("done", dyn_total, None, None)
        log(f"training done in {gpu_seconds() / 60:.1f} min (this call {(time.monotonic() - t_start) / 60:.1f} min)")

    if args.export and info.is_main:
        steps.export(model, ema, world, data, flat, data_info, args.export, tc, last_metrics, gpu_seconds(), log,
                             init_from=args.init_from, config_name=Path(cfg.source).name)
    return _finish(info, close_log, 0)


def _finish(info: DistInfo, close_log, rc: int) -> int:
    close_log()
    shutdown_distributed(info)
    return rc
