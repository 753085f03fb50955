"""vsr-build-engine: build TensorRT engines for a model package on the GPU it runs on.

The command and its flags; the work is :mod:`runtime.cli.commands.build_engine`, imported when the command runs.
"""

from __future__ import annotations

from typing import Any

import click

from .common import CONTEXT, SIZE, DeviceType, device_option, precision_option, user_errors


@click.command(context_settings=CONTEXT)
@click.argument("package_path", metavar="PKG")
# --precision as vsr-run's, naming the graphs to build (no bf16: a package has no BF16 graphs).
@precision_option.but(
    type=click.Choice(["fp32", "fp16"]),
    help="Which graphs of the package to build, as vsr-run --precision runs them (fp16 needs vsr-export "
    "--precision fp16).",
)
@click.option(
    "--min-shape",
    type=SIZE,
    default=None,
    help="Smallest LR frame HxW the engines accept (default: the network's minimum).",
)
@click.option("--opt-shape", type=SIZE, default=None, help="LR frame HxW the engines are tuned for (default: 180x320).")
@click.option(
    "--max-shape", type=SIZE, default=None, help="Largest LR frame HxW the engines accept (default: 540x960)."
)
@click.option(
    "--workspace",
    type=click.FloatRange(min=0.25),
    default=4.0,
    show_default=True,
    help="TensorRT workspace memory limit in GiB.",
)
# --device as vsr-run's, on an NVIDIA GPU by default: TensorRT builds only there.
@device_option.but(
    type=DeviceType("gpu", "an Intel GPU; TensorRT engines are built on an NVIDIA GPU: use cuda or cuda:N"),
    default="cuda",
    help="cuda or cuda:N.",
)
@click.option("--list", "list_only", is_flag=True, help="List the engine sets cached for PKG and exit.")
@user_errors
def main(**flags: Any) -> None:
    """Build one TensorRT engine per stage of PKG (a package folder or a zoo name) for this GPU.

    Engines are cached per GPU model, compute capability, TensorRT version, package contents,
    precision and LR size range; vsr-run --backend tensorrt (and --backend auto) finds them.
    Graphs are built strongly typed: the FP16 graphs carry their precision (and their FP32
    islands for coordinates), on TensorRT 10 and 11 alike.
    """
    from .commands import build_engine as command  # the work and its libraries load here, not for --help

    command.execute(**flags)
