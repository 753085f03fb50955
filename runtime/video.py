"""Video and frame-folder input/output for the runtime, on PyAV.

Frames cross this module's boundary as float32 RGB arrays of shape (H, W, 3) in [0, 1]:

* :func:`probe` describes an input (a video file or a folder of PNG/JPEG frames),
* :func:`read_frames` yields its frames as :class:`Frame` objects,
* :class:`VideoWriter` encodes frames into a video file (with the source's audio copied in) or
  into a folder of PNGs, writing to a hidden temporary name and renaming it into place only when
  everything succeeded, so a failed run never leaves a partial output behind.

Colour conversion
-----------------
YUV is converted with the matrix the stream is tagged with (BT.601 / BT.709 / BT.2020 / ...); an
untagged stream is taken as BT.709 when it is HD (wider than 1279 or taller than 576 pixels, the
rule players use) and BT.601 otherwise; still images (PNG, JPEG) are BT.601. Output videos are
written in limited range with the matrix the same rule picks for their size (BT.709 for HD, BT.601
otherwise), and tagged, so that players reading the tag and players guessing agree.

FFmpeg 8's swscale (bundled with PyAV 18) converts exactly only between 8-bit YUV and *planar*
8-bit RGB with ``ACCURATE_RND``: packed ``rgb24`` output is off by up to 3 levels, and every
high-bit-depth RGB path (``rgb48``, ``gbrp16``, float) loses white (255 becomes 65280/65535). So:
8-bit YUV goes through swscale to ``gbrp``; deeper YUV is brought to 4:4:4 at its own depth by
swscale (an exact operation) and the matrix is applied here in numpy; RGB and grey formats are read
from their planes directly. ``tests/test_video.py`` pins these levels.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.reformatter import Interpolation

from vsr_models.errors import VSRError

log = logging.getLogger(__name__)

__all__ = [
    "Frame",
    "InputError",
    "OutputError",
    "VideoInfo",
    "VideoWarning",
    "VideoWriter",
    "is_frame_folder",
    "natural_key",
    "probe",
    "read_frames",
]


class InputError(VSRError, ValueError):
    """An input video or frame folder cannot be used; the message names the problem and the fix."""


class OutputError(VSRError, ValueError):
    """The output path or output settings cannot be used; the message names the fix."""


class VideoWarning(UserWarning):
    """Something about a video was handled in a lossy or unusual way (alpha dropped, truncation)."""


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".mts", ".m2ts", ".flv", ".nut"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# swscale flags under which 8-bit YUV <-> planar 8-bit RGB is exact (see the module docstring).
_SWS_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
_CRF_CODECS = frozenset({"libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"})


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------


@dataclass
class VideoInfo:
    """What :func:`probe` learned about an input.

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


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def natural_key(name: str | os.PathLike[str]) -> tuple:
    """Sort key that orders embedded numbers by value: ``frame2`` < ``frame10``.

    The key alternates text and integers (``"f10.png"`` -> ``("f", 10, ".png", "f10.png")``), so
    keys of any two names compare position by position; text compares case-insensitively and the
    full name breaks ties (``f02`` vs ``f2``).
    """
    text = os.fspath(name)
    parts = re.split(r"(\d+)", text)
    key: list[str | int] = [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)]
    return (*key, text)


def is_frame_folder(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is an existing directory, i.e. an input read as a folder of frames."""
    return Path(path).is_dir()


def _frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder in natural order; hidden files are skipped."""
    files = [
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk without decoding it; raises InputError."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise InputError(f"cannot read frame {path}: {e.strerror}; check its permissions") from e
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise InputError(f"{path} is named .png but is not a PNG image (bad signature); replace or remove it")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _mp4_truncation(path: Path) -> str | None:
    """If ``path`` is an ISO-BMFF file whose top-level boxes run past its end, say so.

    An MP4 written by a recorder or a download that stopped early has its sample index (``moov``)
    missing or cut, which FFmpeg reports only as "invalid data". Walking the top-level boxes
    (4-byte size, 4-byte type, optional 64-bit size) tells truncation apart from garbage.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(8)[4:8] != b"ftyp":
                return None
            pos, seen = 0, []
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(16)
                box_size, box_type = struct.unpack(">I4s", head[:8])
                if box_size == 1 and len(head) == 16:
                    box_size = struct.unpack(">Q", head[8:16])[0]
                elif box_size == 0:
                    box_size = size - pos
                if box_size < 8:
                    return None
                seen.append(box_type.decode("latin-1"))
                if pos + box_size > size:
                    return (
                        f"the '{seen[-1]}' box needs {pos + box_size} bytes but the file ends at "
                        f"{size}, so the file is truncated (an interrupted download or recording)"
                    )
                pos += box_size
            if "moov" not in seen:
                return "it has no 'moov' index box, so the file is truncated or was never finalized"
    except (OSError, struct.error):
        return None
    return None


def _open_input(path: Path) -> av.container.InputContainer:
    """Open a media file for reading, turning every failure into an InputError with a fix."""
    if not path.exists():
        raise InputError(f"input {path} does not exist; check the path")
    if not os.access(path, os.R_OK):
        raise InputError(f"input {path} is not readable; check its permissions")
    if path.stat().st_size == 0:
        raise InputError(f"input {path} is an empty file (0 bytes); re-create or re-download it")
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as e:
        reason = _mp4_truncation(path)
        if reason:
            raise InputError(
                f"cannot read {path}: {reason}; re-download or re-export it "
                "(or remux with `-movflags faststart` so a cut file stays readable)"
            ) from e
        if isinstance(e, av.error.EOFError):
            raise InputError(
                f"{path} ends before any media data: it holds no frames (an empty or unfinished "
                "recording); pass a video that has frames"
            ) from e
        raise InputError(
            f"cannot read {path} as a video: {_av_reason(e)}; check that it is a video file "
            "(the suffix alone does not make it one) and that it is not damaged"
        ) from e


def _av_reason(e: BaseException) -> str:
    """The useful part of a PyAV error message (without the errno prefix)."""
    msg = getattr(e, "strerror", None) or str(e)
    return re.sub(r"^\[Errno -?\d+\]\s*", "", str(msg))


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first video stream that is a real video, not an attached cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if not container.streams:
        raise InputError(
            f"{path} has no streams at all: it holds no frames (an empty or unfinished file); "
            "pass a video that has frames"
        )
    kinds = ", ".join(f"{s.type} ({s.codec_context.name if s.codec_context else '?'})" for s in container.streams)
    raise InputError(
        f"{path} has no video stream (it contains: {kinds}); pass a video file or a folder of PNG/JPEG frames"
    )


# --------------------------------------------------------------------------------------------
# Colour conversion: av.VideoFrame -> float32 RGB
# --------------------------------------------------------------------------------------------

# AVColorSpace value -> (swscale colorspace name, Kr, Kb)
_MATRICES: dict[int, tuple[str, float, float]] = {
    1: ("ITU709", 0.2126, 0.0722),  # BT709
    4: ("FCC", 0.30, 0.11),  # FCC
    5: ("ITU601", 0.299, 0.114),  # BT470BG
    6: ("ITU601", 0.299, 0.114),  # SMPTE170M
    7: ("SMPTE240M", 0.212, 0.087),  # SMPTE240M
    9: ("BT2020", 0.2627, 0.0593),  # BT2020_NCL
    10: ("BT2020", 0.2627, 0.0593),  # BT2020_CL (approximated by NCL)
}
_BT709, _BT601, _SMPTE170M, _UNSPECIFIED = 1, 5, 6, 2
_RANGE_MPEG, _RANGE_JPEG = 1, 2

# Packed RGB formats read straight from their single plane: name -> channel letters in memory.
_PACKED_RGB = {
    "rgb24": "RGB", "bgr24": "BGR", "rgba": "RGBA", "bgra": "BGRA", "argb": "ARGB", "abgr": "ABGR",
    "rgb0": "RGBX", "bgr0": "BGRX", "0rgb": "XRGB", "0bgr": "XBGR",
    "rgb48le": "RGB", "rgb48be": "RGB", "bgr48le": "BGR", "bgr48be": "BGR",
    "rgba64le": "RGBA", "rgba64be": "RGBA", "bgra64le": "BGRA", "bgra64be": "BGRA",
}  # fmt: skip


class _Decoder:
    """Converts decoded frames of one input to float32 RGB (H, W, 3) in [0, 1].

    ``still`` marks image inputs (PNG/JPEG: BT.601, no HD guess). Warns once per input when an
    alpha channel is dropped or the colour matrix is not one we know.
    """

    def __init__(self, source: Path, *, still: bool) -> None:
        self.source = source
        self.still = still
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, VideoWarning, stacklevel=4)

    def matrix(self, frame: av.VideoFrame) -> tuple[str, float, float]:
        """(swscale name, Kr, Kb) of the frame's YUV matrix, guessing for untagged frames."""
        cs = frame.colorspace
        if cs in _MATRICES:
            return _MATRICES[cs]
        if cs != _UNSPECIFIED:
            self._warn_once(
                "matrix",
                f"{self.source}: colour matrix {cs} is not supported; decoding as BT.709/BT.601 "
                "by size, colours may be off",
            )
        hd = not self.still and _is_hd(frame.width, frame.height)
        return _MATRICES[_BT709 if hd else _BT601]

    def full_range(self, frame: av.VideoFrame) -> bool:
        """Whether YUV/grey samples use the full range (JPEG) rather than limited (MPEG)."""
        if frame.color_range == _RANGE_JPEG:
            return True
        if frame.color_range == _RANGE_MPEG:
            return False
        # untagged: JPEG-range formats, still images and grey (as FFmpeg treats them) are full
        return self.still or frame.format.name.startswith(("yuvj", "gray", "ya"))

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """av.VideoFrame of any software pixel format -> float32 (H, W, 3) in [0, 1]."""
        fmt = frame.format
        name = fmt.name
        if fmt.has_palette:
            rgba = _plane(frame.reformat(format="rgba"), 0, np.uint8, 4)
            if (rgba[..., 3] < 255).any():
                self._alpha_dropped()
            return rgba[..., :3].astype(np.float32) / 255.0
        comps = fmt.components
        if any(c.is_alpha for c in comps):
            self._alpha_dropped()
        bits = max(c.bits for c in comps if not c.is_alpha)
        if bits < 8:  # monob, monow, rgb4, ...: lift to 8 bits, which is exact
            frame = frame.reformat(format="rgb24" if fmt.is_rgb else "gray")
            return self.to_rgb(frame)
        if name in _PACKED_RGB:
            return self._packed_rgb(frame, _PACKED_RGB[name], bits)
        if name.startswith(("gbrp", "gbrap")) and "f" not in name[4:]:
            dtype = _uint_dtype(bits, fmt.is_big_endian)
            g, b, r = (_plane(frame, i, dtype, 1)[..., 0] for i in range(3))
            return _normalize(np.stack([r, g, b], axis=-1), bits)
        if not fmt.is_rgb and len([c for c in comps if not c.is_alpha]) == 1:
            return self._gray(frame, bits)
        if fmt.is_rgb:  # float or exotic packed RGB: swscale at the nearest depth
            self._warn_once("exotic", f"{self.source}: pixel format {name} is converted approximately")
            target = "gbrp" if bits <= 8 else "gbrp16le"
            return self.to_rgb(frame.reformat(format=target, interpolation=_SWS_FLAGS))
        return self._yuv(frame, bits)

    def _alpha_dropped(self) -> None:
        self._warn_once(
            "alpha",
            f"{self.source}: frames have an alpha channel; it is dropped (colours are kept "
            "as stored, not composited over a background)",
        )

    def _packed_rgb(self, frame: av.VideoFrame, order: str, bits: int) -> np.ndarray:
        dtype = _uint_dtype(bits, frame.format.is_big_endian)
        data = _plane(frame, 0, dtype, len(order))
        rgb = data[..., [order.index("R"), order.index("G"), order.index("B")]]
        return _normalize(rgb, 16 if bits > 8 else 8)

    def _gray(self, frame: av.VideoFrame, bits: int) -> np.ndarray:
        fmt = frame.format
        if fmt.name.startswith("grayf"):  # float grey: bring to 16-bit integers
            frame = frame.reformat(format="gray16le")
            fmt, bits = frame.format, 16
        channels = 2 if any(c.is_alpha for c in fmt.components) else 1
        y = _plane(frame, 0, _uint_dtype(bits, fmt.is_big_endian), channels)[..., 0]
        if self.full_range(frame):
            v = _normalize(y, bits)
        else:
            s = float(1 << (bits - 8))
            v = np.clip((y.astype(np.float32) - 16 * s) / (219 * s), 0.0, 1.0)
        return np.repeat(v[..., None], 3, axis=-1)

    def _yuv(self, frame: av.VideoFrame, bits: int) -> np.ndarray:
        sws_name, kr, kb = self.matrix(frame)
        full = self.full_range(frame)
        if bits <= 8:
            rgb = frame.reformat(
                format="gbrp",
                src_colorspace=sws_name,
                src_color_range="JPEG" if full else "MPEG",
                dst_color_range="JPEG",
                interpolation=_SWS_FLAGS,
            )
            g, b, r = (_plane(rgb, i, np.uint8, 1)[..., 0] for i in range(3))
            return np.stack([r, g, b], axis=-1).astype(np.float32) / 255.0
        depth = next(d for d in (9, 10, 12, 14, 16) if d >= bits)
        yuv = frame.reformat(format=f"yuv444p{depth}le", interpolation=_SWS_FLAGS)
        y, u, v = (_plane(yuv, i, np.dtype("<u2"), 1)[..., 0].astype(np.float32) for i in range(3))
        return _yuv_to_rgb(y, u, v, depth, full, kr, kb)


def _is_hd(width: int, height: int) -> bool:
    """The size rule players use to pick BT.709 over BT.601 for untagged video."""
    return width >= 1280 or height > 576


def _uint_dtype(bits: int, big_endian: bool) -> np.dtype:
    if bits <= 8:
        return np.dtype(np.uint8)
    return np.dtype(">u2" if big_endian else "<u2")


def _plane(frame: av.VideoFrame, index: int, dtype: np.dtype | type, channels: int) -> np.ndarray:
    """Plane ``index`` of ``frame`` as an array (h, w, channels), without its row padding."""
    plane = frame.planes[index]
    dtype = np.dtype(dtype)
    rows = np.frombuffer(plane, dtype=dtype).reshape(-1, plane.line_size // dtype.itemsize)
    return rows[: plane.height, : plane.width * channels].reshape(plane.height, plane.width, channels)


def _normalize(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integer samples of ``bits`` bits -> float32 in [0, 1] (divides by 2**bits - 1)."""
    return values.astype(np.float32) / float((1 << bits) - 1)


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, bits: int, full: bool, kr: float, kb: float) -> np.ndarray:
    """4:4:4 YUV samples of ``bits`` bits, each (H, W) float32 -> RGB (H, W, 3) float32 in [0, 1]."""
    s = float(1 << (bits - 8))
    if full:
        peak = float((1 << bits) - 1)
        yn, un, vn = y / peak, (u - 128 * s) / peak, (v - 128 * s) / peak
    else:
        yn, un, vn = (y - 16 * s) / (219 * s), (u - 128 * s) / (224 * s), (v - 128 * s) / (224 * s)
    kg = 1.0 - kr - kb
    r = yn + 2 * (1 - kr) * vn
    b = yn + 2 * (1 - kb) * un
    g = (yn - kr * r - kb * b) / kg
    return np.clip(np.stack([r, g, b], axis=-1), 0.0, 1.0).astype(np.float32, copy=False)


def _rgb_to_yuv16(rgb: np.ndarray, kr: float, kb: float) -> np.ndarray:
    """float RGB (H, W, 3) in [0, 1] -> limited-range 4:4:4 YUV at 16 bits, uint16 (H, W, 3)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    u = (b - y) / (2 * (1 - kb))
    v = (r - y) / (2 * (1 - kr))
    yuv = np.stack([(16 + 219 * y) * 256, (128 + 224 * u) * 256, (128 + 224 * v) * 256], axis=-1)
    return np.clip(np.rint(yuv), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------------------------
# probe / read_frames
# --------------------------------------------------------------------------------------------


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a video file or a folder of PNG/JPEG frames; raises :class:`InputError`.

    A video is opened and its first frame decoded, so a file that cannot deliver a single frame
    is rejected here rather than later. A folder's PNG headers are all read (cheap) so that mixed
    frame sizes are reported before any work starts.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist; check the path")
    if path.is_dir():
        return _probe_folder(path)
    container = _open_input(path)
    try:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream, path)
        fps = stream.average_rate or stream.guessed_rate or None
        bits = max(c.bits for c in first.format.components if not c.is_alpha)
        return VideoInfo(
            width=first.width,
            height=first.height,
            fps=Fraction(fps) if fps else None,
            time_base=Fraction(stream.time_base) if stream.time_base else None,
            num_frames=stream.frames or None,
            has_audio=len(container.streams.audio) > 0,
            source=path,
            kind="video",
            bit_depth=max(bits, 8),
        )
    finally:
        container.close()


def _first_frame(container: av.container.InputContainer, stream, path: Path) -> av.VideoFrame:
    """Decode the first frame of ``stream`` or raise InputError explaining why there is none."""
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as e:
        raise InputError(
            f"{path}: no video frame could be decoded ({_av_reason(e)}); the file is damaged or "
            "truncated, re-download or re-export it"
        ) from e
    raise InputError(f"{path} has a video stream but no frames in it; pass a video that has frames")


def _probe_folder(folder: Path) -> VideoInfo:
    files = _frame_files(folder)
    if not files:
        others = sorted(p.name for p in folder.iterdir())[:5]
        hint = f" (it holds: {', '.join(others)})" if others else " (it is empty)"
        raise InputError(
            f"frame folder {folder} has no PNG or JPEG frames{hint}; put frames named like "
            "00000001.png in it, or pass a video file"
        )
    sizes = {}
    for p in files:
        if p.suffix.lower() == ".png":
            sizes.setdefault(_png_size(p), p)
        if len(sizes) > 1:
            (s0, p0), (s1, p1) = list(sizes.items())[:2]
            raise InputError(
                f"frame folder {folder} mixes frame sizes: {p0.name} is {s0[0]}x{s0[1]} but "
                f"{p1.name} is {s1[0]}x{s1[1]}; all frames must have one size, resize or split them"
            )
    container = _open_input(files[0])
    try:
        first = _first_frame(container, _video_stream(container, files[0]), files[0])
        bits = max(c.bits for c in first.format.components if not c.is_alpha)
        return VideoInfo(
            width=first.width,
            height=first.height,
            fps=None,
            time_base=None,
            num_frames=len(files),
            has_audio=False,
            source=folder,
            kind="frames",
            bit_depth=16 if bits > 8 else 8,
        )
    finally:
        container.close()


def read_frames(path: str | os.PathLike[str], start: int = 0) -> Iterator[Frame]:
    """Yield the frames of a video file or frame folder from frame ``start`` on.

    Each :class:`Frame` carries ``rgb`` float32 (H, W, 3) in [0, 1]. The input is probed before
    this returns, so unusable inputs raise :class:`InputError` at the call, not at the first
    ``next``. Frames of a video before ``start`` are decoded and discarded (exact for any frame
    rate, including variable). A damaged or truncated video yields the frames that decode and
    then warns (:class:`VideoWarning`) with the count.
    """
    if start < 0:
        raise InputError(f"start must be >= 0, got {start}")
    info = probe(path)
    if info.num_frames is not None and start >= info.num_frames:
        raise InputError(
            f"start={start} is past the end of {info.source} ({info.num_frames} frames); "
            f"pass a start below {info.num_frames}"
        )
    if info.kind == "frames":
        return _read_folder(info, start)
    return _read_video(info, start)


def _read_folder(info: VideoInfo, start: int) -> Iterator[Frame]:
    decoder = _Decoder(info.source, still=True)
    for index, file in enumerate(_frame_files(info.source)[start:], start=start):
        container = _open_input(file)
        try:
            frame = _first_frame(container, _video_stream(container, file), file)
        finally:
            container.close()
        if (frame.width, frame.height) != (info.width, info.height):
            raise InputError(
                f"frame folder {info.source}: {file.name} is {frame.width}x{frame.height} but the "
                f"first frame is {info.width}x{info.height}; all frames must have one size"
            )
        yield Frame(index=index, rgb=decoder.to_rgb(frame), pts=None)


def _read_video(info: VideoInfo, start: int) -> Iterator[Frame]:
    container = _open_input(info.source)
    decoder = _Decoder(info.source, still=False)
    count, bad_packets, stopped = 0, 0, ""
    try:
        stream = _video_stream(container, info.source)
        stream.thread_type = "AUTO"
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as e:  # the container itself is cut or damaged here
                stopped = _av_reason(e)
                packet = None  # flush: the decoder still holds reordered / threaded frames
            try:
                frames = packet.decode() if packet is not None else stream.codec_context.decode(None)
            except av.FFmpegError:
                bad_packets += 1
                frames = []
            for frame in frames:
                if count >= start:
                    yield Frame(index=count, rgb=decoder.to_rgb(frame), pts=frame.pts)
                count += 1
            if packet is None:
                break
        expected = info.num_frames or _estimate_frames(container, stream)
    finally:
        container.close()
    if count <= start:
        if count == 0:
            raise InputError(f"{info.source}: no video frame could be decoded; the file is damaged")
        raise InputError(f"start={start} is past the end of {info.source} ({count} frames)")
    short = expected is not None and count < expected - max(2, expected // 50)
    if bad_packets or stopped or short:
        details = [f"decoded {count} frames"]
        if expected is not None:
            details.append(f"the header promises about {expected}")
        if bad_packets:
            details.append(f"{bad_packets} packets could not be decoded")
        if stopped:
            details.append(f"reading stopped: {stopped}")
        warnings.warn(
            f"{info.source} looks truncated or damaged: {'; '.join(details)}. "
            "The output covers only the frames that decoded; re-download or re-export the input "
            "for a complete result.",
            VideoWarning,
            stacklevel=2,
        )


def _estimate_frames(container: av.container.InputContainer, stream) -> int | None:
    """Frame count implied by the container duration and frame rate, when both are known."""
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        return round(stream.duration * stream.time_base * rate)
    if container.duration and rate:
        return round(Fraction(container.duration, av.time_base) * rate)
    return None


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _output_kind(path: Path) -> Literal["video", "frames"]:
    """'frames' for an existing directory, a path ending in a separator or without a suffix."""
    if path.is_dir() or os.fspath(path).endswith(("/", os.sep)):
        return "frames"
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        raise OutputError(
            f"output {path} names one image; to write PNG frames give a folder path without a "
            f"suffix (e.g. {path.with_suffix('')}/), or a video path like {path.with_suffix('.mp4')}"
        )
    if not suffix:
        if path.exists():
            raise OutputError(
                f"output {path} exists and is a file, but a path without a suffix means a frame "
                "folder; choose another path or add a video suffix such as .mp4"
            )
        return "frames"
    return "video"


def _check_output_dir(path: Path) -> None:
    """Raise OutputError unless ``path.parent`` is an existing directory."""
    parent = path.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputError(
                    f"cannot write {path}: {ancestor} is a file, not a directory; choose an output "
                    "path inside a directory"
                )
            break
    if not parent.is_dir():
        raise OutputError(
            f"cannot write {path}: the directory {parent} does not exist; create it first "
            f"(mkdir -p {parent}) or choose another output path"
        )


def _check_replaceable_folder(path: Path) -> None:
    """Refuse to replace a directory that holds anything besides frame images."""
    for entry in path.iterdir():
        if entry.is_dir() or (entry.suffix.lower() not in IMAGE_SUFFIXES and not entry.name.startswith(".")):
            raise OutputError(
                f"refusing to replace {path}: it holds {entry.name!r}, which is not a frame image; "
                "remove the folder yourself or choose another output path"
            )


def _depth(pix_fmt: str) -> int:
    """Largest component depth of a pixel format in bits, 0 for an unknown name."""
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except ValueError:
        return 0


def _chroma_multiple(pix_fmt: str) -> tuple[int, int]:
    """(horizontal, vertical) multiple that a frame size must have for ``pix_fmt``'s chroma."""
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    chroma = [c for c in fmt.components if not c.is_luma and not c.is_alpha and not fmt.is_rgb]
    if not chroma:
        return 1, 1
    return 16 // chroma[0].width, 16 // chroma[0].height


class VideoWriter:
    """Encode float32 RGB frames (H, W, 3) in [0, 1] into a video file or a folder of PNGs.

    Use as a context manager. Everything goes to a hidden temporary sibling of ``path``
    (``.name.partial-XXXX.ext`` or a ``.name.partial-XXXX`` folder) that is renamed onto
    ``path`` when the ``with`` block ends without an exception; on an exception the temporary is
    deleted and nothing is left. The same holds for :meth:`close` and :meth:`abort` used directly.

    Args:
        path: a video path (``.mp4``, ``.mkv``, ``.mov``, ``.avi``, ...) or a frame folder (an
            existing directory, or a path without a suffix): frames are then written as
            ``00000000.png``, ``00000001.png``, ...
        width, height: the size of the frames passed to :meth:`write`.
        fps: the frame rate of the output video (for a model that outputs k frames per input
            frame, the new rate, with ``pts=None`` in :meth:`write`). Ignored for frame folders.
        codec, crf, pix_fmt: video encoder, constant-rate factor (0 is lossless for x264/x265;
            ignored by codecs that have none) and pixel format. YUV output is limited range,
            BT.709 for HD sizes and BT.601 below, tagged so. A pixel format with subsampled
            chroma (``yuv420p``) needs even sizes: an odd width or height is padded by one
            column/row replicating the edge pixels (the encoded video is then one pixel larger,
            with a warning; the frames passed in are not modified).
            The source's time base is kept by MP4/MOV; Matroska always uses 1/1000.
        overwrite: replace an existing output. Without it an existing output raises OutputError
            before any work is done. A folder is replaced only if it holds nothing but images.
        audio_from: a media file whose audio streams are copied into the video unchanged (or
            re-encoded to AAC when the output container cannot hold their codec). Frame folders
            get no audio (a warning says so).
        time_base: the unit of the ``pts`` passed to :meth:`write` (the source stream's time
            base); defaults to ``1/fps``. It is also requested as the output stream's time base.
        bit_depth: 8 or 16 for frame folders (16-bit PNGs). For video, a value above 8 picks the
            deepest variant of an 8-bit ``pix_fmt`` that the codec has, up to ``bit_depth``
            (``yuv420p`` -> ``yuv420p10le`` for x264); an explicit deep ``pix_fmt`` is kept.
        options: extra encoder options, e.g. ``{"preset": "slow"}``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: Fraction | None,
        *,
        codec: str = "libx264",
        crf: int | None = 18,
        pix_fmt: str = "yuv420p",
        overwrite: bool = False,
        audio_from: str | os.PathLike[str] | None = None,
        time_base: Fraction | None = None,
        bit_depth: int = 8,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        if self.width <= 0 or self.height <= 0:
            raise OutputError(f"frame size must be positive, got {width}x{height}")
        self.kind = _output_kind(self.path)
        self.fps = Fraction(fps) if fps is not None else None
        self.bit_depth = int(bit_depth)
        self.frames_written = 0
        self._overwrite = overwrite
        self._temp: Path | None = None
        self._container: av.container.OutputContainer | None = None
        self._png: av.CodecContext | None = None
        self._png_written = 0
        self._audio: _AudioCopier | None = None
        self._last_pts: int | None = None
        self._warned_pts = False
        self._closed = False

        _check_output_dir(self.path)
        self._check_existing()
        if self.kind == "frames":
            if self.bit_depth not in (8, 16):
                raise OutputError(f"bit_depth for PNG frames must be 8 or 16, got {bit_depth}")
            self._quant_bits = self.bit_depth
            if audio_from is not None and _has_audio(Path(audio_from)):
                warnings.warn(
                    f"{audio_from} has audio, but a frame folder cannot hold it: audio is not "
                    "written; write a video file to keep it",
                    VideoWarning,
                    stacklevel=2,
                )
            self._temp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self._temp_dir()))
            return

        # Video file: validate everything cheap before creating anything.
        self.pix_fmt = self._choose_pix_fmt(codec, pix_fmt)
        fmt = av.VideoFormat(self.pix_fmt)
        self._yuv = not fmt.is_rgb
        depth = max(c.bits for c in fmt.components)
        if fmt.is_rgb and depth > 8:
            raise OutputError(
                f"writing {self.pix_fmt} (RGB deeper than 8 bits) is not supported; use a YUV "
                "format such as yuv444p10le, or 8-bit gbrp/rgb24"
            )
        self._quant_bits = 8 if depth <= 8 else 16
        if self.fps is None or self.fps <= 0:
            raise OutputError(
                f"a video output needs a frame rate, got fps={fps}; the input has none (a frame "
                "folder?), pass one with --fps"
            )
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self._matrix = _BT709 if _is_hd(self.width, self.height) else _SMPTE170M
        mw, mh = _chroma_multiple(self.pix_fmt)
        self.encoded_width = self.width + (-self.width) % mw
        self.encoded_height = self.height + (-self.height) % mh
        if (self.encoded_width, self.encoded_height) != (self.width, self.height):
            warnings.warn(
                f"{self.pix_fmt} needs sizes divisible by {mw}x{mh}: {self.width}x{self.height} is "
                f"encoded as {self.encoded_width}x{self.encoded_height} with replicated edge pixels",
                VideoWarning,
                stacklevel=2,
            )
        audio_path = Path(audio_from) if audio_from is not None else None
        if audio_path is not None and not audio_path.is_file():
            raise InputError(f"audio_from={audio_path} is not a file; pass the input video or None")

        handle, temp = tempfile.mkstemp(
            prefix=f".{self.path.name}.partial-", suffix=self.path.suffix, dir=self._temp_dir()
        )
        os.close(handle)
        self._temp = Path(temp)
        try:
            self._open_video(codec, crf, options or {})
            if audio_path is not None:
                self._audio = _AudioCopier(audio_path, self._container)
        except BaseException:
            self.abort()
            raise

    # ---- set-up ----------------------------------------------------------------------------

    def _check_existing(self) -> None:
        if not self.path.exists():
            return
        if self.kind == "frames" and self.path.is_dir() and not any(self.path.iterdir()):
            return  # an empty directory: nothing would be lost
        if not self._overwrite:
            raise OutputError(f"output {self.path} exists; pass --overwrite (overwrite=True) to replace it")
        if self.path.is_dir():
            if self.kind == "video":
                raise OutputError(f"output {self.path} is a directory; choose a file path for the video")
            _check_replaceable_folder(self.path)

    def _temp_dir(self) -> Path:
        """The output's directory, checked by actually creating a file in it."""
        parent = self.path.parent
        try:
            probe_fd, probe_name = tempfile.mkstemp(prefix=f".{self.path.name}.probe-", dir=parent)
        except OSError as e:
            raise OutputError(
                f"cannot write into {parent}: {e.strerror}; fix its permissions or choose another output directory"
            ) from e
        os.close(probe_fd)
        os.unlink(probe_name)
        return parent

    def _choose_pix_fmt(self, codec: str, pix_fmt: str) -> str:
        try:
            encoder = av.Codec(codec, "w")
        except (av.FFmpegError, ValueError) as e:
            raise OutputError(
                f"video encoder {codec!r} is not available in this PyAV build; use libx264, "
                "libx265, libsvtav1 or libvpx-vp9"
            ) from e
        if encoder.type != "video":
            raise OutputError(f"{codec!r} is not a video encoder; use libx264 or libx265")
        supported = [f.name for f in (encoder.video_formats or [])]
        chosen = pix_fmt
        if self.bit_depth > 8 and _depth(pix_fmt) == 8:
            deeper = [f"{pix_fmt}{d}le" for d in (12, 10) if d <= self.bit_depth]
            chosen = next((f for f in deeper if f in supported), deeper[-1] if deeper else pix_fmt)
        if supported and chosen not in supported:
            raise OutputError(f"{codec} cannot encode pixel format {chosen!r}; it supports: {', '.join(supported)}")
        try:
            av.VideoFormat(chosen)
        except ValueError as e:
            raise OutputError(f"unknown pixel format {chosen!r}; use yuv420p or yuv420p10le") from e
        return chosen

    def _open_video(self, codec: str, crf: int | None, options: Mapping[str, str]) -> None:
        assert self._temp is not None
        try:
            container = av.open(str(self._temp), mode="w")
        except ValueError as e:
            raise OutputError(
                f"cannot tell the container format from the suffix of {self.path}; use .mp4, "
                ".mkv or .mov, or a folder path without a suffix for PNG frames"
            ) from e
        self._container = container
        opts = dict(options)
        if crf is not None and codec in _CRF_CODECS:
            opts.setdefault("crf", str(crf))
            if codec == "libvpx-vp9":
                opts.setdefault("b", "0")
        try:
            stream = container.add_stream(codec, rate=self.fps, options=opts)
        except ValueError as e:
            raise OutputError(
                f"the {self.path.suffix} container cannot hold {codec} video; use .mkv, which "
                "holds nearly any codec, or another codec"
            ) from e
        stream.width, stream.height = self.encoded_width, self.encoded_height
        stream.pix_fmt = self.pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if self._yuv:
            stream.codec_context.colorspace = self._matrix
            stream.codec_context.color_range = _RANGE_MPEG
        stream.thread_type = "AUTO"
        self._stream = stream

    # ---- writing ---------------------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        """Append one frame: float (H, W, 3) in [0, 1], clipped to [0, 1] and rounded.

        ``pts`` is in units of ``time_base`` (the source's timestamps); ``None`` places the frame
        one frame period (1/fps) after the previous one. Timestamps must increase; a repeated or
        earlier one is moved just after the previous frame, with a warning.
        """
        if self._closed:
            raise OutputError(f"write() after close() on {self.path}")
        if not isinstance(rgb, np.ndarray) or rgb.shape != (self.height, self.width, 3):
            shape = getattr(rgb, "shape", type(rgb).__name__)
            raise ValueError(
                f"frame {self.frames_written} has shape {shape}; expected ({self.height}, "
                f"{self.width}, 3) as declared when the writer was created"
            )
        if not np.issubdtype(rgb.dtype, np.floating):
            raise ValueError(f"frame {self.frames_written} is {rgb.dtype}; pass float RGB in [0, 1]")
        if not np.isfinite(rgb).all():
            raise ValueError(
                f"frame {self.frames_written} contains NaN or infinite values; the model output is "
                "broken (an FP16 overflow?), nothing sensible can be encoded"
            )
        try:
            if self.kind == "frames":
                self._write_png(rgb)
            else:
                self._write_video(rgb, pts)
        except av.FFmpegError as e:
            raise OutputError(f"encoding frame {self.frames_written} into {self.path} failed: {_av_reason(e)}") from e
        self.frames_written += 1

    def _quantize(self, rgb: np.ndarray) -> np.ndarray:
        peak = float((1 << self._quant_bits) - 1)
        q = np.rint(np.clip(rgb, 0.0, 1.0) * peak)
        return q.astype(np.uint8 if self._quant_bits == 8 else np.uint16)

    def _write_png(self, rgb: np.ndarray) -> None:
        assert self._temp is not None
        if self._png is None:
            ctx = av.CodecContext.create("png", "w")
            ctx.width, ctx.height = self.width, self.height
            ctx.pix_fmt = "rgb24" if self.bit_depth == 8 else "rgb48be"
            ctx.time_base = Fraction(1, 1)
            ctx.thread_type = "FRAME"  # PNGs compress in parallel; packets come out in order
            self._png = ctx
        fmt = "rgb24" if self.bit_depth == 8 else "rgb48be"
        frame = av.VideoFrame.from_ndarray(self._quantize(rgb), format=fmt)
        frame.pts = self.frames_written
        self._save_pngs(self._png.encode(frame))

    def _save_pngs(self, packets: list[av.Packet]) -> None:
        assert self._temp is not None
        for packet in packets:
            (self._temp / f"{self._png_written:08d}.png").write_bytes(bytes(packet))
            self._png_written += 1

    def _write_video(self, rgb: np.ndarray, pts: int | None) -> None:
        q = self._quantize(rgb)
        pad_h, pad_w = self.encoded_height - self.height, self.encoded_width - self.width
        if pad_h or pad_w:
            q = np.pad(q, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = self._to_encoder_format(q)
        step = max(1, round(1 / (self.fps * self.time_base)))
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + step
        elif self._last_pts is not None and pts <= self._last_pts:
            if not self._warned_pts:
                warnings.warn(
                    f"{self.path}: frame {self.frames_written} has pts {pts}, not after the previous "
                    f"{self._last_pts}; moving it (and any later ones) just after the previous frame",
                    VideoWarning,
                    stacklevel=3,
                )
                self._warned_pts = True
            pts = self._last_pts + 1
        frame.pts = int(pts)
        frame.time_base = self.time_base
        self._last_pts = frame.pts
        assert self._container is not None
        self._container.mux(self._stream.encode(frame))
        if self._audio is not None:
            self._audio.mux_until(frame.pts * self.time_base)

    def _to_encoder_format(self, q: np.ndarray) -> av.VideoFrame:
        """Quantized RGB (H, W, 3) uint8/uint16 -> a VideoFrame in the encoder's pixel format."""
        if not self._yuv:
            return av.VideoFrame.from_ndarray(q, format="rgb24").reformat(format=self.pix_fmt)
        if self._quant_bits == 8:
            frame = av.VideoFrame.from_ndarray(q, format="rgb24")
            return frame.reformat(
                format=self.pix_fmt,
                dst_colorspace=_MATRICES[self._matrix][0],
                dst_color_range="MPEG",
                interpolation=_SWS_FLAGS,
            )
        _, kr, kb = _MATRICES[self._matrix]
        yuv = _rgb_to_yuv16(q.astype(np.float32) / 65535.0, kr, kb)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv444p16le", channel_last=True)
        frame.colorspace, frame.color_range = self._matrix, _RANGE_MPEG
        out = frame.reformat(format=self.pix_fmt, interpolation=_SWS_FLAGS)
        out.colorspace, out.color_range = self._matrix, _RANGE_MPEG
        return out

    # ---- finishing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Finish encoding and rename the temporary output onto ``path``.

        Raises OutputError (and leaves nothing behind) if no frame was written.
        """
        if self._closed:
            return
        try:
            if self.frames_written == 0:
                raise OutputError(f"no frames were written to {self.path}; nothing was saved")
            if self.kind == "frames":
                assert self._png is not None
                self._save_pngs(self._png.encode(None))
            else:
                assert self._container is not None
                self._container.mux(self._stream.encode(None))
                if self._audio is not None:
                    self._audio.finish()
                self._container.close()
                self._container = None
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def _commit(self) -> None:
        assert self._temp is not None
        target = self.path
        # mkstemp/mkdtemp create private (0600/0700) entries; give the output ordinary permissions
        umask = os.umask(0)
        os.umask(umask)
        if self._temp.is_dir():
            os.chmod(self._temp, 0o777 & ~umask)
            for png in self._temp.iterdir():
                os.chmod(png, 0o666 & ~umask)
        else:
            os.chmod(self._temp, 0o666 & ~umask)
        if self.kind == "video" or not target.exists() or not any(target.iterdir()):
            os.replace(self._temp, target)
        else:  # swap a non-empty frame folder (checked replaceable in __init__)
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(self._temp, target)
            shutil.rmtree(old, ignore_errors=True)
        self._temp = None

    def abort(self) -> None:
        """Stop and delete everything written so far; ``path`` is left as it was."""
        self._closed = True
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the output is discarded anyway
                log.debug("closing an aborted output failed", exc_info=True)
            self._container = None
        if self._temp is not None:
            if self._temp.is_dir():
                shutil.rmtree(self._temp, ignore_errors=True)
            else:
                self._temp.unlink(missing_ok=True)
            self._temp = None

    def __del__(self) -> None:
        if getattr(self, "_temp", None) is not None:
            self.abort()


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def _has_audio(path: Path) -> bool:
    """True if the media file ``path`` has at least one audio stream (False if unreadable)."""
    try:
        with av.open(str(path)) as container:
            return len(container.streams.audio) > 0
    except (av.FFmpegError, OSError):
        return False


class _AudioCopier:
    """Copies the audio streams of a source file into an output container, interleaved.

    A stream whose codec the output container accepts is remuxed packet by packet (no quality
    loss); any other stream is decoded and re-encoded to AAC. :meth:`mux_until` is called after
    each video frame so that audio is written alongside the video rather than all at the end.
    """

    def __init__(self, source: Path, output: av.container.OutputContainer) -> None:
        try:
            self._input = av.open(str(source))
        except av.FFmpegError as e:
            raise InputError(
                f"cannot read audio from {source}: {_av_reason(e)}; pass audio_from=None to skip audio"
            ) from e
        self._routes: dict[int, tuple[av.stream.Stream, bool]] = {}  # index -> (out, transcode)
        for stream in self._input.streams.audio:
            try:
                out = output.add_stream_from_template(stream)
                self._routes[stream.index] = (out, False)
            except ValueError:
                out = output.add_stream("aac", rate=stream.codec_context.sample_rate or 48000)
                out.codec_context.layout = stream.codec_context.layout
                self._routes[stream.index] = (out, True)
                log.info(
                    "re-encoding %s audio to AAC: %s cannot hold it",
                    stream.codec_context.name,
                    output.format.name,
                )
        self._output = output
        audio_streams = [s for s in self._input.streams.audio if s.index in self._routes]
        self._packets = self._input.demux(*audio_streams) if audio_streams else iter(())
        self._pending: av.Packet | None = None
        self._done = not audio_streams

    def _next(self) -> av.Packet | None:
        while not self._done:
            try:
                packet = next(self._packets)
            except (StopIteration, av.FFmpegError):
                self._done = True
                return None
            if packet.dts is not None:  # skip the empty packets that signal end of stream
                return packet
        return None

    def mux_until(self, seconds: Fraction | None) -> None:
        """Write audio packets that start at or before ``seconds`` (all of them for None)."""
        while True:
            packet = self._pending or self._next()
            self._pending = None
            if packet is None:
                return
            time = packet.pts * packet.time_base if packet.pts is not None else None
            if seconds is not None and time is not None and time > seconds:
                self._pending = packet
                return
            out, transcode = self._routes[packet.stream.index]
            if transcode:
                for frame in packet.decode():
                    self._output.mux(out.encode(frame))
            else:
                packet.stream = out
                self._output.mux(packet)

    def finish(self) -> None:
        """Write the remaining audio and flush the AAC encoders."""
        self.mux_until(None)
        for out, transcode in self._routes.values():
            if transcode:
                self._output.mux(out.encode(None))
        self.close()

    def close(self) -> None:
        self._input.close()
