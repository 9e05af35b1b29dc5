"""The training loop, top to bottom: autoencoder phase, encode once, dynamics phase (+ unroll), export.

Run it with `odyssey-gym train` (see `cli.py`), single-process or under `torchrun`. Every hyperparameter lives in
`TrainConfig` (YAML `train:`); the model's own config in YAML `model:`. `train()` is the run in order: `Setup` holds
what never changes, `RunState` what the loop changes (a checkpoint writes it down), `Phase` one phase's optimiser
and meters. The host waits for the device only at log and save boundaries, so throughput (`log_metrics`) and the
non-finite guard (`check_finite`) are read there, never per step.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from . import checkpoint as ckpt
from . import steps
from .adversary import Adversary
from .config import RunConfig, TrainConfig
from .dist import (DistInfo, average_grads, barrier, gather_objects, init_distributed, mean_metrics, min_over_ranks,
                   rank0_flags, shutdown_distributed)
from .resident import ResidentData
from .rollout_bank import RolloutBank


@dataclass
class TrainArgs:
    """What the command line adds to the YAML config."""

    data: list[str]
    out: str
    resume: bool = False
    max_minutes: float | None = None
    # stop the dynamics phase after this step, as a time limit would (checkpoint, partial export), its learning
    # rate schedule unchanged: how a campaign leg that a time limit stopped is replayed step for step
    max_steps: int | None = None
    # ae | dyn | all | decoder (fine-tune only the frame decoder of --init-from weights: the encoder, so every latent
    # the dynamics learned, and the dynamics stay exactly as loaded)
    phase: str = "all"
    init_from: str | None = None
    export: str | None = None
    device: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class TrainingError(RuntimeError):
    pass


class NonFiniteError(TrainingError):
    """The loss, a gradient norm or a weight became NaN/inf; the message names the phase, step and last good checkpoint."""


class Objective(torch.nn.Module):
    """`forward(batch) -> (loss, metrics)` = `loss_fn(module, batch)`: the unit DDP and torch.compile wrap,
    so model methods like `Dynamics.loss` run inside a DDP forward."""

    def __init__(self, module: torch.nn.Module, loss_fn: Callable):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.module, batch)


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


def ema_decay_at(step: int, cfg: TrainConfig) -> float:
    if cfg.ema_warmup:
        return min(cfg.ema_decay, (1 + step) / (10 + step))
    return cfg.ema_decay


def make_adamw(params: list, lr: float, wd: float, betas: tuple[float, float], use_cuda: bool):
    """AdamW; on CUDA the fused kernel (one launch for all parameters) when this torch has it."""
    if use_cuda and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a parameter the fused kernel does not take
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas, fused=False)


# Dense bf16 peak TFLOP/s by CUDA device name (SXM parts), for MFU when the config gives none.
PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0))


def peak_tflops(tc: TrainConfig, device: torch.device) -> float | None:
    if tc.peak_tflops is not None:
        return float(tc.peak_tflops)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Logger:
    """Rank-0 printing + TensorBoard scalars when tensorboard is importable."""

    def __init__(self, run_dir: Path, info: DistInfo):
        self.is_main = info.is_main
        self.writer = None
        if info.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tb"))
            except Exception:  # tensorboard is optional
                self.writer = None

    def __call__(self, msg: str) -> None:
        if self.is_main:
            print(msg, file=sys.stderr, flush=True)

    def scalars(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ============================================================================ what a run holds


@dataclass
class Setup:
    """What the run is given and never changes: config, arguments, device, data, the clock it started on."""

    cfg: RunConfig
    args: TrainArgs
    info: DistInfo
    device: torch.device
    amp: Any  # bf16 autocast on CUDA, else a no-op context
    run_dir: Path
    log: Logger
    flat: Any  # FlatData: the dataset in RAM (export draws the start bank from it)
    data_info: dict[str, Any]
    world: Any
    data: ResidentData
    t_start: float
    deadline: float | None  # --max-minutes, on this call's monotonic clock
    peak_tflops: float | None  # one device's; None: no mfu in the log

    @property
    def tc(self) -> TrainConfig:
        return self.cfg.train

    @property
    def use_cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class RunState:
    """Everything the loop changes. A checkpoint is this plus the current phase's optimiser and scheduler."""

    model: torch.nn.Module
    ema: torch.nn.Module
    phase: str  # ae | dyn | done
    step: int  # optimiser steps done in `phase`
    latent_stats: dict[str, list[float]] | None
    last_metrics: dict[str, dict[str, float]]
    seconds_before: float  # training time of earlier calls (a resumed run continues the count)
    resumed: dict[str, Any] | None = None  # the checkpoint resumed from, until its phase's optimiser takes its state
    checkpoint: Path | None = None  # the newest checkpoint written or resumed from (all were checked finite)


NEVER = 2**62  # `Phase.nonfinite_at` while every step was finite


@dataclass
class Phase:
    """One optimisation phase: what it trains, how it gets a batch, its optimiser, and its meters."""

    name: str
    total: int
    live: torch.nn.Module  # the trained part of the model (model.ae or model.dynamics)
    ema: torch.nn.Module  # its EMA twin
    eager: torch.nn.Module  # Objective, wrapped by DDP as configured
    fwd: torch.nn.Module  # `eager`, compiled when configured
    batch_fn: Callable[[Setup, int], Any]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    frames_per_step: float  # target frames per step on one rank
    bar: Any = None
    flops: dict[tuple[int, bool], float] = field(default_factory=dict)  # model FLOPs of one step, by `step_kind`
    nonfinite_at: torch.Tensor | None = None  # device int64: first step with a non-finite loss/grad norm, else NEVER
    adversary: Adversary | None = None  # the decoder phase's discriminator, stepped after each step
    # since the last log line
    acc: dict[str, torch.Tensor] = field(default_factory=dict)
    n: int = 0
    n_flops: float = 0.0
    t_log: float = 0.0
    t_save: float = 0.0


def train_seconds(s: Setup, run: RunState) -> float:
    return run.seconds_before + (time.monotonic() - s.t_start)


# ============================================================================ the run


def train(cfg: RunConfig, args: TrainArgs) -> int:
    s = setup(cfg, args)
    try:
        run = init_run(s)

        # ------------------------------------------------------------ phase 1: autoencoder
        if run.phase == "ae":
            s.log(f"phase ae: {s.tc.ae_steps} steps, batch {s.tc.ae_batch_size}")
            if not run_phase(s, run, ae_phase(s, run)):
                return 0  # time limit: nothing to export yet, the dynamics have not trained
            finish_autoencoder(s, run)
            if args.phase == "ae":
                s.log("phase ae done (--phase ae): stopping before dynamics")
                export(s, run)
                return 0

        # ------------------------------------------------------------ or only the decoder (--phase decoder)
        if run.phase == "decoder":
            s.log(f"phase decoder: {s.tc.ae_steps} steps, batch {s.tc.ae_batch_size} ({s.tc.decoder_predicted_frac:.0%} "
                  "from the dynamics' one-step predictions); encoder and dynamics frozen")
            if s.tc.decoder_predicted_frac > 0:
                encode_latents(s, run, sync_ema=False)  # the windows the predictions are made from
            done = run_phase(s, run, decoder_phase(s, run))
            if done:
                save_checkpoint(s, run)
            export(s, run, partial_step=None if done else run.step)
            return 0

        # ------------------------------------------------------------ encode every frame once
        encode_latents(s, run)

        # ------------------------------------------------------------ phase 2: dynamics (+ unroll)
        if run.phase == "dyn":
            s.log(f"phase dyn: {s.tc.dyn_steps} steps, batch {s.tc.dyn_batch_size}, window {s.tc.dyn_window}, "
                  f"unroll from step {unroll_start(s.tc)}")
            if not run_phase(s, run, dyn_phase(s, run)):
                # a time-limited call still leaves usable weights behind (the run resumes from its checkpoint)
                export(s, run, partial_step=run.step)
                return 0
            run.phase, run.step = "done", s.tc.dyn_steps
            save_checkpoint(s, run)
            s.log(f"training done in {train_seconds(s, run) / 60:.1f} min "
                  f"(this call {(time.monotonic() - s.t_start) / 60:.1f} min)")

        export(s, run)
        return 0
    finally:
        s.log.close()
        shutdown_distributed(s.info)


# ============================================================================ setup and resume


def setup(cfg: RunConfig, args: TrainArgs) -> Setup:
    """Process group, run directory, logger, numerics, and the data as resident tensors."""
    t_start = time.monotonic()
    tc = cfg.train
    info, device = init_distributed(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_dir = Path(args.out)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    log = Logger(run_dir, info)
    use_cuda = device.type == "cuda"
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if (use_cuda and tc.bf16) else contextlib.nullcontext()
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)

    flat, data_info = steps.load_data(args.data)
    world = steps.resolve_world(cfg.world, data_info, cfg.source)
    log(f"data: {data_info['frames']} frames, {data_info['episodes']} episodes of {world.name} from {', '.join(args.data)}")
    data = ResidentData(flat, device, seed=tc.seed * 1000 + info.rank, gpu_resident_frac=tc.gpu_resident_frac, log=log)
    deadline = t_start + args.max_minutes * 60.0 if args.max_minutes else None
    return Setup(cfg=cfg, args=args, info=info, device=device, amp=amp, run_dir=run_dir, log=log, flat=flat,
                 data_info=data_info, world=world, data=data, t_start=t_start, deadline=deadline,
                 peak_tflops=peak_tflops(tc, device))


def init_run(s: Setup) -> RunState:
    """The model and its EMA copy (same init on every rank), then `--init-from` / `--resume` / `--phase`."""
    tc, args = s.tc, s.args
    seed_everything(tc.seed)
    model = steps.build_model(s.cfg.model, s.world)
    if args.init_from:
        steps.load_pretrained_weights(model, args.init_from)
        s.log(f"initialised weights from {args.init_from}")
    model.to(s.device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    seed_everything(tc.seed * 1000 + s.info.rank)  # per-rank randomness from here on

    if args.phase in ("dyn", "decoder") and not args.init_from and not args.resume:
        raise TrainingError(f"--phase {args.phase} needs a trained world model to start from: pass --init-from "
                            "WEIGHTS_DIR or --resume a run")
    run = RunState(model=model, ema=ema, phase=args.phase if args.phase in ("dyn", "decoder") else "ae", step=0,
                   latent_stats=None, last_metrics={}, seconds_before=0.0)
    if args.init_from and args.phase in ("dyn", "decoder") and model.config.latent_mean is not None:
        # the autoencoder stays as loaded: keep the normalisation the initial dynamics were trained with
        # (the new data's own stats would shift every latent the pretrained dynamics see)
        run.latent_stats = {"mean": list(model.config.latent_mean), "std": list(model.config.latent_std)}
    if args.resume:
        resume(s, run)
        if (args.phase == "decoder") != (run.phase == "decoder"):
            raise TrainingError(f"--resume: the checkpoint in {s.run_dir} is of phase {run.phase!r}, and --phase "
                                f"{args.phase} {'asks for' if args.phase == 'decoder' else 'does not ask for'} a "
                                "decoder-only run: use the same --phase as the run it resumes, or a new --out")
    if args.phase == "dyn" and run.phase == "ae":
        run.phase, run.step = "dyn", 0
    return run


def resume(s: Setup, run: RunState) -> None:
    state, path = ckpt.load_latest(s.run_dir, s.cfg, log=s.log)
    run.model.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.phase, run.step = state["phase"], int(state["step"])
    run.latent_stats = state.get("latent_stats")
    run.seconds_before = float(state.get("train_seconds", 0.0))
    run.last_metrics = dict(state.get("last_metrics", {}))
    run.resumed = state
    run.checkpoint = path
    rngs = state["rng"]
    if len(rngs) != s.info.world_size:
        s.log(f"warning: checkpoint was written by {len(rngs)} rank(s), now {s.info.world_size}: RNG streams differ")
    ckpt.set_rng_state(rngs[s.info.rank % len(rngs)], {"data": s.data.gen})
    s.log(f"resumed from {path}: phase {run.phase}, step {run.step}")


# ============================================================================ the two phases


def ae_objective(ae: torch.nn.Module, x: torch.Tensor):
    return steps.ae_loss(ae, x)


def ae_batch(s: Setup, step: int) -> torch.Tensor:
    return s.data.sample_frames(s.tc.ae_batch_size)


def ae_phase(s: Setup, run: RunState) -> Phase:
    tc = s.tc
    return make_phase(s, run, "ae", run.model.ae, run.ema.ae, ae_objective, ae_batch,
                      tc.ae_steps, tc.ae_lr, tc.ae_weight_decay, tc.ae_warmup_steps)


def decoder_phase(s: Setup, run: RunState) -> Phase:
    """The autoencoder's objective on real frames with the encoder frozen: the decoder learns detail the first,
    short autoencoder phase left out, while every latent the dynamics were trained on stays bit for bit the same.
    With `decoder_predicted_frac`, part of each batch decodes the dynamics' own one-step predictions instead, the
    latents the sampler decodes in play."""
    tc = s.tc
    for ae in (run.model.ae, run.ema.ae):
        ae.requires_grad_(False)
        ae.decoder.requires_grad_(True)
    run.model.dynamics.requires_grad_(False).eval()
    adversary = None
    if tc.decoder_adv_weight > 0:
        adversary = Adversary(channels=tc.disc_channels, lr=tc.disc_lr, betas=(0.5, 0.9), weight=tc.decoder_adv_weight,
                              start=tc.decoder_adv_start, device=s.device, amp=s.amp, seed=tc.seed,
                              all_reduce_grads=functools.partial(average_grads, info=s.info))
        resumed = run.resumed
        if resumed is not None and resumed["phase"] == "decoder" and resumed.get("adversary") is not None:
            adversary.load_state_dict(resumed["adversary"])
    if tc.decoder_predicted_frac > 0 or adversary is not None:
        objective = functools.partial(decoder_objective, adversary=adversary)
        batch = functools.partial(decoder_batch, model=run.model)
    else:  # real frames only: the autoencoder's own objective and batch, the encoder frozen
        objective, batch = ae_objective, ae_batch
    ph = make_phase(s, run, "decoder", run.model.ae, run.ema.ae, objective, batch,
                    tc.ae_steps, tc.ae_lr, tc.ae_weight_decay, tc.ae_warmup_steps)
    ph.adversary = adversary
    return ph


def decoder_batch(s: Setup, step: int, model) -> dict[str, torch.Tensor]:
    """Real frames, plus windows of K + 1 frames whose last latent the frozen dynamics predict from the K real ones
    before it with the sampler's own schedule (no grad; the sampler's context noise and fresh re-noising are not
    applied, both off in the shipped worlds), and the real frame it should decode to."""
    tc = s.tc
    n_pred = int(round(tc.decoder_predicted_frac * tc.ae_batch_size))
    n_pred = max(1, n_pred) if tc.decoder_predicted_frac > 0 else 0  # a share asked for is at least one frame
    out = {"x": s.data.sample_frames(tc.ae_batch_size - n_pred)}
    if n_pred == 0:  # real frames only (an adversarial decoder leg without predicted latents)
        return out
    K = model.config.context_frames
    idx = s.data.sample_window_index(n_pred, K + 1)
    b = s.data.windows(idx)
    with torch.no_grad(), s.amp:  # the last frame only (the sampler's step after K real frames), not all K + 1
        z = model.dynamics.generate_next(b["z"][:, :K], b["actions"][:, :K], b["actions"][:, K],
                                         sigmas=model.config.sigma_schedule(), state_prev=b.get("state_prev"))
    out["z_pred"] = z.float() * model.latent_std + model.latent_mean  # back to the autoencoder's own latent scale
    out["x_pred"] = s.data.frames_at(idx[:, -1])
    return out


def decoder_objective(ae: torch.nn.Module, b, adversary: Adversary | None = None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reconstruction loss of `decoder_batch`'s real frames and of its predicted latents, each weighted by its
    share of the batch; with an adversary, plus its term on every frame decoded."""
    parts, fakes, metrics = [], [], {}
    if b["x"].shape[0]:
        loss_r, m_r, xr = ae.loss_with_frames(b["x"])
        parts.append((b["x"].shape[0], loss_r))
        fakes.append(xr)
        metrics.update(m_r)
    if "z_pred" in b:
        xp = ae.decode(b["z_pred"]).float()
        loss_p, m_p = ae.reconstruction_loss(xp, b["x_pred"])
        parts.append((b["x_pred"].shape[0], loss_p))
        fakes.append(xp)
        metrics.update(pred_psnr=m_p["psnr"], pred_l1=m_p["l1"])
    recon = parts[0][1] if len(parts) == 1 else sum(n * loss for n, loss in parts) / sum(n for n, _ in parts)
    if adversary is None:
        return recon, {**metrics, "loss": recon.detach()}
    adv, m_a = adversary.generator_loss(torch.cat(fakes), recon, ae.decoder.conv_out.weight)
    loss = recon + adv
    return loss, {**metrics, **m_a, "recon": recon.detach(), "loss": loss.detach()}


@torch.no_grad()
def adversary_step(s: Setup, ph: Phase, b) -> dict[str, torch.Tensor]:
    """The discriminator's step after the decoder's: the batch's real frames against the updated decoder's frames
    of the same latents (not counted in the logged FLOPs)."""
    ae = ph.live
    with s.amp:
        fakes, reals = [ae.decode(ae.encode(b["x"]))], [b["x"]]
        if "z_pred" in b:
            fakes.append(ae.decode(b["z_pred"]))
            reals.append(b["x_pred"])
    real, fake = torch.cat(reals).float(), torch.cat(fakes).float()
    with torch.enable_grad():
        return ph.adversary.update(real, fake)


def dyn_objective(dyn: torch.nn.Module, b: dict[str, Any], unroll_len: int, unroll_sigmas, unroll_depth: int = 1):
    kw: dict[str, Any] = {}
    if b["unroll"]:
        # self-forcing-lite: the last `unroll_len` context frames of the first rows become the
        # model's own samples (no grad); the targets stay the true frames.
        kw = steps.unroll_context(dyn, b, b["unroll"], unroll_len, unroll_sigmas, unroll_depth)
        if "z" in kw:
            b = {**b, "z": kw.pop("z")}
    if "rollout_z" in b:
        # rolling self-forcing: the last rows' context stream is the rollout bank's own frames
        ctx = kw.get("context_z", b["z"]).clone()
        ctx[-b["rollout_z"].shape[0]:] = b["rollout_z"].to(ctx.dtype)
        kw["context_z"] = ctx
    return steps.dyn_loss(dyn, b, **kw)


def unroll_start(tc: TrainConfig) -> int:
    """The dynamics step from which batches carry unrolled rows (and rows of the rollout bank)."""
    on = tc.unroll_len > 0 or tc.rollout_rows > 0
    return int(round(tc.unroll_start_frac * tc.dyn_steps)) if on else tc.dyn_steps


def dyn_batch(s: Setup, step: int, bank: RolloutBank | None = None, dyn: torch.nn.Module | None = None,
              sigmas=None) -> dict[str, Any]:
    """Random windows; from `unroll_start` the first rows unrolled and the last `rollout_rows` from the bank,
    which first advances its rollouts with the live model (no grad)."""
    tc = s.tc
    late = step >= unroll_start(tc)
    n_roll = tc.rollout_rows if (late and bank is not None) else 0
    b = s.data.sample_windows(tc.dyn_batch_size - n_roll, tc.dyn_window)
    if n_roll:
        with s.amp:
            bank.advance(dyn, sigmas)
        r = bank.batch()
        b = {k: torch.cat([b[k], r[k]]) for k in b} | {"rollout_z": r["rollout_z"]}
    b["unroll"] = int(round(tc.unroll_batch_frac * tc.dyn_batch_size)) if (late and tc.unroll_len > 0) else 0
    return b


def dyn_phase(s: Setup, run: RunState) -> Phase:
    tc = s.tc
    objective = functools.partial(dyn_objective, unroll_len=tc.unroll_len, unroll_depth=tc.unroll_depth,
                                  unroll_sigmas=run.model.config.sigma_schedule(tc.unroll_steps))
    batch_fn = dyn_batch
    if tc.rollout_rows:
        dcfg = run.model.config.dynamics
        if dcfg.objective != "teacher_forcing":
            raise TrainingError(f"train.rollout_rows needs the teacher_forcing objective, the model has {dcfg.objective!r}")
        if dcfg.state_dim:
            raise TrainingError("train.rollout_rows does not carry game state yet: set it to 0 for a model with "
                                "state_variables")
        bank = RolloutBank(s.data, tc.rollout_rows, tc.dyn_window, dcfg.context_frames, tc.rollout_max_age,
                           tc.rollout_advance, seed=tc.seed * 1000 + 17 + s.info.rank)
        batch_fn = functools.partial(dyn_batch, bank=bank, dyn=run.model.dynamics,
                                     sigmas=run.model.config.sigma_schedule(tc.unroll_steps))
        s.log(f"rollout bank: {tc.rollout_rows} rows, {tc.rollout_advance} frames a step, lives up to "
              f"{tc.rollout_max_age} frames")
    return make_phase(s, run, "dyn", run.model.dynamics, run.ema.dynamics, objective, batch_fn,
                      tc.dyn_steps, tc.dyn_lr, tc.dyn_weight_decay, tc.dyn_warmup_steps)


def target_frames_per_step(tc: TrainConfig, model, name: str) -> float:
    """Frames a step's loss trains on (one rank): the autoencoder's batch; with teacher forcing every window frame
    but the first; with diffusion forcing the expected target-like share (1 - p_context) of the window."""
    if name in ("ae", "decoder"):
        return float(tc.ae_batch_size)
    dyn = model.config.dynamics
    if dyn.objective == "teacher_forcing":
        return float(tc.dyn_batch_size * (tc.dyn_window - 1))
    return tc.dyn_batch_size * tc.dyn_window * (1.0 - dyn.p_context)


def compile_objective(live: torch.nn.Module, eager: torch.nn.Module) -> torch.nn.Module:
    """What `train.compile` compiles: a model's window forwards where it has them (the dynamics: Inductor cannot
    compile its loss, torch 2.11), else the whole objective (the autoencoder). Returns what the step calls."""
    parts = [m for m in live.modules() if hasattr(m, "compile_window_forwards")]
    for m in parts:
        m.compile_window_forwards()
    return eager if parts else torch.compile(eager)


def make_phase(s: Setup, run: RunState, name: str, live, ema, objective, batch_fn,
               total: int, lr: float, wd: float, warmup: int) -> Phase:
    """Wrap the objective (DDP, compile), build AdamW + schedule (restored when resuming this phase)."""
    tc = s.tc
    eager = Objective(live, objective)
    if s.info.enabled:
        eager = torch.nn.parallel.DistributedDataParallel(
            eager, device_ids=[s.device.index] if s.use_cuda else None, find_unused_parameters=False
        )
    fwd = eager
    if tc.compile and s.use_cuda:
        fwd = compile_objective(live, eager)
    opt = make_adamw([p for p in live.parameters() if p.requires_grad], lr, wd, (tc.adam_beta1, tc.adam_beta2),
                     s.use_cuda)
    s.log(f"phase {name}: AdamW, {'fused' if opt.defaults.get('fused') else 'not fused'}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, tc.lr_schedule, tc.min_lr_frac))
    if run.resumed is not None and run.resumed["phase"] == name and run.resumed.get("optimizer") is not None:
        opt.load_state_dict(run.resumed["optimizer"])
        sched.load_state_dict(run.resumed["scheduler"])
    live.train()
    bar = None
    if s.args.progress and s.info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=run.step, desc=name, dynamic_ncols=True, file=sys.stderr)
    now = time.monotonic()
    return Phase(name=name, total=total, live=live, ema=ema, eager=eager, fwd=fwd, batch_fn=batch_fn, opt=opt,
                 sched=sched, frames_per_step=target_frames_per_step(tc, run.model, name), bar=bar,
                 nonfinite_at=torch.tensor(NEVER, device=s.device), t_log=now, t_save=now)


# ============================================================================ the loop


def run_phase(s: Setup, run: RunState, ph: Phase) -> bool:
    """Steps until the phase's last one, logging and saving on the way. False: the time limit cut it off."""
    try:
        while run.step < ph.total:
            batch = ph.batch_fn(s, run.step)
            metrics = train_step(s, run, ph, batch)
            for k, v in metrics.items():
                ph.acc[k] = ph.acc.get(k, 0) + v.float()
            ph.n += 1
            log_due, out_of_time, save_due = boundaries(s, run.step, ph, time.monotonic())
            if log_due:
                log_metrics(s, run, ph)
                check_finite(s, run, ph)
            if ph.bar is not None:
                ph.bar.update(1)
            if out_of_time and run.step < ph.total:
                save_checkpoint(s, run, ph)
                limit = (f"step limit reached (--max-steps {s.args.max_steps})" if step_limit_reached(s, ph, run.step)
                         else f"time limit reached ({s.args.max_minutes} min)")
                s.log(f"{limit} in phase {ph.name} at step {run.step}/{ph.total}; continue with --resume")
                return False
            if save_due and run.step < ph.total:
                save_checkpoint(s, run, ph)
                ph.t_save = time.monotonic()
        check_finite(s, run, ph)
        return True
    finally:
        if ph.bar is not None:
            ph.bar.close()


def step_kind(batch) -> tuple[int, bool]:
    """Steps of one kind cost the same FLOPs: the dynamics' unrolled rows change the cost (the rollout bank's
    sampling runs before the step and is not counted), nothing else does."""
    return (int(batch.get("unroll", 0)), "rollout_z" in batch) if isinstance(batch, dict) else (0, False)


def count_flops(s: Setup, ph: Phase, batch) -> float:
    """Model FLOPs of a step on `batch`, by torch's FLOP counter on an extra eager forward + backward: matmuls,
    convolutions and attention as executed (masked attention entries too; the CPU attention kernel is not
    counted), the unroll's sampling included, the optimiser not. Its gradients are dropped and the RNGs put back,
    so the real step computes exactly what it would have (under the counter the kernels differ in the last bits).
    Attention "flex" is counted as its dense-mask twin executes it: the counter cannot trace compiled flex."""
    with contextlib.ExitStack() as stack:
        for m in ph.live.modules():
            if hasattr(m, "dense_masks"):
                stack.enter_context(m.dense_masks())
        stack.enter_context(torch.random.fork_rng(devices=[s.device] if s.use_cuda else []))
        counter = stack.enter_context(FlopCounterMode(display=False))
        with s.amp:
            loss, _ = ph.eager(batch)
        loss.backward()
    ph.opt.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def train_step(s: Setup, run: RunState, ph: Phase, batch) -> dict[str, torch.Tensor]:
    """One optimiser step: forward (bf16 autocast on CUDA), backward, clip, AdamW, LR schedule, EMA.
    Returns the step's metrics as device tensors (no host sync)."""
    tc = s.tc
    kind = step_kind(batch)
    if kind not in ph.flops:
        ph.flops[kind] = count_flops(s, ph, batch)
    ph.n_flops += ph.flops[kind]
    with s.amp:
        loss, metrics = ph.fwd(batch)
    ph.opt.zero_grad(set_to_none=True)
    loss.backward()
    finite = torch.isfinite(loss.detach())
    if tc.grad_clip > 0:
        metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(ph.live.parameters(), tc.grad_clip)
        finite &= torch.isfinite(metrics["grad_norm"])
    ph.opt.step()
    ph.sched.step()
    if ph.adversary is not None:
        metrics.update(adversary_step(s, ph, batch))
    ema_update(ph.ema, ph.live, ema_decay_at(run.step, tc))
    run.step += 1
    ph.nonfinite_at = torch.minimum(ph.nonfinite_at, torch.where(finite, NEVER, run.step))
    return {"loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}}


def boundaries(s: Setup, step: int, ph: Phase, now: float) -> tuple[bool, bool, bool]:
    """(log, out of time, save) after `step`: rank 0's clock decides the timed ones, all ranks agree (one tiny
    all_reduce under DDP)."""
    tc = s.tc
    log_due = bool((tc.log_every_steps and step % tc.log_every_steps == 0)
                   or (tc.log_every_seconds and now - ph.t_log >= tc.log_every_seconds) or step == ph.total)
    out_of_time = (s.deadline is not None and now >= s.deadline) or step_limit_reached(s, ph, step)
    save_due = bool((tc.save_every_steps and step % tc.save_every_steps == 0)
                    or (tc.save_every_seconds and now - ph.t_save >= tc.save_every_seconds))
    log_due, out_of_time, save_due = rank0_flags([log_due, out_of_time, save_due], s.info, s.device)
    return log_due, out_of_time, save_due


def step_limit_reached(s: Setup, ph: Phase, step: int) -> bool:
    """--max-steps: the dynamics (or decoder-only) phase stops at that step as at a time limit (the autoencoder
    phase of a run from scratch runs whole)."""
    return ph.name in ("dyn", "decoder") and s.args.max_steps is not None and step >= s.args.max_steps


def log_metrics(s: Setup, run: RunState, ph: Phase) -> None:
    """Average the metrics since the last log (the one host sync, one all_reduce) and time the steps since then
    (the clock read after that sync, so queued GPU work is inside); to TensorBoard and the bar or a log line.
    frames_per_s, tflops: totals over ranks; mfu = tflops / (peak of one device * ranks)."""
    m = mean_metrics({k: v / ph.n for k, v in ph.acc.items()}, s.info)
    now = time.monotonic()
    seconds = max(1e-9, now - ph.t_log)
    ranks = s.info.world_size
    m["lr"] = ph.sched.get_last_lr()[0]
    m["steps_per_s"] = ph.n / seconds
    m["frames_per_s"] = ph.n * ph.frames_per_step * ranks / seconds
    m["tflops"] = ph.n_flops * ranks / seconds / 1e12
    if s.peak_tflops:
        m["mfu"] = m["tflops"] / (s.peak_tflops * ranks)
    run.last_metrics[ph.name] = m
    s.log.scalars(m, run.step, ph.name)
    if ph.bar is not None:
        ph.bar.set_postfix(loss=f"{m['loss']:.4f}", sps=f"{m['steps_per_s']:.1f}", fps=f"{m['frames_per_s']:.0f}",
                           **({"mfu": f"{m['mfu']:.1%}"} if "mfu" in m else {}))
    else:
        s.log(log_line(ph.name, run.step, ph.total, m))
    ph.acc, ph.n, ph.n_flops, ph.t_log = {}, 0, 0.0, now


def log_line(phase: str, step: int, total: int, m: dict[str, float]) -> str:
    """`dyn 120/30000 loss=0.4132 <model metrics> lr=0.0003 steps_per_s=12.3 frames_per_s=5904 tflops=85.2 mfu=8.6%`"""
    rate = ("lr", "steps_per_s", "frames_per_s", "tflops", "mfu")
    keys = ["loss"] + [k for k in m if k != "loss" and k not in rate] + [k for k in rate if k in m]
    return f"{phase} {step}/{total} " + " ".join(f"{k}={m[k]:.1%}" if k == "mfu" else f"{k}={m[k]:.4g}" for k in keys)


def check_finite(s: Setup, run: RunState, ph: Phase | None = None, weights: bool = False) -> None:
    """Raise NonFiniteError if a step of `ph` had a non-finite loss or gradient norm, or (weights=True) if the model
    or its EMA holds a non-finite value. A host sync: called only where the loop syncs anyway."""
    if ph is not None:
        at = min_over_ranks(ph.nonfinite_at, s.info)
        if at != NEVER:
            raise NonFiniteError(f"the loss or gradient norm became non-finite (NaN/inf) in phase {ph.name} at step "
                                 f"{at}/{ph.total}{stopped(run)}")
    if weights:
        for name, module in (("model", run.model), ("EMA", run.ema)):
            finite = torch.stack([torch.isfinite(t).all() for t in module.state_dict().values()
                                  if t.is_floating_point()]).all()
            if min_over_ranks(finite, s.info) == 0:
                raise NonFiniteError(f"the {name} weights hold non-finite values (NaN/inf) in phase {run.phase} at "
                                     f"step {run.step}{stopped(run)}")


def stopped(run: RunState) -> str:
    """The end of a NonFiniteError message: what was kept and how to go on."""
    good = f"the newest good checkpoint is {run.checkpoint}" if run.checkpoint else "no checkpoint was written yet"
    return (f"; stopped without saving or exporting these weights, {good}. Look for NaN/inf in the data "
            f"(rewards, actions) or lower the learning rate, then resume with --resume or start a new run")


# ============================================================================ between phases, checkpoints, export


def finish_autoencoder(s: Setup, run: RunState) -> None:
    """The EMA autoencoder becomes the autoencoder (what latents, the dynamics and export all use)."""
    run.model.ae.load_state_dict(run.ema.ae.state_dict())
    run.phase, run.step, run.resumed = "dyn", 0, None
    save_checkpoint(s, run)


def encode_latents(s: Setup, run: RunState, sync_ema: bool = True) -> None:
    """Freeze the autoencoder, encode every frame once, normalise (stats kept from a resume or --init-from).
    sync_ema: the EMA autoencoder becomes the live one (not for the decoder phase, whose EMA decoder is its
    result: a resumed decoder run keeps the checkpoint's)."""
    model, ema = run.model, run.ema
    model.ae.requires_grad_(False).eval()
    if sync_ema:
        ema.ae.load_state_dict(model.ae.state_dict())
    t0 = time.monotonic()
    z = steps.encode_all(model.ae, s.data, batch_size=256 if s.use_cuda else 64, amp=s.amp)
    if run.latent_stats is None:
        run.latent_stats = steps.latent_stats(z)
    steps.set_latent_stats(model, run.latent_stats)
    steps.set_latent_stats(ema, run.latent_stats)
    s.data.set_latents(steps.normalize(z, run.latent_stats))
    del z
    if model.config.dynamics.state_dim:
        attach_state(s, run)
    stats = run.latent_stats
    s.log(f"encoded {s.data.n} frames to latents {tuple(s.data.latents.shape[1:])} in {time.monotonic() - t0:.1f}s "
          f"(mean {np.mean(stats['mean']):.3f}, std {np.mean(stats['std']):.3f}); latents on {s.data.latents.device}")


def attach_state(s: Setup, run: RunState) -> None:
    """The data's game state, normalised by the model's stats (the data's own when the model has none yet)."""
    names = list(run.model.config.state_variables)
    state = steps.data_state(s.flat, names)
    if run.model.config.state_mean is None:
        mean, std = steps.state_stats(state)
        for m in (run.model, run.ema):
            m.set_state_stats(mean, std)
    s.data.set_state(run.model.normalize_state(torch.as_tensor(state).to(run.model.state_mean.device)))
    s.log(f"game state {names}: mean {np.round(run.model.config.state_mean, 3).tolist()}, "
          f"std {np.round(run.model.config.state_std, 3).tolist()}")


def save_checkpoint(s: Setup, run: RunState, ph: Phase | None = None) -> None:
    """All ranks call it (RNG states are gathered); rank 0 writes. `ph`: the phase whose optimiser to keep.
    Refuses (NonFiniteError) to write non-finite weights."""
    check_finite(s, run, ph, weights=True)
    rng = gather_objects(ckpt.get_rng_state({"data": s.data.gen}), s.info)
    ae_total = s.tc.ae_steps
    global_step = {"ae": 0, "decoder": 0, "dyn": ae_total, "done": ae_total + 1}[run.phase] + run.step
    if s.info.is_main:
        path = ckpt.save_checkpoint(
            s.run_dir,
            {
                "config": s.cfg.to_dict(), "config_flat": s.cfg.flat(), "config_hash": s.cfg.hash(),
                "world": s.world.name, "phase": run.phase, "step": run.step, "global_step": global_step,
                "model": run.model.state_dict(), "ema": run.ema.state_dict(),
                "optimizer": ph.opt.state_dict() if ph else None, "scheduler": ph.sched.state_dict() if ph else None,
                "adversary": ph.adversary.state_dict() if ph and ph.adversary else None,
                "latent_stats": run.latent_stats, "rng": rng, "world_size": s.info.world_size,
                "train_seconds": train_seconds(s, run), "last_metrics": run.last_metrics, "data": s.data_info,
            },
            keep=s.tc.keep_checkpoints,
        )
        s.log(f"checkpoint {path}")
    barrier(s.info)
    run.checkpoint = ckpt.checkpoint_path(s.run_dir, global_step)


def export(s: Setup, run: RunState, partial_step: int | None = None) -> None:
    """With --export: EMA weights, start bank and the campaign log (rank 0). `partial_step`: a time-limited stop."""
    if s.args.export:
        check_finite(s, run, weights=True)
    if s.args.export and s.info.is_main:
        steps.export(run.model, run.ema, s.world, s.data, s.flat, s.data_info, s.args.export, s.tc, run.last_metrics,
                     train_seconds(s, run), s.log, init_from=s.args.init_from, config_name=Path(s.cfg.source).name,
                     partial_step=partial_step, decoder_only=run.phase == "decoder")
