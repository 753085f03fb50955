"""The ONNX Runtime backend: a package's stage graphs, state bound on the device (I/O binding).

On a GPU (``pip install 'vsr[gpu]'``: onnxruntime-gpu, which replaces onnxruntime) the CUDA
provider runs the graphs; with ``cuda_graphs`` each stage is captured once per input size
(:class:`OrtCudaGraphBackend`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch

from export.format import Package, PackageError
from vsr_models.errors import VSRError

from ..devices import Device, DeviceError
from .static import StaticCalls

#: ``optimization`` -> ONNX Runtime's graph optimisation level. ``layout`` and ``all`` add the layout
#: transformations (on the CPU: convolutions in blocked NCHWc, with reorders around the other ops).
OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "layout": ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class OrtOptionError(VSRError, ValueError):
    """An ONNX Runtime option that does not fit the device or this onnxruntime."""


@dataclass(frozen=True, kw_only=True)
class OrtOptions:
    """Options of :class:`OrtBackend`.

    Attributes:
        device: ``cpu``, or ``cuda:N`` with the CUDA provider (``pip install 'vsr[gpu]'``).
        precision: which graphs of the package to run (``fp32``, ``fp16``).
        threads: intra-op threads (0: ONNX Runtime's default, all cores).
        optimization: graph optimisation level (:data:`OPTIMIZATION`).
        spinning: whether idle intra-op threads spin waiting for work (ONNX Runtime's own default) or
            sleep (ours: as fast for BasicVSR at 180x320 on a quiet 2-core CPU, 2 % faster per IART frame,
            25 % faster under load, where spinning threads take the cores the working ones need; README Speed).
        arena: ONNX Runtime's CPU memory arena (reuses freed blocks between calls).
        profile: write ONNX Runtime's profile (one JSON file per stage, see :meth:`OrtBackend.end_profiling`)
            into this folder.
        cuda_graphs: capture each stage once per input size as a CUDA graph and replay it (CUDA only;
            needs a CUDA build of PyTorch, whose tensors hold the graphs' static buffers).
        prefer_nhwc: the CUDA provider's NHWC convolutions (Tensor Core friendly).
        conv_algo_search: how the CUDA provider picks cuDNN convolution algorithms.
    """

    device: Device = field(default_factory=Device)
    precision: str = "fp32"
    threads: int = 0
    optimization: Literal["disable", "basic", "extended", "layout", "all"] = "all"
    spinning: bool = False
    arena: bool = True
    profile: Path | None = None
    cuda_graphs: bool = False
    prefer_nhwc: bool = False
    conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"

    def __post_init__(self) -> None:
        if self.optimization not in OPTIMIZATION:
            raise OrtOptionError(f"optimization {self.optimization!r}: use one of {', '.join(OPTIMIZATION)}")
        if self.precision == "bf16":
            raise OrtOptionError(
                "--precision bf16: ONNX Runtime's CPU provider has no BF16 convolution or matrix product kernels "
                "(and ONNX has BF16 convolutions only from opset 22; packages are opset 19): run bf16 with "
                "--backend torch or openvino"
            )
        if (self.cuda_graphs or self.prefer_nhwc) and not self.device.is_cuda:
            raise OrtOptionError("cuda_graphs and prefer_nhwc are options of the CUDA provider: use --device cuda")


def providers(device: Device, options: OrtOptions | None = None, stream: int | None = None) -> list[Any]:
    """ONNX Runtime execution providers for ``device``, with a clear error if the GPU one is absent.

    ``stream`` (a ``cudaStream_t`` as an integer) makes the CUDA provider run on that stream.
    """
    if not device.is_cuda:
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeviceError(
            f"--device {device}: this onnxruntime ({ort.__version__}) has no CUDA provider; "
            "install onnxruntime-gpu in its place (pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install onnxruntime-gpu) or use --device cpu"
        )
    options = options or OrtOptions(device=device)
    cuda: dict[str, str] = {
        "device_id": str(device.index),
        "cudnn_conv_algo_search": options.conv_algo_search,
        "prefer_nhwc": str(int(options.prefer_nhwc)),
        "enable_cuda_graph": str(int(options.cuda_graphs)),
    }
    if stream is not None:
        cuda["user_compute_stream"] = str(stream)
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


def cuda_provider_available() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


def session_options(options: OrtOptions, stage: str) -> ort.SessionOptions:
    """ONNX Runtime session options for one stage's graph."""
    so = ort.SessionOptions()
    so.graph_optimization_level = OPTIMIZATION[options.optimization]
    so.intra_op_num_threads = options.threads
    so.enable_cpu_mem_arena = options.arena
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spinning else "0")
    so.log_severity_level = 3
    if options.profile is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(options.profile / stage)
    return so


class OrtBackend:
    """Runs a package's stage graphs with ONNX Runtime; values stay ``OrtValue``\\ s on the device."""

    name = "onnxruntime"

    def __init__(self, package: Package, options: OrtOptions | None = None, stream: int | None = None) -> None:
        self.options = options or OrtOptions()
        self.device = self.options.device
        self.device_type = "cuda" if self.device.is_cuda else "cpu"
        self.device_id = self.device.index
        chosen = providers(self.device, self.options, stream)
        if self.options.profile is not None:
            self.options.profile.mkdir(parents=True, exist_ok=True)
        self.sessions = {}
        for name in package.stage_names():
            path = package.stage_file(name, self.options.precision)
            try:
                self.sessions[name] = ort.InferenceSession(
                    str(path), session_options(self.options, name), providers=chosen
                )
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

    def end_profiling(self) -> dict[str, dict[str, float]]:
        """With ``profile``: stop profiling; seconds spent in each op type, per stage.

        Op types are as ONNX Runtime ran them (after its graph optimisations: fused and NCHWc nodes,
        ``ReorderInput``/``ReorderOutput`` around them), from the ``kernel_time`` events of its profile.
        """
        result: dict[str, dict[str, float]] = {}
        for stage, session in self.sessions.items():
            events = json.loads(Path(session.end_profiling()).read_text())
            per_op: dict[str, float] = defaultdict(float)
            for event in events:
                if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                    per_op[event["args"]["op_name"]] += event["dur"] * 1e-6
            result[stage] = dict(per_op)
        return result


#: ONNX Runtime's tensor type names -> torch dtypes (the graphs' inputs and outputs are float32; float16 if edited).
_TORCH_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


class OrtCudaGraphBackend(OrtBackend):
    """The CUDA provider with CUDA graphs: one graph per (stage, input sizes), ``gpu_graph_id`` 1, 2, ...

    A captured graph needs its inputs and outputs at fixed addresses: they are PyTorch CUDA tensors
    bound by pointer (:class:`~runtime.backends.static.StaticCalls` copies inputs in and outputs out),
    so handles are torch tensors, and ONNX Runtime runs on the PyTorch stream of this backend.
    """

    def __init__(self, package: Package, options: OrtOptions) -> None:
        if not torch.cuda.is_available():
            raise OrtOptionError(
                "cuda_graphs with ONNX Runtime keeps its buffers in PyTorch CUDA tensors; this PyTorch "
                f"({torch.__version__}) has no CUDA: install a CUDA build of PyTorch or drop cuda_graphs"
            )
        self.torch_device = torch.device("cuda", options.device.index)
        self.stream = torch.cuda.Stream(self.torch_device)
        super().__init__(package, options, stream=self.stream.cuda_stream)
        self.graphs = StaticCalls(self._capture)

    def upload(self, array: np.ndarray) -> torch.Tensor:
        with torch.cuda.stream(self.stream):
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.torch_device)

    def download(self, handle: torch.Tensor) -> np.ndarray:
        with torch.cuda.stream(self.stream):
            return handle.float().cpu().numpy()

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        with torch.cuda.stream(self.stream):
            return torch.zeros(shape, device=self.torch_device)

    def shape(self, handle: torch.Tensor) -> tuple[int, ...]:
        return tuple(handle.shape)

    def run(self, stage: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with torch.cuda.stream(self.stream):
            return self.graphs.run(stage, inputs)

    def _bind(self, binding: Any, name: str, tensor: torch.Tensor, output: bool) -> None:
        bind = binding.bind_output if output else binding.bind_input
        element = np.float16 if tensor.dtype == torch.float16 else np.float32
        bind(name, "cuda", self.device_id, element, tuple(tensor.shape), tensor.data_ptr())

    def _capture(self, stage: str, static_inputs: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
        """Bind ``static_inputs``; learn the output shapes from one uncaptured run (``gpu_graph_id`` -1),
        bind static outputs of those shapes, and return a replay under a graph id of its own."""
        session = self.sessions[stage]
        binding = session.io_binding()
        for name, tensor in static_inputs.items():
            self._bind(binding, name, tensor, output=False)
        for name in self.outputs[stage]:
            binding.bind_output(name, "cuda", self.device_id)
        probe = ort.RunOptions()
        probe.add_run_config_entry("gpu_graph_id", "-1")
        session.run_with_iobinding(binding, probe)
        outputs = {
            name: torch.empty(tuple(v.shape()), dtype=_TORCH_DTYPES[v.data_type()], device=self.torch_device)
            for name, v in zip(self.outputs[stage], binding.get_outputs())
        }
        binding.clear_binding_outputs()
        for name, tensor in outputs.items():
            self._bind(binding, name, tensor, output=True)
        replay_options = ort.RunOptions()
        replay_options.add_run_config_entry("gpu_graph_id", str(len(self.graphs.entries) + 1))

        def replay() -> None:
            session.run_with_iobinding(binding, replay_options)

        return replay, outputs
