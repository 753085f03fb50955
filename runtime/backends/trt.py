"""The TensorRT backend: a package's stages as TensorRT engines from the engine cache.

Written against TensorRT's documented Python API (see :mod:`engines.tensorrt`) and **never run
by this project** (no machine here has TensorRT); its tests are marked ``tensorrt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.cache import EngineCache, EngineNotFound, EngineSet, package_hash
from engines.tensorrt import _init, _scale, cuda_device, gpu_info, import_tensorrt
from export.format import Package

from ..devices import Device


@dataclass(frozen=True, kw_only=True)
class TensorRTOptions:
    """Options of :class:`TensorRTBackend`.

    Attributes:
        device: the GPU (``cuda:N``).
        precision: which engines to run (``fp16`` or ``fp32``, as built by vsr-build-engine).
        cache: the engine cache (default: ``$VSR_CACHE_DIR/engines``).
    """

    device: Device = field(default_factory=lambda: Device("cuda"))
    precision: str = "fp16"
    cache: EngineCache | None = None


class TensorRTBackend:
    """Runs a package's stages as TensorRT engines; every value stays on the GPU between steps.

    Buffers are torch CUDA tensors: inputs and outputs are bound with
    ``context.set_tensor_address(name, tensor.data_ptr())`` and each stage is enqueued with
    ``execute_async_v3`` on PyTorch's current stream, so uploads, stages and downloads are
    ordered without extra synchronisation. Graph inputs and outputs are float32 in both
    precisions (the FP16 graphs cast inside).

    The engine set is chosen when the first stage runs, from the frame size (the executor's
    frames are already padded to the network's constraints), and again whenever a frame size
    falls outside the current set's profile.

    Untested here: written against the documented API (see the module docstring).
    """

    name = "tensorrt"

    def __init__(self, package: Package, options: TensorRTOptions | None = None) -> None:
        import torch

        options = options or TensorRTOptions()
        precision, cache = options.precision, options.cache
        self.trt = import_tensorrt()
        self.torch = torch
        index = cuda_device(str(options.device))
        self.device = Device("cuda", index)
        self.torch_device = torch.device("cuda", index)
        self.gpu = gpu_info(index)
        self.package = package
        self.precision = precision
        self.cache = cache or EngineCache()
        self.pkg_hash = package_hash(package.root)
        self.scales = {
            stage: {spec["name"]: _scale(spec["shape"][2]) for spec in package.manifest["stages"][stage]["inputs"]}
            for stage in package.stage_names()
        }
        if not self.cache.candidates(self.pkg_hash, self.gpu, self.trt.__version__, precision):
            raise EngineNotFound(
                f"no {precision} engines for {package.root} on {self.gpu.name} with TensorRT {self.trt.__version__}: "
                f"run vsr-build-engine {package.root} --precision {precision} (or use --backend onnxruntime)"
            )
        self.runtime = self.trt.Runtime(_init(self.trt))
        self.current: EngineSet | None = None
        self.engines: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}

    # ---------------------------------------------------------------------------- handles
    def upload(self, array: np.ndarray) -> Any:
        host = self.torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return host.to(self.torch_device, non_blocking=False)

    def download(self, handle: Any) -> np.ndarray:
        return handle.detach().float().cpu().numpy()

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.float32, device=self.torch_device)

    def shape(self, handle: Any) -> tuple[int, ...]:
        return tuple(handle.shape)

    # ---------------------------------------------------------------------------- engines
    def _select(self, stage: str, inputs: dict[str, Any]) -> None:
        name, tensor = next(iter(inputs.items()))
        s = self.scales[stage][name]
        size = (tensor.shape[2] // s, tensor.shape[3] // s)
        if self.current is not None and self.current.key.profile.covers(*size):
            return
        found = self.cache.find(
            self.pkg_hash,
            self.gpu,
            self.trt.__version__,
            self.precision,
            size,
            stages=self.package.stage_names(),
            package=str(self.package.root),
        )
        self.engines, self.contexts = {}, {}
        for st in self.package.stage_names():
            engine = self.runtime.deserialize_cuda_engine(found.engine_file(st).read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not load {found.engine_file(st)}; rebuild it with vsr-build-engine")
            self.engines[st] = engine
            self.contexts[st] = engine.create_execution_context()
        self.current = found

    def _torch_dtype(self, dtype: Any) -> Any:
        trt, torch = self.trt, self.torch
        table = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.INT32: torch.int32,
            trt.DataType.BOOL: torch.bool,
        }
        if hasattr(trt.DataType, "INT64"):
            table[trt.DataType.INT64] = torch.int64
        return table[dtype]

    def run(self, stage: str, inputs: dict[str, Any]) -> dict[str, Any]:
        self._select(stage, inputs)
        trt, torch = self.trt, self.torch
        engine, context = self.engines[stage], self.contexts[stage]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        outputs: dict[str, Any] = {}
        keep = []  # converted inputs stay alive until the stage is enqueued
        for name in names:
            if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                continue
            tensor = inputs[name].to(self._torch_dtype(engine.get_tensor_dtype(name))).contiguous()
            keep.append(tensor)
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                continue
            shape = tuple(context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device=self.torch_device)
            context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        stream = torch.cuda.current_stream(self.torch_device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run stage {stage!r}")
        del keep  # freed memory is reused only by later work on this same stream: safe
        return outputs
