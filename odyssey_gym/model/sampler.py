"""Sampler: the real-time inference engine, B envs stepped as one batch with a ring-buffer KV cache.

Per layer the cache holds keys and values of R = K+1 frame slots (shape (B, heads, R*P, head_dim)):
the last K clean frames plus the slot of the frame being generated, which every denoising pass
overwrites in place (no concatenation) and whose clean pass leaves the frame's final KV behind.
A per-env pointer names that slot; a slot's age follows from the pointer alone, and a per-env
valid length masks out slots not filled since that env's reset, so envs reset at different times
share one batch. Keys are stored rotated by the temporal RoPE at their frame index; the RoPE is
exactly periodic in the index (see dynamics.py), so positions are taken mod its period and never
grow: memory is flat forever. Every step is fixed-shape device work with no host sync and no Python loop over
envs, so it can be captured in a CUDA graph.

Noise comes from a counter-based hash of (env seed, frame index, pass), not from a stateful
generator: an env's frames depend only on its own seed and history, never on the batch, and
the slow reference (`rollout_reference`) reproduces them exactly.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

from .autoencoder import frames_to_tensor, tensor_to_frames
from .dynamics import previous_state
from .world_model import RENOISE, WorldModel

CLEAN_PASS = 255  # noise stream of the clean (context-writing) pass; denoising pass i uses stream i
TERM_STREAM = 254  # the uniform that decides a sampled termination
TERMINATION_MODES = ("threshold", "sample")
CPU_PREFILL_ROWS = 2  # envs per context pass of `reset` on a CPU: bounds its RAM
# context frames per pass of `reset` on a GPU: 1024 doom-explore envs in one pass (16,384 frames through the
# encoder at once) peaked at 116.6 GiB of an H200's memory, 2,048 frames a pass at 58.0 GiB, and already fill it
GPU_PREFILL_FRAMES = 2048
_M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------- detail carry


def carry_detail(detail: torch.Tensor, decoded_prev: torch.Tensor, decoded: torch.Tensor, tau: float) -> torch.Tensor:
    """The autoencoder's lost detail (real frame minus its decoding, float (B, 3, H, W)) kept where the decoded frame
    did not change: each pixel keeps 1 - change / tau of it, where change is the largest move of any channel in its
    3x3 neighbourhood between the decoded frames. A still view keeps the real frame's detail exactly; a moving region
    fades to the plain decoding, so old detail never smears across a turn. Returns the new detail."""
    change = (decoded - decoded_prev).abs().amax(1, keepdim=True)
    change = torch.nn.functional.max_pool2d(change, 3, stride=1, padding=1)
    return detail * (1.0 - change / tau).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------- counter-based noise


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) without int64 overflow (split c into 16-bit halves)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def mix32(x):
    """A 32-bit integer hash (lowbias32 constants) of values in [0, 2**32): int64 torch tensors, numpy int64
    arrays or Python ints alike. The package's one integer hash (noise, sampled termination, start contexts)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def seed_key(seed):
    """A 32-bit key from a non-negative 64-bit seed, both halves mixed (tensor, numpy array or int)."""
    return mix32((seed & _M32) ^ mix32((seed >> 32) & _M32))


def hash_uniform(seed: torch.Tensor, frame: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """Uniform (0, 1) float32 (N, n), a pure function of (seed[i], frame[i], stream): see `hash_noise`."""
    key = seed_key(seed.long())
    key = mix32(key ^ (frame.long() & _M32))
    key = mix32((key + stream * 0x9E3779B9) & _M32)
    idx = torch.arange(n, device=seed.device, dtype=torch.int64)
    bits = mix32((key[:, None] + idx * 0x9E3779B9) & _M32)
    return ((bits >> 8).float() + 0.5) * (1.0 / (1 << 24))


def hash_noise(seed: torch.Tensor, frame: torch.Tensor, stream: int, shape) -> torch.Tensor:
    """Standard normal noise (N, *shape) float32, a pure function of (seed[n], frame[n], stream).

    seed, frame: int64 (N,) on any device. Deterministic across devices up to float rounding of
    log/cos, graph-capturable (no generator state), and independent of the batch it is drawn in.
    """
    n = math.prod(shape)
    u = hash_uniform(seed, frame, stream, 2 * n)
    u1, u2 = u[:, :n], u[:, n:]
    z = (-2.0 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)
    return z.view(-1, *shape)


def next_pass_input(z0: torch.Tensor, x: torch.Tensor, sigma: float, sigma_next: float, fresh=None) -> torch.Tensor:
    """Input of the next denoising pass at level `sigma_next` from this pass's input `x` at `sigma` and its
    prediction `z0`. DDIM (fresh None) keeps x's noise direction, (x - z0) / sigma; with `start_from="previous"`
    that direction also holds the previous frame minus the prediction, an input training never showed the model
    below sigma_max. `fresh` (standard normal noise) re-noises the prediction instead, as training noised frames."""
    if sigma_next == 0:
        return z0
    if fresh is None:
        return z0 + (sigma_next / sigma) * (x - z0)
    return z0 + (sigma_next * fresh).to(z0.dtype)


# ---------------------------------------------------------------------------- the sampler


class Sampler:
    """Fixed-shape batched stepping of a `WorldModel` with a ring-buffer KV cache of the last K clean frames.

    Args:
        model: the WorldModel (moved to `device`/`dtype` in place and put in eval mode).
        batch_size: number of envs B (fixed).
        device, dtype: where/how to run (dtype None keeps the model's; bf16 on GPU is the fast path).
        sampling_steps: denoising passes per frame (None: the model's `sampling_steps`).
        context_noise: sigma of frames entering the context (None: the model's `context_noise`).
        renoise: input of the passes after the first, "ddim" or "fresh" (None: the model's `renoise`; see
            `next_pass_input`).
        compile: torch.compile the step and capture it in a CUDA graph (CUDA only; ignored elsewhere).
        cuda_graph: capture the (eager) step in a CUDA graph (CUDA only; ignored elsewhere).
        compile_decoder: with a CUDA graph, torch.compile only the frame decoder inside it: the decoder (GroupNorm
            + convolutions at full resolution) is about 40% of a batched step, and compiled it ran 2.0x faster on
            an H200 at 64-1024 envs, while compiling the whole step fails there. Costs ~30 s at the first capture.
        seed: seeds the host generator that picks per-env seeds when `reset` is given none.
        prefill_rows: envs whose context `reset` encodes and runs in one pass (None: GPU_PREFILL_FRAMES context
            frames' worth on a GPU, CPU_PREFILL_ROWS on a CPU, where a 16-env batch in one pass took 2 GB more
            RAM than the model).

    State (device tensors, updated in place): k_cache/v_cache (L, B, H, (K+1)*P, hd), ptr, valid, frame_idx,
    seeds (B,), last_latent (B, C, h, w) = the newest frame's normalised latent (where the next frame starts from with
    start_from="previous"), nonfinite (B,) bool = the last step's new latent held a NaN/inf (read it lazily: no sync).

    How it runs is its own business: `mode` says what it runs ("eager", "cuda_graph", "compile+cuda_graph",
    "cuda_graph+compiled_decoder"); a capture or compile that fails falls back by itself, once, with a
    RuntimeWarning (a failed decoder compile to the plain CUDA graph, anything else to eager), and
    `fallback_error` says why. `prepare()` captures now instead of at the first step.
    """

    def __init__(self, model: WorldModel, batch_size: int, device=None, dtype: torch.dtype | None = None,
                 sampling_steps: int | None = None, context_noise: float | None = None, renoise: str | None = None,
                 compile: bool = False, cuda_graph: bool = False, seed: int = 0, termination: str = "threshold",
                 prefill_rows: int | None = None, compile_decoder: bool = False,
                 terminal_state: tuple[str, float] | None = None, detail_carry: float | None = None):
        device = torch.device(device) if device is not None else model.device
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, self.model.dtype
        cfg = model.config
        d = cfg.dynamics
        self.B, self.K, self.P, self.L = int(batch_size), d.context_frames, d.tokens_per_frame, d.n_layer
        self.H, self.hd = d.n_head, d.head_dim
        self.A = d.action_dim
        self.latent_shape = (d.latent_channels, *d.latent_size)
        self.frame_shape = (*cfg.ae.frame_size, 3)
        self.context_length = self.K
        self.sampling_steps = int(sampling_steps or cfg.sampling_steps)
        self.sigmas = cfg.sigma_schedule(self.sampling_steps)
        self.context_noise = float(cfg.context_noise if context_noise is None else context_noise)
        self.renoise = cfg.renoise if renoise is None else renoise
        if self.renoise not in RENOISE:
            raise ValueError(f"renoise must be one of {RENOISE}, got {self.renoise!r}")
        self._fresh = self.renoise == "fresh"
        if not isinstance(termination, str) or termination not in TERMINATION_MODES:
            raise ValueError(f"termination must be one of {TERMINATION_MODES}, got {termination!r}")
        # "sample": terminate with the head's probability, as World Models sampled its done flag, so an agent
        # cannot learn that a state never ends. Training weighted positives by term_pos_weight, which
        # multiplies the odds; subtracting its log gives back the data's hazard.
        self.termination = termination
        self._term_offset = math.log(max(float(getattr(d, "term_pos_weight", 1.0)), 1e-6))
        self.generator = torch.Generator().manual_seed(seed)
        if prefill_rows is None:
            prefill_rows = max(1, GPU_PREFILL_FRAMES // self.K) if device.type == "cuda" else CPU_PREFILL_ROWS
        if isinstance(prefill_rows, bool) or not isinstance(prefill_rows, int) or prefill_rows < 1:
            raise ValueError(f"prefill_rows must be an integer >= 1, got {prefill_rows!r}")
        self.prefill_rows = prefill_rows

        B, K, P, L, H, hd, dev = self.B, self.K, self.P, self.L, self.H, self.hd, device
        self.R = R = K + 1  # K context slots + the slot of the frame being generated
        self.k_cache = torch.zeros(L, B, H, R * P, hd, device=dev, dtype=self.dtype)  # keys, RoPE-rotated
        self.v_cache = torch.zeros(L, B, H, R * P, hd, device=dev, dtype=self.dtype)
        self.ptr = torch.zeros(B, dtype=torch.int64, device=dev)  # slot of the next generated frame
        self.valid = torch.zeros(B, dtype=torch.int64, device=dev)  # number of valid slots (<= K)
        self.frame_idx = torch.zeros(B, dtype=torch.int64, device=dev)  # frame index since reset: noise counter and RoPE position
        self.seeds = torch.zeros(B, dtype=torch.int64, device=dev)
        self.last_latent = torch.zeros(B, *self.latent_shape, device=dev, dtype=self.dtype)
        self.nonfinite = torch.zeros(B, dtype=torch.bool, device=dev)
        # the termination head's calibrated probability that the newest step ended the episode (what "sample" draws
        # from): an eval ranks it against real deaths, where a threshold would hide a hazard that rises with danger
        self.term_prob = torch.zeros(B, dtype=torch.float32, device=dev)
        # game state (models with state_variables): the state the newest frame ended in, normalised; the next
        # frame is conditioned on it and the clean pass's state head replaces it
        self.S = int(d.state_dim)
        self.state = torch.zeros(B, self.S, device=dev, dtype=self.dtype)
        self._terminal = self._terminal_rule(terminal_state)
        self._slots = torch.arange(R, device=dev)
        self._sig = [torch.full((B,), s, device=dev) for s in self.sigmas]
        self._sig_ctx = torch.full((B,), self.context_noise, device=dev)
        self._start_previous = d.start_from == "previous"
        self._term_from_start = d.term_from == "start"
        # detail carry: the shown frame's lost detail and the decoding it sits on, per env (see `carry_detail`)
        self.detail_carry = float(cfg.detail_carry if detail_carry is None else detail_carry)
        if not math.isfinite(self.detail_carry) or self.detail_carry < 0:
            raise ValueError(f"detail_carry must be a finite number >= 0, got {detail_carry!r}")
        img = (B, 3, *cfg.ae.frame_size) if self.detail_carry > 0 else (0,)
        self.detail = torch.zeros(img, device=dev, dtype=torch.float32)
        self.decoded = torch.zeros(img, device=dev, dtype=torch.float32)

        use_cuda = dev.type == "cuda"
        if (compile or cuda_graph) and not use_cuda:
            warnings.warn("Sampler: compile/cuda_graph need a CUDA device; running eagerly", stacklevel=2)
        self._impl = self._step_impl
        if compile and use_cuda:
            self._impl = torch.compile(self._step_impl, dynamic=False)
        self._use_graph = bool((compile or cuda_graph) and use_cuda)
        self._graph = None
        self._compiled_decoder = bool(compile_decoder and self._use_graph and not compile)  # a compiled step has it
        self._decode = torch.compile(self.model.decode_latents, dynamic=False) if self._compiled_decoder \
            else self.model.decode_latents
        self.mode = ("compile+cuda_graph" if compile else "cuda_graph") if self._use_graph else "eager"
        if self._compiled_decoder:
            self.mode = "cuda_graph+compiled_decoder"
        self.fallback_error: str | None = None  # why a configured graph/compile mode fell back to eager

    def _terminal_rule(self, rule) -> tuple[int, float] | None:
        """(variable, threshold): an episode ends where the modelled variable falls to the threshold or below
        (take_cover: HEALTH <= 0); None: the termination head alone decides."""
        if rule is None:
            return None
        names = list(self.state_names)
        var, threshold = rule
        if var not in names:
            raise ValueError(f"terminal_state names {var!r}, which this model does not predict (its state: {names})")
        return names.index(var), float(threshold)

    @property
    def state_names(self) -> tuple[str, ...]:
        """The game variables the model predicts (`game_state()`'s columns); () for a model without state."""
        return tuple(self.model.config.state_variables or ())

    def termination_probability(self) -> torch.Tensor:
        """(B,) float32: the calibrated probability the termination head gave the newest step (a fresh tensor)."""
        return self.term_prob.clone()

    def game_state(self) -> torch.Tensor:
        """(B, S) float32: the game variables the newest frames ended in, in their own units (a fresh tensor)."""
        return self.model.denormalize_state(self.state)

    # -- state

    def _state(self) -> list[torch.Tensor]:
        return [self.k_cache, self.v_cache, self.ptr, self.valid, self.frame_idx, self.seeds, self.last_latent,
                self.nonfinite, self.state, self.term_prob, self.detail, self.decoded]

    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._state())

    @torch.no_grad()
    def reset(self, frames, actions, mask=None, seeds=None, state=None) -> None:
        """Start envs from real context frames. Rows where mask is False keep their state untouched.

        frames: uint8 (B, k, H, W, 3) with 1 <= k <= K (torch or numpy); actions: (B, k, A) float, the action
        that led INTO each context frame; mask: (B,) bool (None: all); seeds: (B,) int (None: drawn from
        the sampler's host generator). The context of the rows being reset is encoded and run through one
        clean pass, `prefill_rows` rows at a time; the other rows are not computed at all. state: (B, k, S) the
        game variables each context frame ended in (models with state; None: each context frame is conditioned on
        no state, and the model's reading of the last one starts the rollout).
        """
        B, K, dev = self.B, self.K, self.device
        frames = torch.as_tensor(frames).to(dev)
        actions = torch.as_tensor(actions).to(dev, self.dtype)
        if frames.ndim != 5 or frames.shape[0] != B or tuple(frames.shape[2:]) != self.frame_shape:
            raise ValueError(f"frames must be uint8 ({B}, k, {', '.join(map(str, self.frame_shape))}), got {tuple(frames.shape)}")
        k = frames.shape[1]
        if not 1 <= k <= K:
            raise ValueError(f"need 1..{K} context frames, got {k}")
        if tuple(actions.shape) != (B, k, self.A):
            raise ValueError(f"actions must be ({B}, {k}, {self.A}), got {tuple(actions.shape)}")
        mask = torch.ones(B, dtype=torch.bool, device=dev) if mask is None else torch.as_tensor(mask).to(dev, torch.bool)
        if state is not None:
            state = torch.as_tensor(state).to(dev)
            if not self.S or tuple(state.shape) != (B, k, self.S):
                raise ValueError(f"state must be ({B}, {k}, {self.S}) for this model, got {tuple(state.shape)}"
                                 if self.S else "state given, but this model has no game state")
            if not torch.isfinite(state).all():
                raise ValueError("state holds NaN or inf")
            state = self.model.normalize_state(state).to(self.dtype)
        if seeds is None:
            seeds = torch.randint(0, 2**62, (B,), generator=self.generator)
        seeds = torch.as_tensor(seeds).to(dev, torch.int64).reshape(B)

        kP = k * self.P
        # only the rows being reset are encoded and prefilled (one host sync, outside the hot path): a player's
        # reset on a shared server costs one row's pass, not the whole batch's
        idx = mask.nonzero().flatten()
        for r in range(0, idx.numel(), self.prefill_rows):  # rows are independent; a chunk bounds the pass's memory
            rows = idx[r: r + self.prefill_rows]
            z = self.model.encode_frames(frames[rows])  # (b, k, C, h, w)
            b = z.shape[0]
            if self.detail_carry > 0:  # what the autoencoder lost of the last real frame
                decoded = self.model.decode_latents(z[:, -1]).float()
                self.decoded[rows] = decoded
                self.detail[rows] = frames_to_tensor(frames[rows, -1]) - decoded
            if self.context_noise > 0:
                j = torch.arange(k, device=dev)
                eps = hash_noise(seeds[rows].repeat_interleave(k), j.repeat(b), CLEAN_PASS, self.latent_shape)
                z = z + self.context_noise * eps.view(b, k, *self.latent_shape).to(z.dtype)
            sigma = torch.full((b, k), self.context_noise, device=dev)
            prev = None if state is None else previous_state(state[rows])
            # dense masks: a FlexAttention kernel is compiled per shape, and the rows reset together (players
            # joining a server) and the context length vary, so compiled flex would recompile on nearly every
            # reset and, past torch's recompile limit, fall back to its unfused kernel; SDPA computes the same
            with self.model.dynamics.dense_masks():
                *out, kvs = self.model.dynamics(z, sigma, actions[rows], return_kv=True, state_prev=prev)
            if self.S:
                self.state[rows] = (out[3][:, -1] if state is None else state[rows, -1]).to(self.dtype)
            for layer in range(self.L):  # in place, a layer at a time: no cache-sized temporaries
                for cache, part in zip((self.k_cache, self.v_cache), kvs[layer]):
                    cache[layer, rows, :, :kP] = part
                    cache[layer, rows, :, kP:] = 0
                kvs[layer] = None
            self.last_latent[rows] = z[:, -1]
        self.ptr.copy_(torch.where(mask, k, self.ptr))  # k <= K < R: slots 0..k-1 hold the context
        self.valid.copy_(torch.where(mask, k, self.valid))
        self.frame_idx.copy_(torch.where(mask, k, self.frame_idx))
        self.seeds.copy_(torch.where(mask, seeds, self.seeds))

    # -- step

    def step(self, actions: torch.Tensor):
        """actions (B, A) float -> (frames uint8 (B, H, W, 3), reward float32 (B,), terminated bool (B,)).

        Returned tensors are fresh (never views of internal buffers)."""
        actions = actions.to(self.device, self.dtype)
        if self._use_graph and self._graph is None:
            self.prepare()
        if not self._use_graph:
            return self._impl(actions)
        self._static_actions.copy_(actions)
        self._graph.replay()
        return tuple(t.clone() for t in self._static_out)

    def prepare(self) -> str:
        """Capture the CUDA graph (and compile) now, not at the first step; on failure fall back (see the class
        doc). Returns `mode`. The state is left as it was (the warm-up steps are undone)."""
        if self._use_graph and self._graph is None:
            try:
                with torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext():
                    self._capture()
            except Exception as e:  # noqa: BLE001 (any capture/compile failure: run eagerly, loudly)
                if not self._compiled_decoder:
                    self._fall_back(e)
                else:  # the compiled decoder failed: the plain CUDA graph still works without it
                    self._compiled_decoder, self._decode, self.mode = False, self.model.decode_latents, "cuda_graph"
                    self.fallback_error = f"{type(e).__name__}: {e}"
                    self._release()
                    warnings.warn(f"Sampler: compiling the decoder failed ({self.fallback_error}); capturing the "
                                  "step without it", RuntimeWarning, stacklevel=2)
                    self.prepare()
        return self.mode

    def _fall_back(self, err: BaseException) -> None:
        self.fallback_error = f"{type(err).__name__}: {err}"
        self._use_graph, self._graph, self._impl, self.mode = False, None, self._step_impl, "eager"
        self._release()
        warnings.warn(f"Sampler: CUDA graph / compile failed ({self.fallback_error}); running eagerly "
                      f"(pass compile=False / cuda_graph=False to silence)", RuntimeWarning, stacklevel=3)

    def _release(self) -> None:
        """After a failed capture: let queued work finish and hand the capture's memory back."""
        try:
            torch.cuda.synchronize(self.device)
        except Exception:  # noqa: BLE001 (the context may be poisoned; the eager step will say so)
            pass
        torch.cuda.empty_cache()

    def _capture(self) -> None:
        saved = [t.clone() for t in self._state()]
        try:
            self._static_actions = torch.zeros(self.B, self.A, device=self.device, dtype=self.dtype)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):  # warm up (and compile) outside the graph
                    self._impl(self._static_actions)
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._static_out = self._impl(self._static_actions)
            self._graph = graph
        finally:
            for t, v in zip(self._state(), saved):  # undo the warm-up steps, whether or not the capture worked
                t.copy_(v)

    @torch.no_grad()
    def _step_impl(self, actions: torch.Tensor):
        dyn = self.model.dynamics
        R, P = self.R, self.P
        # slot ages: 0 = the new frame's own slot (ptr), 1 = newest context frame, ...; valid: age <= valid
        ages = (self.ptr[:, None] - self._slots[None, :]) % R  # (B, R)
        key_valid = (ages <= self.valid[:, None]).repeat_interleave(P, dim=1)  # (B, R*P)
        caches = list(zip(self.k_cache.unbind(0), self.v_cache.unbind(0)))
        pos = self.frame_idx
        state_prev = self.state if self.S else None

        # denoise the new frame: Euler steps of x0 prediction from sigma_max
        sig = self.sigmas
        x = sig[0] * hash_noise(self.seeds, self.frame_idx, 0, self.latent_shape)
        if self._start_previous:  # the new frame starts as the last one, noised (see DynamicsConfig.start_from)
            x = x + self.last_latent.float()
        x = x.to(self.dtype)
        z0 = x
        for i in range(len(sig) - 1):
            z0, _, pass_term, _ = dyn.forward_cached(x, self._sig[i], actions, pos, caches, self.ptr, key_valid,
                                                     state_prev)
            if i == 0:
                start_term = pass_term  # what a `term_from: start` head reads: the end foreseen before the frame
            fresh = (hash_noise(self.seeds, self.frame_idx, i + 1, self.latent_shape)
                     if self._fresh and sig[i + 1] > 0 else None)  # the last pass needs no noise
            x = next_pass_input(z0, x, sig[i], sig[i + 1], fresh)

        # clean pass: the frame's final KV stays in its slot (it becomes context) and the heads read it
        clean = z0
        if self.context_noise > 0:
            eps = hash_noise(self.seeds, self.frame_idx, CLEAN_PASS, self.latent_shape)
            clean = z0 + (self.context_noise * eps).to(self.dtype)
        _, reward, term_logit, state = dyn.forward_cached(clean, self._sig_ctx, actions, pos, caches, self.ptr,
                                                          key_valid, state_prev)
        if self._term_from_start:
            term_logit = start_term
        self.ptr.copy_((self.ptr + 1) % R)
        self.valid.copy_((self.valid + 1).clamp_max(self.K))
        self.frame_idx.add_(1)
        self.last_latent.copy_(z0)
        self.nonfinite.copy_(~torch.isfinite(z0).flatten(1).all(1))
        if self.S:
            self.state.copy_(state)

        decoded = self._decode(z0)
        if self.detail_carry > 0:
            decoded = decoded.float()
            self.detail.copy_(carry_detail(self.detail, self.decoded, decoded, self.detail_carry))
            self.decoded.copy_(decoded)
            decoded = decoded + self.detail
        frames = tensor_to_frames(decoded)
        self.term_prob.copy_(torch.sigmoid(term_logit.float() - self._term_offset))
        if self.termination == "sample":
            u = hash_uniform(self.seeds, self.frame_idx, TERM_STREAM, 1)[:, 0]
            term = u < self.term_prob
        else:
            term = term_logit > 0
        if self._terminal is not None:  # the modelled cause: e.g. HEALTH <= 0 in take_cover
            i, threshold = self._terminal
            term = term | (self.model.denormalize_state(state)[:, i] <= threshold)
        return frames, reward.float(), term


# ---------------------------------------------------------------------------- slow reference


@torch.no_grad()
def rollout_reference(model: WorldModel, frames, context_actions, actions, seeds, sampling_steps: int | None = None,
                      context_noise: float | None = None, renoise: str | None = None,
                      state=None, detail_carry: float | None = None) -> dict[str, torch.Tensor]:
    """The sampler's semantics without a cache: every pass recomputes the whole history since reset with
    the frame-causal sliding-window mask (window K), so each frame sees exactly what it saw in the cache.

    frames uint8 (B, k, H, W, 3), context_actions (B, k, A), actions (B, N, A), seeds (B,) int.
    state (B, k, S): the context's game variables (models with state). Returns frames uint8 (B, N, H, W, 3),
    reward (B, N), terminated (B, N) bool (the termination head's logit > 0), term_logit (B, N), latents
    (B, N, C, h, w), and state (B, N, S) in the variables' units.
    Cost grows with N^2: for tests and debugging only.
    """
    cfg = model.config
    dyn = model.dynamics
    dev, dt = model.device, model.dtype
    steps = int(sampling_steps or cfg.sampling_steps)
    sig = cfg.sigma_schedule(steps)
    cn = float(cfg.context_noise if context_noise is None else context_noise)
    fresh_noise = (cfg.renoise if renoise is None else renoise) == "fresh"
    tau = float(cfg.detail_carry if detail_carry is None else detail_carry)
    frames = torch.as_tensor(frames).to(dev)
    seeds = torch.as_tensor(seeds).to(dev, torch.int64)
    hist_a = torch.as_tensor(context_actions).to(dev, dt)
    actions = torch.as_tensor(actions).to(dev, dt)
    B, k = frames.shape[:2]
    shape = (cfg.dynamics.latent_channels, *cfg.dynamics.latent_size)

    def ctx_input(z, j):  # clean frame j as it enters the context
        if cn == 0:
            return z
        return z + (cn * hash_noise(seeds, torch.full((B,), j, device=dev), CLEAN_PASS, shape)).to(z.dtype)

    z_ctx = model.encode_frames(frames)
    decoded_prev = model.decode_latents(z_ctx[:, -1]).float()
    detail = frames_to_tensor(frames[:, -1]).float() - decoded_prev
    hist = torch.stack([ctx_input(z_ctx[:, j], j) for j in range(k)], dim=1)
    prev = hist[:, -1]  # the sampler's last_latent after reset
    S = cfg.dynamics.state_dim
    if state is not None:
        given = model.normalize_state(torch.as_tensor(state).to(dev)).to(dt)
        hist_sp, cur = previous_state(given), given[:, -1]
    else:
        hist_sp = torch.zeros(B, k, S, device=dev, dtype=dt)
        cur = dyn(hist, torch.full((B, k), cn, device=dev), hist_a, state_prev=hist_sp if S else None)[3][:, -1]
    out_z, out_r, out_t, out_s, out_f = [], [], [], [], []
    for n in range(actions.shape[1]):
        fi = k + n
        T = hist.shape[1]
        acts = torch.cat([hist_a, actions[:, n : n + 1]], dim=1)
        sp = torch.cat([hist_sp, cur[:, None].to(dt)], dim=1) if S else None
        s_ctx = torch.full((B, T), cn, device=dev)
        x = sig[0] * hash_noise(seeds, torch.full((B,), fi, device=dev), 0, shape)
        if cfg.dynamics.start_from == "previous":
            x = x + prev.float()
        x = x.to(dt)
        z0 = x
        for i in range(len(sig) - 1):
            s = torch.cat([s_ctx, torch.full((B, 1), sig[i], device=dev)], dim=1)
            out = dyn(torch.cat([hist, x[:, None]], dim=1), s, acts, state_prev=sp)
            z0 = out[0][:, -1]
            if i == 0:
                start_t = out[2][:, -1]
            fresh = (hash_noise(seeds, torch.full((B,), fi, device=dev), i + 1, shape)
                     if fresh_noise and sig[i + 1] > 0 else None)
            x = next_pass_input(z0, x, sig[i], sig[i + 1], fresh)
        clean = ctx_input(z0, fi)
        s = torch.cat([s_ctx, torch.full((B, 1), cn, device=dev)], dim=1)
        _, r, t, st = dyn(torch.cat([hist, clean[:, None]], dim=1), s, acts, state_prev=sp)
        if cfg.dynamics.term_from == "start":
            t = t.clone()
            t[:, -1] = start_t
        hist = torch.cat([hist, clean[:, None]], dim=1)
        if S:
            hist_sp, cur = sp, st[:, -1]
            out_s.append(model.denormalize_state(cur))
        hist_a = acts
        prev = z0
        out_z.append(z0)
        decoded = model.decode_latents(z0).float()
        detail = carry_detail(detail, decoded_prev, decoded, tau) if tau > 0 else torch.zeros_like(detail)
        decoded_prev = decoded
        out_f.append(tensor_to_frames(decoded + detail))
        out_r.append(r[:, -1])
        out_t.append(t[:, -1])
    z = torch.stack(out_z, dim=1)
    return {"frames": torch.stack(out_f, 1), "reward": torch.stack(out_r, 1).float(),
            "terminated": torch.stack(out_t, 1) > 0, "term_logit": torch.stack(out_t, 1).float(), "latents": z,
            "state": torch.stack(out_s, 1) if S else torch.zeros(B, len(out_z), 0, device=dev)}
