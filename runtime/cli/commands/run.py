"""vsr-run: upscale a video file or a folder of frames."""

from __future__ import annotations

import glob
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from export.format import Package, cache_folder, dim_value
from vsr_models.errors import VSRError
from vsr_models.scales import Scale, output_size

from ...cluster import RayPool, connect
from ...costs import cost_key, record_costs, recorded_costs
from ...devices import Device
from ...options import Encoding, LiveOptions, RunOptions, Schedule, resolve_backend
from ...pipeline import resolve_scale
from ...progress import WorkMeter, eta_text
from ...resolve import resolve_package
from ...samples import demo_for, downscale, psnr, sample_clip, upscale_bicubic
from ...segments import FileJob, plan_segments, prepare_file, schedule
from ...stream import run_stream_file
from ...tiles import plan_tiles
from ...video import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    InputError,
    OutputError,
    VideoInfo,
    VideoWriter,
    check_codec,
    check_output,
    chw,
    hwc,
    output_kind,
    probe,
    read_frames,
)
from ...video.pipes import is_pipe
from ...workers import InlinePool, ProcessPool, Progress, RunResult, run_jobs
from ..common import (
    say,
)
from ..measure import stage_flops


def execute(
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
    dry_run: bool,
) -> None:
    """The work of ``vsr-run`` (:func:`runtime.cli.run.main`), with its parsed flags."""
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
        pairs = plan_outputs(inputs, output, create=not dry_run)
    if dry_run and (demo or streaming):
        raise click.UsageError("--dry-run shows the plan of a file run: leave out --demo, --latency and the pipes (-)")
    targets = [output] if demo or streaming else [target for _, target in pairs]
    for target in targets:  # before any export or model load
        if is_pipe(target):
            check_codec(codec, None, container_format)
        elif output_kind(target) == "video":
            check_codec(codec, target)
    package = resolve_package(model, log=say, export=not dry_run)
    kind, dev = resolve_backend(backend, package, device[0], precision, log=say)
    options = RunOptions(
        package=str(package.root), backend=kind, precision=precision, threads=threads, schedule=schedule
    )
    if dry_run:
        show_plan(pairs, package, options, encoding, files, dev, scale=scale, out_size=out_size)
        return
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

    # The backend first: a run it refuses (a precision the package lacks, a missing library) has prepared
    # no work folder, output lock or staged output to leave behind.
    pool = _make_pool(options, devices, count, files, dev)
    try:
        jobs, failures = _prepare_all(pairs, single, package, options, encoding, files, dev, scale, out_size)
        label = f"{package.manifest['model']} {{scale}} [{options.backend} on {dev}]"
        result = _run(jobs, pool, label, files.retries, options.backend, dev, package, options)
    finally:
        pool.close()
    if result.report.segments_computed or result.report.segments_reused:
        say(result.report.summary(rate=len(pairs) > 1))
    failures += [(f.job.source, f.error) for f in result.failed]
    if failures:
        if single:
            error = failures[0][1]
            raise error if isinstance(error, VSRError) else click.ClickException(f"{error.__class__.__name__}: {error}")
        for source, error in failures:
            say(f"failed: {source}: {error}")
        raise click.ClickException(f"{len(failures)} of {len(pairs)} inputs failed (listed above)")


def _prepare_all(
    pairs: list[tuple[Path, Path]],
    single: bool,
    package: Package,
    options: RunOptions,
    encoding: Encoding,
    files: FileRun,
    dev: Device,
    scale: Scale | None,
    out_size: tuple[int, int] | None,
) -> tuple[list[FileJob], list[tuple[Path, BaseException]]]:
    """Check each input and its output and plan its segments: the jobs, and the inputs that failed
    (raised at once with ``single``)."""
    jobs: list[FileJob] = []
    failures: list[tuple[Path, BaseException]] = []
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
    return jobs, failures


def show_plan(
    pairs: list[tuple[Path, Path]],
    package: Package,
    options: RunOptions,
    encoding: Encoding,
    files: FileRun,
    device: Device,
    *,
    scale: Scale | None,
    out_size: tuple[int, int] | None,
) -> None:
    """--dry-run: what the run would do and what it would cost, from the inputs' headers and the plan,
    with nothing computed or written (no cache work folder, no output)."""
    click.echo(
        f"dry run (nothing is written): {package.manifest['model']} from {package.root}, backend "
        f"{options.backend} on {device}, precision {options.precision}"
    )
    for source, target in pairs:
        info = probe(source)
        num = info.num_frames
        if num is None:
            click.echo(f"{source}: the container does not state its frame count; the run counts it by decoding")
            continue
        num = min(num, encoding.frames) if encoding.frames else num
        resolved = resolve_scale(package, info.height, info.width, scale, out_size)
        up = schedule(package, options, resolved)
        out_h, out_w = output_size(info.height, info.width, resolved)
        windows = sum(1 for _ in up.windows(num))
        tiles = len(
            plan_tiles(
                info.height,
                info.width,
                up.tile_for(min(num, (up.chunk or num) + 2 * up.overlap), info.height, info.width),
                up.tile_overlap,
            )
        )
        segments = plan_segments(num, up.chunk, up.overlap, files.segment_frames or None)
        calls = up.stage_calls(num, info.height, info.width)
        costs = stage_costs(package, info.height, info.width, resolved)
        gflops = sum(calls[s] * costs.get(s, 0.0) for s in calls) / 1e9 / num
        chunks = f"windows of {up.chunk} frames + {up.overlap} each side" if up.chunk else "the whole clip at once"
        click.echo(
            f"{source} -> {target}: {num} frames of {info.height}x{info.width} -> {num * package.output_rate} of "
            f"{out_h}x{out_w} ({scale_text(resolved)}); {chunks}: {windows} window(s); "
            f"{tiles} tile(s) per frame; {len(segments)} segment(s); {sum(calls.values())} stage calls, about "
            f"{gflops:.0f} GFLOPs per frame" + ("" if all(s in costs for s in calls) else " (some stages not counted)")
        )
        key = cost_key(package.manifest, options, device, info.height, info.width, resolved)
        seconds = recorded_costs(key, set(calls))
        if seconds:
            total = sum(calls[s] * seconds[s] for s in calls)
            click.echo(
                f"  cost here, as an earlier run of this size measured it: about {1000 * total / num:.0f} ms per "
                f"frame, {eta_text(total)} in all (one process; more workers share it)"
            )
    click.echo(
        "ms per frame is measured on the first frames when the run starts, and printed with the total it implies; "
        "a run records it for the next one of the same size here"
    )


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


def plan_outputs(inputs: tuple[Path, ...], output: Path, create: bool = True) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one input writes OUTPUT; several write OUTDIR/<input's name> (created
    unless ``create`` is False)."""
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
    if create:
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
    if fps is not None and output_kind(target) != "video":
        say(f"--fps {fps} is ignored: {target} is a folder of PNG frames, which carry no frame rate")
    elif in_fps is not None and fps is not None:
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


class FrameBar:
    """A progress bar in frames, moved by a :class:`~runtime.progress.WorkMeter`: its position is the work
    done (in frames) and its remaining time the meter's, each stage priced at its own measured cost."""

    FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} frames [{elapsed}{postfix}]"  # tqdm adds ", "

    def __init__(self, meter: WorkMeter, desc: str, position: int = 0, leave: bool = True, disable: bool = False):
        self.meter = meter
        self.bar = tqdm(
            total=meter.frames,
            desc=desc,
            position=position,
            leave=leave,
            disable=disable,
            bar_format=self.FORMAT,
            postfix="? left",
        )
        self.announced = disable

    def step(self, stage: str | None, n: int = 1) -> None:
        reading = self.meter.step(stage, n)
        self.bar.n = min(self.meter.frames * reading.done, self.meter.frames)
        self.bar.set_postfix_str(f"{eta_text(reading.remaining)} left")
        if not self.announced and reading.remaining is not None and self.meter.timed_every_stage():
            self.announced = True
            total = reading.elapsed + reading.remaining
            self.bar.write(
                f"cost here: {self.meter.frames} frames at about {1000 * total / max(self.meter.frames, 1):.0f} ms "
                f"per frame (measured on the first frames), about {eta_text(total)} in all",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.meter.readings:
            self.bar.n = self.meter.frames
            self.bar.set_postfix_str("done")
        self.bar.close()


def stage_costs(package: Package, h: int, w: int, scale: Scale) -> dict[str, float]:
    """FLOPs of one call of each stage at LR frames of h x w (padded as the runtime pads), counted on the
    network built without data (:func:`~runtime.cli.measure.stage_flops`): the prior that prices a stage
    before the run has timed it. Stages whose shapes cannot be read from the manifest are left out."""
    ph, pw = package.constraints.padded(h, w)
    out_h, out_w = output_size(ph, pw, scale)
    sizes = {"h": ph, "w": pw, "H": out_h, "W": out_w}
    shapes = {}
    for stage, spec in package.manifest["stages"].items():
        dims = [[d if isinstance(d, int) else dim_value(str(d), sizes) for d in i["shape"]] for i in spec["inputs"]]
        if all(None not in d for d in dims):
            shapes[stage] = {i["name"]: tuple(d) for i, d in zip(spec["inputs"], dims)}
    try:
        return stage_flops(package, shapes)
    except VSRError:
        return {}


def stage_prior(
    package: Package, options: RunOptions, device: Device, h: int, w: int, scale: Scale
) -> tuple[str, dict[str, float]]:
    """(record key, the cost of one call of each stage): the seconds per call an earlier run with the same
    key recorded here (:mod:`runtime.costs`), else the FLOPs."""
    key = cost_key(package.manifest, options, device, h, w, scale)
    flops = stage_costs(package, h, w, scale)
    return key, (recorded_costs(key, set(flops)) if flops else None) or flops


def scale_text(scale: Scale) -> str:
    """``x4`` or, where the two factors differ, ``2.5x3.5`` (HxW)."""
    return f"x{scale[0]:g}" if scale[0] == scale[1] else f"{scale[0]:g}x{scale[1]:g}"


def job_calls(job: FileJob, package: Package, options: RunOptions) -> Counter[str]:
    """The stage calls (stage -> calls) of the segments ``job`` still has to compute."""
    calls: Counter[str] = Counter()
    for task in job.missing:
        seg, up = task.segment, schedule(package, options, task.scale)
        calls += up.stage_calls(seg.hi, task.height, task.width, seg.start, seg.stop)
    return calls


def _run(
    jobs: list[FileJob],
    pool,
    label: str,
    retries: int,
    kind: str,
    device: Device,
    package: Package,
    options: RunOptions,
) -> RunResult:
    """Drive the pool with one progress bar per input (in frames) and one overall (several inputs)."""
    priors = {
        j.number: stage_prior(package, options, device, j.tasks[0].height, j.tasks[0].width, j.tasks[0].scale)
        for j in jobs
    }
    meters = {
        j.number: WorkMeter(job_calls(j, package, options), sum(t.frames for t in j.missing), priors[j.number][1])
        for j in jobs
    }
    overall = FrameBar(
        WorkMeter(_sum_calls(meters), sum(m.frames for m in meters.values()), _first_costs(meters)),
        label.format(scale="all inputs"),
        disable=len(jobs) < 2,
    )
    bars: dict[int, FrameBar] = {}
    began: dict[int, float] = {}

    def on_start(job: FileJob) -> None:  # the clock of its bar starts with its first segment
        meters[job.number].restart()
        began[job.number] = time.perf_counter()
        bars[job.number] = FrameBar(
            meters[job.number],
            f"{label.format(scale=scale_text(job.tasks[0].scale))} {job.source.name}",
            position=len(bars) + 1 if len(jobs) > 1 else 0,
            leave=len(jobs) == 1,
        )
        if not overall.meter.readings:
            overall.meter.restart()

    def on_steps(file: int, n: int, stage: str | None) -> None:
        bars[file].step(stage, n)
        overall.step(stage, n)

    def on_file_done(job: FileJob) -> None:
        bar = bars.pop(job.number, None)
        if bar is not None:
            bar.close()
            record_costs(priors[job.number][0], meters[job.number])
        h, w = job.tasks[0].out_size
        computed = sum(t.frames for t in job.missing)
        rate = ""
        if computed and job.number in began:
            rate = f", {computed / (time.perf_counter() - began[job.number]):.2f} frames/s with {kind} on {device}"
        say(f"wrote {job.output}: {job.total_frames} frames, {h}x{w}{rate}")

    def on_retry(task, error) -> None:
        say(f"segment {task.segment.index} of {task.source}: {error.__class__.__name__}: {error}; trying again")

    try:
        return run_jobs(
            jobs,
            pool,
            retries=retries,
            progress=Progress(on_start=on_start, on_steps=on_steps, on_file_done=on_file_done, on_retry=on_retry),
        )
    finally:
        for bar in bars.values():
            bar.close()
        overall.close()


def _first_costs(meters: dict[int, WorkMeter]) -> dict[str, float] | None:
    """The stage costs of the first input, for the overall bar (inputs of other sizes scale alike)."""
    return next(iter(meters.values())).costs if meters else None


def _sum_calls(meters: dict[int, WorkMeter]) -> Counter[str]:
    total: Counter[str] = Counter()
    for meter in meters.values():
        total.update(meter.planned)
    return total


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
    where = f"{h}x{w} at its centre" if demo.crop is not None else f"{h}x{w}"
    say(
        f"demo: {len(hr)} frames of {clip.name} ({where}) downscaled x{s} (bicubic, antialiased) "
        f"to {h // s}x{w // s}, upscaled by {package.manifest['model']}"
    )
    be = options.make_backend(package, device, log=say)
    upscaler = options.schedule.upscaler(package, be)
    sr = []
    start = time.perf_counter()
    key, costs = stage_prior(package, options, device, h // s, w // s, (s, s))
    meter = WorkMeter(upscaler.stage_calls(len(lr), h // s, w // s), len(lr), costs)
    bar = FrameBar(meter, f"{package.manifest['model']} x{s} [{be.name}]")
    try:
        with VideoWriter(
            output, w, h, info.fps, codec=encoding.codec, crf=encoding.crf, overwrite=encoding.overwrite
        ) as writer:
            meter.restart()
            for out in upscaler.stream(iter(lr), bar.step):
                out = np.clip(out, 0, 1)
                sr.append(out)
                writer.write(hwc(out))
    finally:
        bar.close()
    record_costs(key, meter)
    elapsed = time.perf_counter() - start
    sr_psnr, bic_psnr = psnr(np.stack(sr), hr), psnr(upscale_bicubic(lr, s), hr)
    say(f"wrote {output}: {len(sr)} frames, {h}x{w}, {len(sr) / elapsed:.2f} frames/s with {be.name} on {be.device}")
    say(
        f"PSNR against the original frames: {sr_psnr:.2f} dB ({package.manifest['model']}), "
        f"{bic_psnr:.2f} dB (bicubic), gain {sr_psnr - bic_psnr:+.2f} dB"
    )
    if demo.note:
        say(demo.note)
