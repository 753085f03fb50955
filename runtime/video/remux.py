"""Stitching: segments encoded on their own become one output, by stream copy (no second encode).

Each video segment is an MP4 whose timestamps start at 0; :func:`stitch_video` copies its packets
into the output with the segment's start added, so the output carries the source's timestamps
exactly, and copies the source's audio and subtitles once, interleaved. The segments must come from one encoder
configuration (identical codec parameters, checked), which makes them one stream. A frame-folder
output is assembled from the segments' PNGs renamed to their global frame numbers. Either way the
output is written into a :class:`~export.atomic.StagedPath` and put in place only when complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from export.atomic import StagedPath

from .audio import StreamCopier, side_streams
from .types import OutputError, av_reason

_MOV_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})


@dataclass(frozen=True)
class Piece:
    """One finished segment: its file (or frame folder), where its first output frame goes in the
    whole output (``first``, a frame number), the time in seconds to add to its timestamps, and
    how many frames it holds (``None``: not known beforehand, as for a damaged video read in one
    pass)."""

    path: Path
    first: int
    offset: Fraction
    frames: int | None


def stitch_video(
    pieces: Sequence[Piece],
    staged: StagedPath,
    *,
    audio_from: Path | None = None,
    streams_end: Fraction | None = None,
) -> Path:
    """Concatenate the video segments ``pieces`` (in order) by stream copy into ``staged``, each
    segment's timestamps shifted by its offset, and commit it; the audio and subtitle streams of
    ``audio_from`` are copied, up to ``streams_end`` seconds (all of them for None: the output
    holds the whole video). On an error the staged file is discarded."""
    if not pieces:
        raise ValueError("no segments to stitch")
    output = staged.target
    with av.open(str(pieces[0].path)) as first:
        time_base = Fraction(first.streams.video[0].time_base)
    # MP4 writes the start offset into an edit list in the movie time scale (1/1000 s by default),
    # which would move every frame by up to half a millisecond: give it the stream's time base.
    options = {"movie_timescale": str(time_base.denominator)} if output.suffix.lower() in _MOV_SUFFIXES else {}
    try:
        with av.open(str(staged.path), mode="w", options=options) as out:
            first = av.open(str(pieces[0].path))
            template = first.streams.video[0]
            stream = out.add_stream_from_template(template)
            stream.time_base = template.time_base
            if template.average_rate:  # else Matroska states a frame rate of one frame per time unit
                stream.codec_context.framerate = template.average_rate
            extradata = template.codec_context.extradata
            first.close()
            audio = None
            if audio_from is not None and side_streams(audio_from):
                audio = StreamCopier(audio_from, out, output)
            try:
                last_dts = None
                for piece in pieces:
                    last_dts = _copy_piece(piece, out, stream, extradata, audio, last_dts)
                if audio is not None:
                    audio.finish(streams_end)
                    audio = None
            finally:
                if audio is not None:
                    audio.close()
    except BaseException as exc:
        staged.discard()
        if isinstance(exc, av.FFmpegError):
            raise OutputError(f"stitching the segments into {output} failed: {av_reason(exc)}") from exc
        raise
    return staged.commit()


def _copy_piece(
    piece: Piece, out, stream, extradata: bytes | None, audio: StreamCopier | None, last_dts: int | None
) -> int | None:
    """Copy one segment's packets, shifted; return the last decode timestamp written.

    Each segment's encoder starts its decode timestamps before its first frame by its B-frame
    delay, which with irregular frame times can fall at or before the previous segment's last
    one; such a timestamp is moved just after it (decode timestamps only order the packets; every
    presentation timestamp stays exact).
    """
    with av.open(str(piece.path)) as source:
        video = source.streams.video[0]
        if video.codec_context.extradata != extradata:
            raise OutputError(
                f"segment {piece.path.name} was encoded with other codec parameters than the first "
                "segment, so the segments cannot be joined by stream copy; delete the work folder "
                f"{piece.path.parent} and run again"
            )
        shift = piece.offset / Fraction(video.time_base)
        if shift.denominator != 1:
            raise OutputError(
                f"segment {piece.path.name}: its start ({piece.offset} s) is not a whole number of "
                f"time units ({video.time_base}); write it with the source's time base"
            )
        count = 0
        for packet in source.demux(video):
            if packet.size == 0:
                continue
            packet.pts = None if packet.pts is None else packet.pts + int(shift)
            if packet.dts is not None:
                packet.dts += int(shift)
                if last_dts is not None and packet.dts <= last_dts:
                    packet.dts = last_dts + 1
                if packet.pts is not None and packet.dts > packet.pts:
                    raise OutputError(
                        f"segment {piece.path.name} cannot follow the previous one: its frames start "
                        "too close after it; use longer segments (--segment)"
                    )
                last_dts = packet.dts
            packet.stream = stream
            out.mux(packet)
            count += 1
            if audio is not None and packet.pts is not None:
                audio.mux_until(packet.pts * Fraction(video.time_base))
        if piece.frames is not None and count != piece.frames:
            raise OutputError(
                f"segment {piece.path.name} holds {count} frames, {piece.frames} were expected; "
                f"delete it from {piece.path.parent} and run again with --resume"
            )
    return last_dts


def stitch_frames(pieces: Sequence[Piece], staged: StagedPath, names: Sequence[str] | None = None) -> Path:
    """Assemble the frame-folder segments ``pieces`` in the staged folder ``staged`` (hard links where
    the file system allows, else copies) and commit it. Output frame ``k`` is named ``names[k]`` (the
    input frame it comes from, for a frame-folder input at one output frame per input frame), else by
    its number in the whole output (``00000000.png``, ...). On an error the staged folder is discarded."""
    try:
        for piece in pieces:
            files = sorted(piece.path.glob("*.png"))
            if piece.frames is not None and len(files) != piece.frames:
                raise OutputError(
                    f"segment {piece.path.name} holds {len(files)} frames, {piece.frames} were expected; "
                    f"delete it from {piece.path.parent} and run again with --resume"
                )
            for i, src in enumerate(files):
                k = piece.first + i
                dst = staged.path / (names[k] if names is not None else f"{k:08d}.png")
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
    except BaseException:
        staged.discard()
        raise
    return staged.commit()
