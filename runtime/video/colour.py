"""Colour conversion between decoded frames and float32 RGB (H, W, 3) in [0, 1].

YUV is converted with the matrix the stream is tagged with (BT.601 / BT.709 / BT.2020 / ...); an
untagged stream is taken as BT.709 when it is HD (wider than 1279 or taller than 576 pixels, the
rule players use) and BT.601 otherwise; still images (PNG, JPEG) are BT.601. Output videos are
written with the input's matrix and range; where the input states none, in limited range with the
matrix the same rule picks for their size (BT.709 for HD, BT.601 otherwise); tagged either way, so
that players reading the tag and players guessing agree.

FFmpeg 8's swscale (bundled with PyAV 18) converts exactly only between 8-bit YUV and *planar*
8-bit RGB with ``ACCURATE_RND``: packed ``rgb24`` output is off by up to 3 levels, and every
high-bit-depth RGB path (``rgb48``, ``gbrp16``, float) loses white (255 becomes 65280/65535). So:
8-bit YUV goes through swscale to ``gbrp``; deeper YUV is brought to 4:4:4 at its own depth by
swscale (an exact operation) and the matrix is applied here in numpy; RGB and grey formats are read
from their planes directly. ``tests/test_video.py`` pins these levels.
"""

from __future__ import annotations

import re
import struct
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation

from .types import Colour, MasteringDisplay, VideoWarning

# swscale flags under which 8-bit YUV <-> planar 8-bit RGB is exact (see the module docstring).
SWS_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND

# AVColorSpace value -> (swscale colorspace name, Kr, Kb)
MATRICES: dict[int, tuple[str, float, float]] = {
    1: ("ITU709", 0.2126, 0.0722),  # BT709
    4: ("FCC", 0.30, 0.11),  # FCC
    5: ("ITU601", 0.299, 0.114),  # BT470BG
    6: ("ITU601", 0.299, 0.114),  # SMPTE170M
    7: ("SMPTE240M", 0.212, 0.087),  # SMPTE240M
    9: ("BT2020", 0.2627, 0.0593),  # BT2020_NCL
    10: ("BT2020", 0.2627, 0.0593),  # BT2020_CL (approximated by NCL)
}
RGB, BT709, BT601, SMPTE170M, UNSPECIFIED = 0, 1, 5, 6, 2
BT2020_NCL, BT2020_CL = 9, 10
RANGE_MPEG, RANGE_JPEG = 1, 2

# AVMasteringDisplayMetadata: 3x2 primaries, 2 white point, min and max luminance (each an AVRational
# num/den pair of ints), then has_primaries and has_luminance; AVContentLightMetadata: two unsigned.
_MASTERING = struct.Struct("=20i2i")
_LIGHT_LEVEL = struct.Struct("=2I")

# Packed RGB formats read straight from their single plane: name -> channel letters in memory.
_PACKED_RGB = {
    "rgb24": "RGB", "bgr24": "BGR", "rgba": "RGBA", "bgra": "BGRA", "argb": "ARGB", "abgr": "ABGR",
    "rgb0": "RGBX", "bgr0": "BGRX", "0rgb": "XRGB", "0bgr": "XBGR",
    "rgb48le": "RGB", "rgb48be": "RGB", "bgr48le": "BGR", "bgr48be": "BGR",
    "rgba64le": "RGBA", "rgba64be": "RGBA", "bgra64le": "BGRA", "bgra64be": "BGRA",
}  # fmt: skip


class Decoder:
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
        if cs in MATRICES:
            return MATRICES[cs]
        if cs != UNSPECIFIED:
            self._warn_once(
                "matrix",
                f"{self.source}: colour matrix {cs} is not supported; decoding as BT.709/BT.601 "
                "by size, colours may be off",
            )
        hd = not self.still and is_hd(frame.width, frame.height)
        return MATRICES[BT709 if hd else BT601]

    def full_range(self, frame: av.VideoFrame) -> bool:
        """Whether YUV/grey samples use the full range (JPEG) rather than limited (MPEG)."""
        if frame.color_range == RANGE_JPEG:
            return True
        if frame.color_range == RANGE_MPEG:
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
        if "alpha" not in self._warned and _transparent(frame):
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
            return self.to_rgb(frame.reformat(format=target, interpolation=SWS_FLAGS))
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
                interpolation=SWS_FLAGS,
            )
            g, b, r = (_plane(rgb, i, np.uint8, 1)[..., 0] for i in range(3))
            return np.stack([r, g, b], axis=-1).astype(np.float32) / 255.0
        depth = next(d for d in (9, 10, 12, 14, 16) if d >= bits)
        yuv = frame.reformat(format=f"yuv444p{depth}le", interpolation=SWS_FLAGS)
        y, u, v = (_plane(yuv, i, np.dtype("<u2"), 1)[..., 0].astype(np.float32) for i in range(3))
        return yuv_to_rgb(y, u, v, depth, full, kr, kb)


def colour_of(frame: av.VideoFrame) -> Colour:
    """What ``frame`` says about its colours: the codes of its primaries, transfer, matrix and range,
    and its HDR10 mastering display and content light level side data (FFmpeg's decoders attach
    these to frames whether they came in the bitstream's SEI or in the container)."""
    mastering, light = None, None
    for data in frame.side_data:
        if data.type.name == "MASTERING_DISPLAY_METADATA" and data.buffer_size == _MASTERING.size:
            mastering = _mastering(_MASTERING.unpack(bytes(data)))
        elif data.type.name == "CONTENT_LIGHT_LEVEL" and data.buffer_size == _LIGHT_LEVEL.size:
            max_cll, max_fall = _LIGHT_LEVEL.unpack(bytes(data))
            light = (max_cll, max_fall)
    return Colour(
        primaries=int(frame.color_primaries),
        transfer=int(frame.color_trc),
        matrix=int(frame.colorspace),
        range=int(frame.color_range),
        mastering=mastering,
        light_level=light,
    )


def _mastering(values: tuple[int, ...]) -> MasteringDisplay | None:
    """A MasteringDisplay from the 22 integers of FFmpeg's struct; ``None`` if it states nothing."""

    def ratio(i: int) -> Fraction | None:
        num, den = values[2 * i], values[2 * i + 1]
        return Fraction(num, den) if den else None

    has_primaries, has_luminance = values[20], values[21]
    points = [ratio(i) for i in range(8)]
    primaries = white = None
    if has_primaries and None not in points:
        primaries = ((points[0], points[1]), (points[2], points[3]), (points[4], points[5]))
        white = (points[6], points[7])
    low, high = (ratio(8), ratio(9)) if has_luminance else (None, None)
    if primaries is None and high is None:
        return None
    return MasteringDisplay(primaries=primaries, white=white, min_luminance=low, max_luminance=high)


def _transparent(frame: av.VideoFrame) -> bool:
    """Whether some pixel of ``frame`` is not fully opaque.

    A format with an alpha channel is not enough: FFmpeg decodes CMYK JPEGs to ``gbrap`` and GIFs
    to ``bgra`` with every alpha sample opaque, and dropping such an alpha loses nothing.
    """
    fmt = frame.format
    alpha = next((c for c in fmt.components if c.is_alpha), None)
    if alpha is None:
        return False
    name = fmt.name
    dtype, peak = _uint_dtype(alpha.bits, fmt.is_big_endian), (1 << alpha.bits) - 1
    integer = alpha.bits <= 16 and not re.search(r"f(16|32)", name)
    if integer and name in _PACKED_RGB:
        order = _PACKED_RGB[name]
        values = _plane(frame, 0, dtype, len(order))[..., order.index("A")]
    elif integer and sum(c.plane == alpha.plane for c in fmt.components) == 1:  # alpha in a plane of its own
        values = _plane(frame, alpha.plane, dtype, 1)[..., 0]
    elif integer and name.startswith("ya"):  # grey and alpha interleaved
        values = _plane(frame, 0, dtype, 2)[..., 1]
    else:  # float samples, other packed layouts (ayuv64, vuya, ...): swscale picks the alpha out
        values, peak = _plane(frame.reformat(format="rgba"), 0, np.uint8, 4)[..., 3], 255
    return bool((values < peak).any())


def is_hd(width: int, height: int) -> bool:
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


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, bits: int, full: bool, kr: float, kb: float) -> np.ndarray:
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


def rgb_to_yuv16(rgb: np.ndarray, kr: float, kb: float, *, full: bool = False, bits: int = 16) -> np.ndarray:
    """float RGB (H, W, 3) in [0, 1] -> 4:4:4 YUV at 16 bits, uint16 (H, W, 3), for a ``bits``-deep
    output: each sample is the ``bits``-bit level times 2**(16 - bits), so that swscale's reduction
    to ``bits`` (a shift) lands on the right level. Limited range (16-235/240 scaled) by default,
    full range (0 to 2**bits - 1, chroma centred on 2**(bits - 1)) with ``full``."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    u = (b - y) / (2 * (1 - kb))
    v = (r - y) / (2 * (1 - kr))
    if full:
        peak, mid, step = float((1 << bits) - 1), float(1 << (bits - 1)), float(1 << (16 - bits))
        yuv = np.stack([y * peak * step, (mid + u * peak) * step, (mid + v * peak) * step], axis=-1)
    else:
        yuv = np.stack([(16 + 219 * y) * 256, (128 + 224 * u) * 256, (128 + 224 * v) * 256], axis=-1)
    return np.clip(np.rint(yuv), 0, 65535).astype(np.uint16)
