"""vsr-parity: the same frames through the PyTorch network and an exported backend, compared."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from vsr_models.scales import output_size

from ..backends import make_backend, model_for_package
from ..devices import Device
from ..pipeline import DEFAULT_CHUNK, DEFAULT_OVERLAP, Upscaler, pad_to, resolve_scale, upscale_clip
from ..resolve import resolve_package
from ..samples import load_lr, psnr
from .common import CONTEXT, SIZE, backend_options, say, scale_option, user_errors


@click.command(context_settings=CONTEXT)
@click.argument("package_path", metavar="PKG")
@click.option(
    "--video",
    type=click.Path(path_type=Path),
    default=None,
    help="Input frames (video or frame folder). Default: the sample clip bikes.mp4, downscaled x4.",
)
@click.option("--frames", type=click.IntRange(min=2), default=20, show_default=True, help="Frames to compare.")
@click.option(
    "--crop",
    default="64x96",
    show_default=True,
    help="Centre crop HxW of the LR frames (keeps the PyTorch reference fast); 'none' for full frames.",
)
@click.option(
    "--downscale",
    "downscale_by",
    type=click.IntRange(min=1),
    default=None,
    help="Downscale --video by this factor first (bicubic, antialiased).",
)
@scale_option
@backend_options
@click.option(
    "--atol", type=float, default=1e-4, show_default=True, help="Largest max abs error allowed (fp32) on [0, 1] images."
)
@click.option(
    "--min-psnr",
    type=float,
    default=None,
    help="Smallest PSNR allowed (checked for fp16 and --chunked). [default: 50 dB for fp16, 45 dB for --chunked]",
)
@click.option(
    "--chunked",
    is_flag=True,
    help="Instead of PyTorch, compare a run in windows of --chunk frames (+ --overlap each side) with "
    "a whole-clip run on the same backend: the error that bounding memory costs.",
)
@click.option(
    "--chunk", type=click.IntRange(min=1), default=DEFAULT_CHUNK, show_default=True, help="Window size for --chunked."
)
@click.option(
    "--overlap", type=click.IntRange(min=0), default=DEFAULT_OVERLAP, show_default=True, help="Overlap for --chunked."
)
@user_errors
def main(
    package_path: str,
    video: Path | None,
    frames: int,
    crop: str,
    downscale_by: int | None,
    scale: tuple[float, float] | None,
    backend: str,
    device: Device,
    precision: str,
    threads: int,
    atol: float,
    min_psnr: float | None,
    chunked: bool,
    chunk: int,
    overlap: int,
) -> None:
    """Run the same frames through the PyTorch network and an exported backend; report the error.

    The reference is the network's whole-clip forward in PyTorch FP32 (not the plan), so the
    check covers both the stage decomposition and the backend. With --chunked, the reference is
    a whole-clip run and the contender a chunked run, both on --backend. Exits 1 past the tolerance.
    """
    package = resolve_package(package_path, log=say)
    lr = load_lr(video, frames, None if crop.lower() == "none" else SIZE.convert(crop, None, None), downscale_by)
    h, w = lr.shape[-2:]
    scale = resolve_scale(package, h, w, scale)
    out_h, out_w = output_size(h, w, scale)
    be = make_backend(backend, package, device, precision, threads, log=say)
    if chunked:
        what = f"chunk {chunk} + overlap {overlap} vs whole clip on {be.name} {precision}"
        ref = _stream(Upscaler(be, package.plan, scale, package.constraints, chunk=None), lr)
        out = _stream(Upscaler(be, package.plan, scale, package.constraints, chunk=chunk, overlap=overlap), lr)
    else:
        what = f"{be.name} {precision} vs PyTorch whole-clip FP32"
        model = model_for_package(package)
        clip = torch.from_numpy(pad_to(lr, package.constraints))[None]
        with torch.inference_mode():
            # an arbitrary-scale network's forward takes the scale (and SAVSR's one window): its clip reference
            hr = model(clip) if package.scale_range is None else model.forward_clip(clip, scale)
        ref = hr[0].numpy()[:, :, :out_h, :out_w]
        out = upscale_clip(be, package, lr, scale)
    table = Table(title=f"{package.manifest['model']}: {what}, {len(lr)} frames {w}x{h} -> {out_w}x{out_h}")
    table.add_column("frame", justify="right")
    table.add_column("max abs", justify="right")
    table.add_column("PSNR (dB)", justify="right")
    errors = [float(np.abs(out[i] - ref[i]).max()) for i in range(len(ref))]
    psnrs = [psnr(out[i], ref[i]) for i in range(len(ref))]
    for i, (e, p) in enumerate(zip(errors, psnrs)):
        table.add_row(str(i), f"{e:.2e}", f"{p:.2f}")
    Console().print(table)
    worst, low = max(errors), min(psnrs)
    print(
        f"max abs error {worst:.3e}, min PSNR {low:.2f} dB, PSNR over the clip {psnr(out, ref):.2f} dB "
        f"over {len(ref)} frames"
    )
    by_psnr = chunked or precision != "fp32"
    if min_psnr is None:
        min_psnr = 45.0 if chunked else 50.0
    if (low < min_psnr) if by_psnr else (worst > atol):
        limit = f"PSNR {min_psnr:g} dB" if by_psnr else f"max abs {atol:g}"
        raise click.ClickException(f"parity FAILED: beyond the tolerance ({limit})")
    print("parity OK")


def _stream(upscaler: Upscaler, lr: np.ndarray) -> np.ndarray:
    return np.stack(list(upscaler.stream(iter(lr))))
