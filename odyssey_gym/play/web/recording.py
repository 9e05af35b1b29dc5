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
    from moviepy import ImageSequenceClip
    from PIL import Image

    frames = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = [f[: h - h % 2, : w - w % 2] for f in frames]
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="odyssey-web-")
    os.close(fd)
    try:
        clip = ImageSequenceClip(frames, fps=fps)
        clip.write_videofile(path, codec="libx264", audio=False, logger=None, ffmpeg_params=["-pix_fmt", "yuv420p"])
        clip.close()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
