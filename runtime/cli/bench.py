"""vsr-bench: the speed of several backends on the same real frames, side by side, as ratios."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import click
import torch
from rich.console import Console
from rich.table import Table

from export.format import Package
from vsr_models.scales import output_size

from ..backends import make_backend
from ..devices import Device
from ..executor import Backend
from ..pipeline import resolve_scale, upscale_clip
from ..resolve import resolve_package
from ..samples import load_lr
from .common import CONTEXT, SIZE, device_option, model_option, say, scale_option, threads_option, user_errors


class _Timed:
    """Wraps a backend and accumulates wall time per stage (synchronising CUDA if used)."""

    def __init__(self, backend: Backend, device: Device) -> None:
        self.inner, self.name = backend, backend.name
        self.sync = torch.cuda.synchronize if device.is_cuda and torch.cuda.is_available() else None
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


@click.command(context_settings=CONTEXT)
@model_option
@click.option("--size", type=SIZE, default="180x320", show_default=True, help="LR frame size HxW.")
@scale_option
@click.option("--frames", type=click.IntRange(min=2), default=8, show_default=True, help="Frames per timed run.")
@click.option(
    "--contenders",
    default="torch:fp32,onnxruntime:fp32",
    show_default=True,
    help="Comma-separated BACKEND:PRECISION pairs, run in this order; ratios are against the first.",
)
@device_option
@threads_option
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Timed runs per contender (the best is kept), after one untimed warm-up.",
)
@user_errors
def main(
    model: str,
    size: tuple[int, int],
    scale: tuple[float, float] | None,
    frames: int,
    contenders: str,
    device: Device,
    threads: int,
    repeat: int,
) -> None:
    """Speed of several backends on the same real frames, side by side, as ratios.

    The frames are the sample clip resized to --size. Each contender runs the model's plan over
    --frames frames; per-stage times and frames per second are printed, with each contender's
    speed-up over the first.
    """
    h, w = size
    package = resolve_package(model, log=say)
    scale = resolve_scale(package, h, w, scale)
    clip = load_lr(None, frames)
    lr = (
        torch.nn.functional.interpolate(
            torch.from_numpy(clip), size=(h, w), mode="bicubic", antialias=True, align_corners=False
        )
        .clamp(0, 1)
        .numpy()
    )
    if threads:
        torch.set_num_threads(threads)
    results = []
    for spec in contenders.split(","):
        kind, _, precision = spec.strip().partition(":")
        be = _Timed(make_backend(kind, package, device, precision or "fp32", threads), device)
        upscale_clip(be, package, lr[:2], scale)  # warm-up: allocations, lazy initialisation
        best: tuple[float, dict[str, float], dict[str, int]] | None = None
        for _ in range(repeat):
            be.times.clear()
            be.calls.clear()
            start = time.perf_counter()
            upscale_clip(be, package, lr, scale)
            total = time.perf_counter() - start
            if best is None or total < best[0]:
                best = (total, dict(be.times), dict(be.calls))
        assert best is not None
        results.append((f"{kind}:{precision or 'fp32'}", *best))
    _bench_report(package, results, h, w, scale, frames, device)


def _bench_report(
    package: Package,
    results: list[tuple[str, float, dict[str, float], dict[str, int]]],
    h: int,
    w: int,
    scale: tuple[float, float],
    frames: int,
    device: Device,
) -> None:
    out_h, out_w = output_size(h, w, scale)
    title = (
        f"{package.manifest['model']} {h}x{w} -> {out_h}x{out_w}, {frames} frames, {device} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
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
