"""What crosses the video package's boundary: the errors, the warning category, :class:`VideoInfo`
and :class:`Frame`, and the file suffixes it recognises."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
from einops import rearrange

from vsr_models.errors import VSRError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".mts", ".m2ts", ".flv", ".nut"})


class InputError(VSRError, ValueError):
    """An input video or frame folder cannot be used; the message names the problem and the fix."""


class OutputError(VSRError, ValueError):
    """The output path or output settings cannot be used; the message names the fix."""


class VideoWarning(UserWarning):
    """Something about a video was handled in a lossy or unusual way (alpha dropped, truncation)."""


@dataclass
class VideoInfo:
    """What :func:`~runtime.video.probe` learned about an input.

    ``width``/``height`` are those of the decoded frames. ``fps`` is the stream's average rate
    (``None`` for a frame folder). ``time_base`` is the unit of :attr:`Frame.pts` (``None`` for a
    frame folder). ``num_frames`` is the count the container states, or the number of images in
    a folder; ``None`` when the container does not say. ``bit_depth`` is the largest component
    depth of the source pixel format (8 for ordinary video, 10 for HDR/10-bit, 16 for 16-bit PNGs).
    """

    width: int
    height: int
    fps: Fraction | None
    time_base: Fraction | None
    num_frames: int | None
    has_audio: bool
    source: Path
    kind: Literal["video", "frames"]
    bit_depth: int = 8


@dataclass
class Frame:
    """One decoded frame.

    ``index`` counts frames from the start of the input (0-based, also when ``start`` skipped
    some). ``rgb`` is float32 of shape (H, W, 3) in [0, 1]. ``pts`` is the presentation time in
    units of :attr:`VideoInfo.time_base`, or ``None`` for frame folders and streams without
    timestamps.
    """

    index: int
    rgb: np.ndarray
    pts: int | None


def chw(rgb: np.ndarray) -> np.ndarray:
    """A frame as the networks take it: (H, W, 3) -> (3, H, W), contiguous."""
    return np.ascontiguousarray(rearrange(rgb, "h w c -> c h w"))


def av_reason(e: BaseException) -> str:
    """The useful part of a PyAV error message (without the errno prefix)."""
    msg = getattr(e, "strerror", None) or str(e)
    return re.sub(r"^\[Errno -?\d+\]\s*", "", str(msg))
