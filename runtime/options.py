"""Flag groups shared by vsr-run, vsr-parity and vsr-bench, defined once so they mean the same."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from vsr_models import DEFAULT_MODEL

from .models import BACKENDS
from .pipeline import DEFAULT_CHUNK, DEFAULT_OVERLAP

F = Callable[..., Any]


def _apply(options: list[F]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def model_options(func: F) -> F:
    return click.option("--model", "model", default=DEFAULT_MODEL, show_default=True,
                        help="A model package folder (from vsr-export) or a zoo name whose weights are "
                             "installed (basicvsr = REDS4 weights, basicvsr-vimeo-bi, basicvsr-vimeo-bd); "
                             "a zoo name is exported into the cache on first use.")(func)


backend_options = _apply([
    click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                 help="Where the stages run. auto: TensorRT engines if built, else ONNX Runtime "
                      "(CUDA provider on a GPU, else CPU). torch runs the PyTorch network (the reference)."),
    click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N]."),
    click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
                 help="Graph precision (fp16 graphs keep flows and coordinates in FP32)."),
    click.option("--threads", type=int, default=0, show_default=True,
                 help="CPU threads for ONNX Runtime (0: all cores)."),
])

schedule_options = _apply([
    click.option("--chunk", type=click.IntRange(min=1), default=None,
                 help=f"Output frames per window; memory is bounded by the window, not the video. "
                      f"[default: {DEFAULT_CHUNK}, or the clip length of a clip-level network such as DAVSR]"),
    click.option("--overlap", type=click.IntRange(min=0), default=None,
                 help=f"Frames of context on each side of a window (their outputs are discarded). "
                      f"[default: {DEFAULT_OVERLAP}, or 0 for a clip-level network]"),
    click.option("--tile", type=click.IntRange(min=16), default=None,
                 help="Cut frames larger than this many LR pixels (height or width) into tiles."),
    click.option("--tile-overlap", type=click.IntRange(min=0), default=16, show_default=True,
                 help="LR pixels of context around each tile."),
])
