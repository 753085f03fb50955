"""What crosses the video package's boundary: the errors, the warning category, :class:`VideoInfo`,
:class:`Colour` and :class:`Frame`, and the file suffixes it recognises."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class MasteringDisplay:
    """HDR10 mastering display colour volume (SMPTE ST 2086), as FFmpeg's side data holds it.

    ``primaries`` are the CIE 1931 (x, y) chromaticities of the display's red, green and blue;
    ``white`` its white point; ``min_luminance`` and ``max_luminance`` in cd/m². Either part may
    be ``None`` where the source does not state it.
    """

    primaries: tuple[tuple[Fraction, Fraction], tuple[Fraction, Fraction], tuple[Fraction, Fraction]] | None
    white: tuple[Fraction, Fraction] | None
    min_luminance: Fraction | None
    max_luminance: Fraction | None


@dataclass(frozen=True)
class Colour:
    """How a video's samples are to be read: FFmpeg's codes (``AVColorPrimaries``,
    ``AVColorTransferCharacteristic``, ``AVColorSpace``, ``AVColorRange``; 2 and 0 are "unspecified")
    and the HDR10 static metadata, carried from an input to its output.

    ``light_level`` is (MaxCLL, MaxFALL) in cd/m² (ST 2086 / CTA-861.3 content light level).
    """

    primaries: int = 2
    transfer: int = 2
    matrix: int = 2
    range: int = 0
    mastering: MasteringDisplay | None = None
    light_level: tuple[int, int] | None = None

    @property
    def hdr(self) -> bool:
        """Whether the transfer is an HDR one (PQ, SMPTE ST 2084, or HLG, ARIB STD-B67)."""
        return self.transfer in (16, 18)


@dataclass
class VideoInfo:
    """What :func:`~runtime.video.probe` learned about an input.

    ``width``/``height`` are those of the decoded frames. ``fps`` is the stream's average rate
    (``None`` for a frame folder). ``time_base`` is the unit of :attr:`Frame.pts` (``None`` for a
    frame folder). ``num_frames`` is the count the container states, or the number of images in
    a folder; ``None`` when the container does not say. ``bit_depth`` is the largest component
    depth of the source pixel format (8 for ordinary video, 10 for HDR/10-bit, 16 for 16-bit PNGs).
    ``colour`` is what the first frame of a video says about its colours (all unspecified for a
    frame folder): the output is written with the same.
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
    colour: Colour = field(default_factory=Colour)


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


def hwc(frame: np.ndarray) -> np.ndarray:
    """A network's output frame as the writers take it: (3, H, W) -> (H, W, 3) (a view)."""
    return rearrange(frame, "c h w -> h w c")


def av_reason(e: BaseException) -> str:
    """The useful part of a PyAV error message (without the errno prefix)."""
    msg = getattr(e, "strerror", None) or str(e)
    return re.sub(r"^\[Errno -?\d+\]\s*", "", str(msg))
