"""The backends the executor runs plans on, side by side behind one interface
(:class:`runtime.executor.Backend`), each with its typed options:

* :mod:`.torch_eager`: PyTorch eager (:class:`TorchBackend`, :class:`TorchOptions`), the reference;
* :mod:`.ort`: ONNX Runtime with I/O binding (:class:`OrtBackend`, :class:`OrtOptions`);
* :mod:`.trt`: TensorRT engines from the engine cache (:class:`TensorRTBackend`, :class:`TensorRTOptions`).

:func:`make_backend` builds one by name for a package, and resolves ``auto``.
"""

from __future__ import annotations

from collections.abc import Callable

from engines.tensorrt import TensorRTUnavailable, find_engines, tensorrt_available
from export.format import Package
from vsr_models.errors import VSRError

from ..devices import Device
from ..executor import Backend
from .ort import OrtBackend, OrtOptions, cuda_provider_available
from .torch_eager import TorchBackend, TorchOptions, check_torch_device, model_for_package
from .trt import TensorRTBackend, TensorRTOptions

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
#: The precision a backend runs when none is named (the same for every tool: vsr-build-engine builds it).
DEFAULT_PRECISION = "fp32"


class UnknownBackend(VSRError, ValueError):
    """A backend name that is not one of :data:`BACKENDS`."""


__all__ = [
    "BACKENDS",
    "OrtBackend",
    "OrtOptions",
    "TensorRTBackend",
    "TensorRTOptions",
    "TorchBackend",
    "TorchOptions",
    "make_backend",
    "model_for_package",
    "resolve_auto",
]


def resolve_auto(package: Package, device: Device, precision: str) -> tuple[str, Device, str | None]:
    """(backend, device, note) for ``--backend auto``: TensorRT engines if TensorRT imports, a GPU is
    present and engines for this package, GPU and precision are cached; else ONNX Runtime with the
    CUDA provider when ``device`` is a GPU and the provider exists; else ONNX Runtime on the CPU.
    ``note`` says why TensorRT or a GPU that was asked for is not used."""
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
            "ONNX Runtime runs on the CPU (install onnxruntime-gpu with pip install 'vsr[gpu]', or build engines "
            "with vsr-build-engine)"
        ),
    )


def make_backend(
    kind: str,
    package: Package,
    device: str | Device = "cpu",
    precision: str = DEFAULT_PRECISION,
    threads: int = 0,
    log: Callable[[str], None] | None = None,
) -> Backend:
    """Build the backend ``kind`` (one of :data:`BACKENDS`) for ``package``.

    The backend's ``device`` is where it really runs (``auto`` may fall back to the CPU; ``log``
    then hears why). TensorRT always runs on a GPU (``cuda:0`` unless ``device`` names one).
    """
    if kind not in BACKENDS:
        raise UnknownBackend(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")
    dev = Device.parse(device)
    if kind == "auto":
        kind, dev, note = resolve_auto(package, dev, precision)
        if note and log is not None:
            log(note)
    if kind == "torch":
        check_torch_device(dev)  # before the network is built: a missing GPU is reported at once
        return TorchBackend(model_for_package(package), TorchOptions(device=dev, precision=precision))
    if kind == "onnxruntime":
        return OrtBackend(package, OrtOptions(device=dev, precision=precision, threads=threads))
    return TensorRTBackend(package, TensorRTOptions(device=dev if dev.is_cuda else Device("cuda"), precision=precision))
