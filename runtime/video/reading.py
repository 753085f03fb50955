"""Reading: :func:`probe` describes a video file or a folder of PNG/JPEG frames, :func:`read_frames`
yields its frames as float32 RGB (see :mod:`.colour`); every unusable input is an :class:`InputError`
that says what to do."""

from __future__ import annotations

import os
import re
import struct
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from ..memory import frame_size_problem
from .colour import Decoder, colour_of
from .types import IMAGE_SUFFIXES, Frame, InputError, VideoInfo, VideoWarning, av_reason

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: How the files of the media formats FFmpeg reads here begin: (offset, bytes, name). A file that
#: starts with none of them is not called an empty or unfinished recording when FFmpeg finds no data.
_SIGNATURES = (
    (4, b"ftyp", "MP4/MOV"),
    (4, b"moov", "MOV"),
    (4, b"mdat", "MOV"),
    (4, b"free", "MOV"),
    (4, b"wide", "MOV"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"RIFF", "AVI/WAV"),
    (0, b"FLV", "FLV"),
    (0, b"OggS", "Ogg"),
    (0, b"nut/multimedia container", "NUT"),
    (0, b"\x00\x00\x01\xba", "MPEG program stream"),
    (0, b"\x00\x00\x01\xb3", "MPEG video"),
    (0, b"\x00\x00\x00\x01", "H.264/HEVC stream"),
    (0, b"\x30\x26\xb2\x75", "ASF/WMV"),
    (0, b"GIF8", "GIF"),
    (0, _PNG_SIGNATURE, "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"YUV4MPEG2", "Y4M"),
    (0, b"ID3", "MP3"),
)


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


def frame_files(folder: Path) -> list[Path]:
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


def media_format(path: Path) -> str | None:
    """The media format ``path`` starts like (by its first bytes), ``None`` if none this tool knows."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:  # MPEG-TS: a sync byte every 188
        return "MPEG-TS"
    return None


def declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) a PNG, JPEG or Y4M file's header declares, read without decoding; ``None``
    for other files or a header that does not parse."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head[:9] == b"YUV4MPEG2":
        line = head.split(b"\n", 1)[0].decode("latin-1")
        fields = {part[0]: part[1:] for part in line.split()[1:] if part}
        if fields.get("W", "").isdigit() and fields.get("H", "").isdigit():
            return int(fields["W"]), int(fields["H"])
        return None
    if head[:2] == b"\xff\xd8":  # JPEG: walk the marker segments to the frame header (SOFn)
        pos = 2
        while pos + 9 <= len(head) and head[pos] == 0xFF:
            marker, length = head[pos + 1], struct.unpack(">H", head[pos + 2 : pos + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", head[pos + 5 : pos + 9])
                return int(width), int(height)
            pos += 2 + length
    return None


def _check_size(path: Path, width: int, height: int) -> None:
    """Refuse frames that cannot be decoded here (too large for FFmpeg, or for the memory available)."""
    problem = frame_size_problem(width, height)
    if problem:
        raise InputError(f"{path} cannot be used: {problem}")


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


def open_input(path: Path) -> av.container.InputContainer:
    """Open a media file for reading, turning every failure into an InputError with a fix."""
    if not path.exists():
        raise InputError(f"input {path} does not exist; check the path")
    if not os.access(path, os.R_OK):
        raise InputError(f"input {path} is not readable; check its permissions")
    if path.stat().st_size == 0:
        raise InputError(f"input {path} is an empty file (0 bytes); re-create or re-download it")
    size = declared_size(path)
    if size is not None:
        _check_size(path, *size)
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as e:
        reason = _mp4_truncation(path)
        if reason:
            raise InputError(
                f"cannot read {path}: {reason}; re-download or re-export it "
                "(or remux with `-movflags faststart` so a cut file stays readable)"
            ) from e
        kind = media_format(path)
        if kind is None:
            raise InputError(
                f"cannot read {path} as a video: its first bytes match no media format this tool reads (it holds "
                "other data: text, random or encrypted bytes); check that it is a video file (the suffix alone "
                "does not make it one)"
            ) from e
        if isinstance(e, av.error.EOFError):
            raise InputError(
                f"{path} ends before any media data: it holds no frames (an empty or unfinished "
                "recording); pass a video that has frames"
            ) from e
        raise InputError(
            f"cannot read {path} as a video: it starts like {kind} but FFmpeg finds {av_reason(e)}; check that "
            "it is a video file and that it is not damaged (re-download or re-export it)"
        ) from e


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
    container = open_input(path)
    try:
        stream = _video_stream(container, path)
        if stream.codec_context is not None and stream.codec_context.width and stream.codec_context.height:
            _check_size(path, stream.codec_context.width, stream.codec_context.height)
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
            colour=colour_of(first),
        )
    finally:
        container.close()


def _first_frame(container: av.container.InputContainer, stream, path: Path) -> av.VideoFrame:
    """Decode the first frame of ``stream`` or raise InputError explaining why there is none."""
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as e:
        suffix = path.suffix.lower()
        still = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix)
        if still is not None and media_format(path) != still:
            raise InputError(
                f"{path} is named {suffix} but is not a {still} image (its first bytes are not a {still} "
                "signature); replace or remove it"
            ) from e
        raise InputError(
            f"{path}: no video frame could be decoded ({av_reason(e)}); the file is damaged or "
            "truncated, re-download or re-export it"
        ) from e
    raise InputError(f"{path} has a video stream but no frames in it; pass a video that has frames")


def _probe_folder(folder: Path) -> VideoInfo:
    files = frame_files(folder)
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
            if len(sizes) == 1:
                _check_size(p, *next(iter(sizes)))
        if len(sizes) > 1:
            (s0, p0), (s1, p1) = list(sizes.items())[:2]
            raise InputError(
                f"frame folder {folder} mixes frame sizes: {p0.name} is {s0[1]}x{s0[0]} but "
                f"{p1.name} is {s1[1]}x{s1[0]} (HxW); all frames must have one size, resize or split them"
            )
    container = open_input(files[0])
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
    decoder = Decoder(info.source, still=True)
    for index, file in enumerate(frame_files(info.source)[start:], start=start):
        container = open_input(file)
        try:
            frame = _first_frame(container, _video_stream(container, file), file)
        finally:
            container.close()
        if (frame.width, frame.height) != (info.width, info.height):
            raise InputError(
                f"frame folder {info.source}: {file.name} is {frame.height}x{frame.width} but the "
                f"first frame is {info.height}x{info.width} (HxW); all frames must have one size"
            )
        yield Frame(index=index, rgb=decoder.to_rgb(frame), pts=None)


def _read_video(info: VideoInfo, start: int) -> Iterator[Frame]:
    container = open_input(info.source)
    decoder = Decoder(info.source, still=False)
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
                stopped = av_reason(e)
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


def _estimate_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int | None:
    """Frame count implied by the video stream's own duration and frame rate, when both are known.

    Only the video stream counts: a container's duration spans every stream (audio that runs on,
    subtitles that end later) and, in Matroska, the start time too. Matroska gives a stream's
    duration as its ``DURATION`` tag, which FFmpeg writes as the end time: both readings (with and
    without the start time) are tried and the smaller kept, since the estimate only serves to tell
    a cut file from a whole one. A stream duration that merely repeats the container's (FFmpeg
    fills it in so where the stream has none) is not the stream's own, and the container's duration
    is used only when the video is its one stream.
    """
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None
    start = Fraction(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else Fraction(0)
    end = _duration_tag(stream.metadata.get("DURATION") or stream.metadata.get("duration"))
    alone = len(container.streams) == 1
    if end is None and stream.duration and stream.time_base:
        seconds = stream.duration * stream.time_base
        copied = container.duration is not None and abs(seconds - Fraction(container.duration, av.time_base)) < 0.002
        if alone or not copied:
            return round(seconds * rate)
    if end is None and alone and container.duration:
        end = Fraction(container.duration, av.time_base)
        if container.start_time:
            start = Fraction(container.start_time, av.time_base)
    if end is None or end <= 0:
        return None
    return round(min(t for t in (end, end - start) if t > 0) * rate)


def _duration_tag(text: str | None) -> Fraction | None:
    """Seconds in a Matroska ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``), ``None`` if absent or unreadable."""
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", (text or "").strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)
