"""Video through pipes: a stream read from standard input, a stream written to standard output.

``-`` names standard input (as an input) and standard output (as an output). A pipe cannot seek,
so the input must be a container FFmpeg can demux front to back (NUT, MPEG-TS, Matroska, ...;
``ffmpeg -i IN -f nut -``); an MP4 keeps its index at the end and cannot come through a pipe.
The input is opened without FFmpeg's usual read-ahead (it would take some 20 frames to guess a
frame rate before handing over the first), and read with whatever the pipe holds, so a frame is
decoded as soon as its bytes have arrived. The output is NUT or MPEG-TS, written packet by packet
and flushed after each, so the next program in the pipeline gets every frame as soon as it is
encoded.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from ..defaults import PIPE_FORMATS
from .colour import Decoder, colour_of
from .types import Colour, Frame, InputError, OutputError, VideoInfo, VideoWarning, av_reason
from .writing import LOSSLESS_RGB, VideoWriter

PIPE = "-"
#: Encoders told to emit each frame at once (no look-ahead, no B-frames) when the output is live.
_ZERO_LATENCY = frozenset({"libx264", "libx264rgb", "libx265"})
#: Demuxer options for a stream that starts at once: stream analysis reads no more than the first
#: packet and guesses no frame rate from the packets (the container's or codec's rate is used).
_NO_READ_AHEAD = {"probesize": "32", "fpsprobesize": "0"}
_HOW = "pipe a stream into it, e.g. `ffmpeg -i IN -f nut - | vsr-run - ...` (or -f mpegts)"


def is_pipe(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is ``-`` (standard input or output)."""
    return path is not None and os.fspath(path) == PIPE


class _Counting:
    """A read-only, non-seekable view of a binary stream that counts the bytes it delivered.

    A read returns what one read of the pipe gives (``read1``) instead of waiting for ``size`` bytes.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        read1 = getattr(self._stream, "read1", None)
        data = read1(size) if read1 is not None else self._stream.read(size)
        self.bytes += len(data)
        return data


class PipeInput:
    """A video stream read once, front to back, from a binary file object (standard input).

    Opening reads the stream's header and decodes its first frame, so a stream that cannot deliver
    a frame is refused here (:class:`InputError`); :attr:`info` describes it (``num_frames`` is
    ``None``: a pipe does not say how long it is) and :meth:`frames` yields its frames, once.
    Audio and other streams in the input are not passed on (a warning says so).
    """

    def __init__(self, stream: BinaryIO | None = None, name: str = "standard input") -> None:
        if stream is None:
            if sys.stdin is None or sys.stdin.isatty():
                raise InputError(f"INPUT - reads a video stream from standard input, which is a terminal; {_HOW}")
            stream = sys.stdin.buffer
        self.name = name
        self._source = _Counting(stream)
        try:
            self._container = av.open(self._source, mode="r", options=_NO_READ_AHEAD)
        except av.FFmpegError as e:
            if self._source.bytes == 0:
                raise InputError(f"{name} is empty: no video came through the pipe; {_HOW}") from e
            raise InputError(
                f"cannot read a video stream from {name} ({av_reason(e)}): it needs a container that can be "
                f"read front to back, such as NUT or MPEG-TS (an MP4 cannot come through a pipe); {_HOW}"
            ) from e
        try:
            self._stream = self._video_stream()
            self._decoder = Decoder(Path(name), still=False)
            self._packets = self._container.demux(self._stream)
            self._pending: list[av.VideoFrame] = []
            self.bad_packets = 0
            first = self._next_frame()
            if first is None:
                raise InputError(f"{name} has a video stream but no frame could be decoded from it; {_HOW}")
            self._pending.insert(0, first)
            fps = self._stream.average_rate or self._stream.codec_context.framerate or self._stream.guessed_rate
            tb = self._stream.time_base
            self.info = VideoInfo(
                width=first.width,
                height=first.height,
                fps=Fraction(fps) if fps else None,
                time_base=Fraction(tb) if tb else None,
                num_frames=None,
                has_audio=len(self._container.streams.audio) > 0,
                source=Path(PIPE),
                kind="video",
                bit_depth=max(8, max(c.bits for c in first.format.components if not c.is_alpha)),
                colour=colour_of(first),
            )
        except BaseException:
            self._container.close()
            raise
        others = [s.type for s in self._container.streams if s is not self._stream]
        if others:
            warnings.warn(
                f"{name} also holds {', '.join(others)} streams; only the video goes through vsr-run's pipe "
                "(mux the audio back in afterwards)",
                VideoWarning,
                stacklevel=2,
            )

    def _video_stream(self) -> av.video.stream.VideoStream:
        for stream in self._container.streams.video:
            if not stream.disposition & av.stream.Disposition.attached_pic:
                return stream
        kinds = ", ".join(s.type for s in self._container.streams) or "nothing"
        raise InputError(f"{self.name} holds no video stream (it holds: {kinds}); {_HOW}")

    def _next_frame(self) -> av.VideoFrame | None:
        """The next decoded frame, or ``None`` at the end of the stream (damaged packets are skipped)."""
        while not self._pending:
            try:
                packet = next(self._packets)
            except StopIteration:
                return None
            except av.FFmpegError:  # the container breaks off here: flush what the decoder holds
                packet = None
            try:
                self._pending = list(packet.decode() if packet is not None else self._stream.codec_context.decode(None))
            except av.FFmpegError:
                self.bad_packets += 1
            if packet is None and not self._pending:
                return None
        return self._pending.pop(0)

    def frames(self) -> Iterator[Frame]:
        """The stream's frames as float32 RGB, in decoding order, each read only when asked for."""
        index = 0
        try:
            while (frame := self._next_frame()) is not None:
                yield Frame(index=index, rgb=self._decoder.to_rgb(frame), pts=frame.pts)
                index += 1
        finally:
            self._container.close()
        if self.bad_packets:
            warnings.warn(
                f"{self.name}: {self.bad_packets} packets could not be decoded and were skipped",
                VideoWarning,
                stacklevel=2,
            )


def pipe_writer(
    width: int,
    height: int,
    fps: Fraction,
    *,
    container_format: str = "nut",
    codec: str = "libx264",
    crf: int | None = 18,
    time_base: Fraction | None = None,
    bit_depth: int = 8,
    live: bool = False,
    stream: BinaryIO | None = None,
    colour: Colour | None = None,
) -> VideoWriter:
    """A :class:`VideoWriter` into ``stream`` (standard output by default) in ``container_format``.

    ``live``: each frame's packet is written as soon as the frame is given (no frame threads in
    the encoder, and x264/x265's ``tune=zerolatency``: no look-ahead, no B-frames).
    """
    if container_format not in PIPE_FORMATS:
        raise OutputError(f"--format {container_format!r}: a pipe gets {' or '.join(PIPE_FORMATS)}")
    if codec in LOSSLESS_RGB and colour is not None and (colour.primaries, colour.transfer) != (2, 2):
        warnings.warn(
            f"NUT has no place for the colour tags of {codec} (its bitstream has none): the stream leaves out the "
            "input's primaries and transfer; tell the reader (ffmpeg -color_primaries, -color_trc) or use libx264",
            VideoWarning,
            stacklevel=2,
        )
    if stream is None:
        if sys.stdout is None or sys.stdout.isatty():
            raise OutputError("-o - writes a video stream to standard output, which is a terminal; pipe it on")
        sys.stdout.flush()
        stream = os.fdopen(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
    options = {"tune": "zerolatency"} if live and codec in _ZERO_LATENCY else {}
    return VideoWriter(
        Path("<standard output>"),
        width,
        height,
        fps,
        codec=codec,
        crf=crf,
        time_base=time_base,
        bit_depth=bit_depth,
        colour=colour,
        options=options,
        stream=stream,
        container_format=container_format,
        frame_threads=not live,
    )
