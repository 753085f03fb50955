"""Audio for an output video: the source's audio streams copied in, interleaved with the frames."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av

from .types import InputError, av_reason

log = logging.getLogger(__name__)


def has_audio(path: Path) -> bool:
    """True if the media file ``path`` has at least one audio stream (False if unreadable)."""
    try:
        with av.open(str(path)) as container:
            return len(container.streams.audio) > 0
    except (av.FFmpegError, OSError):
        return False


class AudioCopier:
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
                f"cannot read audio from {source}: {av_reason(e)}; pass audio_from=None to skip audio"
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
