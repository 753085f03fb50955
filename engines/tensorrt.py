"""TensorRT: build one engine per stage of a model package (the runner is :mod:`runtime.backends.trt`).

Written against TensorRT's documented Python API for 10.x (10.1 or later, for ONNX DeformConv)
and 11.x, and **untested on the machine it was written on** (no GPU, no TensorRT there): the
parts that need neither (the engine cache, the static check, the FP16 graphs) are tested, this
module's tests are marked ``tensorrt`` and run only where TensorRT imports and a GPU is present.

Precision: the network is always strongly typed, so the precision is the one written in the
graphs (``fp16/`` graphs from ``vsr-export --precision fp16``, with their keep-FP32 policy).
TensorRT 11 has no other mode (``BuilderFlag.FP16`` is gone); on 10.x we ask for the same with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, so both behave the same.

Plugins: ``init_libnvinfer_plugins`` registers TensorRT's standard plugins (the parser maps ONNX
``DeformConv`` onto ``ModulatedDeformConv2d`` from there), then :func:`engines.plugins.load_all`
registers ours, before any graph is parsed or engine deserialized.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.format import Package
from vsr_models.errors import VSRError

from .cache import EngineCache, EngineKey, EngineSet, GpuInfo, Profile, package_hash

INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt (the wheel fetches NVIDIA's libraries from "
    "NVIDIA's index, pypi.nvidia.com) on a machine with an NVIDIA GPU and driver, "
    "or use --backend onnxruntime"
)


class TensorRTUnavailable(VSRError, RuntimeError):
    """TensorRT (or a CUDA GPU for it) is missing; the message says what to install or use instead."""


class BuildError(VSRError, RuntimeError):
    """TensorRT could not parse or build a stage graph."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` with the install hint."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its libraries are not
        raise TensorRTUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    return tensorrt


def tensorrt_available() -> bool:
    """True if ``tensorrt`` imports and PyTorch sees a CUDA GPU (what this backend needs)."""
    try:
        import_tensorrt()
    except TensorRTUnavailable:
        return False
    import torch

    return torch.cuda.is_available()


def cuda_device(device: str) -> int:
    """The CUDA device index of ``cuda[:N]``, checking PyTorch sees it (buffers are torch tensors)."""
    import torch

    if not device.startswith("cuda"):
        raise TensorRTUnavailable(f"TensorRT runs on a CUDA GPU; got --device {device}: pass --device cuda")
    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            "TensorRT needs a CUDA GPU and a CUDA build of PyTorch (its buffers are torch "
            "tensors); none is visible here: use --backend onnxruntime"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise TensorRTUnavailable(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return index


def gpu_info(index: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``index`` (through PyTorch)."""
    import torch

    return GpuInfo(torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))


_LOGGER: Any = None


def _init(trt: Any) -> Any:
    """One logger per process; TensorRT's standard plugins and ours registered once."""
    global _LOGGER
    if _LOGGER is None:
        from . import plugins

        _LOGGER = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(_LOGGER, "")
        plugins.load_all()
    return _LOGGER


def _scale(expr: Any) -> int:
    """Scale of a manifest dimension: ``"h"`` -> 1, ``"4*h"`` -> 4."""
    text = str(expr)
    return int(text.split("*")[0]) if "*" in text else 1


def stage_profiles(package: Package, stage: str, profile: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every input of ``stage`` for an LR ``profile``, scaled per input
    by its TensorSpec scale as the manifest writes it (``[1, C, "4*h", "4*w"]``)."""
    shapes = {}
    for spec in package.manifest["stages"][stage]["inputs"]:
        _, channels, hexpr, _ = spec["shape"]
        shapes[spec["name"]] = profile.shapes(int(channels), _scale(hexpr))
    return shapes


def build_stage(
    trt: Any,
    onnx_path: Path,
    inputs: dict[str, tuple[tuple[int, ...], ...]],
    workspace_gb: float,
    timing_cache: bytes | None,
    precision: str = "fp16",
) -> tuple[bytes, bytes]:
    """Parse one ONNX graph and build a serialized engine; returns (engine, updated timing cache).

    ``fp32`` builds clear ``BuilderFlag.TF32`` where it exists, so FP32 engines compute in FP32
    (the reference numbers), not TF32.
    """
    logger = _init(trt)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 0 if strongly_typed is None else 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(
            f"TensorRT's ONNX parser rejected {onnx_path}: {errors} "
            f"(run vsr-export --check-tensorrt to see which nodes it cannot take)"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if precision == "fp32" and tf32 is not None:
        config.clear_flag(tf32)
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, False)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in inputs:
            raise BuildError(f"{onnx_path} has an input {name!r} the manifest does not describe")
        profile.set_shape(name, *inputs[name])
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise BuildError(f"TensorRT failed to build {onnx_path} (see its log above)")
    return bytes(engine), bytes(config.get_timing_cache().serialize())


def build_engines(
    package: Package,
    precision: str,
    profile: Profile,
    *,
    device: str = "cuda",
    workspace_gb: float = 4.0,
    cache: EngineCache | None = None,
    log: Callable[[str], None] = print,
) -> EngineSet:
    """Build one engine per stage of ``package`` for ``profile`` and store them in the cache.

    The timing cache of this GPU and TensorRT version is read before and written after, so
    later builds (other profiles, other precisions) reuse the measured tactics.
    """
    trt = import_tensorrt()
    index = cuda_device(device)
    import torch

    torch.cuda.set_device(index)
    gpu = gpu_info(index)
    cache = cache or EngineCache()
    key = EngineKey(gpu, trt.__version__, package_hash(package.root), precision, profile)
    timing_path = cache.timing_cache_path(gpu, trt.__version__)
    timing = timing_path.read_bytes() if timing_path.is_file() else None
    engines = {}
    for stage in package.stage_names():
        start = time.perf_counter()
        engines[stage], timing = build_stage(
            trt,
            package.stage_file(stage, precision),
            stage_profiles(package, stage, profile),
            workspace_gb,
            timing,
            precision,
        )
        log(f"built {stage} ({precision}, LR {profile}) in {time.perf_counter() - start:.0f} s")
    timing_path.parent.mkdir(parents=True, exist_ok=True)
    timing_path.write_bytes(timing or b"")
    return cache.write(key, package.manifest["model"], engines)


def find_engines(
    package: Package,
    precision: str,
    device: str = "cuda",
    size: tuple[int, int] | None = None,
    cache: EngineCache | None = None,
) -> list[EngineSet]:
    """Engine sets in the cache for this package, GPU, TensorRT version and precision (covering
    ``size`` if given). Raises :class:`TensorRTUnavailable` without TensorRT or a GPU."""
    trt = import_tensorrt()
    gpu = gpu_info(cuda_device(device))
    cache = cache or EngineCache()
    sets = cache.candidates(package_hash(package.root), gpu, trt.__version__, precision)
    return [s for s in sets if size is None or s.key.profile.covers(*size)]
