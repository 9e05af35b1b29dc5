"""Start contexts a user passes to `reset(options=...)`: checked on the host and laid out for the whole batch.

`reset(options={"context", "actions", "state"})` takes one context per reset env (or one for all), as frames,
the actions that led into them (raw env actions or model vectors) and, for worlds with game state, the
variables each frame ended in. Everything here is numpy on the user's arguments, before any device work; the
env copies the result to its device in one go.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from odyssey_gym.envs.checks import check_action_vectors, discrete_actions
from odyssey_gym.worlds import WorldSpec

__all__ = ["UserContext", "check_reset_mask", "user_context"]


def _host(x: Any, dtype=None) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=dtype)


def check_reset_mask(m: Any, num_envs: int) -> np.ndarray:
    """options['reset_mask']: a (num_envs,) bool array selecting at least one env."""
    if isinstance(m, torch.Tensor):
        m = m.cpu().numpy()
    if not isinstance(m, np.ndarray):
        raise TypeError(f"options['reset_mask'] must be a numpy bool array of shape ({num_envs},), got {type(m).__name__}")
    if m.shape != (num_envs,):
        raise ValueError(f"options['reset_mask'] must have shape ({num_envs},), got {m.shape}")
    if m.dtype != np.bool_:
        raise TypeError(f"options['reset_mask'] must have dtype bool, got {m.dtype}")
    if not m.any():
        raise ValueError("options['reset_mask'] must select at least one env (all False given)")
    return m


class UserContext:
    """One batch of user contexts: frames (B,K,H,W,3) uint8, actions (B,K,A) float32 model vectors, state
    (B,K,S) float32 or None; rows of envs not being reset are zero."""

    def __init__(self, frames: np.ndarray, actions: np.ndarray, state: np.ndarray | None):
        self.frames, self.actions, self.state = frames, actions, state

    def to(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        state = None if self.state is None else torch.from_numpy(self.state).to(device)
        return torch.from_numpy(self.frames).to(device), torch.from_numpy(self.actions).to(device), state


def _scatter(rows: np.ndarray, num_envs: int, mask: np.ndarray) -> np.ndarray:
    """Rows for every env (as given) or for the reset envs only -> (num_envs, ...) with zeros elsewhere."""
    full = np.zeros((num_envs, *rows.shape[1:]), rows.dtype)
    if rows.shape[0] == num_envs:
        full[:] = rows
    else:
        full[mask] = rows
    return full


def _context_actions(actions: Any, spec: WorldSpec, n: int, K: int) -> np.ndarray:
    """options['actions'] (raw actions or model vectors, per context or one for all) -> (n, K, A) float32."""
    if actions is None:
        return np.zeros((n, K, spec.action_dim), np.float32)
    raw = _host(actions)
    if raw.ndim >= 1 and raw.shape[-1:] == (spec.action_dim,) and raw.dtype.kind == "f":
        act = raw.astype(np.float32)  # already model vectors
        check_action_vectors(act, spec.action_kind)
    elif spec.action_kind == "discrete":
        act = spec.action_to_vector(discrete_actions(raw, spec.action_dim, "options['actions']"))
    else:
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise ValueError("options['actions'] holds NaN or inf")
        act = spec.action_to_vector(raw)
    if act.ndim == 2:
        act = np.broadcast_to(act[None], (n, *act.shape))
    if act.shape != (n, K, spec.action_dim):
        raise ValueError(f"options['actions'] must match the context: expected (N, {K}) raw actions or "
                         f"(N, {K}, {spec.action_dim}) vectors, got {raw.shape}")
    return act


def _context_state(state: Any, names: tuple[str, ...], world: str, n: int, K: int) -> np.ndarray:
    """options['state']: the game variables each context frame ended in, (N, K, S) or (K, S), in the model's
    state order -> (n, K, S) float32."""
    if not names:
        raise ValueError(f"options['state'] given, but the {world!r} world model has no game state")
    st = _host(state, np.float32).astype(np.float32, copy=False)
    if st.ndim == 2:
        st = np.broadcast_to(st[None], (n, *st.shape))
    if st.shape != (n, K, len(names)):
        raise ValueError(f"options['state'] must be (N, {K}, {len(names)}) values of {list(names)} (one row per "
                         f"context frame), got {st.shape}")
    if not np.isfinite(st).all():
        raise ValueError("options['state'] holds NaN or inf")
    return st


def user_context(options: dict, spec: WorldSpec, num_envs: int, mask: np.ndarray,
                 state_names: tuple[str, ...] = ()) -> UserContext:
    """Check options['context'] (+ 'actions', 'state') against the world and lay them out for all `num_envs`.

    A context is (K,H,W,3) uint8 for every reset env, or (N,K,H,W,3) with N the number of reset envs or
    `num_envs`."""
    frames = _host(options["context"])
    H, W, _ = spec.frame_shape
    n_reset = int(mask.sum())
    if frames.dtype != np.uint8:
        raise ValueError(f"options['context'] must be uint8 frames, got dtype {frames.dtype}")
    if frames.ndim == 4:
        frames = np.broadcast_to(frames[None], (n_reset, *frames.shape))
    if frames.ndim != 5 or frames.shape[2:] != (H, W, 3):
        raise ValueError(f"options['context'] must be (N, K, {H}, {W}, 3) or (K, H, W, 3) uint8, got {frames.shape}")
    n, K = frames.shape[:2]
    if n not in (n_reset, num_envs):
        raise ValueError(
            f"options['context'] has {n} contexts; expected one per reset env ({n_reset}) or per env ({num_envs})")
    actions = _context_actions(options.get("actions"), spec, n, K)
    state = None
    if "state" in options:
        state = _scatter(_context_state(options["state"], state_names, spec.name, n, K), num_envs, mask)
    return UserContext(_scatter(frames, num_envs, mask), _scatter(actions, num_envs, mask), state)
