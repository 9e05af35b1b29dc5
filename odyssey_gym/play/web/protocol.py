"""The wire format between the page and the server, and the checks on what a client sends.

Client -> server: JSON text messages of at most `MAX_MESSAGE_BYTES`:
    {"type": "keys", "seq": 17, "keys": ["w", "left"]}   the full set of keys held now
    {"type": "reset"}                                     a fresh start for this player
    {"type": "record"}                                    encode this player's frames so far to MP4
Server -> client: JSON text messages (hello, stats, full, error, record_ready) and binary frames:
    FRAME_HEADER (little-endian u32 tick, u32 seq of the last key message applied) + JPEG bytes.
The echoed seq is what lets a client measure action-to-frame latency on its own clock.
A bad message is answered with an error and ignored; it never ends the session of anyone else.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from odyssey_gym.worlds import WorldSpec

__all__ = ["MAX_MESSAGE_BYTES", "FRAME_HEADER", "ProtocolError", "KeyMap", "parse_message", "pack_frame",
           "unpack_frame_header"]

MAX_MESSAGE_BYTES = 4096
MAX_SEQ = 2**32 - 1
MAX_KEYS = 16
FRAME_HEADER = struct.Struct("<II")

# message type -> the fields it may carry (besides "type")
_FIELDS = {"keys": {"seq", "keys"}, "reset": set(), "record": set()}


class ProtocolError(ValueError):
    """A client message the server refuses; the text is sent back to that client."""


@dataclass(frozen=True)
class KeyMessage:
    seq: int
    keys: tuple[str, ...]


@dataclass(frozen=True)
class CommandMessage:
    type: str  # "reset" | "record"


def parse_message(raw: str | bytes | None) -> KeyMessage | CommandMessage:
    """Validate one client message; raise `ProtocolError` saying what is wrong."""
    if raw is None:
        raise ProtocolError("empty message")
    if isinstance(raw, bytes):
        raise ProtocolError("binary messages are not accepted; send JSON text")
    if len(raw) > MAX_MESSAGE_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too large (limit {MAX_MESSAGE_BYTES} bytes)")
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError(f"malformed JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    kind = msg.get("type")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {sorted(_FIELDS)}")
    extra = set(msg) - _FIELDS[kind] - {"type"}
    if extra:
        raise ProtocolError(f"unknown field(s) {sorted(extra)} in a {kind!r} message")
    if kind != "keys":
        return CommandMessage(kind)
    seq = msg.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise ProtocolError(f"'seq' must be an integer in [0, {MAX_SEQ}], got {seq!r}")
    keys = msg.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS or not all(isinstance(k, str) for k in keys):
        raise ProtocolError(f"'keys' must be a list of at most {MAX_KEYS} key names")
    return KeyMessage(seq, tuple(keys))


class KeyMap:
    """Held key names -> one raw action of the world (multibinary buttons, or a discrete combo index)."""

    def __init__(self, world: WorldSpec):
        self.world = world
        self.noop = np.asarray(world.noop_action(), dtype=world.action_dtype)

    def action(self, keys: tuple[str, ...]) -> np.ndarray:
        unknown = sorted({k for k in keys if k not in self.world.keys})
        if unknown:
            raise ProtocolError(f"unknown key(s) {unknown}; world {self.world.name!r} uses {sorted(self.world.keys)}")
        buttons = [0] * self.world.num_buttons
        for k in keys:
            buttons[self.world.keys[k]] = 1
        if self.world.action_kind == "multibinary":
            return np.asarray(buttons, dtype=self.world.action_dtype)
        combo = tuple(buttons)
        if combo in self.world.discrete_actions:  # e.g. left+right together is no action of take_cover
            return np.asarray(self.world.discrete_actions.index(combo), dtype=self.world.action_dtype)
        return self.noop.copy()


def pack_frame(tick: int, seq: int, jpeg: bytes) -> bytes:
    return FRAME_HEADER.pack(tick & MAX_SEQ, seq & MAX_SEQ) + jpeg


def unpack_frame_header(data: bytes) -> tuple[int, int]:
    """-> (tick, seq of the last applied key message)."""
    return FRAME_HEADER.unpack_from(data)
