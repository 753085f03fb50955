"""Backends behind the executor: PyTorch (the reference) and ONNX Runtime (I/O binding).

Both keep every value on their own side between steps: torch tensors on the model's device, or
``OrtValue``\\ s bound to the session's device. Only the LR frames go in and the outputs come out
as numpy.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from export.package import Package
from vsr_models.base import VSRNetwork


class TorchBackend:
    """Runs a network's stages in PyTorch eager mode.

    Args:
        model: the network (its stages are taken from ``model.stages()``).
        device: torch device string.
        dtype: ``torch.float32`` or ``torch.float16``. Inputs and outputs a stage marks FP32 (flows)
            are passed as FP32, and warping samples in FP32; the layers themselves run in ``dtype``
            (``model.half()``, what PyTorch users do today), so torch FP16 is a speed baseline, less
            faithful than the FP16 graphs, whose coordinate math stays FP32 throughout.
    """

    def __init__(self, model: VSRNetwork, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.name = "torch"
        self.model = model.eval().to(device=device, dtype=dtype)
        self.device = torch.device(device)
        self.dtype = dtype
        self.stages = model.stages()

    def upload(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device, self.dtype)

    def download(self, handle: torch.Tensor) -> np.ndarray:
        return handle.detach().float().cpu().numpy()

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, device=self.device, dtype=self.dtype)

    def shape(self, handle: torch.Tensor) -> tuple[int, ...]:
        return tuple(handle.shape)

    def run(self, stage: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        spec = self.stages[stage]
        feeds = {k: (v.float() if k in spec.fp32 else v.to(self.dtype)) for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = spec(**feeds)
        return {k: (v.float() if k in spec.fp32 else v) for k, v in outputs.items()}


def ort_providers(device: str) -> list[Any]:
    """ONNX Runtime execution providers for ``cpu`` or ``cuda[:N]``, with a clear error if absent."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("this onnxruntime has no CUDA provider; install onnxruntime-gpu or use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}: use cpu or cuda[:N]")


class OrtBackend:
    """Runs a package's stage graphs with ONNX Runtime, state bound on the device (I/O binding).

    Args:
        package: an opened model package.
        device: ``cpu`` or ``cuda[:N]`` (needs onnxruntime-gpu).
        precision: which graphs of the package to run (``fp32``, ``fp16``).
        threads: intra-op threads (0: ONNX Runtime's default, all cores).
    """

    def __init__(self, package: Package, device: str = "cpu", precision: str = "fp32", threads: int = 0) -> None:
        import onnxruntime as ort

        self.name = "onnxruntime"
        self.ort = ort
        self.device_type = "cuda" if device.startswith("cuda") else "cpu"
        self.device_id = int(device.split(":")[1]) if ":" in device else 0
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = ort_providers(device)
        self.sessions = {name: ort.InferenceSession(str(package.stage_file(name, precision)), options,
                                                    providers=providers)
                         for name in package.stage_names()}
        self.outputs = {name: [o.name for o in s.get_outputs()] for name, s in self.sessions.items()}

    def upload(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array, dtype=np.float32)
        return self.ort.OrtValue.ortvalue_from_numpy(array, self.device_type, self.device_id)

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
