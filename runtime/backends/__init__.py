"""The backends the executor runs plans on, side by side behind one interface
(:class:`runtime.executor.Backend`), each with its typed options:

* :mod:`.torch_eager`: PyTorch eager (:class:`TorchBackend`, :class:`TorchOptions`), the reference;
* :mod:`.ort`: ONNX Runtime with I/O binding (:class:`OrtBackend`, :class:`OrtOptions`; CUDA graphs:
  :class:`OrtCudaGraphBackend`);
* :mod:`.trt`: TensorRT engines from the engine cache (:class:`TensorRTBackend`, :class:`TensorRTOptions`);
* :mod:`.ov`: OpenVINO on its CPU or Intel GPU plugin (:class:`OpenVinoBackend`, :class:`OpenVinoOptions`;
  ``pip install 'vsr[openvino]'``, imported only when used).

:func:`make_backend` builds one by name for a package, and resolves ``auto``; :func:`parse_levers` reads
option overrides written ``name`` or ``name=value`` (``vsr-bench``'s ``torch:fp16+channels_last``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from engines.tensorrt import TensorRTUnavailable, find_engines, tensorrt_available
from export.format import Package
from vsr_models.errors import VSRError

from ..defaults import BACKENDS, DEFAULT_PRECISION
from ..devices import Device, DeviceError
from ..executor import Backend
from .ort import OrtBackend, OrtCudaGraphBackend, OrtOptions, cuda_provider_available
from .ov import OpenVinoBackend, OpenVinoOptions, openvino_available
from .torch_eager import TorchBackend, TorchOptions, check_torch_device, model_for_package
from .trt import TensorRTBackend, TensorRTOptions

#: Each backend's options class; its fields other than :data:`SET_BY_FLAGS` are the levers.
OPTIONS: dict[str, type] = {
    "torch": TorchOptions,
    "onnxruntime": OrtOptions,
    "openvino": OpenVinoOptions,
    "tensorrt": TensorRTOptions,
}
#: Options every tool sets through its own flags (``--device``, ``--precision``, ``--threads``), and
#: ``emulate_bf16``, which only vsr-parity sets (to measure BF16's accuracy on a CPU without BF16).
SET_BY_FLAGS = frozenset({"device", "precision", "threads", "cache", "emulate_bf16"})


class UnknownBackend(VSRError, ValueError):
    """A backend name that is not one of :data:`BACKENDS`."""


class LeverError(VSRError, ValueError):
    """An option override (lever) that the backend does not have, or a value of the wrong kind."""


def levers_of(kind: str) -> dict[str, Any]:
    """The levers of backend ``kind``: option name -> its type."""
    hints = typing.get_type_hints(OPTIONS[kind])
    return {f.name: hints[f.name] for f in dataclasses.fields(OPTIONS[kind]) if f.name not in SET_BY_FLAGS}


def parse_levers(kind: str, items: Iterable[str]) -> dict[str, Any]:
    """``["channels_last", "compile=flow/backward_step"]`` -> typed option values for backend ``kind``.

    A bare name sets a flag (``spinning`` or ``no_spinning``), or a set to ``{"all"}`` (``compile``);
    ``name=value`` sets a value, with ``/`` between the members of a set.
    """
    items = [i for i in items if i]
    if items and kind not in OPTIONS:
        raise LeverError(f"backend {kind!r} takes no levers (+{'+'.join(items)}): name the backend itself")
    known = levers_of(kind) if kind in OPTIONS else {}
    values: dict[str, Any] = {}
    for item in items:
        name, has_value, text = item.partition("=")
        negate = not has_value and name.startswith("no_") and name[3:] in known
        key = name[3:] if negate else name
        if key not in known:
            raise LeverError(f"{kind} has no lever {name!r}; its levers: {', '.join(known)}")
        values[key] = _lever_value(kind, key, known[key], text if has_value else None, negate)
    return values


def _lever_value(kind: str, name: str, kind_of: Any, text: str | None, negate: bool) -> Any:
    args = typing.get_args(kind_of)
    if kind_of is bool:
        if text is None:
            return not negate
        if text.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text.lower() in ("1", "true", "yes", "on")
    elif kind_of == frozenset[str] and text is None and not negate:
        return frozenset({"all"})
    elif text is None or negate:
        pass
    elif typing.get_origin(kind_of) is typing.Literal and text in args:
        return text
    elif kind_of == frozenset[str]:
        return frozenset(text.split("/"))
    elif kind_of == Path | None:
        return Path(text)
    elif kind_of is int and text.lstrip("-").isdigit():
        return int(text)
    choices = f" (one of {', '.join(map(str, args))})" if typing.get_origin(kind_of) is typing.Literal else ""
    given = f"={text}" if text is not None else ("no_" if negate else "no value")
    raise LeverError(f"{kind} lever {name!r} takes {_describe(kind_of)}{choices}, not {given}")


def _describe(kind_of: Any) -> str:
    if kind_of is bool:
        return "no value, or =1 / =0"
    if kind_of == frozenset[str]:
        return "=a/b/c (names)"
    return "=VALUE"


__all__ = [
    "BACKENDS",
    "OpenVinoBackend",
    "OpenVinoOptions",
    "OrtBackend",
    "OrtCudaGraphBackend",
    "OrtOptions",
    "TensorRTBackend",
    "TensorRTOptions",
    "TorchBackend",
    "TorchOptions",
    "make_backend",
    "model_for_package",
    "parse_levers",
    "resolve_auto",
]


def resolve_auto(package: Package, device: Device, precision: str) -> tuple[str, Device, str | None]:
    """(backend, device, note) for ``--backend auto``.

    * An Intel GPU (``gpu[:N]``) is OpenVINO's.
    * BF16 on the CPU: OpenVINO where it is installed, else PyTorch; neither ONNX Runtime nor ONNX
      opset 19 has BF16 convolutions.
    * Otherwise: TensorRT engines if TensorRT imports, a GPU is present and engines for this package,
      GPU and precision are cached; else ONNX Runtime with the CUDA provider when ``device`` is a GPU
      and the provider exists; else ONNX Runtime on the CPU (OpenVINO FP32 ran BasicVSR at 180x320 at 0.87x
      of ONNX Runtime's speed, 0.76x to 0.95x over 3 rounds, on a loaded 2-core AVX2 CPU: README, OpenVINO).

    ``note`` says why TensorRT or a GPU that was asked for is not used.
    """
    if device.kind == "gpu":
        return "openvino", device, None
    if precision == "bf16" and not device.is_cuda:
        return ("openvino" if openvino_available() else "torch"), device, None
    gpu = device if device.is_cuda else Device("cuda")
    note = None
    if tensorrt_available():
        try:
            if find_engines(package, precision, str(gpu)):
                return "tensorrt", gpu, None
            built = (p for p in package.precisions if p != precision and find_engines(package, p, str(gpu)))
            other = next(built, None)
            if other is not None:
                note = (
                    f"TensorRT engines for {package.root} are built for {other}, not {precision}: ONNX Runtime runs "
                    f"instead (pass --precision {other}, or vsr-build-engine --precision {precision})"
                )
        except TensorRTUnavailable:
            pass
    if not device.is_cuda or cuda_provider_available():
        return "onnxruntime", device, note
    return (
        "onnxruntime",
        Device("cpu"),
        (
            f"--device {device}: no TensorRT engines are built for it and this onnxruntime has no CUDA provider, so "
            "ONNX Runtime runs on the CPU (install onnxruntime-gpu in place of onnxruntime: pip uninstall -y "
            "onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu; or build engines with vsr-build-engine)"
        ),
    )


def make_backend(
    kind: str,
    package: Package,
    device: str | Device = "cpu",
    precision: str = DEFAULT_PRECISION,
    threads: int = 0,
    log: Callable[[str], None] | None = None,
    levers: Mapping[str, Any] | None = None,
) -> Backend:
    """Build the backend ``kind`` (one of :data:`BACKENDS`) for ``package``.

    ``levers`` (from :func:`parse_levers`) override the backend's default options.
    The backend's ``device`` is where it really runs (``auto`` may fall back to the CPU; ``log``
    then hears why). TensorRT always runs on a GPU (``cuda:0`` unless ``device`` names one).
    """
    if kind not in BACKENDS:
        raise UnknownBackend(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")
    dev = Device.parse(device)
    levers = dict(levers or {})
    if levers and kind == "auto":
        raise LeverError("levers need a named backend, not auto: write torch:fp16+channels_last, not auto+...")
    if kind == "auto":
        kind, dev, note = resolve_auto(package, dev, precision)
        if note and log is not None:
            log(note)
    if dev.kind == "gpu" and kind != "openvino":
        raise DeviceError(
            f"--device {dev} is an Intel GPU, which only OpenVINO runs here: use --backend openvino "
            "(pip install 'vsr[openvino]'), or --device cuda for an NVIDIA GPU"
        )
    if kind == "openvino":
        return OpenVinoBackend(package, OpenVinoOptions(device=dev, precision=precision, threads=threads, **levers))
    if kind == "torch":
        check_torch_device(dev)  # before the network is built: a missing GPU is reported at once
        return TorchBackend(model_for_package(package), TorchOptions(device=dev, precision=precision, **levers))
    if kind == "onnxruntime":
        options = OrtOptions(device=dev, precision=precision, threads=threads, **levers)
        return OrtCudaGraphBackend(package, options) if options.cuda_graphs else OrtBackend(package, options)
    gpu = dev if dev.is_cuda else Device("cuda")
    return TensorRTBackend(package, TensorRTOptions(device=gpu, precision=precision, **levers))
