"""One MP4 writer for every place that makes a video (record, eval, agents, the web page's recordings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mp4(path: str | Path, frames, fps: float) -> Path:
    """uint8 RGB frames (N, H, W, 3) -> H.264 MP4 at `path`, yuv420p so every browser and player opens it.

    yuv420p needs even sides, so an odd row or column is cropped off.
    """
    from moviepy import ImageSequenceClip

    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        frames = [f[: h - h % 2, : w - w % 2] for f in frames]
    path = Path(path)
    clip = ImageSequenceClip(frames, fps=fps)
    try:
        clip.write_videofile(str(path), codec="libx264", audio=False, logger=None, ffmpeg_params=["-pix_fmt", "yuv420p"])
    finally:
        clip.close()
    return path
