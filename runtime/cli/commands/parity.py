"""vsr-parity: the same frames through the PyTorch network and an exported backend, compared."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from export.format import Package
from vsr_models.base import VSRNetwork
from vsr_models.scales import output_size

from ...backends import TorchBackend, make_backend, model_for_package
from ...backends.torch_eager import native_bf16
from ...devices import BF16_CPU, Device, cpu_name
from ...executor import Backend, run_plan
from ...live import LiveError, LiveUpscaler, live_upscaler_for
from ...options import resolve_backend
from ...pipeline import Upscaler, pad_to, resolve_scale, upscale_clip
from ...resolve import resolve_model
from ...samples import load_lr, psnr
from ..common import (
    SIZE,
    say,
)


def execute(
    package_path: str,
    no_export: bool,
    random_weights: bool,
    quick: bool,
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
    latency: int | None,
    block: int,
) -> None:
    """The work of ``vsr-parity`` (:func:`runtime.cli.parity.main`), with its parsed flags."""
    package = resolve_model(package_path, no_export, random_weights, quick, log=say)
    levers = _emulation(backend, device, precision)
    if latency is not None and scale is not None:
        raise click.UsageError("--latency runs at the network's own scale: drop --scale")
    lr = load_lr(video, frames, None if crop.lower() == "none" else SIZE.convert(crop, None, None), downscale_by)
    kind, dev = resolve_backend(backend, package, device, precision, log=say)
    be = make_backend(kind, package, dev, precision, threads, levers=levers)
    if latency is not None:
        live_parity(package, be, lr, latency, block, min_psnr)
        return
    h, w = lr.shape[-2:]
    scale = resolve_scale(package, h, w, scale)
    out_h, out_w = output_size(h, w, scale)
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
    table = Table(title=f"{package.manifest['model']}: {what}, {len(lr)} frames {h}x{w} -> {out_h}x{out_w}")
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


def _emulation(backend: str, device: Device, precision: str) -> dict[str, bool]:
    """The torch levers that let BF16 run by emulation on a CPU without BF16 arithmetic (with a warning)."""
    if backend != "torch" or precision != "bf16" or device.is_cuda or native_bf16(device):
        return {}
    say(
        f"warning: this CPU ({cpu_name()}) has no BF16 arithmetic (no {BF16_CPU}): PyTorch emulates "
        "BF16 (with channels-last), much slower than FP32. The PSNR is BF16's; a CPU with BF16 rounds the same "
        "way but may sum in another order"
    )
    return {"emulate_bf16": True, "channels_last": True}


def _stream(upscaler: Upscaler | LiveUpscaler, lr: np.ndarray) -> np.ndarray:
    return np.stack(list(upscaler.stream(iter(lr))))


@dataclass
class LiveComparison:
    """A live run against the whole-clip run, frame by frame.

    ``psnr[t]``: output frame t against the whole clip's. ``steady[t]``: frame t's window ended
    before the clip did (the last frames see the clip's real end and equal the whole-clip run, which
    a live stream never reaches: they are left out of ``mean`` and ``worst``). ``calls``: stage calls
    per frame in a long stream (one block inside the clip, after the first), ``whole_calls`` those of
    the whole-clip run (one per step); ``work``: their FLOPs, live over whole.
    """

    latency: int
    block: int
    psnr: list[float]
    max_abs: list[float]
    steady: list[bool]
    calls: dict[str, float]
    whole_calls: dict[str, int]
    work: float

    def _over(self, keep: Callable[[int], bool]) -> list[float]:
        return [p for t, p in enumerate(self.psnr) if self.steady[t] and keep(t)]

    @property
    def mean(self) -> float:
        """Mean PSNR of the steady frames (dB)."""
        values = self._over(lambda t: True)
        return float(np.mean(values)) if values else float("inf")

    @property
    def worst(self) -> float:
        values = self._over(lambda t: True)
        return min(values) if values else float("inf")

    def at_position(self, position: int) -> float:
        """Mean PSNR of the steady frames at ``position`` in their block (0: first, B - 1: last)."""
        values = self._over(lambda t: t % self.block == position)
        return float(np.mean(values)) if values else float("inf")


def compare_live(package: Package, backend: Backend, lr: np.ndarray, latency: int, block: int) -> LiveComparison:
    """Run (T, 3, h, w) ``lr`` live with look-ahead ``latency`` in blocks of ``block`` and whole, on ``backend``."""
    ref = _stream(Upscaler(backend, package.plan, package.scale, package.constraints, chunk=None), lr)
    live = live_upscaler_for(package, backend, latency, block)
    out = _stream(live, lr)
    count = len(lr)
    whole = {st.stage: 0 for st in package.plan.steps}
    for st in package.plan.steps:
        whole[st.stage] += 1
    calls = live.steady_calls_per_frame()
    if calls is None:
        raise LiveError(
            f"{count} frames leave no window inside the clip but the first: use --frames {2 * block + latency} or over"
        )
    flops = stage_flops(package, lr[: min(count, 3)])
    return LiveComparison(
        latency=latency,
        block=block,
        psnr=[psnr(out[t], ref[t]) for t in range(count)],
        max_abs=[float(np.abs(out[t] - ref[t]).max()) for t in range(count)],
        steady=[t // block * block + block + latency < count for t in range(count)],
        calls=calls,
        whole_calls=whole,
        work=sum(calls.get(k, 0) * f for k, f in flops.items()) / sum(whole[k] * f for k, f in flops.items()),
    )


def live_parity(
    package: Package, backend: Backend, lr: np.ndarray, latency: int, block: int, min_psnr: float | None
) -> None:
    """Print :func:`compare_live`'s figures; raises if the worst steady frame is below ``min_psnr``."""
    c = compare_live(package, backend, lr, latency, block)
    count = len(lr)
    table = Table(
        title=f"{package.manifest['model']}: live, look-ahead {latency}, blocks of {block}, vs whole clip on "
        f"{backend.name}, {count} frames {lr.shape[-2]}x{lr.shape[-1]}"
    )
    for column in ("frame", "look-ahead", "max abs", "PSNR (dB)"):
        table.add_column(column, justify="right")
    for t, p in enumerate(c.psnr):
        ahead = str(latency + block - 1 - t % block) if c.steady[t] else "to the end"
        table.add_row(str(t), ahead, f"{c.max_abs[t]:.2e}", f"{p:.2f}")
    Console().print(table)
    steady = sum(c.steady)
    if steady == 0:
        print(f"every window reaches the end of these {count} frames: give more --frames than K + B")
    else:
        print(
            f"PSNR against the whole clip: mean {c.mean:.2f} dB, worst {c.worst:.2f} dB over the first {steady} "
            f"frames (the last {count - steady} see the end of the clip, as a live stream never does)"
        )
    if block > 1 and steady:
        print(
            f"at block edges: mean PSNR {c.at_position(block - 1):.2f} dB at each block's last frame (look-ahead "
            f"{latency}), {c.at_position(0):.2f} dB at its first (look-ahead {latency + block - 1})"
        )
    print(
        "stage calls per frame of a long stream, live (whole clip): "
        + ", ".join(f"{k} {c.calls.get(k, 0):.2f} ({n})" for k, n in c.whole_calls.items())
    )
    print(f"work per frame relative to the whole-clip run: {c.work:.2f}x (FLOPs of those stage calls)")
    if min_psnr is not None:
        if c.worst < min_psnr:
            raise click.ClickException(f"parity FAILED: the worst frame is {c.worst:.2f} dB, below {min_psnr:g} dB")
        print("parity OK")


def stage_flops(package: Package, lr: np.ndarray) -> dict[str, float]:
    """Floating-point operations of one call of each stage at this frame size, counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products) while the
    PyTorch network runs the plan over ``lr``."""
    counting = _FlopCounting(model_for_package(package))
    padded = pad_to(lr, package.constraints)
    run_plan(package.plan, counting, [counting.upload(padded[i : i + 1]) for i in range(len(padded))])
    return {stage: total / counting.calls[stage] for stage, total in counting.flops.items()}


class _FlopCounting(TorchBackend):
    """The PyTorch backend, counting the FLOPs of every stage call."""

    def __init__(self, model: VSRNetwork) -> None:
        super().__init__(model)
        self.flops: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def run(self, stage: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with FlopCounterMode(display=False) as counter:
            outputs = super().run(stage, inputs)
        self.flops[stage] += counter.get_total_flops()
        self.calls[stage] += 1
        return outputs
