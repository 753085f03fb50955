"""Runs on streams: ``-`` as input (standard input) or output (standard output), and live runs
(``--latency K [--block B]``), where each output frame is written as soon as it is final and the
time from reading an input frame to writing its output frame is measured (:class:`Latency`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from export.format import Package
from vsr_models.scales import output_size

from .executor import Backend
from .live import LiveError, LiveUpscaler, live_upscaler_for
from .options import Encoding, LiveOptions, Schedule
from .pipeline import Upscaler, resolve_scale
from .video import Frame, OutputError, VideoInfo, VideoWriter, check_output, chw, hwc, probe, read_frames
from .video.pipes import PipeInput, is_pipe, pipe_writer


@dataclass
class Latency:
    """When each input frame was read and each output frame written (seconds, one clock).

    ``behind[n]``: input frames read after frame n by the time output frame n was written.
    """

    read_at: list[float] = field(default_factory=list)
    written_at: list[float] = field(default_factory=list)
    behind: list[int] = field(default_factory=list)

    def seconds(self) -> list[float]:
        return [w - r for r, w in zip(self.read_at, self.written_at)]

    def summary(self) -> str:
        if not self.written_at:
            return "latency: no frame was written"
        ms = [1000 * s for s in self.seconds()]
        return (
            f"latency: each output frame was written at most {max(self.behind)} input frames after its own, "
            f"{statistics.median(ms):.0f} ms after its input frame was read (median; worst {max(ms):.0f} ms)"
        )


def run_stream(
    frames: Iterable[np.ndarray],
    upscale: Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]],
    write: Callable[[int, np.ndarray], None],
    clock: Callable[[], float] = time.perf_counter,
) -> Latency:
    """Feed (3, h, w) ``frames`` through ``upscale`` and ``write(n, frame)`` each output as it comes,
    timing each input frame's read and its output frame's write (one output per input)."""
    latency = Latency()

    def timed() -> Iterator[np.ndarray]:
        for frame in frames:
            latency.read_at.append(clock())
            yield frame

    for n, out in enumerate(upscale(timed())):
        write(n, out)
        latency.written_at.append(clock())
        latency.behind.append(len(latency.read_at) - 1 - n)
    return latency


def work_per_frame(upscaler: LiveUpscaler) -> str:
    """Stage calls per frame of a long stream, live against a whole-clip run."""
    calls = upscaler.steady_calls_per_frame()
    if calls is None:
        return "stage calls per frame: the stream was too short for a block inside it"
    whole = upscaler.live.whole_calls_per_frame()
    parts = [f"{stage} {calls.get(stage, 0):.2f} ({n})" for stage, n in whole.items()]
    return "stage calls per frame of a long stream, live (whole clip): " + ", ".join(parts)


def run_stream_file(
    input_path: Path,
    output: Path,
    package: Package,
    backend: Backend,
    *,
    schedule: Schedule,
    encoding: Encoding,
    live: LiveOptions,
    scale: tuple[float, float] | None,
    out_size: tuple[int, int] | None,
    log: Callable[[str], None],
) -> None:
    """Upscale ``input_path`` into ``output`` frame by frame, either of them a pipe (``-``), or live
    (``live.latency`` set); ``log`` hears the status lines (rates, latency, work per frame)."""
    latency, block = live.latency, live.block
    overwrite, fps, max_frames = encoding.overwrite, encoding.fps, encoding.frames
    if package.output_rate != 1:
        raise OutputError(
            f"{package.manifest['model']} makes {package.output_rate} frames per input frame; streams and "
            "--latency take networks with one output frame per input frame: run it on a file"
        )
    if is_pipe(input_path):
        source = PipeInput()
        info: VideoInfo = source.info
        decoded: Iterable[Frame] = source.frames()
    else:
        info = probe(input_path)
        decoded = read_frames(input_path)
    if not is_pipe(output):
        check_output(output, overwrite=overwrite, source=None if is_pipe(input_path) else input_path)
    in_fps = info.fps
    if in_fps is None:
        in_fps = fps or Fraction(25)
        if fps is None:
            log(f"{input_path} has no frame rate; writing {float(in_fps):g} frames/s (set it with --fps)")
    resolved = resolve_scale(package, info.height, info.width, scale, out_size)
    if latency is not None and (scale is not None or out_size is not None):
        raise LiveError("--latency runs at the network's own scale: drop --scale and --size")
    causal = package.plan.lookahead() is not None  # then each frame goes out once it is final, in chunks of 1
    upscaler: LiveUpscaler | Upscaler = (
        replace(schedule, chunk=schedule.chunk or (1 if causal else None)).upscaler(package, backend, resolved)
        if latency is None
        else live_upscaler_for(package, backend, latency, block, schedule.tile, schedule.tile_overlap)
    )
    if isinstance(upscaler, LiveUpscaler) and upscaler.note:
        log(upscaler.note)
    out_h, out_w = output_size(info.height, info.width, resolved)
    s = f"{resolved[0]:g}" if resolved[0] == resolved[1] else f"{resolved[0]:g}x{resolved[1]:g}"
    pts: list[int | None] = []

    def frames() -> Iterator[np.ndarray]:
        for frame in decoded:
            if max_frames is not None and frame.index >= max_frames:
                return
            pts.append(frame.pts)
            yield chw(frame.rgb)

    size = (out_w, out_h)
    if is_pipe(output):
        if info.has_audio and not is_pipe(input_path):
            log(f"{input_path} has audio; a stream on standard output gets only the video")
        writer = pipe_writer(
            *size,
            in_fps,
            container_format=live.container_format or "nut",
            codec=encoding.codec,
            crf=encoding.crf,
            time_base=info.time_base,
            bit_depth=info.bit_depth,
            colour=info.colour,
            live=latency is not None,
        )
    else:
        writer = VideoWriter(
            output,
            *size,
            in_fps,
            codec=encoding.codec,
            crf=encoding.crf,
            overwrite=overwrite,
            audio_from=input_path if info.kind == "video" and not is_pipe(input_path) else None,
            time_base=info.time_base,
            bit_depth=info.bit_depth,
            colour=info.colour,
        )
    total = info.num_frames if max_frames is None else min(info.num_frames or max_frames, max_frames)
    start = time.perf_counter()
    with writer, tqdm(total=total, unit="frame", desc=f"{package.manifest['model']} x{s} [{backend.name}]") as bar:

        def write(n: int, frame: np.ndarray) -> None:
            try:
                writer.write(hwc(frame), pts=pts[n])
            except BrokenPipeError as e:
                raise OutputError(
                    f"the program reading standard output stopped reading after {n} frames (broken pipe)"
                ) from e
            bar.update(1)

        measured = run_stream(frames(), upscaler.stream, write)
    elapsed = time.perf_counter() - start
    count = len(measured.written_at)
    where = "standard output" if is_pipe(output) else str(output)
    log(f"wrote {count} frames to {where}, {size[1]}x{size[0]}, {count / elapsed:.2f} frames/s with {backend.name}")
    if isinstance(upscaler, LiveUpscaler):
        log(
            f"live: look-ahead {upscaler.latency} frames, blocks of {block} "
            f"(at most {upscaler.frames_behind} frames behind)"
        )
        log(measured.summary())
        log(work_per_frame(upscaler))
    elif causal:
        log(measured.summary())
