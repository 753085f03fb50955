"""The TensorRT backend: a package's stages as TensorRT engines from the engine cache.

Written against TensorRT's Python API (10.1 to 11.1, read in its sources) and **never run by this
project** (no machine here has TensorRT); the control flow below is tested with stand-ins for the
engines and the GPU, the real thing only by the ``tensorrt`` tests.

How the stages run (:class:`EngineSetRunner`):

* the backend's GPU is made current (``torch.cuda.device``) for everything: deserialising,
  creating contexts, allocating, enqueueing; TensorRT uses the current device, not the buffers';
* everything runs on one CUDA stream of the backend's own, never the legacy default stream (on
  which TensorRT synchronises the host after every enqueue); uploads, stages and downloads are
  ordered on it, so freed buffers are reused only by later work on the same stream;
* all stages' execution contexts share one user-managed activation buffer, as large as the
  largest stage needs (stages run one after the other), instead of one per context;
* every ``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3`` result is checked.

Polygraphy's ``EngineFromBytes`` deserialises (after initialising TensorRT's standard plugins).
Polygraphy's ``TrtRunner`` is not used: it synchronises its stream after every inference, hands
out its own output buffers and gives each runner its own activation memory.

Our plugins are not registered here: an ahead-of-time plugin's kernel is part of the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engines.cache import EngineCache, EngineNotFound, EngineSet, package_hash
from engines.plugins import fingerprint
from engines.tensorrt import (
    cuda_device,
    gpu_info,
    import_polygraphy,
    import_tensorrt,
    lr_side,
    package_plugins,
)
from export.format import Package
from vsr_models.errors import VSRError

from ..devices import Device


class ShapeOutsideProfile(VSRError, ValueError):
    """A stage input's shape is outside the optimization profile its engine was built for."""


class EngineLoadError(VSRError, RuntimeError):
    """A cached engine could not be deserialised or run (built by another TensorRT, or damaged)."""


@dataclass(frozen=True, kw_only=True)
class TensorRTOptions:
    """Options of :class:`TensorRTBackend`.

    Attributes:
        device: the GPU (``cuda:N``).
        precision: which engines to run (``fp32`` or ``fp16``, as built by vsr-build-engine).
        cache: the engine cache (default: ``$VSR_CACHE_DIR/engines``).
    """

    device: Device = field(default_factory=lambda: Device("cuda"))
    precision: str = "fp32"
    cache: EngineCache | None = None


class CudaPlace:
    """One GPU and one CUDA stream of the backend's own; all its CUDA work runs inside :meth:`active`."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.device = torch.device("cuda", index)
        with torch.cuda.device(index):
            self.stream = torch.cuda.Stream(index)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.cuda.device(self.index), torch.cuda.stream(self.stream):
            yield


def load_engines(
    found: EngineSet, stages: list[str], place: Any, deserialize: Callable[[bytes], Any]
) -> dict[str, Any]:
    """Deserialise the engines of ``stages`` from ``found`` with ``place``'s GPU current."""
    engines = {}
    with place.active():
        for stage in stages:
            path = found.engine_file(stage)
            engine = deserialize(path.read_bytes())
            if engine is None:
                raise EngineLoadError(f"TensorRT could not load {path}; rebuild it with vsr-build-engine")
            engines[stage] = engine
    return engines


class EngineSetRunner:
    """The execution contexts of one engine set, sharing one activation buffer, on ``place``."""

    def __init__(self, trt: Any, engines: dict[str, Any], place: Any) -> None:
        self.trt, self.engines, self.place = trt, engines, place
        with place.active():
            strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
            self.contexts = {stage: engine.create_execution_context(strategy) for stage, engine in engines.items()}
            missing = [stage for stage, context in self.contexts.items() if context is None]
            if missing:
                raise EngineLoadError(f"TensorRT could not create execution contexts for {missing}")
            self.memory_size = max(int(engine.device_memory_size_v2) for engine in engines.values())
            self.memory = torch.empty(max(self.memory_size, 1), dtype=torch.uint8, device=place.device)
            for context in self.contexts.values():
                context.set_device_memory(self.memory.data_ptr(), self.memory_size)

    def _torch_dtype(self, dtype: Any) -> torch.dtype:
        trt = self.trt
        table = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.INT32: torch.int32,
            trt.DataType.INT64: torch.int64,
            trt.DataType.BOOL: torch.bool,
        }
        return table[dtype]

    def run(self, stage: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Enqueue ``stage`` on the place's stream; returns its outputs (filled when the stream gets there)."""
        engine, context = self.engines[stage], self.contexts[stage]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {name: engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT for name in names}
        outputs: dict[str, torch.Tensor] = {}
        with self.place.active():
            keep = []  # converted inputs stay referenced until the stage is enqueued
            for name in (n for n in names if is_input[n]):
                tensor = inputs[name].to(self._torch_dtype(engine.get_tensor_dtype(name))).contiguous()
                keep.append(tensor)
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    low, _, high = engine.get_tensor_profile_shape(name, 0)
                    raise ShapeOutsideProfile(
                        f"stage {stage!r} input {name!r} has shape {tuple(tensor.shape)}, outside its engine's profile "
                        f"{tuple(low)} to {tuple(high)}: build engines for that size with vsr-build-engine --max-shape"
                    )
                self._bind(context, name, tensor)
            for name in (n for n in names if not is_input[n]):
                shape = tuple(context.get_tensor_shape(name))
                out = torch.empty(
                    shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device=self.place.device
                )
                self._bind(context, name, out)
                outputs[name] = out
            if not context.execute_async_v3(self.place.stream_handle):
                raise EngineLoadError(f"TensorRT failed to run stage {stage!r} (its messages are above)")
            del keep  # freed memory is reused only by later work on this same stream: safe
        return outputs

    @staticmethod
    def _bind(context: Any, name: str, tensor: torch.Tensor) -> None:
        if not context.set_tensor_address(name, tensor.data_ptr()):
            raise EngineLoadError(f"TensorRT refused the buffer of {name!r} (shape {tuple(tensor.shape)})")


class TensorRTBackend:
    """Runs a package's stages as TensorRT engines; every value stays on the GPU between steps.

    Buffers are torch CUDA tensors; graph inputs and outputs are float32 in both precisions (the
    FP16 graphs cast inside). The engine set is chosen when the first stage runs, from the frame
    size (the executor's frames are already padded to the network's constraints), and again
    whenever a frame size falls outside the current set's profile.
    """

    name = "tensorrt"

    def __init__(self, package: Package, options: TensorRTOptions | None = None) -> None:
        options = options or TensorRTOptions()
        self.trt = import_tensorrt()
        index = cuda_device(str(options.device))
        self.device = Device("cuda", index)
        self.place = CudaPlace(index)
        self.gpu = gpu_info(index)
        self.package = package
        self.precision = options.precision
        self.cache = options.cache or EngineCache()
        self.pkg_hash = package_hash(package.root)
        self.plugins = fingerprint(package_plugins(package, self.precision))
        self.dims = {
            stage: {spec["name"]: spec["shape"][2:] for spec in package.manifest["stages"][stage]["inputs"]}
            for stage in package.stage_names()
        }
        version = self.trt.__version__
        if not self.cache.candidates(self.pkg_hash, self.gpu, version, self.precision, self.plugins):
            raise EngineNotFound(
                missing_engines_message(self.cache, package, self.gpu, version, self.precision, self.plugins)
            )
        pg = import_polygraphy()
        runtime = self.trt.Runtime(pg.get_trt_logger())
        self.deserialize = lambda blob: pg.EngineFromBytes(blob, runtime=runtime)()
        self.current: EngineSet | None = None
        self.runner: EngineSetRunner | None = None

    # ---------------------------------------------------------------------------- handles
    def upload(self, array: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        with self.place.active():
            return host.to(self.place.device)

    def download(self, handle: torch.Tensor) -> np.ndarray:
        with self.place.active():
            return handle.detach().float().cpu().numpy()

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        with self.place.active():
            return torch.zeros(shape, dtype=torch.float32, device=self.place.device)

    def shape(self, handle: torch.Tensor) -> tuple[int, ...]:
        return tuple(handle.shape)

    # ---------------------------------------------------------------------------- engines
    def _select(self, stage: str, inputs: dict[str, torch.Tensor]) -> EngineSetRunner:
        size = self._lr_size(stage, inputs)
        if self.runner is not None and self.current is not None and self.current.key.profile.covers(*size):
            return self.runner
        found = self.cache.find(
            self.pkg_hash,
            self.gpu,
            self.trt.__version__,
            self.precision,
            size,
            stages=self.package.stage_names(),
            package=str(self.package.root),
            plugins=self.plugins,
        )
        self.runner = None  # the old set's contexts and memory go before the new set's arrive
        engines = load_engines(found, self.package.stage_names(), self.place, self.deserialize)
        self.runner, self.current = EngineSetRunner(self.trt, engines, self.place), found
        return self.runner

    def _lr_size(self, stage: str, inputs: dict[str, torch.Tensor]) -> tuple[int, int]:
        """The LR frame size a stage call implies, from an input whose size follows the LR size."""
        for name, tensor in inputs.items():
            hexpr, wexpr = self.dims[stage][name]
            h, w = lr_side(hexpr, tensor.shape[2]), lr_side(wexpr, tensor.shape[3])
            if h is not None and w is not None:
                return h, w
        raise EngineNotFound(f"stage {stage!r} has no input that follows the LR frame size; export the package again")

    def run(self, stage: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._select(stage, inputs).run(stage, inputs)


def missing_engines_message(
    cache: EngineCache, package: Package, gpu: Any, tensorrt: str, precision: str, plugins: str = ""
) -> str:
    """Why no engines were found, with the command that builds them (and the precision that has some)."""
    pkg_hash = package_hash(package.root)
    here = [s for s in cache.entries() if (s.key.package_hash, s.key.gpu, s.key.tensorrt) == (pkg_hash, gpu, tensorrt)]
    others = sorted({s.key.precision for s in here} - {precision})
    text = (
        f"no {precision} engines for {package.root} on {gpu.name} with TensorRT {tensorrt}: run vsr-build-engine "
        f"{package.root} --precision {precision} (or use --backend onnxruntime)"
    )
    if cache.stale(pkg_hash, gpu, tensorrt, precision, plugins):
        text += "; the cached ones carry another version of a plugin kernel and must be rebuilt"
    if others:
        text += f"; engines are built for {', '.join(others)}: pass --precision {others[0]} to run those"
    return text
