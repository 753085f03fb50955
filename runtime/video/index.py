"""Random access into a video: a packet index built once without decoding, and reading a range of
frames by seeking to the keyframe at or before it.

:func:`build_index` demuxes the video stream (no decoding) and records each packet's timestamps and
keyframe flag. Frame ``i`` is the packet with the ``i``-th smallest presentation timestamp, which is
the order :func:`~runtime.video.read_frames` numbers decoded frames in. :func:`read_span` then seeks
to a keyframe, decodes from there and yields only the wanted frames, identified by their
timestamps, so reaching frame 10,000 costs one group of pictures instead of 10,000 frames.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .colour import Decoder
from .reading import _video_stream, open_input
from .types import Frame, InputError, av_reason


@dataclass(frozen=True)
class Keyframe:
    """A keyframe packet: its decode position, its timestamps and its display index."""

    position: int
    pts: int
    dts: int | None
    frame: int


@dataclass(frozen=True)
class PacketIndex:
    """Where every frame of a video is, from its packets alone.

    ``pts[i]`` is the presentation timestamp (in ``time_base``) of frame ``i`` in display order;
    ``keyframes`` are in decode order. ``None`` as an index (see :func:`build_index`) means the
    video cannot be indexed and is read from its start.
    """

    time_base: Fraction
    pts: tuple[int, ...]
    keyframes: tuple[Keyframe, ...]

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    def span(self, start: int, stop: int) -> Span:
        """What :func:`read_span` needs to read frames ``start:stop`` (small enough to send to a
        worker): their timestamps and the keyframes to seek to, the best one first."""
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"frames {start}:{stop} are outside 0:{self.num_frames}")
        usable = [k for k in self.keyframes if k.frame <= start]
        # decode order: the last keyframe displayed at or before `start` first, then earlier ones
        seeks = tuple(sorted(usable, key=lambda k: k.position, reverse=True)[:3])
        return Span(start, self.pts[start:stop], seeks)


@dataclass(frozen=True)
class Span:
    """Frames ``first, first + 1, ...`` of a video, by timestamp, and keyframes to reach them."""

    first: int
    pts: tuple[int, ...]
    seeks: tuple[Keyframe, ...]


def build_index(path: str | os.PathLike[str]) -> PacketIndex | None:
    """Index the first video stream of ``path`` without decoding; ``None`` when some packet has no
    timestamp or there is no keyframe (such a video is read from its start instead)."""
    path = Path(path)
    container = open_input(path)
    try:
        stream = _video_stream(container, path)
        entries: list[tuple[int, int | None, bool]] = []
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    return None
                entries.append((packet.pts, packet.dts, packet.is_keyframe))
        except av.FFmpegError as e:
            raise InputError(f"cannot index {path}: {av_reason(e)}; the file is damaged, re-download it") from e
        time_base = Fraction(stream.time_base)
    finally:
        container.close()
    pts = sorted(p for p, _, _ in entries)
    if len(set(pts)) != len(pts):
        return None
    keyframes = tuple(
        Keyframe(position=i, pts=p, dts=d, frame=bisect.bisect_left(pts, p))
        for i, (p, d, key) in enumerate(entries)
        if key
    )
    if not keyframes:
        return None
    return PacketIndex(time_base, tuple(pts), keyframes)


def timestamps_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with the timestamps of ``path``'s video packets (read without decoding), or
    ``None``: frames without one, or several frames sharing one (a broken muxer writes every frame
    at 0), which no player can show at the right time."""
    path = Path(path)
    container = open_input(path)
    stamps: list[int | None] = []
    try:
        stream = _video_stream(container, path)
        try:
            stamps = [p.pts for p in container.demux(stream) if p.size and not p.is_discard]
        except av.FFmpegError:
            return None  # a damaged file: reading it says so
    finally:
        container.close()
    missing = sum(1 for s in stamps if s is None)
    if missing:
        return f"{missing} of its {len(stamps)} frames have no timestamp"
    if len(stamps) > 1 and len(set(stamps)) == 1:
        return f"all its {len(stamps)} frames have the same timestamp"
    repeated = len(stamps) - len(set(stamps))
    if repeated:
        return f"{repeated} of its {len(stamps)} frames repeat an earlier frame's timestamp"
    return None


def read_span(path: str | os.PathLike[str], span: Span) -> Iterator[Frame]:
    """Yield the frames of ``span`` (decoded exactly as :func:`~runtime.video.read_frames` decodes
    them), seeking to the first of ``span.seeks`` that the demuxer lands on or before.

    Raises :class:`InputError` when a wanted frame does not decode (a damaged file).
    """
    path = Path(path)
    decoder = Decoder(path, still=False)
    wanted = span.pts
    container = open_input(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        packets = _seek(container, stream, span)
        got = 0
        for frame in _decode(stream, packets, path):
            if frame.pts is None or frame.pts < wanted[got]:
                continue
            if frame.pts != wanted[got]:
                break
            yield Frame(index=span.first + got, rgb=decoder.to_rgb(frame), pts=frame.pts)
            got += 1
            if got == len(wanted):
                return
    finally:
        container.close()
    raise InputError(
        f"{path}: frame {span.first + got} (pts {wanted[got]}) did not decode where the packet index "
        "puts it; the file is damaged or its timestamps are broken: re-encode it, or run it in one "
        "segment (--segment 0)"
    )


def _seek(container: av.container.InputContainer, stream, span: Span) -> Iterator[av.Packet]:
    """Demux ``stream`` from the first keyframe of ``span.seeks`` that the demuxer lands at or
    before (demuxers seek by dts or by pts: landing later would lose frames, landing earlier only
    costs decoding); from the start of the file if none does."""
    for key in span.seeks:
        if key.position == 0:
            break
        target = key.pts if key.dts is None else min(key.pts, key.dts)
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            continue
        packets = container.demux(stream)
        first = next((p for p in packets if p.size), None)
        if first is None:
            continue
        if first.dts is not None and key.dts is not None:
            at_or_before = first.dts <= key.dts
        else:
            at_or_before = first.pts is not None and first.pts <= key.pts
        if at_or_before:
            return _chain(first, packets)
    container.seek(0, stream=stream, backward=True, any_frame=False)
    return container.demux(stream)


def _chain(first: av.Packet, rest: Iterator[av.Packet]) -> Iterator[av.Packet]:
    yield first
    yield from rest


def _decode(stream, packets: Iterator[av.Packet], path: Path) -> Iterator[av.VideoFrame]:
    try:
        for packet in packets:
            yield from packet.decode()
    except av.FFmpegError as e:
        raise InputError(f"{path}: decoding failed ({av_reason(e)}); the file is damaged, re-download it") from e
