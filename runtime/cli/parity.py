"""vsr-parity: the same frames through the PyTorch network and an exported backend, compared.

The command and its flags; the work is :mod:`runtime.cli.commands.parity`, imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..defaults import DEFAULT_CHUNK, DEFAULT_OVERLAP
from .common import (
    CONTEXT,
    backend_options,
    block_option,
    chunk_option,
    latency_option,
    overlap_option,
    scale_option,
    unexported_options,
    user_errors,
)


@click.command(context_settings=CONTEXT)
@click.argument("package_path", metavar="PKG")
@unexported_options
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
    help="Smallest PSNR allowed (checked for fp16, bf16 and --chunked). [default: 50 dB for fp16 and bf16, 45 dB "
    "for --chunked]",
)
@click.option(
    "--chunked",
    is_flag=True,
    help="Instead of PyTorch, compare a run in windows of --chunk frames (+ --overlap each side) with "
    "a whole-clip run on the same backend: the error that bounding memory costs.",
)
# --chunk/--overlap as vsr-run's, but set: --chunked compares one window size with the whole clip.
@chunk_option.but(default=DEFAULT_CHUNK, show_default=True, help="Window size for --chunked.")
@overlap_option.but(default=DEFAULT_OVERLAP, show_default=True, help="Overlap for --chunked.")
# --latency/--block as vsr-run's, but a live run is compared with a whole-clip run instead of written.
@latency_option.but(
    help="Instead of PyTorch, compare a live run with K frames of look-ahead (vsr-run --latency) with a "
    "whole-clip run on the same backend, frame by frame, and count the work per frame."
)
@block_option.but(default=1, show_default=True, help="With --latency: output frames per backward pass.")
@user_errors
def main(**flags: Any) -> None:
    """Run the same frames through the PyTorch network and an exported backend; report the error.

    The reference is the network's whole-clip forward in PyTorch FP32 (not the plan), so the
    check covers both the stage decomposition and the backend. With --chunked, the reference is
    a whole-clip run and the contender a chunked run, both on --backend; with --latency, a live run
    (checked against --min-psnr only when it is given). Exits 1 past the tolerance. With --no-export
    (PKG names released weights) the network is built from the registry, for --backend torch.

    --backend torch --precision bf16 runs on a CPU without BF16 arithmetic too, emulated by PyTorch (with
    channels-last; far slower than FP32): the PSNR is BF16's, measured where the speed cannot be.
    """
    from .commands import parity as command  # the work and its libraries load here, not for --help

    command.execute(**flags)
