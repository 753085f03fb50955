"""vsr-bench: the speed of several backends on the same real frames, side by side, as ratios.

A contender is ``[MODEL@]BACKEND[:PRECISION][+LEVER[=VALUE]]...``: ``torch:fp32``, ``onnxruntime:fp16``,
``onnxruntime:fp32+spinning``, ``torch:fp16+channels_last+cuda_graphs``, ``torch:bf16+compile=flow``,
``openvino:bf16``, ``openvino:bf16+no_keep_fp32``.
The levers are the fields of the backend's options (:func:`runtime.backends.parse_levers`).
``MODEL@`` runs another model (a zoo name or a package) on the same frames, so that two networks are
timed side by side in one run (``basicvsr@onnxruntime:fp32`` beside ``--model animesr``).
A contender that cannot be built here (BF16 on a CPU without it), or that fails in its warm-up or a timed
run, is listed as not run with the reason, and the others still run; the first contender that runs is the
baseline.

The command and its flags; the work is :mod:`runtime.cli.commands.bench`, imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import (
    CONTEXT,
    SIZE,
    device_option,
    model_option,
    scale_option,
    threads_option,
    unexported_options,
    user_errors,
)


@click.command(context_settings=CONTEXT)
@model_option
@unexported_options
@click.option("--size", type=SIZE, default="180x320", show_default=True, help="LR frame size HxW.")
@scale_option
@click.option("--frames", type=click.IntRange(min=2), default=8, show_default=True, help="Frames per timed run.")
@click.option(
    "--contenders",
    default="torch:fp32,onnxruntime:fp32",
    show_default=True,
    help="Comma-separated [MODEL@]BACKEND:PRECISION[+LEVER[=VALUE]...], run in this order; ratios are against the "
    "first. Levers are backend options, e.g. onnxruntime:fp32+spinning, torch:fp16+channels_last+cuda_graphs, "
    "openvino:bf16, torch:bf16+channels_last (bf16: on a CPU with avx512_bf16 or amx_bf16); MODEL@ runs another "
    "model on the same frames, e.g. basicvsr@onnxruntime:fp32.",
)
@device_option
@threads_option
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Timed runs per contender after one untimed warm-up, interleaved (each round runs every contender "
    "once, and measures the peak again); medians and the range over the runs are printed.",
)
@click.option(
    "--profile",
    is_flag=True,
    help="One more run per contender under a profiler (ONNX Runtime's, PyTorch's): time per op type per stage.",
)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Ops per stage with --profile.")
@click.option(
    "--peak-side",
    type=click.IntRange(min=64),
    default=None,
    help="Side of the square matrix product that measures the peak [default: 2048 on a CPU, 8192 on a GPU]; "
    "smaller is quicker but below the kernels' best.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the figures (frames per second, % of peak, PSNR, why a contender did not run) to this JSON file.",
)
@user_errors
def main(**flags: Any) -> None:
    """Speed of several backends on the same real frames, side by side, as ratios.

    The frames are the sample clip resized to --size. Each contender runs the model's plan over
    --frames frames; per-stage times, frames per second, the speed-up over the first contender,
    the fraction of the device's peak (measured in the same run: a large matrix product), and the
    PSNR of each output against the first contender's are printed.
    """
    from .commands import bench as command  # the work and its libraries load here, not for --help

    command.execute(**flags)
