"""What every console script shares: flag groups defined once (so ``--backend``, ``--device`` and
``--precision`` mean the same in ``vsr-run``, ``vsr-parity`` and ``vsr-bench``), the HxW size
and SHxSW scale parsers, and the handling of user errors.

Errors: a :class:`~vsr_models.errors.VSRError` (bad input, a missing install, a wrong option) is
printed as ``Error: <message>`` with exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import Any, TypeVar

import click

from vsr_models.errors import VSRError

from ..defaults import BACKENDS, DEFAULT_CHUNK, DEFAULT_MODEL, DEFAULT_OVERLAP, DEFAULT_PRECISION
from ..devices import Device

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def say(message: str) -> None:
    """A status line on stderr (never wrapped, so it can be parsed)."""
    click.echo(message, err=True)


_TOOL_PACKAGES = {"vsr_models", "export", "engines", "runtime", "training"}


def _warning_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A warning of this tool (a shared cache folder, what a video loses) as one line, ``Warning: <message>``,
    without Python's file, line and source; other libraries' warnings as Python shows them."""
    if category.__module__.split(".")[0] in _TOOL_PACKAGES:
        return f"Warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


_python_format = warnings.formatwarning


def user_errors(func: F) -> F:
    """Turn a :class:`VSRError` raised by a command into click's clean error exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        shown = warnings.formatwarning
        warnings.formatwarning = _warning_line
        try:
            return func(*args, **kwargs)
        except VSRError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            warnings.formatwarning = shown

    return wrapper  # type: ignore[return-value]


class SizeType(click.ParamType):
    """``HxW`` (height x width, as every size in this tool), e.g. ``180x320``."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            h, w = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r}: write sizes as HxW (height x width), e.g. 180x320", param, ctx)
        if h < 1 or w < 1:
            self.fail(f"{value!r}: both sides must be at least 1 pixel", param, ctx)
        return h, w


SIZE = SizeType()


class ScaleType(click.ParamType):
    """``SHxSW`` (height factor x width factor, e.g. ``2.5x3.5``) or one factor for both (``3``)."""

    name = "SHxSW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().split("x")
        try:
            factors = [float(p) for p in parts]
        except ValueError:
            factors = []
        if len(factors) not in (1, 2) or not all(math.isfinite(f) and f > 0 for f in factors):
            self.fail(f"{value!r}: write the scale as SHxSW (height x width), e.g. 2.5x3.5, or one factor", param, ctx)
        return (factors[0], factors[-1])


SCALE = ScaleType()

scale_option = click.option(
    "--scale",
    type=SCALE,
    default=None,
    help="Output scale, height x width (2.5x3.5) or one factor (3), for an arbitrary-scale network "
    "(savsr: x1 to x4); the output is round(h*SH) x round(w*SW). [default: the network's own]",
)


class DeviceType(click.ParamType):
    """``cpu``, ``cuda[:N]`` or ``gpu[:N]``, parsed once into a :class:`~runtime.devices.Device`; ``refuse``
    names a kind a tool never takes (``gpu``, OpenVINO's, for TensorRT), with ``why`` in the error."""

    name = "DEVICE"

    def __init__(self, refuse: str | None = None, why: str = "") -> None:
        self.refuse, self.why = refuse, why

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Device:
        try:
            device = Device.parse(value)
        except VSRError as exc:
            self.fail(str(exc), param, ctx)
        if device.kind == self.refuse:
            self.fail(f"{value!r}: {self.why}", param, ctx)
        return device


DEVICE = DeviceType()


class DevicesType(click.ParamType):
    """One device or several, comma-separated: ``cpu``, ``cuda:0``, ``cuda:0,1`` (= ``cuda:0,cuda:1``)."""

    name = "DEVICE[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[Device, ...]:
        if isinstance(value, tuple):
            return value
        devices: list[Device] = []
        try:
            for part in str(value).split(","):
                part = part.strip()
                if part.isdigit() and devices and devices[-1].is_cuda:
                    part = f"cuda:{part}"
                devices.append(Device.parse(part))
        except VSRError as exc:
            self.fail(f"{value!r}: {exc}; several GPUs read cuda:0,1", param, ctx)
        if len(set(devices)) != len(devices):
            self.fail(f"{value!r} names a device twice", param, ctx)
        return tuple(devices)


DEVICES = DevicesType()


def apply(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator applying a group of click options in order."""

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


class Flag:
    """One flag, defined once: a decorator adding it as every tool shares it, and :meth:`but` for a
    tool whose flag differs on purpose (a choice, a default, its help), where the tool says why."""

    def __init__(self, *decls: str, **settings: Any) -> None:
        self.decls, self.settings = decls, settings

    def __call__(self, func: F) -> F:
        return click.option(*self.decls, **self.settings)(func)

    def but(self, **changes: Any) -> Callable[[F], F]:
        return click.option(*self.decls, **{**self.settings, **changes})


model_option = Flag(
    "--model",
    "model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="A model package folder (from vsr-export) or the zoo name of installed weights (vsr-export --list "
    "lists the zoo); a zoo name is exported into the cache on first use.",
)


#: vsr-bench's and vsr-parity's way to run the PyTorch network without exporting it
#: (:func:`runtime.resolve.resolve_model`).
unexported_options = apply(
    [
        click.option(
            "--no-export",
            is_flag=True,
            help="Build the PyTorch network from the registry with the installed weights --model names, instead "
            "of an exported package: nothing is exported, and only the torch backend runs it.",
        ),
        click.option(
            "--random-weights",
            is_flag=True,
            help="--model names a network of the registry (e.g. iart), built with random weights (seed 0) and not "
            "exported: only the torch backend runs it.",
        ),
        click.option(
            "--quick",
            is_flag=True,
            help="With --random-weights: the network's small configuration (the one its contract test runs).",
        ),
    ]
)


device_option = Flag(
    "--device",
    type=DEVICE,
    default="cpu",
    show_default=True,
    help="cpu, cuda or cuda:N (an NVIDIA GPU), or gpu or gpu:N (an Intel GPU, --backend openvino).",
)
threads_option = Flag(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="CPU threads for ONNX Runtime and PyTorch (0: all cores).",
)

backend_option = Flag(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="Where the stages run. auto: TensorRT engines if built, else ONNX Runtime (CUDA provider on a GPU, "
    "else CPU); OpenVINO for --device gpu (an Intel GPU) and for bf16 where it is installed, else PyTorch. "
    "torch runs the PyTorch network (the reference); openvino needs pip install 'vsr[openvino]'.",
)
precision_option = Flag(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default=DEFAULT_PRECISION,
    show_default=True,
    help="fp16: the package's FP16 graphs (ONNX Runtime, TensorRT), or OpenVINO's FP16 on a GPU. bf16: OpenVINO "
    "or PyTorch on a CPU with AVX-512 BF16 or AMX-BF16. Both keep flows, grids and warps in FP32.",
)
backend_options = apply([backend_option, device_option, precision_option, threads_option])

devices_option = device_option.but(
    type=DEVICES,
    help="cpu, cuda, cuda:N, or several GPUs (cuda:0,1): with --workers, one worker process per GPU in turn; gpu or "
    "gpu:N is an Intel GPU (--backend openvino).",
)

#: :data:`backend_options` with a ``--device`` that takes several devices (vsr-run's workers).
run_backend_options = apply([backend_option, devices_option, precision_option, threads_option])

chunk_option = Flag(
    "--chunk",
    type=click.IntRange(min=1),
    default=None,
    help=f"Output frames per window; memory is bounded by the window, not the video. "
    f"[default: {DEFAULT_CHUNK}, or the clip length of a clip-level network such as DAVSR]",
)

overlap_option = Flag(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help=f"Frames of context on each side of a window (their outputs are discarded). "
    f"[default: {DEFAULT_OVERLAP}, or 0 for a clip-level network]",
)

tile_option = Flag(
    "--tile",
    type=click.IntRange(min=16),
    default=None,
    help="Cut frames larger than this many LR pixels (height or width) into tiles.",
)

tile_overlap_option = Flag(
    "--tile-overlap",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="LR pixels of context around each tile.",
)
schedule_options = apply([chunk_option, overlap_option, tile_option, tile_overlap_option])

latency_option = Flag(
    "--latency",
    type=click.IntRange(min=0),
    default=None,
    metavar="K",
    help="Live mode: frames of look-ahead. Each output frame is written as soon as it is final, at most "
    "K + B - 1 input frames after its own (plus compute): forward sweeps carry their state across the "
    "whole stream, backward sweeps see K frames ahead. Prints the measured latency. A causal network "
    "(animesr) runs at its own look-ahead (1 frame), and a pipe run of it is that far behind already.",
)

block_option = Flag(
    "--block",
    type=click.IntRange(min=1),
    default=None,
    metavar="B",
    help="With --latency: output frames per backward pass, (B + K) / B backward steps per frame for up to "
    "B - 1 frames more latency. [default: 1]",
)

#: The live run's look-ahead and blocks (vsr-run adds --format, the container of a stream on standard output).
live_options = apply([latency_option, block_option])

#: Frame rates --fps accepts, in frames per second.
FPS_RANGE = (Fraction(1, 100), Fraction(1000))


class FrameRateType(click.ParamType):
    """A frame rate: ``25``, ``29.97`` or ``30000/1001``, between 0.01 and 1000 frames per second."""

    name = "FPS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Fraction:
        if isinstance(value, Fraction):
            return value
        text = str(value).strip()
        try:
            rate = Fraction(text) if "/" in text else Fraction(float(text)).limit_denominator(1001)
        except (ValueError, ZeroDivisionError, OverflowError):
            # float("inf") and float("nan") parse, but Fraction refuses them: the same message
            self.fail(f"{value!r} is not a frame rate; write it as 25, 29.97 or 30000/1001", param, ctx)
        low, high = FPS_RANGE
        if not low <= rate <= high:
            self.fail(f"{value!r} frames/s is outside {float(low):g} to {float(high):g}; pass a real rate", param, ctx)
        return rate


FRAME_RATE = FrameRateType()

codec_option = Flag(
    "--codec",
    default="libx264",
    show_default=True,
    help="Video encoder (PyAV/FFmpeg name). ffv1 is lossless: it writes the RGB levels as they are (8-bit, or "
    "as deep as a deeper source), in .mkv, .nut or a pipe, for a next tool to take without a second loss. "
    "A 10-bit input stays 10-bit and keeps its colour tags; libx264, libx265 and libsvtav1 also keep HDR10's "
    "mastering display and light level.",
)

crf_option = Flag(
    "--crf",
    type=click.IntRange(0, 63),
    default=18,
    show_default=True,
    help="Constant rate factor for x264/x265 (lower is better, 0 is lossless).",
)

frames_option = Flag("--frames", "max_frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")

fps_option = Flag(
    "--fps",
    type=FRAME_RATE,
    default=None,
    help="Frame rate of the output when INPUT is a frame folder (default 25; 25, 29.97 or 30000/1001); "
    "a video keeps its own.",
)

overwrite_option = Flag("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
encoding_options = apply([codec_option, crf_option, frames_option, fps_option, overwrite_option])
