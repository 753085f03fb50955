"""vsr-export: write a model package (manifest + one ONNX graph per stage).

The command and its flags; the work is :mod:`runtime.cli.commands.export`, imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import CONTEXT, overwrite_option, precision_option, user_errors


@click.command(context_settings=CONTEXT)
@click.argument("model", required=False)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Official weight file(s) to load (repeat for networks with several files). "
    "Without it, a zoo name uses its installed weights.",
)
@click.option("--key", default=None, help="Entry of a BasicSR checkpoint to load: params (default) or params_ema.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Package folder to write.")
@overwrite_option.but(help="Replace the package folder if it exists.")
# --precision as vsr-run's, naming the graphs written besides the FP32 ones (no bf16 graphs: BF16 is computed
# by OpenVINO or PyTorch from the FP32 ones).
@precision_option.but(
    type=click.Choice(["fp32", "fp16"]),
    help="fp16 also writes fp16/ graphs (FP16 with coordinates, flows and states kept FP32); "
    "fp32 graphs are always written.",
)
@click.option(
    "--check-tensorrt",
    is_flag=True,
    help="Check every graph written against TensorRT's ONNX parser (statically, no TensorRT "
    "needed), print the report, and exit non-zero if any node is unsupported.",
)
@click.option(
    "--random-weights",
    is_flag=True,
    help="Export with random weights (for testing the toolchain on a network whose weights are not installed).",
)
@click.option(
    "--list",
    "list_zoo",
    is_flag=True,
    help="Print the zoo (each network, and its released weights: training data, degradation, how to install) and exit.",
)
@user_errors
def main(**flags: Any) -> None:
    """Export MODEL (a network, or the zoo name of released weights) to a package at -o.

    vsr-export --list prints the zoo.

    Each stage becomes one ONNX graph (opset 19, dynamic height and width, checked by the ONNX
    checker, constants folded); manifest.json records the plan, the stages' inputs and outputs,
    size constraints and the checkpoints' sha256.
    """
    if not flags["list_zoo"] and (flags["model"] is None or flags["output"] is None):
        raise click.UsageError("give MODEL and -o PKG (vsr-export --list prints the zoo's names)")
    from .commands import export as command  # the work and its libraries load here, not for --help

    command.execute(**flags)
