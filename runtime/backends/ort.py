"""The ONNX Runtime backend: a package's stage graphs, state bound on the device (I/O binding)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from export.format import Package, PackageError

from ..devices import Device, DeviceError


@dataclass(frozen=True, kw_only=True)
class OrtOptions:
    """Options of :class:`OrtBackend`.

    Attributes:
        device: ``cpu``, or ``cuda:N`` with the CUDA provider (``pip install 'vsr[gpu]'``).
        precision: which graphs of the package to run (``fp32``, ``fp16``).
        threads: intra-op threads (0: ONNX Runtime's default, all cores).
    """

    device: Device = field(default_factory=Device)
    precision: str = "fp32"
    threads: int = 0


def providers(device: Device) -> list[Any]:
    """ONNX Runtime execution providers for ``device``, with a clear error if the GPU one is absent."""
    if not device.is_cuda:
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeviceError(
            f"--device {device}: this onnxruntime ({ort.__version__}) has no CUDA provider; "
            "install onnxruntime-gpu (pip install 'vsr[gpu]') or use --device cpu"
        )
    return [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]


def cuda_provider_available() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OrtBackend:
    """Runs a package's stage graphs with ONNX Runtime; values stay ``OrtValue``\\ s on the device."""

    name = "onnxruntime"

    def __init__(self, package: Package, options: OrtOptions | None = None) -> None:
        self.options = options or OrtOptions()
        self.device = self.options.device
        self.device_type = "cuda" if self.device.is_cuda else "cpu"
        self.device_id = self.device.index
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.intra_op_num_threads = self.options.threads
        session_options.log_severity_level = 3
        chosen = providers(self.device)
        self.sessions = {}
        for name in package.stage_names():
            path = package.stage_file(name, self.options.precision)
            try:
                self.sessions[name] = ort.InferenceSession(str(path), session_options, providers=chosen)
            except (
                ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
                ort.capi.onnxruntime_pybind11_state.InvalidGraph,
                ort.capi.onnxruntime_pybind11_state.Fail,
            ) as exc:
                raise PackageError(
                    f"ONNX Runtime cannot load {path} ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}); export the package again"
                ) from exc
        self.outputs = {name: [o.name for o in s.get_outputs()] for name, s in self.sessions.items()}

    def upload(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array, dtype=np.float32)
        return ort.OrtValue.ortvalue_from_numpy(array, self.device_type, self.device_id)

    def download(self, handle: Any) -> np.ndarray:
        return handle.numpy()

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.upload(np.zeros(shape, dtype=np.float32))

    def shape(self, handle: Any) -> tuple[int, ...]:
        return tuple(handle.shape())

    def run(self, stage: str, inputs: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions[stage]
        binding = session.io_binding()
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name in self.outputs[stage]:
            binding.bind_output(name, self.device_type, self.device_id)
        session.run_with_iobinding(binding)
        return dict(zip(self.outputs[stage], binding.get_outputs()))
