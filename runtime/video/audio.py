"""Audio (and subtitles) for an output video: the source's audio and subtitle streams copied in,
interleaved with the frames."""

from __future__ import annotations

import logging
import re
import warnings
from fractions import Fraction
from pathlib import Path

import av

from .types import InputError, OutputError, VideoWarning, av_reason

log = logging.getLogger(__name__)

#: The channel layout FFmpeg would pick for a channel count, for sources that leave theirs unspecified.
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def describe(stream: av.stream.Stream) -> str:
    """``audio stream #1 (aac, eng)``: how messages name a stream of the source."""
    details = [stream.codec_context.name if stream.codec_context else "?"]
    if stream.language:
        details.append(stream.language)
    return f"{stream.type} stream #{stream.index} ({', '.join(details)})"


def side_streams(path: Path) -> list[str]:
    """The audio and subtitle streams of the media file ``path``, described (empty if unreadable)."""
    try:
        with av.open(str(path)) as container:
            return [describe(s) for s in container.streams if s.type in ("audio", "subtitle")]
    except (av.FFmpegError, OSError):
        return []


def aac_layout(stream: av.audio.stream.AudioStream) -> str:
    """The channel layout to encode ``stream`` to AAC with: its own, or the usual one for its channel
    count when the source leaves it unspecified (AVI and WAV do; the AAC encoder refuses that)."""
    layout = stream.codec_context.layout
    if not re.fullmatch(r"\d+ channels", layout.name):
        return layout.name
    if layout.nb_channels not in _DEFAULT_LAYOUTS:
        raise OutputError(
            f"the {describe(stream)} has {layout.nb_channels} channels in no stated layout, which cannot be "
            "re-encoded to AAC; write a .mkv (which holds the original audio) or remove the audio first"
        )
    return _DEFAULT_LAYOUTS[layout.nb_channels]


def aac_rate(rate: int | None) -> int:
    """The sample rate to encode AAC at: the source's where AAC has it, else the next one up (or 96 kHz)."""
    rates = sorted(av.Codec("aac", "w").audio_rates or (48000,))
    if not rate:
        return 48000
    return rate if rate in rates else next((r for r in rates if r > rate), rates[-1])


class StreamCopier:
    """Copies the audio and subtitle streams of a source file into an output container, interleaved.

    An audio stream whose codec the output container accepts is remuxed packet by packet (no
    quality loss); any other is decoded and re-encoded to AAC, with an explicit channel layout and
    the encoder opened here, so that a stream AAC cannot take is reported (naming the stream) before
    any frame is encoded. A subtitle stream is remuxed where the container can hold its codec and
    otherwise left out with a warning that names it. :meth:`mux_until` is called after each video
    frame so that these streams are written alongside the video rather than all at the end.
    """

    def __init__(self, source: Path, output: av.container.OutputContainer, target: Path) -> None:
        try:
            self._input = av.open(str(source))
        except av.FFmpegError as e:
            raise InputError(
                f"cannot read audio from {source}: {av_reason(e)}; pass audio_from=None to skip audio"
            ) from e
        self._source, self._target, self._output = source, target, output
        self._routes: dict[int, tuple[av.stream.Stream, bool]] = {}  # index -> (out, transcode)
        try:
            for stream in self._input.streams.audio:
                self._add_audio(stream)
            self._add_subtitles()
        except BaseException:
            self.close()
            raise
        copied = [s for s in self._input.streams if s.index in self._routes]
        self._packets = self._input.demux(*copied) if copied else iter(())
        self._pending: av.Packet | None = None
        self._done = not copied

    def _add_audio(self, stream: av.audio.stream.AudioStream) -> None:
        try:
            self._routes[stream.index] = (self._output.add_stream_from_template(stream), False)
            return
        except ValueError:
            pass
        out = self._output.add_stream("aac", rate=aac_rate(stream.codec_context.sample_rate))
        out.codec_context.layout = aac_layout(stream)
        try:
            out.codec_context.open()
        except av.FFmpegError as e:
            raise OutputError(
                f"the {describe(stream)} of {self._source} cannot be re-encoded to AAC for {self._target} "
                f"({av_reason(e)}); write a .mkv, which holds the original audio"
            ) from e
        self._routes[stream.index] = (out, True)
        log.info("re-encoding the %s to AAC: %s cannot hold it", describe(stream), self._output.format.name)

    def _add_subtitles(self) -> None:
        left_out = []
        for stream in self._input.streams.subtitles:
            try:
                self._routes[stream.index] = (self._output.add_stream_from_template(stream), False)
            except ValueError:
                left_out.append(describe(stream))
        if left_out:
            warnings.warn(
                f"{self._target.suffix or self._target.name} cannot hold the {', '.join(left_out)} of "
                f"{self._source}: they are not copied; write a .mkv to keep them",
                VideoWarning,
                stacklevel=4,
            )

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
        """Write packets that start at or before ``seconds`` (all of them for None)."""
        while True:
            packet = self._pending or self._next()
            self._pending = None
            if packet is None:
                return
            time = packet.pts * packet.time_base if packet.pts is not None else None
            if seconds is not None and time is not None and time > seconds:
                self._pending = packet
                return
            self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        source = packet.stream
        out, transcode = self._routes[source.index]
        try:
            if transcode:
                for frame in packet.decode():
                    self._output.mux(out.encode(frame))
            else:
                packet.stream = out
                self._output.mux(packet)
        except av.FFmpegError as e:
            raise OutputError(
                f"copying the {describe(source)} of {self._source} into {self._target} failed: {av_reason(e)}; "
                "write a .mkv, which holds nearly any audio, or remove the audio from the input first"
            ) from e

    def finish(self) -> None:
        """Write the remaining packets and flush the AAC encoders."""
        self.mux_until(None)
        for out, transcode in self._routes.values():
            if transcode:
                self._output.mux(out.encode(None))
        self.close()

    def close(self) -> None:
        self._input.close()
