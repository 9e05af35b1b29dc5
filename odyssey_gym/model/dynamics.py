"""Dynamics: a frame-causal transformer that denoises the next latent frame given the past.

Tokens are patches of the (normalised) latent grid, P per frame. Attention is full within a
frame and causal across frames, limited to the last K = `context_frames` frames (a sliding
window: training, the slow reference and the ring-buffer KV cache all compute the same thing).
Time enters only through a temporal RoPE on part of each head, so only frame *differences*
matter; its frequencies are integer multiples of 2*pi/rope_period, so a rotation is an exact
function of (frame index mod rope_period). The sampler stores keys already rotated and its
positions never grow: a ring-buffer cache runs forever. Space has a learned position embedding.

Every frame has its own noise level sigma and is conditioned on the action that led INTO it;
both enter every block through a shared adaLN (PixArt's adaLN-single: one projection for all
blocks plus a small learned table per block). EDM preconditioning with x0 prediction lets 1-4
denoising steps suffice. Reward and termination heads read the mean-pooled final hidden state of
a (near-)clean frame.

Training objective (`objective`):
- "teacher_forcing" (default): every window runs as two streams of the same T frames, a context
  stream (clean, or lightly noised with its level as input: GameNGen's context-noise augmentation)
  and a target stream (each frame at its own diffusion noise level). A target frame attends to the
  context stream's previous K frames and to itself, exactly what the sampler's KV cache shows it at
  inference, so every frame of the window is a training target with a clean context.
- "diffusion_forcing": one stream with independent per-frame noise. A context that is often seen
  at high noise teaches the model to lean on it less; kept for comparison and old configs.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


OBJECTIVES = ("teacher_forcing", "diffusion_forcing")
TARGET_LOSSES = ("mse", "energy")
START_FROM = ("noise", "previous")
ATTENTION = ("sdpa", "flex")
TERM_FROM = ("clean", "start")


@dataclass
class DynamicsConfig:
    latent_channels: int = 16
    latent_size: tuple[int, int] = (16, 20)  # (h, w) of the latent grid
    patch_size: int = 2
    n_layer: int = 10
    n_head: int = 6
    n_embd: int = 384
    mlp_ratio: float = 4.0
    action_dim: int = 6
    context_frames: int = 16  # K: frames a new frame can attend to (the KV cache length)
    max_frames: int = 20  # training window length T
    rope_fraction: float = 0.5  # fraction of each head's dims rotated by temporal RoPE; the rest is position-free
    rope_base: float = 100.0  # temporal distances are short (<= K), so a small base spreads the frequencies usefully
    rope_period: int = 4096  # RoPE is exactly periodic in the frame index with this period (must exceed K)
    dropout: float = 0.0
    # how a window's masked attention runs in training: "sdpa" (a dense boolean mask; every masked-out entry is
    # still computed) or "flex" (FlexAttention with a block mask: only the blocks a frame may see are computed).
    # Both compute the same function; the cached single-frame sampler always uses SDPA.
    attention: str = "sdpa"
    # EDM / diffusion forcing (sigma in units of the normalised latent)
    sigma_data: float = 1.0
    sigma_p_mean: float = 0.0  # target frames: ln(sigma) ~ N(p_mean, p_std)
    sigma_p_std: float = 1.2
    objective: str = "teacher_forcing"  # "teacher_forcing" | "diffusion_forcing" (see the module docstring)
    p_context: float = 0.5  # diffusion forcing: probability that a training frame is context-like
    sigma_ctx_max: float = 0.3  # context-noise augmentation: context sigma ~ U(0, sigma_ctx_max)
    p_context_aug: float = 0.5  # teacher forcing: fraction of windows whose context frames are noised
    p_sigma_max: float = 0.0  # teacher forcing: fraction of target frames trained at exactly sigma_max (the first sampling pass)
    # how a frame denoised from the sampler's start input (sigma >= sigma_max) is scored. "mse": regression to the
    # mean of what may come next, so a one-step sampler outputs the average frame, which blurs wherever the future
    # is uncertain, and long rollouts fade. "energy": the energy score (a strictly proper scoring rule) on two
    # samples drawn from two start noises: its minimiser is the true distribution of the next frame, so the one
    # step learns to *sample* a frame instead of averaging them (distributional diffusion, De Bortoli et al.
    # 2025). Teacher forcing only; frames below sigma_max keep the MSE. The second sample is a second target
    # stream against the same context stream: a step costs about 1.5x, not 2x.
    target_loss: str = "mse"
    energy_lambda: float = 1.0  # weight of the spread between the two samples: 1 is the proper energy score, 0 an L2 regression
    # the region each energy-score distance is taken over: 0 the whole frame, k a k x k patch of latent cells (the
    # score is then the mean of one proper score per patch), or a list of these whose scores are averaged. A
    # whole-frame distance is satisfied by spread of the right total size anywhere, e.g. noise where the frame is
    # certain; per-patch distances ask each region for its own spread but score only each patch's marginal, so
    # patches may disagree; the whole frame beside them keeps the sum strictly proper.
    energy_patch: int | tuple[int, ...] = 0
    # what the first sampling pass starts from: "noise" (sigma_max * noise) or "previous" (the previous frame's
    # latent + sigma_max * noise: the new frame starts as the last one, noised, so the first pass mostly has to
    # move what changed). Training feeds frames at sigma >= sigma_max exactly this input.
    start_from: str = "noise"
    # few-step sampling schedule (Karras rho schedule, ends at 0)
    sigma_max: float = 5.0
    sigma_min: float = 0.002
    rho: float = 7.0
    # head loss weights
    reward_weight: float = 1.0
    term_weight: float = 1.0
    # deaths are ~1% of frames or fewer: weight the positive class so the head learns to fire at all
    term_pos_weight: float = 1.0
    # which pass the termination head reads: "clean" (the finished frame, as it enters the context) or "start" (the
    # first sampling pass, at sigma_max from the previous frame: the end foreseen from the context and the action
    # alone). A recorded episode's last frame is a copy of the one before it (the engine shows nothing new at the
    # fatal step), so a head trained on the finished frame learns that copy, which no generated frame shows.
    # "start" needs teacher forcing (its at-sigma_max frames train it).
    term_from: str = "clean"
    # game state beside pixels (the world's `state_variables`, normalised): frame t is conditioned on the state
    # frame t-1 ended in, and a head predicts the state frame t ends in (0: no state)
    state_dim: int = 0
    state_weight: float = 1.0

    def __post_init__(self):
        self.latent_size = tuple(int(s) for s in self.latent_size)
        h, w = self.latent_size
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"latent_size {self.latent_size} must be divisible by patch_size {self.patch_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} must be divisible by n_head {self.n_head}")
        if self.rope_period <= max(self.context_frames, self.max_frames):
            raise ValueError(f"rope_period {self.rope_period} must exceed context_frames and max_frames")
        if self.start_from not in START_FROM:
            raise ValueError(f"start_from must be one of {START_FROM}, got {self.start_from!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.target_loss not in TARGET_LOSSES:
            raise ValueError(f"target_loss must be one of {TARGET_LOSSES}, got {self.target_loss!r}")
        if self.target_loss == "energy" and self.objective != "teacher_forcing":
            raise ValueError("target_loss 'energy' needs objective 'teacher_forcing' (two samples of the same target "
                             f"frame against the same clean context), got {self.objective!r}")
        if not 0.0 <= float(self.energy_lambda) <= 1.0:
            raise ValueError(f"energy_lambda must lie in [0, 1], got {self.energy_lambda!r}")
        patches = self.energy_patch if isinstance(self.energy_patch, (list, tuple)) else (self.energy_patch,)
        if (not patches or len(set(patches)) < len(patches)
                or any(not isinstance(k, int) or isinstance(k, bool) or k < 0 or (k and (h % k or w % k)) for k in patches)):
            raise ValueError(f"energy_patch must be 0 (the whole frame), a side that divides latent_size "
                             f"{self.latent_size}, or a list of different ones; got {self.energy_patch!r}")
        self.energy_patch = tuple(patches) if len(patches) > 1 else patches[0]
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.attention == "flex" and self.dropout > 0:
            raise ValueError("attention 'flex' has no attention dropout: set dropout to 0 or use attention 'sdpa'")
        if int(self.state_dim) < 0:
            raise ValueError(f"state_dim must be >= 0, got {self.state_dim!r}")
        for name in ("p_context", "p_context_aug", "p_sigma_max"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.term_from not in TERM_FROM:
            raise ValueError(f"term_from must be one of {TERM_FROM}, got {self.term_from!r}")
        if self.term_from == "start" and (self.objective != "teacher_forcing" or float(self.p_sigma_max) <= 0):
            raise ValueError("term_from 'start' needs objective 'teacher_forcing' and p_sigma_max > 0 (the frames "
                             "trained at the first pass's own input train the head)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rope_dim(self) -> int:
        return int(round(self.head_dim * self.rope_fraction / 2)) * 2

    @property
    def tokens_per_frame(self) -> int:
        h, w = self.latent_size
        return (h // self.patch_size) * (w // self.patch_size)


# ---------------------------------------------------------------------------- helpers


def previous_state(state: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
    """The state each frame's previous frame ended in: `state` (B, T, S) shifted one frame later, zeros at the
    window's first frame and where `first` (B, T) marks an episode start (nothing came before it)."""
    prev = torch.cat([torch.zeros_like(state[:, :1]), state[:, :-1]], dim=1)
    return prev if first is None else prev.masked_fill(first.bool()[..., None], 0.0)


def energy_score(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, lam: float = 1.0, eps: float = 1e-6,
                 patch: int | tuple[int, ...] = 0):
    """The energy score of two samples a, b (B, T, ...) of each frame against its true value, per frame (B, T),
    and the samples' spread (their RMS distance).

    E|X - y| - lam/2 |X - X'| with RMS distances: for lam = 1 it is strictly proper (lowest in expectation only
    when the samples are drawn from the true distribution of y), so unlike the squared error it does not reward
    the mean of several possible frames. `eps` keeps the gradient finite where a sample equals the target.
    `patch` > 0 takes the distances over patch x patch regions of (B, T, C, H, W) frames and averages the scores;
    a tuple of such sides averages the score (and spread) of each."""
    if isinstance(patch, (list, tuple)):
        parts = [energy_score(a, b, target, lam, eps, k) for k in patch]
        return torch.stack([p[0] for p in parts]).mean(0), torch.stack([p[1] for p in parts]).mean(0)

    def dist(x, y):
        d2 = (x.float() - y.float()).pow(2)
        if patch:
            B, T, C, H, W = d2.shape
            d2 = d2.view(B, T, C, H // patch, patch, W // patch, patch).permute(0, 1, 3, 5, 2, 4, 6)
            return (d2.flatten(4).mean(-1) + eps).sqrt().flatten(2).mean(-1)
        return (d2.flatten(2).mean(-1) + eps).sqrt()

    spread = dist(a, b)
    return 0.5 * (dist(a, target) + dist(b, target)) - 0.5 * lam * spread, spread


def karras_sigmas(steps: int, sigma_max: float, sigma_min: float, rho: float) -> list[float]:
    """`steps` noise levels from sigma_max down (Karras rho spacing), then a final 0.

    steps+1 points are spaced from sigma_max to sigma_min and the last is replaced by 0, so
    1 step = [sigma_max, 0] and 2 steps = [sigma_max, ~0.3, 0]: no pass is wasted at sigma_min.
    """
    if steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {steps}")
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    s = [(a + i / steps * (b - a)) ** rho for i in range(steps + 1)]
    s[0], s[-1] = float(sigma_max), 0.0
    return s


def edm_precond(sigma: torch.Tensor, sigma_data: float):
    """EDM's c_skip, c_out, c_in, c_noise for x0 prediction: D = c_skip * x + c_out * F(c_in * x, c_noise)."""
    sigma = sigma.float()
    s2, d2 = sigma**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1 / (s2 + d2).sqrt()
    c_noise = sigma.clamp_min(1e-3).log() / 4  # sigma=0 (clean context) maps to the smallest level
    return c_skip, c_out, c_in, c_noise


def rope_angles(pos: torch.Tensor, rope_dim: int, base: float, period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer frame positions (...,) -> cos, sin (..., rope_dim // 2) in float32.

    Frequency j is 2*pi*n_j/period with integer n_j ~ period/(2*pi) * base**(-2j/rope_dim), and the angle
    is computed as 2*pi*((pos*n_j) mod period)/period: exact for any pos, periodic in pos with `period`.
    """
    freqs = base ** (-torch.arange(0, rope_dim, 2, device=pos.device, dtype=torch.float64) / rope_dim)
    n = (freqs * period / (2 * math.pi)).round().clamp_min(1).long()
    ang = ((pos.long() % period)[..., None] * n % period).float() * (2 * math.pi / period)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2*cos.shape[-1] dims of x (..., N, head_dim) pairwise (half-split layout)."""
    r = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2, rest = x[..., :r], x[..., r : 2 * r], x[..., 2 * r :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


def frame_causal_mask(T: int, P: int, window: int, device=None) -> torch.Tensor:
    """(T*P, T*P) bool, True = may attend: full within a frame, causal across frames, at most `window` frames back."""
    f = torch.arange(T, device=device).repeat_interleave(P)
    d = f[:, None] - f[None, :]
    return (d >= 0) & (d <= window)


def teacher_forcing_mask(T: int, P: int, window: int, device=None, streams: int = 1) -> torch.Tensor:
    """((1+S)*T*P, (1+S)*T*P) bool for [context stream | S target streams] tokens, True = may attend.

    Context frame i sees context frames i-window .. i (as the sampler's clean pass does); target frame i of each
    target stream sees context frames i-window .. i-1 and itself (as a frame being denoised sees the KV cache);
    the context stream never sees a target, and no target stream sees another, so several samples of the same
    frames (`streams` > 1) share one context stream and each is what it would be alone.
    """
    f = torch.arange(T, device=device).repeat_interleave(P)
    d = f[:, None] - f[None, :]
    ctx_ctx = (d >= 0) & (d <= window)
    tgt_ctx = (d >= 1) & (d <= window)
    tgt_tgt = d == 0
    none = torch.zeros_like(ctx_ctx)
    rows = [torch.cat([ctx_ctx] + [none] * streams, dim=1)]
    for s in range(streams):
        rows.append(torch.cat([tgt_ctx] + [tgt_tgt if j == s else none for j in range(streams)], dim=1))
    return torch.cat(rows, dim=0)


def frame_causal_mask_mod(P: int, window: int):
    """`frame_causal_mask` as a FlexAttention mask_mod over token indices."""

    def mod(b, h, q, k):
        d = q // P - k // P
        return (d >= 0) & (d <= window)

    return mod


def teacher_forcing_mask_mod(T: int, P: int, window: int):
    """`teacher_forcing_mask` as a FlexAttention mask_mod, for any number of target streams: tokens [0, T*P) are
    the context stream, each further T*P one target stream. A context query sees context keys 0..window frames
    back; a target query sees context keys 1..window frames back and its own frame of its own stream."""
    TP = T * P

    def mod(b, h, q, k):
        sq, sk = q // TP, k // TP
        d = (q % TP) // P - (k % TP) // P
        return ((sk == 0) & (d >= (sq > 0).to(d.dtype)) & (d <= window)) | ((sq > 0) & (sk == sq) & (d == 0))

    return mod


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention as flex

    return torch.compile(flex, dynamic=False)


def flex_attention(q, k, v, block_mask):
    """FlexAttention, compiled once per process on CUDA (its fused kernel); eager elsewhere (the reference
    implementation, forward only: what the tests compare against SDPA on a CPU). Inside a compiled window
    forward the plain function is traced into the enclosing graph."""
    if q.device.type != "cuda" or torch.compiler.is_compiling():
        from torch.nn.attention.flex_attention import flex_attention as flex

        return flex(q, k, v, block_mask=block_mask)
    return _compiled_flex()(q, k, v, block_mask=block_mask)


def timestep_embedding(c: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of a scalar per frame (..., ) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=c.device, dtype=torch.float32) / half)
    ang = c.float()[..., None] * freqs * 100.0  # c_noise spans ~[-1.7, 0.6]: scale so low freqs still vary
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


# ---------------------------------------------------------------------------- modules


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class Attention(nn.Module):
    """Multi-head attention with QK-norm (stable in bf16) and temporal RoPE on part of each head."""

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.q_norm = RMSNorm(cfg.head_dim)
        self.k_norm = RMSNorm(cfg.head_dim)
        self.dropout = cfg.dropout

    def forward(self, x, rope, mask, cache=None):
        """x (B, N, D); rope: (cos, sin) broadcastable to (B, H, N, rope_dim/2); mask bool broadcastable to
        (B, H, N, N_keys). cache: optional (k_buf, v_buf, index) for one new frame per row (N = P): this
        call's rotated k, v are scattered into the ring buffers (B, H, R*P, hd) at `index` (B, H, 1, P*hd),
        then the frame attends over the whole buffer. Returns (out, (k, v)) with k rotated."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        kv = (k, v)
        if cache is not None:
            k_buf, v_buf, index = cache
            H, hd = self.n_head, self.head_dim
            k_buf.view(B, H, -1, N * hd).scatter_(2, index, k.reshape(B, H, 1, N * hd))
            v_buf.view(B, H, -1, N * hd).scatter_(2, index, v.reshape(B, H, 1, N * hd))
            k, v = k_buf, v_buf
        if isinstance(mask, torch.Tensor) or mask is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        else:  # a FlexAttention BlockMask (DynamicsConfig.attention == "flex")
            y = flex_attention(q, k, v, mask)
        return self.proj(y.transpose(1, 2).reshape(B, N, D)), kv


class MLP(nn.Module):
    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        hidden = int(cfg.n_embd * cfg.mlp_ratio)
        self.fc = nn.Linear(cfg.n_embd, hidden)
        self.proj = nn.Linear(hidden, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm transformer block modulated per frame: shift/scale/gate from the shared adaLN plus its own table."""

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.n_embd, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.n_embd, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(cfg)
        self.mod_table = nn.Parameter(torch.randn(6, cfg.n_embd) / cfg.n_embd**0.5)

    def forward(self, x, mod, rope, mask, cache=None):
        """x (B, T, P, D), mod (B, T, 6, D) from the shared adaLN. Returns (x, (k, v))."""
        B, T, P, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = (mod + self.mod_table.to(mod.dtype)).unsqueeze(2).unbind(3)  # each (B, T, 1, D)
        h = self.norm1(x) * (1 + sc1) + sh1
        a, kv = self.attn(h.reshape(B, T * P, D), rope, mask, cache)
        x = x + g1 * a.view(B, T, P, D)
        x = x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + sh2)
        return x, kv


# ---------------------------------------------------------------------------- the model


class Dynamics(nn.Module):
    """Frame-causal diffusion transformer over latent patch tokens with reward/termination heads."""

    def __init__(self, config: DynamicsConfig):
        super().__init__()
        self.config = cfg = config
        C, p, D = cfg.latent_channels, cfg.patch_size, cfg.n_embd
        self.patch_in = nn.Linear(C * p * p, D)
        self.pos_emb = nn.Parameter(torch.randn(cfg.tokens_per_frame, D) * 0.02)
        self.noise_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.action_mlp = nn.Sequential(nn.Linear(cfg.action_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))  # adaLN-single, shared by all blocks
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.out_table = nn.Parameter(torch.randn(2, D) / D**0.5)
        self.out = nn.Linear(D, C * p * p)
        # reward, termination logit, then the state frame t ends in (state_dim values)
        self.heads = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, 2 + cfg.state_dim))
        # the state the previous frame ended in, as conditioning (absent without state: old weights load as they are)
        self.state_mlp = (nn.Sequential(nn.Linear(cfg.state_dim, D), nn.SiLU(), nn.Linear(D, D))
                          if cfg.state_dim else None)
        self._block_masks: dict = {}  # attention "flex": BlockMasks by window shape (not state: rebuilt on demand)
        self._dense_only = False  # set by dense_masks()
        self._compiled: dict[str, Callable] = {}  # set by compile_window_forwards(); not state
        self.apply(self._init)
        zeroed = (self.adaln[-1], self.out) + ((self.state_mlp[-1],) if self.state_mlp is not None else ())
        for m in zeroed:  # start as "output = c_skip * input", blocks as near-identity, state as no input
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # -- pieces shared by the window forward and the cached single-frame forward

    def _patchify(self, z):  # (B, T, C, h, w) -> (B, T, P, C*p*p)
        B, T, C, h, w = z.shape
        p = self.config.patch_size
        z = z.reshape(B, T, C, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return z.reshape(B, T, (h // p) * (w // p), C * p * p)

    def _unpatchify(self, x):  # (B, T, P, C*p*p) -> (B, T, C, h, w)
        cfg = self.config
        B, T = x.shape[:2]
        p, C, (h, w) = cfg.patch_size, cfg.latent_channels, cfg.latent_size
        x = x.reshape(B, T, h // p, w // p, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, T, C, h, w)

    def _embed(self, z_noisy, sigma, actions, state_prev=None):
        """-> tokens (B, T, P, D), cond (B, T, D), mod (B, T, 6, D), (c_skip, c_out) (B, T, 1, 1, 1).
        state_prev (B, T, S): the state each frame's previous frame ended in (None: zeros, as at a first frame)."""
        c_skip, c_out, c_in, c_noise = edm_precond(sigma, self.config.sigma_data)
        dt = self.patch_in.weight.dtype
        x = self.patch_in(self._patchify(z_noisy * c_in[..., None, None, None].to(z_noisy.dtype)).to(dt))
        x = x + self.pos_emb.to(dt)
        cond = self.noise_mlp(timestep_embedding(c_noise, 256).to(dt)) + self.action_mlp(actions.to(dt))
        if self.state_mlp is not None:
            if state_prev is None:
                state_prev = actions.new_zeros(*actions.shape[:-1], self.config.state_dim)
            cond = cond + self.state_mlp(state_prev.to(dt))
        mod = self.adaln(cond).unflatten(-1, (6, -1))
        return x, cond, mod, (c_skip[..., None, None, None], c_out[..., None, None, None])

    def _finish(self, x, cond, z_noisy, pre):
        """Final adaLN + linear -> x0 prediction; mean-pooled hidden -> heads (reward, termination logit, state)."""
        h = self.norm_out(x)
        shift, scale = (self.out_table.to(cond.dtype) + cond[:, :, None]).unsqueeze(2).unbind(3)
        Fx = self._unpatchify(self.out(h * (1 + scale) + shift)).float()
        c_skip, c_out = pre
        z0 = c_skip * z_noisy.float() + c_out * Fx
        r = self.heads(h.mean(2)).float()
        return z0.to(z_noisy.dtype), r[..., 0], r[..., 1], r[..., 2:]

    @contextlib.contextmanager
    def dense_masks(self):
        """Within it, window forwards use dense SDPA masks even with attention "flex": the same function, in a form
        torch's FLOP counter can trace (it cannot trace compiled FlexAttention)."""
        before, self._dense_only = self._dense_only, True
        try:
            yield self
        finally:
            self._dense_only = before

    def uses_block_mask(self, device) -> bool:
        """Whether a window forward on `device` runs its mask as a FlexAttention BlockMask (else a dense mask)."""
        return self.config.attention == "flex" and torch.device(device).type == "cuda" and not self._dense_only

    def _window_mask(self, kind: str, T: int, P: int, window: int, device, streams: int = 1):
        """The attention mask of a window forward: a dense bool mask, or (attention "flex", on CUDA) a BlockMask
        built once per shape and device and kept (building one costs more than the attention it saves). Flex
        has no backward on a CPU, so there the dense mask computes the same function."""
        if not self.uses_block_mask(device):
            if kind == "teacher_forcing":
                return teacher_forcing_mask(T, P, window, device, streams)
            return frame_causal_mask(T, P, window, device)
        key = (kind, T, P, window, streams, str(device))
        if key not in self._block_masks:
            from torch.nn.attention.flex_attention import create_block_mask

            n = (1 + streams if kind == "teacher_forcing" else 1) * T * P
            mod = teacher_forcing_mask_mod(T, P, window) if kind == "teacher_forcing" else frame_causal_mask_mod(P, window)
            self._block_masks[key] = create_block_mask(mod, None, None, n, n, device=device)
        return self._block_masks[key]

    # -- forward over a window (training, the reference sampler)

    def compile_window_forwards(self, compiler: Callable | None = None) -> None:
        """Run the two window forwards (`forward`, `forward_teacher_forcing`) through `compiler` from now on.

        Only the transformer, not the loss around it: Inductor fails on the loss's BCE reduction (torch 2.11,
        H200), while the compiled forward alone makes the teacher-forcing step 1.83x eager FlexAttention's (2.13x
        eager SDPA's). Within `dense_masks()` the eager functions run: torch's FLOP counter cannot trace them.
        The default compiler makes one static graph per window shape (training uses two or three)."""
        compiler = functools.partial(torch.compile, dynamic=False) if compiler is None else compiler
        self._compiled = {"causal": compiler(self._forward_causal),
                          "teacher_forcing": compiler(self._forward_teacher_forcing)}

    def _window_forward(self, kind: str, eager: Callable) -> Callable:
        fn = None if self._dense_only else self._compiled.get(kind)
        return eager if fn is None else fn

    def forward(self, z_noisy, sigma, actions, window: int | None = None, return_kv: bool = False, state_prev=None):
        """z_noisy (B, T, C, h, w), sigma (B, T), actions (B, T, A) -> (z0_pred, reward (B, T), term_logit (B, T),
        state (B, T, S)): S = config.state_dim values, the state each frame ends in (normalised); state_prev
        (B, T, S) the state each frame's previous frame ended in.

        Frame t is conditioned on actions[:, t] (the action that led INTO frame t) and attends to
        frames t-window .. t (window defaults to context_frames). Frame t sits at RoPE position t. With
        return_kv, also returns the per-layer (k, v) (B, H, T*P, hd), keys rotated (fills the sampler's cache).
        """
        return self._window_forward("causal", self._forward_causal)(z_noisy, sigma, actions, window, return_kv,
                                                                    state_prev)

    def _forward_causal(self, z_noisy, sigma, actions, window: int | None = None, return_kv: bool = False,
                        state_prev=None):
        cfg = self.config
        B, T = sigma.shape
        window = cfg.context_frames if window is None else window
        x, cond, mod, pre = self._embed(z_noisy, sigma, actions, state_prev)
        P = x.shape[2]
        cos, sin = rope_angles(torch.arange(T, device=x.device).repeat_interleave(P), cfg.rope_dim, cfg.rope_base,
                               cfg.rope_period)
        mask = self._window_mask("causal", T, P, window, x.device)
        kvs = []
        for block in self.blocks:
            x, kv = block(x, mod, (cos, sin), mask)
            kvs.append(kv)
        out = self._finish(x, cond, z_noisy, pre)
        return (*out, kvs) if return_kv else out

    # -- forward over a window as two streams (teacher-forcing training, the agreement test)

    def forward_teacher_forcing(self, z_ctx, sigma_ctx, z_noisy, sigma, actions, window: int | None = None,
                                state_prev=None):
        """Denoise every frame of a window against the clean context before it, in one pass.

        z_ctx (B, T, C, h, w) the context stream at levels sigma_ctx (B, T); z_noisy (B, S*T, C, h, w) S >= 1
        target streams of the same T frames, one after another, at levels sigma (B, S*T); actions (B, T, A)
        into-frame, shared by all streams. Target frame t sees context frames t-window .. t-1 and itself
        (`teacher_forcing_mask`), never another stream; every stream's frame t sits at RoPE position t, so each
        target stream gets what it would alone, and S samples of a frame cost one context stream, not S.
        Returns (z0_pred of the targets (B, S*T, ...), reward (B, T), term_logit (B, T), state (B, T, S)), the heads
        read from the context stream (the sampler reads them from its clean pass), except the termination logit
        under `term_from: start`, read from the first target stream (the sampler's first pass); state_prev (B, T, S)
        conditions every stream's frame t, like its action.
        """
        return self._window_forward("teacher_forcing", self._forward_teacher_forcing)(
            z_ctx, sigma_ctx, z_noisy, sigma, actions, window, state_prev)

    def _forward_teacher_forcing(self, z_ctx, sigma_ctx, z_noisy, sigma, actions, window: int | None = None,
                                 state_prev=None):
        cfg = self.config
        B, T = sigma_ctx.shape
        streams = sigma.shape[1] // T
        if streams < 1 or sigma.shape[1] != streams * T or z_noisy.shape[1] != streams * T:
            raise ValueError(f"target streams must be whole windows of the context's {T} frames, got "
                             f"sigma {tuple(sigma.shape)} and z_noisy {tuple(z_noisy.shape)}")
        window = cfg.context_frames if window is None else window
        xc, cc, mc, pc = self._embed(z_ctx, sigma_ctx, actions, state_prev)
        per_stream = (lambda a: None if a is None else a.repeat(1, streams, 1))  # noqa: E731
        xn, cn, mn, pn = self._embed(z_noisy, sigma, per_stream(actions), per_stream(state_prev))
        x, cond, mod = torch.cat([xc, xn], 1), torch.cat([cc, cn], 1), torch.cat([mc, mn], 1)
        P = x.shape[2]
        pos = torch.arange(T, device=x.device).repeat(1 + streams).repeat_interleave(P)
        cos, sin = rope_angles(pos, cfg.rope_dim, cfg.rope_base, cfg.rope_period)
        mask = self._window_mask("teacher_forcing", T, P, window, x.device, streams)
        for block in self.blocks:
            x, _ = block(x, mod, (cos, sin), mask)
        pre = tuple(torch.cat([a, b], 1) for a, b in zip(pc, pn))
        z0, r, t, st = self._finish(x, cond, torch.cat([z_ctx, z_noisy], 1), pre)
        # the termination head of `term_from: start` reads the first target stream (where a frame is at its first
        # pass's input, the loss uses it), the other heads the context stream
        t = t[:, T:2 * T] if cfg.term_from == "start" else t[:, :T]
        return z0[:, T:], r[:, :T], t, st[:, :T]

    # -- forward of one new frame against a KV cache (the real-time sampler)

    def forward_cached(self, z_noisy, sigma, action, pos, caches, slot, key_valid, state_prev=None):
        """One new frame per row against ring-buffer KV caches (the real-time sampler).

        z_noisy (B, C, h, w), sigma (B,), action (B, A); pos (B,) int64 the frame's RoPE position (frame index);
        caches: per layer (k_buf, v_buf) (B, H, R*P, hd) holding rotated keys of R frame slots; slot (B,) int64:
        the slot this frame's k, v are written to (in place, every call); key_valid (B, R*P) bool: the keys
        the frame may attend to (its own slot included); state_prev (B, S) the state the previous frame ended in.
        Returns (z0 (B, C, h, w), reward (B,), term_logit (B,), state (B, S)).
        """
        cfg = self.config
        x, cond, mod, pre = self._embed(z_noisy[:, None], sigma[:, None], action[:, None],
                                        None if state_prev is None else state_prev[:, None])
        B, _, P, _ = x.shape
        cos, sin = rope_angles(pos, cfg.rope_dim, cfg.rope_base, cfg.rope_period)
        rope = (cos[:, None, None], sin[:, None, None])  # (B, 1, 1, r): one position per row
        index = slot.view(B, 1, 1, 1).expand(B, cfg.n_head, 1, P * cfg.head_dim)
        mask = key_valid[:, None, None, :]
        for block, (k_buf, v_buf) in zip(self.blocks, caches):
            x, _ = block(x, mod, rope, mask, (k_buf, v_buf, index))
        z0, r, t, st = self._finish(x, cond, z_noisy[:, None], pre)
        return z0[:, 0], r[:, 0], t[:, 0], st[:, 0]

    # -- training

    def start_input(self, context: torch.Tensor) -> torch.Tensor:
        """What frame t's first sampling pass starts from, before noise, for every frame of a window (B, T, ...):
        zeros ("noise"), or context frame t-1 ("previous"; zeros for frame 0, which has no previous frame)."""
        if self.config.start_from == "noise":
            return torch.zeros_like(context)
        return torch.cat([torch.zeros_like(context[:, :1]), context[:, :-1]], dim=1)

    def sample_sigma(self, B: int, T: int, device, context_mask=None, generator=None):
        """Diffusion-forcing noise levels (B, T) and the context-like mask (B, T)."""
        cfg = self.config
        if context_mask is None:
            context_mask = torch.rand(B, T, device=device, generator=generator) < cfg.p_context
        s_ctx = torch.rand(B, T, device=device, generator=generator) * cfg.sigma_ctx_max
        s_tgt = self.sample_target_sigma(B, T, device, generator)
        return torch.where(context_mask, s_ctx, s_tgt), context_mask

    def sample_target_sigma(self, B: int, T: int, device, generator=None):
        """Levels of frames being denoised (B, T): EDM's log-normal capped at sigma_max (the sampler never goes
        higher), a fraction `p_sigma_max` at sigma_max."""
        cfg = self.config
        s = (cfg.sigma_p_mean + cfg.sigma_p_std * torch.randn(B, T, device=device, generator=generator)).exp()
        s = s.clamp_max(cfg.sigma_max)
        if cfg.p_sigma_max > 0:
            at_max = torch.rand(B, T, device=device, generator=generator) < cfg.p_sigma_max
            s = torch.where(at_max, torch.full_like(s, cfg.sigma_max), s)
        return s

    def sample_context_sigma(self, B: int, T: int, device, generator=None):
        """Context-noise augmentation levels (B, T): a fraction `p_context_aug` of windows gets per-frame
        U(0, sigma_ctx_max), the rest is clean (the level enters the model, as in GameNGen)."""
        cfg = self.config
        noised = torch.rand(B, 1, device=device, generator=generator) < cfg.p_context_aug
        s = torch.rand(B, T, device=device, generator=generator) * cfg.sigma_ctx_max
        return torch.where(noised, s, torch.zeros_like(s))

    def loss(self, z, actions, rewards=None, terminated=None, first=None, *, loss_mask=None, context_mask=None,
             context_z=None, generator=None, state=None, state_prev=None):
        """Training loss on a window of clean normalised latents, by `config.objective`.

        z (B, T, C, h, w) clean; actions (B, T, A) into-frame; rewards (B, T); terminated (B, T) bool;
        first (B, T) bool marks episode starts (their reward/termination is not a real signal and is masked).
        loss_mask (B, T) bool: frames whose denoising counts (default: all; teacher forcing also drops frame 0,
        which has no context). context_z: teacher forcing only: the context stream's frames when they differ
        from the targets z (self-forcing: the model's own samples as context, the true frames as targets).
        context_mask (B, T) bool: diffusion forcing only: force frames context-like / target-like.
        state (B, T, S): the normalised state each frame ends in (models with state_dim > 0): its head is trained on
        it, and each frame is conditioned on `state_prev`, the state its previous frame ended in (default: `state`
        shifted by one frame, zeros at a window's first frame and at episode starts).
        Denoising loss with EDM weighting; reward MSE + termination BCE on the frames the heads read.
        Returns (loss, metrics) with metrics as detached tensors (no host sync).
        """
        cfg = self.config
        B, T = z.shape[:2]
        dev = z.device
        if state is not None and state_prev is None:
            state_prev = previous_state(state, first)
        counted = torch.ones(B, T, dtype=torch.bool, device=dev) if loss_mask is None else loss_mask.bool()
        noise = torch.randn(z.shape, device=dev, generator=generator, dtype=torch.float32)
        if cfg.objective == "teacher_forcing":
            if context_mask is not None:
                raise ValueError("context_mask applies to the diffusion_forcing objective only")
            sigma = self.sample_target_sigma(B, T, dev, generator)
            s_ctx = self.sample_context_sigma(B, T, dev, generator)
            ctx = z if context_z is None else context_z
            ctx_noise = torch.randn(z.shape, device=dev, generator=generator, dtype=torch.float32)
            z_ctx = (ctx.float() + s_ctx[..., None, None, None] * ctx_noise).to(z.dtype)
            # the sampler's first pass starts from `start_input` at sigma_max, never from the target: frames trained
            # there get that same input (z + sigma_max * noise would leak a 1 / (1 + sigma_max^2) share of the
            # target, which the model then reads out of pure noise at inference)
            at_start = (sigma >= cfg.sigma_max)[..., None, None, None]
            base = torch.where(at_start, self.start_input(ctx).float(), z.float())
            z_noisy = (base + sigma[..., None, None, None] * noise).to(z.dtype)
            if cfg.target_loss == "energy":
                # a second sample of every start-pass frame from another start noise (the other frames repeat the
                # first copy's input, and so its output): a second target stream against the same context stream
                other = torch.randn(z.shape, device=dev, generator=generator, dtype=torch.float32)
                z_other = (base + sigma[..., None, None, None] * torch.where(at_start, other, noise)).to(z.dtype)
                z0, r, t, st = self.forward_teacher_forcing(z_ctx, s_ctx, torch.cat([z_noisy, z_other], 1),
                                                            sigma.repeat(1, 2), actions, state_prev=state_prev)
                z0, z0_other = z0.chunk(2, dim=1)
            else:
                z0, r, t, st = self.forward_teacher_forcing(z_ctx, s_ctx, z_noisy, sigma, actions,
                                                            state_prev=state_prev)
            counted = counted.clone()
            counted[:, 0] = False  # nothing to condition on: the sampler never generates a frame without context
            is_target = counted
            head_mask = torch.ones(B, T, dtype=torch.bool, device=dev)
        else:
            if context_z is not None:
                raise ValueError("context_z applies to the teacher_forcing objective only")
            sigma, is_ctx = self.sample_sigma(B, T, dev, context_mask, generator)
            z_noisy = (z.float() + sigma[..., None, None, None] * noise).to(z.dtype)
            z0, r, t, st = self(z_noisy, sigma, actions, state_prev=state_prev)
            is_target = ~is_ctx & counted
            head_mask = is_ctx & counted

        s = sigma.clamp_min(1e-3)
        w = (s**2 + cfg.sigma_data**2) / (s * cfg.sigma_data) ** 2
        err = (z0.float() - z.float()).pow(2).flatten(2).mean(-1)  # (B, T)
        cf = counted.float()
        per_frame, scored_metrics = err, {}
        if cfg.target_loss == "energy":  # the start-pass frames (teacher forcing's `at_start`) by the energy score
            score, spread = energy_score(z0, z0_other, z, cfg.energy_lambda, patch=cfg.energy_patch)
            scored = at_start[:, :, 0, 0, 0] & counted
            per_frame = torch.where(scored, score, err)
            sf = scored.float()
            n_scored = sf.sum().clamp_min(1)
            scored_metrics = {"energy": ((score * sf).sum() / n_scored).detach(),
                              "spread": ((spread * sf).sum() / n_scored).detach()}  # 0: the start noise is ignored
        den = (w * per_frame * cf).sum() / cf.sum().clamp_min(1)
        loss = den
        metrics = {"denoise": den.detach(), **scored_metrics}
        with torch.no_grad():
            tgt = is_target.float()
            metrics["mse_target"] = (err * tgt).sum() / tgt.sum().clamp_min(1)

        if state is not None and cfg.state_dim:
            sm = head_mask.float()  # a first frame's state is real (unlike its reward): it counts
            s_mse = ((st.float() - state.float()) ** 2).mean(-1)
            s_mse = (s_mse * sm).sum() / sm.sum().clamp_min(1)
            loss = loss + cfg.state_weight * s_mse
            metrics["state_mse"] = s_mse.detach()
        if first is not None:
            head_mask = head_mask & ~first.bool()
        hm = head_mask.float()
        n_head = hm.sum().clamp_min(1)
        if rewards is not None:
            r_mse = ((r - rewards.float()) ** 2 * hm).sum() / n_head
            loss = loss + cfg.reward_weight * r_mse
            metrics["reward_mse"] = r_mse.detach()
        if terminated is not None:
            tm, n_term = hm, n_head
            if cfg.term_from == "start":  # only frames at exactly the first pass's input (frame 0 has no previous)
                tm = hm * at_start[:, :, 0, 0, 0].float()
                tm[:, 0] = 0
                n_term = tm.sum().clamp_min(1)
            pos_weight = torch.tensor(cfg.term_pos_weight, device=t.device, dtype=t.dtype)
            bce = F.binary_cross_entropy_with_logits(t, terminated.float(), pos_weight=pos_weight, reduction="none")
            t_bce = (bce * tm).sum() / n_term
            loss = loss + cfg.term_weight * t_bce
            metrics["term_bce"] = t_bce.detach()
            with torch.no_grad():
                metrics["term_acc"] = (((t > 0) == terminated.bool()).float() * tm).sum() / n_term
        metrics["loss"] = loss.detach()
        return loss, metrics

    @torch.no_grad()
    def sample_teacher_forced(self, z, actions, sigmas: Sequence[float], noise=None, state_prev=None):
        """Every frame of a window sampled at once from the true frames before it (few-step Euler, no grad).

        z (B, T, C, h, w) clean context; actions (B, T, A); sigmas: the sampler's schedule (ending at 0).
        Frame t of the result is what the sampler would generate after the real frames t-K .. t-1: the
        self-forcing context of a training window at the cost of len(sigmas)-1 forward passes.
        """
        B, T = z.shape[:2]
        x = sigmas[0] * (torch.randn(z.shape, device=z.device) if noise is None else noise.float())
        x = (self.start_input(z).float() + x).to(z.dtype)
        s_ctx = torch.zeros(B, T, device=z.device)
        z0 = x
        for i in range(len(sigmas) - 1):
            s = torch.full((B, T), sigmas[i], device=z.device)
            z0 = self.forward_teacher_forcing(z, s_ctx, x, s, actions, state_prev=state_prev)[0]
            x = z0 if sigmas[i + 1] == 0 else z0 + (sigmas[i + 1] / sigmas[i]) * (x - z0)
        return z0

    # -- sampling without a cache (self-forcing-lite unrolls during training, tests)

    @torch.no_grad()
    def generate_next(self, context_z, context_actions, next_action, steps: int = 1, ctx_sigma: float = 0.0,
                      noise=None, sigmas: Sequence[float] | None = None, state_prev=None):
        """Sample the frame after `context_z` (B, T, C, h, w) (T may be 0) taken with `next_action` (B, A).

        Context frames enter at noise level ctx_sigma (as clean input: no noise is added); the new frame is
        denoised in `steps` Euler steps of x0 prediction from sigma_max. noise: optional (B, C, h, w)
        starting noise. No grad: the result is meant as context in a training window (self-forcing-lite).
        """
        cfg = self.config
        B, T = context_z.shape[:2]
        sig = list(sigmas) if sigmas is not None else karras_sigmas(steps, cfg.sigma_max, cfg.sigma_min, cfg.rho)
        if noise is None:
            noise = torch.randn(B, *context_z.shape[2:], device=context_z.device)
        x = sig[0] * noise.float()
        if cfg.start_from == "previous" and T > 0:
            x = x + context_z[:, -1].float()
        x = x.to(context_z.dtype)
        acts = torch.cat([context_actions, next_action[:, None]], dim=1)
        ctx_s = torch.full((B, T), ctx_sigma, device=context_z.device)
        z0 = x
        for i in range(len(sig) - 1):
            s = torch.cat([ctx_s, torch.full((B, 1), sig[i], device=x.device)], dim=1)
            z0 = self(torch.cat([context_z, x[:, None]], dim=1), s, acts, state_prev=state_prev)[0][:, -1]
            x = z0 if sig[i + 1] == 0 else z0 + (sig[i + 1] / sig[i]) * (x - z0)  # Euler step of the PF-ODE
        return z0

    @torch.no_grad()
    def predict_next(self, context_z, actions, steps: int = 1, ctx_sigma: float = 0.0):
        """`generate_next` with the actions of the context and the new frame in one tensor (B, T+1, A)."""
        return self.generate_next(context_z, actions[:, :-1], actions[:, -1], steps=steps, ctx_sigma=ctx_sigma)

    @torch.no_grad()
    def unroll(self, z, actions, n_real: int, n_gen: int | None = None, steps: int = 1):
        """Self-forcing-lite: return a copy of z (B, T, ...) where frames n_real .. n_real+n_gen-1 are replaced,
        one at a time, by the model's own samples conditioned on the (already replaced) frames before them.
        Train on it with `loss(z_true, ..., loss_mask=frames >= n_real+n_gen)` or a context_mask."""
        T = z.shape[1]
        n_gen = T - n_real if n_gen is None else n_gen
        out = z.clone()
        for p in range(n_real, n_real + n_gen):
            out[:, p] = self.generate_next(out[:, :p], actions[:, :p], actions[:, p], steps=steps).to(z.dtype)
        return out
