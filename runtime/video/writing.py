"""Writing: :class:`VideoWriter` encodes float32 RGB frames into a video file (with the source's
audio copied in) or a folder of PNGs, staged beside the output and put in place only when everything
succeeded (:class:`export.atomic.StagedPath`), so a failed or interrupted run never leaves a partial
output and never touches an existing one."""

from __future__ import annotations

import errno
import logging
import os
import warnings
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Literal

import av
import numpy as np

from export.atomic import StagedPath, WriteError

from .audio import StreamCopier, side_streams
from .colour import (
    BT709,
    BT2020_CL,
    BT2020_NCL,
    MATRICES,
    RANGE_JPEG,
    RANGE_MPEG,
    RGB,
    SMPTE170M,
    SWS_FLAGS,
    UNSPECIFIED,
    is_hd,
    rgb_to_yuv16,
)
from .types import IMAGE_SUFFIXES, Colour, InputError, MasteringDisplay, OutputError, VideoWarning, av_reason

log = logging.getLogger(__name__)

_CRF_CODECS = frozenset({"libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"})

#: Video codecs MPEG-TS has a stream type for that FFmpeg reads back (stream types of ISO/IEC 13818-1), and the
#: file suffixes FFmpeg writes as MPEG-TS.
_MPEGTS_VIDEO = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vvc", "cavs", "dirac"})
_MPEGTS_SUFFIXES = frozenset({".ts", ".mts", ".m2ts"})
#: Lossless codecs that take RGB: (bits, pixel format) from the shallowest, the first at least as deep
#: as the source is written (RGB straight from the network: no YUV conversion, no chroma subsampling).
LOSSLESS_RGB: dict[str, tuple[tuple[int, str], ...]] = {
    "ffv1": ((8, "bgr0"), (10, "gbrp10le"), (12, "gbrp12le"), (16, "gbrp16le")),
}

#: Encoder threads, fixed. A lossy encoder's output depends on its thread count (x264's frame
#: threads change its motion search and rate control), and left to itself x264 counts the CPUs the
#: thread that opens it may run on: two runs of the same frames, or two segments of one run opened
#: where the CPUs differ (another affinity, another worker, another machine), then differ by up to
#: 12/255 in places. A fixed count makes every run, segment and machine encode alike.
ENCODER_THREADS = 4

#: Encoders that write HDR10 static metadata into the bitstream (SEI / AV1 metadata OBUs) from
#: their own parameters: the option that holds them, and the names of its mastering display and
#: content light level keys. Every other encoder would need the container's stream side data,
#: which PyAV cannot set.
HDR10_PARAMS: dict[str, tuple[str, str, str]] = {
    "libx265": ("x265-params", "master-display", "max-cll"),
    "libx264": ("x264-params", "mastering-display", "cll"),
    "libsvtav1": ("svtav1-params", "mastering-display", "content-light"),
}


def output_kind(path: Path) -> Literal["video", "frames"]:
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


def check_codec(codec: str, path: Path | None, container_format: str | None = None) -> None:
    """Refuse (:class:`OutputError`) a ``codec`` this PyAV build cannot encode video with, or one that
    the container (``container_format``, or what the suffix of ``path`` makes) cannot carry: MPEG-TS
    (``--format mpegts``, a .ts/.mts/.m2ts file) has stream types for a few codecs only, and FFmpeg
    muxes any other as private data in which no reader, FFmpeg included, finds video. Cheap: vsr-run
    calls it before exporting or loading a network."""
    try:
        encoder = av.Codec(codec, "w")
    except (av.FFmpegError, ValueError) as e:
        raise OutputError(
            f"video encoder {codec!r} is not available in this PyAV build; use libx264, "
            "libx265, libsvtav1 or libvpx-vp9"
        ) from e
    if encoder.type != "video":
        raise OutputError(f"{codec!r} is not a video encoder; use libx264 or libx265")
    mpegts = container_format == "mpegts" or (path is not None and path.suffix.lower() in _MPEGTS_SUFFIXES)
    if mpegts and encoder.canonical_name not in _MPEGTS_VIDEO:
        how = "--format nut" if path is None else "a .mkv output"
        raise OutputError(
            f"MPEG-TS has no stream type for {codec} ({encoder.canonical_name}): a reader finds no video in it; "
            f"use {how}, or --codec libx264 or libx265"
        )


def check_output(
    path: str | os.PathLike[str], *, overwrite: bool = False, source: str | os.PathLike[str] | None = None
) -> Literal["video", "frames"]:
    """Whether ``path`` can be written, checked before any work; returns its kind ('video' or 'frames').

    Raises OutputError when the path names one image, its directory is missing, it exists and
    ``overwrite`` is not set (an empty folder for frames does not count), a folder to replace holds
    more than frame images, or it is ``source`` itself (the input would be replaced by its own
    upscaled copy).
    """
    path = Path(path)
    kind = output_kind(path)
    _check_output_dir(path)
    if source is not None and path.exists() and os.path.samefile(path, source):
        raise OutputError(f"output {path} is the input itself; choose another output path (the input is kept)")
    if not path.exists() or (kind == "frames" and path.is_dir() and not any(path.iterdir())):
        return kind
    if not overwrite:
        raise OutputError(f"output {path} exists; pass --overwrite (overwrite=True) to replace it")
    if path.is_dir():
        if kind == "video":
            raise OutputError(f"output {path} is a directory; choose a file path for the video")
        _check_replaceable_folder(path)
    return kind


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


def _display_units(m: MasteringDisplay, codec: str) -> str | None:
    """``m`` as the mastering display parameter of ``codec`` (x264/x265 count chromaticities in
    units of 0.00002 and luminance in 0.0001 cd/m², SVT-AV1 takes decimals); ``None`` unless every
    part is known."""
    if m.primaries is None or m.white is None or m.min_luminance is None or m.max_luminance is None:
        return None
    (rx, ry), (gx, gy), (bx, by) = m.primaries
    points = {"G": (gx, gy), "B": (bx, by), "R": (rx, ry), "WP": m.white}
    if codec == "libsvtav1":
        xy = "".join(f"{k}({float(x):.5f},{float(y):.5f})" for k, (x, y) in points.items())
        return f"{xy}L({float(m.max_luminance):.4f},{float(m.min_luminance):.4f})"
    xy = "".join(f"{k}({round(x * 50000)},{round(y * 50000)})" for k, (x, y) in points.items())
    return f"{xy}L({round(m.max_luminance * 10000)},{round(m.min_luminance * 10000)})"


def _hdr10_options(codec: str, colour: Colour, options: dict[str, str]) -> str | None:
    """Add ``colour``'s HDR10 static metadata to ``codec``'s ``options`` (in place, after any the
    caller gave); returns a sentence naming what could not be carried, or ``None``."""
    parts = (("mastering display", colour.mastering), ("content light level", colour.light_level))
    wanted = [name for name, value in parts if value is not None]
    if not wanted:
        return None
    what = " and ".join(wanted)
    if codec not in HDR10_PARAMS:
        return (
            f"the input's HDR10 {what} metadata is not carried: {codec} does not write it and PyAV "
            f"{av.__version__} cannot set a container's stream side data (use --codec libx265, libx264 or "
            "libsvtav1 to keep it)"
        )
    option, display_key, light_key = HDR10_PARAMS[codec]
    params = []
    display = _display_units(colour.mastering, codec) if colour.mastering is not None else None
    if display is not None:
        params.append(f"{display_key}={display}")
    if colour.light_level is not None:
        params.append(f"{light_key}={colour.light_level[0]},{colour.light_level[1]}")
    given = options.get(option)
    if params:
        options[option] = ":".join([given, *params] if given else params)
    if colour.mastering is not None and display is None:
        return "the input's mastering display metadata is incomplete (no primaries or no luminance); it is left out"
    return None


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
    (a :class:`~export.atomic.StagedPath`: ``.name.partial-XXXX.ext`` or a ``.name.partial-XXXX``
    folder) that replaces ``path`` when the ``with`` block ends without an exception; on an
    exception (KeyboardInterrupt and SystemExit included) it is deleted and nothing is left. The
    same holds for :meth:`close` and :meth:`abort` used directly.

    Args:
        path: a video path (``.mp4``, ``.mkv``, ``.mov``, ``.avi``, ...) or a frame folder (an
            existing directory, or a path without a suffix): frames are then written as
            ``00000000.png``, ``00000001.png``, ...
        width, height: the size of the frames passed to :meth:`write`.
        fps: the frame rate of the output video (for a model that outputs k frames per input
            frame, the new rate, with ``pts=None`` in :meth:`write`). Ignored for frame folders.
        codec, crf, pix_fmt: video encoder, constant-rate factor (0 is lossless for x264/x265;
            ignored by codecs that have none) and pixel format (``None``: ``yuv420p``, or RGB as deep
            as ``bit_depth`` for a lossless RGB codec, :data:`LOSSLESS_RGB`: ``ffv1`` writes the
            frames' 8-bit levels exactly as ``bgr0``, deeper ones as ``gbrp10le`` to ``gbrp16le``).
            YUV output uses the matrix and range of ``colour``; where it states none, limited range,
            BT.709 for HD sizes and BT.601 below; tagged so. A pixel format with subsampled
            chroma (``yuv420p``) needs even sizes: an odd width or height is padded by one
            column/row replicating the edge pixels (the encoded video is then one pixel larger,
            with a warning; the frames passed in are not modified).
            The source's time base is kept by MP4/MOV; Matroska always uses 1/1000.
        overwrite: replace an existing output. Without it an existing output raises OutputError
            before any work is done. A folder is replaced only if it holds nothing but images.
        audio_from: a media file whose audio streams are copied into the video unchanged (or
            re-encoded to AAC when the output container cannot hold their codec), and its subtitle
            streams where the container can hold them (a warning names those it cannot). Frame
            folders get neither (a warning says so).
        time_base: the unit of the ``pts`` passed to :meth:`write` (the source stream's time
            base); defaults to ``1/fps``. It is also requested as the output stream's time base.
        bit_depth: the depth to keep, 8 to 16. Frame folders get 8-bit PNGs for 8 and 16-bit PNGs
            above (10-bit video becomes 16-bit PNGs, losing nothing). For video, a value above 8
            picks the deepest variant of an 8-bit ``pix_fmt`` that the codec has, up to
            ``bit_depth`` (``yuv420p`` -> ``yuv420p10le`` for x264); an explicit deep ``pix_fmt``
            is kept. A codec without a deeper variant (``mpeg4``, this build's ``libvpx-vp9``)
            writes 8 bits, with a warning.
        colour: the source's colour description (:attr:`VideoInfo.colour`): its primaries and
            transfer are tagged as they are, its matrix and range are used for the RGB -> YUV
            conversion and tagged, and its HDR10 mastering display and content light level are
            written by the encoders that can (:data:`HDR10_PARAMS`); a warning names what cannot
            be carried. The samples are not tone-mapped. PNG frames get the primaries and
            transfer as a ``cICP`` chunk when the transfer is HDR (PQ or HLG) and nothing else;
            without it SDR PNGs stay untagged, read as sRGB like every exported video frame.
            :attr:`colour` is what the output is tagged with.
        options: extra encoder options, e.g. ``{"preset": "slow"}``.
        stream: write the video into this binary file object (a pipe such as standard output) in
            ``container_format`` (``"nut"``, ``"mpegts"``) instead of a file: nothing is staged,
            since what went into a pipe cannot be taken back, and ``path`` only names the output
            in messages.
        container_format: the container to write (FFmpeg's muxer name); by default the suffix of
            ``path`` decides.
        frame_threads: let the encoder work on several frames at once (faster, but each frame's
            packet comes out some frames later); ``False`` for a live stream (slice threads only).
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
        pix_fmt: str | None = None,
        overwrite: bool = False,
        audio_from: str | os.PathLike[str] | None = None,
        time_base: Fraction | None = None,
        bit_depth: int = 8,
        options: Mapping[str, str] | None = None,
        stream: BinaryIO | None = None,
        container_format: str | None = None,
        frame_threads: bool = True,
        colour: Colour | None = None,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        if self.width <= 0 or self.height <= 0:
            raise OutputError(f"frame size must be positive, got {height}x{width} (HxW)")
        if stream is None:
            self.kind = check_output(self.path, overwrite=overwrite, source=audio_from)
        else:
            self.kind = "video"
        self._pipe, self._format, self._frame_threads = stream, container_format, frame_threads
        self.fps = Fraction(fps) if fps is not None else None
        self.bit_depth = int(bit_depth)
        self.frames_written = 0
        self._staged: StagedPath | None = None
        self._container: av.container.OutputContainer | None = None
        self._png: av.CodecContext | None = None
        self._png_written = 0
        self._audio: StreamCopier | None = None
        self._last_pts: int | None = None
        self._warned_pts = False
        self._closed = False
        source_colour = colour or Colour()

        if self.kind == "frames":
            if not 8 <= self.bit_depth <= 16:
                raise OutputError(f"bit_depth for PNG frames must be 8 to 16, got {bit_depth}")
            self.bit_depth = 8 if self.bit_depth == 8 else 16  # PNG has 8- and 16-bit samples
            self._quant_bits = self.bit_depth
            self.colour = self._png_colour(source_colour)
            streams = side_streams(Path(audio_from)) if audio_from is not None else []
            if streams:
                warnings.warn(
                    f"a frame folder holds only images, so audio is not written (left out of {audio_from}: "
                    f"{', '.join(streams)}); write a video file to keep them",
                    VideoWarning,
                    stacklevel=2,
                )
            self._staged = self._stage(directory=True)
            return

        # Video file: validate everything cheap before creating anything.
        check_codec(codec, None if self._pipe is not None else self.path, self._format)
        self.pix_fmt = self._choose_pix_fmt(codec, pix_fmt)
        fmt = av.VideoFormat(self.pix_fmt)
        self._yuv = not fmt.is_rgb
        depth = max(c.bits for c in fmt.components)
        if fmt.is_rgb and depth > 8 and not self.pix_fmt.startswith("gbrp"):
            raise OutputError(
                f"writing {self.pix_fmt} (packed RGB deeper than 8 bits) is not supported; use planar "
                "gbrp10le to gbrp16le, a YUV format such as yuv444p10le, or 8-bit gbrp/rgb24"
            )
        # deep YUV is converted from 16-bit levels; deep planar RGB is written at its own depth
        self._quant_bits = 8 if depth <= 8 else 16 if self._yuv else depth
        if self.fps is None or self.fps <= 0:
            raise OutputError(
                f"a video output needs a frame rate, got fps={fps}; the input has none (a frame "
                "folder?), pass one with --fps"
            )
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self.colour = self._video_colour(source_colour)
        self._matrix, self._full = self.colour.matrix, self.colour.range == RANGE_JPEG
        mw, mh = _chroma_multiple(self.pix_fmt)
        self.encoded_width = self.width + (-self.width) % mw
        self.encoded_height = self.height + (-self.height) % mh
        if (self.encoded_width, self.encoded_height) != (self.width, self.height):
            warnings.warn(
                f"{self.pix_fmt} needs sizes divisible by {mh}x{mw} (HxW): {self.height}x{self.width} is "
                f"encoded as {self.encoded_height}x{self.encoded_width} with replicated edge pixels",
                VideoWarning,
                stacklevel=2,
            )
        audio_path = Path(audio_from) if audio_from is not None else None
        if audio_path is not None and not audio_path.is_file():
            raise InputError(f"audio_from={audio_path} is not a file; pass the input video or None")

        opts = dict(options or {})
        problem = _hdr10_options(codec, self.colour, opts)
        if problem:
            warnings.warn(f"{self.path}: {problem}", VideoWarning, stacklevel=2)
        self._staged = self._stage(directory=False) if stream is None else None
        try:
            self._open_video(codec, crf, opts)
            if audio_path is not None:
                self._audio = StreamCopier(audio_path, self._container, self.path)
        except BaseException:
            self.abort()
            raise

    # ---- set-up ----------------------------------------------------------------------------

    def _video_colour(self, source: Colour) -> Colour:
        """What a video output says about its colours: the source's primaries, transfer and HDR10
        metadata; for YUV its matrix (BT.709 by size or BT.601 where it has none we convert with)
        and its range (limited where unstated or where the source is RGB); for RGB the RGB matrix,
        full range."""
        if not self._yuv:
            return Colour(source.primaries, source.transfer, RGB, RANGE_JPEG, source.mastering, source.light_level)
        matrix = source.matrix
        if matrix == BT2020_CL:
            warnings.warn(
                f"{self.path}: the input's constant-luminance BT.2020 matrix was decoded as the non-constant "
                "one; the output is written and tagged with the non-constant one",
                VideoWarning,
                stacklevel=3,
            )
            matrix = BT2020_NCL
        if matrix not in MATRICES:
            matrix = BT709 if is_hd(self.width, self.height) else SMPTE170M
        full = source.range == RANGE_JPEG and source.matrix != RGB  # an RGB source's full range is not YUV's
        return Colour(
            source.primaries,
            source.transfer,
            matrix,
            RANGE_JPEG if full else RANGE_MPEG,
            source.mastering,
            source.light_level,
        )

    def _png_colour(self, source: Colour) -> Colour:
        """What PNG frames say: an HDR source's primaries and transfer (a ``cICP`` chunk), else nothing."""
        if not source.hdr:
            return Colour()
        if source.mastering is not None or source.light_level is not None:
            warnings.warn(
                f"{self.path}: PNG frames get the input's primaries and transfer (cICP) but not its HDR10 "
                f"mastering display / content light level: PyAV {av.__version__} cannot attach side data to "
                "a frame; write a video (--codec libx265) to keep them",
                VideoWarning,
                stacklevel=3,
            )
        return Colour(source.primaries, source.transfer, 0, RANGE_JPEG)

    def _stage(self, *, directory: bool) -> StagedPath:
        """The hidden sibling everything is written to; creating it is the check that the directory is writable."""
        try:
            return StagedPath(self.path, directory=directory, suffix="" if directory else self.path.suffix)
        except OSError as error:
            e = error.__cause__ if isinstance(error, WriteError) and isinstance(error.__cause__, OSError) else error
            if e.errno == errno.ENAMETOOLONG:
                size = len(os.fsencode(self.path.name))
                raise OutputError(
                    f"output name {self.path.name!r} is too long for the file system ({size} bytes, and a "
                    "temporary name beside it needs about 30 more); choose a shorter name"
                ) from e
            raise OutputError(
                f"cannot write into {self.path.parent}: {e.strerror}; fix its permissions or choose another "
                "output directory"
            ) from e

    def _choose_pix_fmt(self, codec: str, pix_fmt: str | None) -> str:
        encoder = av.Codec(codec, "w")
        supported = [f.name for f in (encoder.video_formats or [])]
        if pix_fmt is None and codec in LOSSLESS_RGB:
            depths = LOSSLESS_RGB[codec]
            return next((name for bits, name in depths if bits >= self.bit_depth), depths[-1][1])
        pix_fmt = pix_fmt or "yuv420p"
        chosen = pix_fmt
        if self.bit_depth > 8 and _depth(pix_fmt) == 8:
            deeper = [f"{pix_fmt}{d}le" for d in (12, 10) if d <= self.bit_depth]
            if not supported:
                chosen = deeper[-1]
            elif any(f in supported for f in deeper):
                chosen = next(f for f in deeper if f in supported)
            else:
                warnings.warn(
                    f"{self.path}: {codec} cannot encode {pix_fmt} deeper than 8 bits, so the {self.bit_depth}-bit "
                    "input is written with 8 bits (banding may show); use --codec libx265, libx264 or ffv1 to keep "
                    "the depth",
                    VideoWarning,
                    stacklevel=3,
                )
        if supported and chosen not in supported:
            raise OutputError(f"{codec} cannot encode pixel format {chosen!r}; it supports: {', '.join(supported)}")
        try:
            av.VideoFormat(chosen)
        except ValueError as e:
            raise OutputError(f"unknown pixel format {chosen!r}; use yuv420p or yuv420p10le") from e
        return chosen

    def _open_video(self, codec: str, crf: int | None, options: Mapping[str, str]) -> None:
        # A pipe gets each packet at once (flush_packets), a file whatever the muxer buffers.
        target = self._pipe if self._pipe is not None else str(self._staged.path)  # type: ignore[union-attr]
        flush = {"flush_packets": "1"} if self._pipe is not None else {}
        try:
            container = av.open(target, mode="w", format=self._format, container_options=flush)
        except ValueError as e:
            raise OutputError(
                f"cannot tell the container format from the suffix of {self.path}; use .mp4, "
                ".mkv or .mov, or a folder path without a suffix for PNG frames"
            ) from e
        self._container = container
        opts = dict(options)
        if codec == "libx265" and "log-level" not in opts.get("x265-params", ""):
            # x265 writes a dozen "x265 [info]" lines and warnings about small frames to stderr per
            # output; its errors still reach the user
            opts["x265-params"] = ":".join(p for p in ("log-level=error", opts.get("x265-params")) if p)
        if crf == 0 and codec == "libx265":  # x265's CRF 0 is not lossless at any depth
            opts["x265-params"] = ":".join(p for p in ("lossless=1", opts.get("x265-params")) if p)
        elif crf == 0 and codec == "libx264" and self._quant_bits > 8:  # above 8 bits x264's CRF 0 is not QP 0
            opts.setdefault("qp", "0")
        elif crf is not None and codec in _CRF_CODECS:
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
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_range = self.colour.matrix, self.colour.range
        if self.colour.primaries != UNSPECIFIED:
            ctx.color_primaries = self.colour.primaries
        if self.colour.transfer != UNSPECIFIED:
            ctx.color_trc = self.colour.transfer
        stream.thread_type = "AUTO" if self._frame_threads else "SLICE"
        stream.codec_context.thread_count = ENCODER_THREADS
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
            raise OutputError(f"encoding frame {self.frames_written} into {self.path} failed: {av_reason(e)}") from e
        self.frames_written += 1

    def _quantize(self, rgb: np.ndarray) -> np.ndarray:
        peak = float((1 << self._quant_bits) - 1)
        q = np.rint(np.clip(rgb, 0.0, 1.0) * peak)
        return q.astype(np.uint8 if self._quant_bits == 8 else np.uint16)

    def _write_png(self, rgb: np.ndarray) -> None:
        if self._png is None:
            ctx = av.CodecContext.create("png", "w")
            ctx.width, ctx.height = self.width, self.height
            ctx.pix_fmt = "rgb24" if self.bit_depth == 8 else "rgb48be"
            ctx.time_base = Fraction(1, 1)
            ctx.thread_type = "FRAME"  # PNGs compress in parallel; packets come out in order
            self._png = ctx
        fmt = "rgb24" if self.bit_depth == 8 else "rgb48be"
        frame = av.VideoFrame.from_ndarray(self._quantize(rgb), format=fmt)
        if self.colour.hdr:  # FFmpeg's PNG encoder writes these as a cICP chunk
            frame.color_primaries, frame.color_trc = self.colour.primaries, self.colour.transfer
        frame.pts = self.frames_written
        self._save_pngs(self._png.encode(frame))

    def _save_pngs(self, packets: list[av.Packet]) -> None:
        assert self._staged is not None
        for packet in packets:
            (self._staged.path / f"{self._png_written:08d}.png").write_bytes(bytes(packet))
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
            if self._quant_bits > 8:  # planar RGB of 10 to 16 bits, filled with its own levels
                return av.VideoFrame.from_ndarray(q, format=self.pix_fmt, channel_last=True)
            return av.VideoFrame.from_ndarray(q, format="rgb24").reformat(format=self.pix_fmt)
        colour_range = RANGE_JPEG if self._full else RANGE_MPEG
        if self._quant_bits == 8:
            frame = av.VideoFrame.from_ndarray(q, format="rgb24")
            return frame.reformat(
                format=self.pix_fmt,
                dst_colorspace=MATRICES[self._matrix][0],
                dst_color_range="JPEG" if self._full else "MPEG",
                interpolation=SWS_FLAGS,
            )
        _, kr, kb = MATRICES[self._matrix]
        yuv = rgb_to_yuv16(q.astype(np.float32) / 65535.0, kr, kb, full=self._full, bits=_depth(self.pix_fmt))
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv444p16le", channel_last=True)
        frame.colorspace, frame.color_range = self._matrix, colour_range
        out = frame.reformat(format=self.pix_fmt, interpolation=SWS_FLAGS)
        out.colorspace, out.color_range = self._matrix, colour_range
        return out

    # ---- finishing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Finish encoding and put the staged output in place of ``path``.

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
            if self._staged is not None:
                self._staged.commit()
                self._staged = None
        except BaseException:
            self.abort()
            raise
        self._closed = True

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
        if self._staged is not None:
            self._staged.discard()
            self._staged = None

    def __del__(self) -> None:
        if getattr(self, "_staged", None) is not None:
            self.abort()
