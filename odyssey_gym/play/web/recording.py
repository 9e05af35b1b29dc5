"""Per-player session recording: the JPEGs already sent are kept (bounded), and turned into an MP4 on request.

Keeping the encoded JPEGs (a few KiB each) instead of raw frames bounds memory at
`seconds * fps * ~5 KiB` per player; the MP4 is made off the event loop (moviepy runs ffmpeg).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import deque

import numpy as np

__all__ = ["SessionRecorder", "encode_mp4"]


class SessionRecorder:
    """The last `max_frames` JPEG frames of one player (0 disables recording)."""

    def __init__(self, max_frames: int):
        self.frames: deque[bytes] = deque(maxlen=max(0, max_frames))

    def add(self, jpeg: bytes) -> None:
        if self.frames.maxlen:
            self.frames.append(jpeg)

    def snapshot(self) -> list[bytes]:
        return list(self.frames)


def encode_mp4(jpegs: list[bytes], fps: float) -> bytes:
    """JPEG frames -> MP4 (H.264, yuv420p) bytes. Blocking: call it from a worker thread."""
    if not jpegs:
        raise ValueError("no frames recorded yet")
    from PIL import Image

    from odyssey_gym.video import write_mp4

    frames = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="odyssey-web-")
    os.close(fd)
    try:
        write_mp4(path, frames, fps)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
