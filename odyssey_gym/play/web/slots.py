"""Player-slot bookkeeping: each player owns one env index of the server's single vector env.

Everything a tick needs is kept in fixed arrays (held action, last seq, arrival time, pending
reset), so taking a tick's input is a few array copies, not a loop over players. Only the event
loop thread touches a `SlotTable`; the worker thread that steps the env gets a `TickInput` copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SlotTable", "TickInput"]


@dataclass(frozen=True)
class TickInput:
    actions: np.ndarray  # (n, *action_shape): every slot's held action (noop for free slots)
    seq: np.ndarray  # (n,) int64: seq of the key message each slot's action came from
    reset_mask: np.ndarray  # (n,) bool: slots to reset before this step (joined, left, asked)
    owners: tuple  # owner of each slot when the input was taken (None: free)
    queue_wait_s: np.ndarray  # seconds that the key messages new since the last tick waited for it


class SlotTable:
    def __init__(self, num_slots: int, noop: np.ndarray):
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.noop = np.asarray(noop)
        self.owners: list[object | None] = [None] * num_slots
        self.actions = np.stack([self.noop] * num_slots)
        self.seq = np.zeros(num_slots, np.int64)
        self.recv_time = np.zeros(num_slots, np.float64)
        self.fresh = np.zeros(num_slots, bool)
        self.reset_pending = np.zeros(num_slots, bool)

    def __len__(self) -> int:
        return len(self.owners)

    @property
    def count(self) -> int:
        return sum(o is not None for o in self.owners)

    def acquire(self, owner) -> int | None:
        """Give `owner` the lowest free slot (reset at the next tick); None when all are taken."""
        for i, o in enumerate(self.owners):
            if o is None:
                self.owners[i] = owner
                self._clear(i)
                return i
        return None

    def release(self, slot: int, owner) -> None:
        """Free `slot` if `owner` still holds it; the world is reset so no one inherits it."""
        if self.owners[slot] is owner:
            self.owners[slot] = None
            self._clear(slot)

    def _clear(self, i: int) -> None:
        self.actions[i] = self.noop
        self.seq[i] = 0
        self.fresh[i] = False
        self.reset_pending[i] = True

    def set_action(self, slot: int, action: np.ndarray, seq: int, now: float) -> None:
        self.actions[slot] = action
        self.seq[slot] = seq
        self.recv_time[slot] = now
        self.fresh[slot] = True

    def request_reset(self, slot: int) -> None:
        self.reset_pending[slot] = True

    def take(self, now: float) -> TickInput:
        """This tick's input; marks the pending resets and new messages as consumed."""
        waits = now - self.recv_time[self.fresh]
        out = TickInput(self.actions.copy(), self.seq.copy(), self.reset_pending.copy(), tuple(self.owners), waits)
        self.reset_pending[:] = False
        self.fresh[:] = False
        return out
