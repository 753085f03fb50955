"""Long videos in segments: cutting, rendering one segment, the work folder and resume.

A video is cut into segments of whole windows (a multiple of ``chunk`` input frames, read with the
window overlap as context on each side); a causal network's video is one segment, since its state
runs from the first frame. Windows sit at global multiples of ``chunk``, so a
segment's frames equal, bit for bit, those of one sequential run (:mod:`runtime.pipeline`). A
segment is reached by seeking (:mod:`runtime.video.index`), computed in three lanes
(:mod:`runtime.lanes`) and encoded on its own, with timestamps relative to its start, into the
work folder; the finished file is put there under its final name only when it is complete, so a
half-written segment is never reused. :func:`stitch` joins the segments by stream copy.

The work folder (``WORK/NAME-KEY``, by default in the cache) is keyed by the input, the output,
the package and every option that changes a frame, so a run with ``resume`` keeps the segments that
an interrupted run with the same key finished, and computes only the missing ones. A run holds the
lock of its output (in this user's lock folder, :func:`lock_folder`, whatever the cache or work
folder) from planning to the end, so a second run on the same output is refused at once; a link or
another user's folder in place of the work folder is refused, never followed. Before the first
segment starts, the memory the run needs is checked (:mod:`runtime.budget`). Nothing is written
beside the output but its staged file, reserved when the first segment starts.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from export.atomic import (
    LOCK_SUFFIX,
    PARTIAL_MARK,
    Busy,
    FileLock,
    StagedPath,
    WriteError,
    check_real_folder,
    remove_path,
    write_text_atomic,
    writing,
)
from export.format import Package
from vsr_models.scales import Scale, output_size

from .budget import GraphMemory, check_fits
from .devices import Device
from .lanes import LaneStats, run_lanes
from .options import Encoding, RunOptions
from .pipeline import Upscaler
from .video import Colour, VideoInfo, VideoWarning, VideoWriter, chw, hwc, output_kind, read_frames
from .video.audio import side_streams
from .video.index import PacketIndex, Span, build_index, read_span, timestamps_problem
from .video.reading import frame_files, is_frame_folder
from .video.remux import Piece, stitch_frames, stitch_video


@dataclass(frozen=True)
class Segment:
    """Input frames ``start:stop`` of a video, computed from frames ``lo:hi`` (with context)."""

    index: int
    start: int
    stop: int
    lo: int
    hi: int


def plan_segments(num_frames: int, chunk: int | None, overlap: int, length: int | None) -> list[Segment]:
    """Cut ``num_frames`` input frames into segments of ``length`` frames rounded up to a multiple of
    ``chunk`` (``None`` or 0: one segment; a whole-clip schedule, ``chunk=None``, is one segment)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if not length or chunk is None:
        size = num_frames
    else:
        size = -(-length // chunk) * chunk
    segments = []
    for i, start in enumerate(range(0, num_frames, size)):
        stop = min(start + size, num_frames)
        lo = 0 if chunk is None else max(start - overlap, 0)
        hi = num_frames if chunk is None else min(stop + overlap, num_frames)
        segments.append(Segment(i, start, stop, lo, hi))
    return segments


class Runner:
    """A loaded package and its backend on one device, with an :class:`Upscaler` per output scale:
    what a worker process or Ray actor keeps between segments."""

    def __init__(self, options: RunOptions, device: str | Device = "cpu") -> None:
        self.options = options
        self.package = Package.open(options.package)
        self.backend = options.make_backend(self.package, Device.parse(device))
        self._upscalers: dict[Scale, Upscaler] = {}

    def upscaler(self, scale: Scale) -> Upscaler:
        if scale not in self._upscalers:
            self._upscalers[scale] = self.options.schedule.upscaler(self.package, self.backend, scale)
        return self._upscalers[scale]


def schedule(package: Package, options: RunOptions, scale: Scale) -> Upscaler:
    """The windows and tiles of ``options`` without a backend (for planning and counting steps)."""
    return options.schedule.upscaler(package, None, scale)


@dataclass(frozen=True)
class SegmentTask:
    """One segment of one input, everything a worker needs to compute and encode it.

    ``span`` locates the frames for seeking (``None``: read from the start, or a frame folder).
    ``origin`` is the source timestamp of the segment's first kept frame (subtracted, so the
    segment starts at 0); ``None`` writes evenly spaced frames.
    """

    file: int
    source: Path
    segment: Segment
    span: Span | None
    dest: Path
    width: int
    height: int
    scale: Scale
    rate: int
    fps: Fraction
    time_base: Fraction | None
    origin: int | None
    codec: str
    crf: int
    steps: int
    bit_depth: int = 8
    colour: Colour = field(default_factory=Colour)

    @property
    def frames(self) -> int:
        """Output frames the segment holds (at most, when read without an index: a damaged video
        gives the frames that decode)."""
        return (self.segment.stop - self.segment.start) * self.rate

    @property
    def out_size(self) -> tuple[int, int]:
        """(height, width) of the output frames."""
        return output_size(self.height, self.width, self.scale)

    @property
    def exact(self) -> bool:
        """Whether the segment must hold exactly :attr:`frames` frames (its frames were located by
        the packet index)."""
        return self.span is not None


@dataclass
class SegmentResult:
    """What computing a segment did, and which process did it."""

    file: int
    index: int
    stats: LaneStats
    pid: int = field(default_factory=os.getpid)


def _frames(task: SegmentTask, pts: dict[int, int | None]) -> Iterator[np.ndarray]:
    seg = task.segment
    source = read_span(task.source, task.span) if task.span is not None else read_frames(task.source, seg.lo)
    try:
        for frame in source:
            if frame.index >= seg.hi:
                return
            pts[frame.index] = frame.pts
            yield chw(frame.rgb)
    finally:
        source.close()


def render_segment(
    runner: Runner, task: SegmentTask, dest: Path | None = None, on_step: Callable[[str], None] | None = None
) -> SegmentResult:
    """Compute and encode ``task``'s segment into ``dest`` (default ``task.dest``): an MP4 whose
    timestamps start at 0, or a folder of PNGs. It appears under that name only when complete."""
    seg = task.segment
    out_h, out_w = task.out_size
    pts: dict[int, int | None] = {}
    written = 0
    dest = task.dest if dest is None else dest

    with warnings.catch_warnings():  # what the writer warns about was said when the run was planned
        warnings.simplefilter("ignore", VideoWarning)
        writer = VideoWriter(
            dest,
            out_w,
            out_h,
            task.fps,
            codec=task.codec,
            crf=task.crf,
            overwrite=True,
            time_base=task.time_base,
            bit_depth=task.bit_depth,
            colour=task.colour,
        )
    with writer:

        def write(out: np.ndarray) -> None:
            nonlocal written
            stamp = None
            if task.origin is not None:
                source = pts[seg.start + written // task.rate]
                stamp = None if source is None else source - task.origin
            writer.write(hwc(out), pts=stamp)
            written += 1

        stats = run_lanes(
            runner.upscaler(task.scale),
            _frames(task, pts),
            write,
            first=seg.lo,
            start=seg.start,
            stop=seg.stop,
            on_step=on_step,
        )
    if written != task.frames and (task.exact or written > task.frames):
        raise RuntimeError(f"segment {seg.index} produced {written} frames, {task.frames} were expected")
    return SegmentResult(task.file, seg.index, stats)


class WorkFolder:
    """Finished segments of one output, kept across interrupted runs.

    The folder is the tool's own: a symbolic link or a folder of another user in its place is
    refused (never followed), and nothing in it is trusted that is not a plain file or folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_output(cls, output: Path, key: dict, base: Path) -> WorkFolder:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return cls(base / f"{output.name[:80]}-{digest}")

    def prepare(self, key: dict, *, resume: bool) -> int:
        """Create the folder, emptied unless ``resume``; return how many finished segments of an
        earlier run were thrown away for lack of ``resume``."""
        discarded = 0
        with writing(self.root):
            self.root.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(self.root):
                check_real_folder(self.root, "the work folder")
                if not resume:
                    discarded = sum(1 for p in self.root.iterdir() if p.name.startswith("seg-"))
                    shutil.rmtree(self.root)
            self.root.mkdir(exist_ok=True)
            check_real_folder(self.root, "the work folder")
            self._refuse_links()
            for stale in self.root.glob(f"*{PARTIAL_MARK}*"):  # half-written by a run that was killed
                remove_path(stale)
            write_text_atomic(self.root / "key.json", json.dumps(key, indent=1, sort_keys=True, default=str))
        return discarded

    def _refuse_links(self) -> None:
        """A :class:`~export.atomic.WriteError` if a symbolic link sits in the folder (or in a
        segment's folder of frames): a resumed run would otherwise trust or replace what it names."""
        for entry in self.root.iterdir():
            inner = list(entry.iterdir()) if entry.is_dir() and not entry.is_symlink() else []
            for path in [entry, *inner]:
                if path.is_symlink():
                    raise WriteError(
                        errno.ELOOP,
                        f"the work folder {self.root} holds a symbolic link, {path.name} (to {os.readlink(path)}), "
                        "which this tool never makes nor follows; remove it, or run without --resume to start afresh",
                    )

    def segment_path(self, segment: Segment, frames_output: bool) -> Path:
        name = f"seg-{segment.index:05d}-{segment.start}-{segment.stop}"
        return self.root / (name if frames_output else f"{name}.mp4")

    def remove(self) -> None:
        if os.path.lexists(self.root):
            remove_path(self.root)


def lock_folder() -> Path:
    """This user's folder of output locks, the same whatever the cache (``VSR_CACHE_DIR``) or
    ``--work-dir``: ``$XDG_RUNTIME_DIR/vsr-locks`` (a private folder the system clears at log-out), or
    ``vsr-locks-UID`` in the temporary folder. Made private; a link, a file or another user's
    folder in its place is refused (:class:`~export.atomic.WriteError`)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        folder = Path(runtime) / "vsr-locks"
    else:
        folder = Path(tempfile.gettempdir()) / f"vsr-locks-{os.geteuid() if hasattr(os, 'geteuid') else 'user'}"
    with writing(folder), contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    if check_real_folder(folder, "the lock folder").st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def output_lock(output: Path) -> FileLock:
    """The lock that one run writing ``output`` holds, in :func:`lock_folder`: keyed by the output's
    full path, so that a second run on the same output (with any options, cache or work folder) is
    refused."""
    digest = hashlib.sha256(str(output.resolve()).encode()).hexdigest()[:16]
    return FileLock(lock_folder() / f"{output.name[:80]}-{digest}{LOCK_SUFFIX}")


def lock_output(output: Path) -> FileLock:
    """Take :func:`output_lock` at once, or raise :class:`~export.atomic.Busy` naming the run that holds it."""
    lock = output_lock(output)
    with writing(lock.path):
        taken = lock.acquire(blocking=False)
    if not taken:
        holder = lock.holder() or "another process"
        raise Busy(
            f"{output} is being written by another run ({holder}); wait for it to end, or write to another output"
        )
    return lock


def segment_is_complete(path: Path, frames: int, exact: bool = True) -> bool:
    """True if ``path`` is a finished segment of ``frames`` frames (an MP4 whose packets are all
    there and start at 0, or a folder of that many PNGs); a damaged or half-written one is not."""
    if path.is_dir() and not path.is_symlink():
        count = len([p for p in path.glob("*.png") if p.is_file() and not p.is_symlink()])
        return count == frames if exact else 0 < count <= frames
    if not os.path.isfile(path) or os.path.islink(path):  # a link is never a segment this tool wrote
        return False
    try:
        with av.open(str(path)) as container:
            stamps = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
    except (av.FFmpegError, IndexError, OSError):
        return False
    count_ok = len(stamps) == frames if exact else 0 < len(stamps) <= frames
    return count_ok and None not in stamps and min(stamps) == 0


def store_segment(dest: Path, files: dict[str, bytes]) -> None:
    """Write a segment computed elsewhere (``files``: name -> bytes; one name for a video file,
    PNG names for a folder) into ``dest``, atomically."""
    staged = StagedPath(dest, directory=not dest.suffix, suffix=dest.suffix)
    try:
        if staged.directory:
            for name, data in files.items():
                (staged.path / name).write_bytes(data)
        else:
            staged.path.write_bytes(next(iter(files.values())))
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def read_segment(path: Path) -> dict[str, bytes]:
    """The files of a segment as bytes (the inverse of :func:`store_segment`)."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.glob("*.png"))}
    return {path.name: path.read_bytes()}


@dataclass
class FileJob:
    """One input to upscale: its segments, which of them are finished, and where they go."""

    number: int
    source: Path
    output: Path
    info: VideoInfo
    work: WorkFolder
    tasks: list[SegmentTask]
    missing: list[SegmentTask]
    copy_streams: bool
    streams_end: Fraction | None = None
    reused: int = 0
    discarded: int = 0
    staged: StagedPath | None = None
    lock: FileLock | None = None
    #: Raises :class:`~runtime.budget.NotEnoughMemory` when this many local workers cannot compute
    #: the segments in the memory available (called before the first segment starts).
    check_memory: Callable[[int], None] | None = None

    @property
    def total_frames(self) -> int:
        return sum(t.frames for t in self.tasks)

    @property
    def missing_steps(self) -> int:
        return sum(t.steps for t in self.missing)

    @property
    def frames_output(self) -> bool:
        return not self.tasks[0].dest.suffix

    def reserve(self) -> StagedPath:
        """The hidden staged output beside :attr:`output` that the stitched result is written to."""
        if self.staged is None:
            suffix = "" if self.frames_output else self.output.suffix
            self.staged = StagedPath(self.output, directory=self.frames_output, suffix=suffix)
        return self.staged

    def discard(self) -> None:
        """Remove the staged output (the finished segments stay in the work folder)."""
        if self.staged is not None:
            self.staged.discard()
            self.staged = None

    def close(self) -> None:
        """:meth:`discard`, remove the work folder if it holds no finished segment (a run refused or
        failed before finishing one leaves nothing), and let another run write :attr:`output`
        (release its lock)."""
        self.discard()
        root = self.work.root
        if self.lock is not None and root.is_dir() and not root.is_symlink() and not any(root.glob("seg-*")):
            self.work.remove()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def prepare_file(
    number: int,
    source: Path,
    output: Path,
    info: VideoInfo,
    package: Package,
    options: RunOptions,
    encoding: Encoding,
    *,
    device_kind: str,
    fps: Fraction,
    segment_frames: int | None,
    resume: bool,
    work_dir: Path,
    scale: Scale,
) -> FileJob:
    """Plan ``source``'s segments, prepare its work folder and find the finished ones.

    The job holds the lock of ``output`` (:func:`lock_output`) from here until :meth:`FileJob.close`:
    a second run on the same output is refused at once, naming this one.
    """
    lock = lock_output(output)
    try:
        job = _plan_file(
            number,
            source,
            output,
            info,
            package,
            options,
            encoding,
            device_kind=device_kind,
            fps=fps,
            segment_frames=segment_frames,
            resume=resume,
            work_dir=work_dir,
            scale=scale,
        )
    except BaseException:
        lock.release()
        raise
    job.lock = lock
    return job


def _plan_file(
    number: int,
    source: Path,
    output: Path,
    info: VideoInfo,
    package: Package,
    options: RunOptions,
    encoding: Encoding,
    *,
    device_kind: str,
    fps: Fraction,
    segment_frames: int | None,
    resume: bool,
    work_dir: Path,
    scale: Scale,
) -> FileJob:
    index: PacketIndex | None = build_index(source) if info.kind == "video" else None
    broken = timestamps_problem(source) if index is None and info.kind == "video" else None
    if broken:
        warnings.warn(
            f"{source}: {broken}; the output's frames are evenly spaced at {float(fps):g} frames/s instead",
            VideoWarning,
            stacklevel=3,
        )
    num = index.num_frames if index is not None else info.num_frames
    if num is None:  # an unindexable video that does not state its length: count by decoding
        num = sum(1 for _ in read_frames(source))
    whole = num
    if encoding.frames is not None:
        num = min(num, encoding.frames)
    up = schedule(package, options, scale)
    if up.lookahead is not None:  # a causal network's output depends on every frame before it: one run
        segment_frames = None
    segments = plan_segments(num, up.chunk, up.overlap, segment_frames)
    if index is None and len(segments) > 1 and info.kind == "video":
        segments = plan_segments(num, up.chunk, up.overlap, None)  # no seeking: one pass
    rate, frames_output = package.output_rate, output_kind(output) == "frames"
    stat = source.stat()
    key = {
        "input": str(source.resolve()),
        "to": str(output.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "package": hashlib.sha256((package.root / "manifest.json").read_bytes()).hexdigest(),
        "runner": {
            "backend": options.backend,
            "precision": options.precision,
            "chunk": up.chunk,
            "overlap": up.overlap,
            "tile": options.schedule.tile,
            "tile_overlap": options.schedule.tile_overlap,
        },
        "device": device_kind,
        "frames": num,
        "segments": [(s.start, s.stop) for s in segments],
        "output": "frames" if frames_output else "video",
        "codec": encoding.codec,
        "crf": encoding.crf,
        "fps": str(fps),
        "scale": list(scale),
        # the encoder that wrote the kept segments: another PyAV or FFmpeg may encode the same frames
        # differently, and a stitched output would then not be one encoder's run
        "writer": {"pyav": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))},
    }
    work = WorkFolder.for_output(output, key, work_dir)
    discarded = work.prepare(key, resume=resume)
    time_base = info.time_base if rate == 1 and info.kind == "video" and not broken else None
    tasks = []
    for seg in segments:
        span = index.span(seg.lo, seg.hi) if index is not None and len(segments) > 1 else None
        origin = None
        if time_base is not None:  # without an index there is one segment, from the first frame
            origin = index.pts[seg.start] if index is not None else _first_pts(source)
        tasks.append(
            SegmentTask(
                file=number,
                source=source,
                segment=seg,
                span=span,
                dest=work.segment_path(seg, frames_output),
                width=info.width,
                height=info.height,
                scale=scale,
                rate=rate,
                fps=fps * rate,
                time_base=time_base,
                origin=origin,
                codec=encoding.codec,
                crf=encoding.crf,
                steps=up.steps(num, info.height, info.width, seg.start, seg.stop),
                bit_depth=info.bit_depth,
                colour=info.colour,
            )
        )
    missing = [t for t in tasks if not segment_is_complete(t.dest, t.frames, t.exact)]
    streams_end = None  # audio and subtitles stop where the video does: at the first frame left out
    if num < whole:
        if index is not None and time_base is not None:
            streams_end = index.pts[num] * index.time_base
        else:
            last = tasks[-1]
            streams_end = _offset(last) + Fraction(last.segment.stop - last.segment.start) / fps
    graphs = graph_memory(str(package.root), options.precision)

    def check_memory(workers: int) -> None:
        on_gpu = device_kind == "cuda"
        check_fits(
            up, graphs, info.height, info.width, scale, length=num, workers=workers, on_gpu=on_gpu, what=str(source)
        )

    return FileJob(
        number,
        source,
        output,
        info,
        work,
        tasks,
        missing,
        copy_streams=info.kind == "video" and bool(side_streams(source)),
        streams_end=streams_end,
        reused=len(tasks) - len(missing),
        discarded=discarded,
        check_memory=check_memory,
    )


@functools.lru_cache(maxsize=8)
def graph_memory(root: str, precision: str) -> GraphMemory:
    """:class:`~runtime.budget.GraphMemory` of a package, read once per run."""
    return GraphMemory(Package.open(root), precision)


def _first_pts(source: Path) -> int | None:
    return next(iter(read_frames(source))).pts


def _offset(task: SegmentTask) -> Fraction:
    """The time in seconds of the segment's first output frame in the whole output."""
    if task.origin is not None and task.time_base is not None:
        return Fraction(task.origin) * task.time_base
    return Fraction(task.segment.start * task.rate) / task.fps


def _input_names(job: FileJob) -> list[str] | None:
    """The PNG names of a frame-folder input's frames (``shot_0001.jpg`` -> ``shot_0001.png``), for an
    output of one frame per input frame; None (frames numbered) otherwise or where two names collide."""
    if not is_frame_folder(job.source) or any(task.rate != 1 for task in job.tasks):
        return None
    names = [f"{path.stem}.png" for path in frame_files(job.source)]
    return names if len(set(names)) == len(names) else None


def stitch(job: FileJob) -> Path:
    """Join the finished segments of ``job`` into its output (then the work folder is removed)."""
    pieces = [
        Piece(task.dest, task.segment.start * task.rate, _offset(task), task.frames if task.exact else None)
        for task in job.tasks
    ]
    staged, job.staged = job.reserve(), None
    if job.frames_output:
        out = stitch_frames(pieces, staged, _input_names(job))
    else:
        with warnings.catch_warnings():  # streams the output leaves out were named when the run was planned
            warnings.simplefilter("ignore", VideoWarning)
            out = stitch_video(
                pieces, staged, audio_from=job.source if job.copy_streams else None, streams_end=job.streams_end
            )
    job.work.remove()
    return out


@dataclass
class RunReport:
    """Totals of a run: frames and steps computed, the workers' lane time, the driver's wall time."""

    lanes: LaneStats = field(default_factory=LaneStats)
    segments_computed: int = 0
    segments_reused: int = 0
    began: float = field(default_factory=time.perf_counter)

    def summary(self, rate: bool = True) -> str:
        """One line; ``rate``: with the run's frames per second (leave it to the input's own line when
        there is one input)."""
        wall = time.perf_counter() - self.began
        fps = f" ({self.lanes.frames / wall:.2f} frames/s)" if rate and wall > 0 else ""
        segments = "segment" if self.segments_computed == 1 else "segments"
        return (
            f"{self.segments_computed} {segments} computed, {self.segments_reused} reused; "
            f"{self.lanes.frames} frames in {wall:.1f} s{fps}; "
            f"backend busy {100 * self.lanes.busy_share:.0f} % of the workers' time"
        )
