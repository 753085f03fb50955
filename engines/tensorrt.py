"""TensorRT: build one engine per stage of a model package (the runner is :mod:`runtime.backends.trt`).

Written against TensorRT's Python API (10.1 to 11.1, read in TensorRT's sources) and Polygraphy's
TensorRT loaders, and **never run by this project** (no machine here has a GPU or TensorRT). What
needs neither (the engine cache and its key, the plugin selection, the timing-cache and input
checks, the static check, the FP16 graphs) is tested; the builds are ``tensorrt`` tests.

The build is Polygraphy's: ``NetworkFromOnnxPath`` (TensorRT's standard plugins initialised before
parsing, ``parse_from_file`` so external weights are found, and a failure whenever the parser
recorded an error, even when it returned True), ``CreateConfig`` (the optimization profile, the
workspace pool, TF32 cleared) and ``EngineBytesFromNetwork`` (the build, the timing cache written
back). Ours, around it:

* the plugins: only those of the custom nodes the package's graphs contain are registered, before
  parsing (:func:`engines.plugins.load_for`); a package without custom nodes never imports
  ``tensorrt.plugin`` or Triton;
* the timing cache is handed to the config and its acceptance checked (:func:`use_timing_cache`),
  and written back whole (staged, then renamed);
* every network input is checked against the manifest's profile (:func:`check_inputs`);
* the engine cache key (:func:`engine_key`), plugin kernels included.

Precision: networks are strongly typed, so the precision is the one written in the graphs (``fp16/``
graphs from ``vsr-export --precision fp16``, with their FP32 islands for coordinates); TensorRT 11
has no other mode, and 10.x gets the same with ``STRONGLY_TYPED``. TF32 is cleared for every build,
so FP32 layers (all of an ``fp32`` engine, the coordinate islands of an ``fp16`` one) compute in FP32.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from export.atomic import StagedPath
from export.format import Package
from export.trt_check import BASELINE, version_text
from vsr_models.errors import VSRError

from . import plugins
from .cache import EngineCache, EngineKey, EngineSet, GpuInfo, Profile, package_hash

INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt polygraphy (or pip install 'vsr[trt]'; the tensorrt wheel "
    "fetches NVIDIA's libraries from NVIDIA's index, pypi.nvidia.com) on a machine with an NVIDIA GPU and driver, "
    "or use --backend onnxruntime"
)


class TensorRTUnavailable(VSRError, RuntimeError):
    """TensorRT (or a CUDA GPU for it, or Polygraphy) is missing or too old; the message says what to do."""


class BuildError(VSRError, RuntimeError):
    """TensorRT could not parse or build a stage graph."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module (10.1 or later), or :class:`TensorRTUnavailable` with the install hint."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its libraries are not
        raise TensorRTUnavailable(f"{INSTALL_HINT} ({exc})") from exc
    if plugins.tensorrt_version(tensorrt.__version__) < BASELINE:
        raise TensorRTUnavailable(
            f"this is TensorRT {tensorrt.__version__}; engines need TensorRT >= {version_text(BASELINE)} "
            "(ONNX DeformConv, user-managed execution-context memory): pip install -U tensorrt"
        )
    return tensorrt


def import_polygraphy() -> Any:
    """Polygraphy's TensorRT backend (``polygraphy.backend.trt``), or :class:`TensorRTUnavailable`."""
    try:
        from polygraphy.backend import trt as polygraphy_trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            f"building engines needs Polygraphy: pip install polygraphy (or pip install 'vsr[trt]') ({exc})"
        ) from exc
    return polygraphy_trt


def tensorrt_available() -> bool:
    """True if a usable ``tensorrt`` imports and PyTorch sees a CUDA GPU (what this backend needs)."""
    try:
        import_tensorrt()
    except TensorRTUnavailable:
        return False
    return torch.cuda.is_available()


def cuda_device(device: str) -> int:
    """The CUDA device index of ``cuda[:N]``, checking PyTorch sees it (buffers are torch tensors)."""
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
    return GpuInfo(torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))


_DIM = re.compile(r"^(?:(?P<k>\d+)\*)?(?:(?P<m>\d+)\*ceil\((?P<pa>[hw])/(?P=m)\)|(?P<a>[hwHW]))$")


def _parse_dim(expr: Any) -> tuple[int, int, str] | int:
    """A manifest dimension as (factor, multiple, axis), or a fixed size: ``"4*h"`` -> (4, 1, "h"),
    ``"2*ceil(w/2)"`` -> (1, 2, "w"), ``"H"`` (the output size) -> (1, 1, "H"), ``1`` -> 1."""
    if isinstance(expr, int):
        return expr
    m = _DIM.match(str(expr).replace(" ", ""))
    if m is None:
        raise BuildError(f"cannot read the dimension {expr!r} of the manifest; export the package again")
    return int(m["k"] or 1), int(m["m"] or 1), m["pa"] or m["a"]


def dim_size(expr: Any, lr: int, out: int) -> int:
    """The size of a manifest dimension for an LR side ``lr`` and an output side ``out``."""
    parsed = _parse_dim(expr)
    if isinstance(parsed, int):
        return parsed
    factor, multiple, axis = parsed
    base = out if axis.isupper() else -(-lr // multiple) * multiple
    return factor * base


def lr_side(expr: Any, size: int) -> int | None:
    """The LR side a tensor dimension of ``size`` implies (an upper bound for padded ones), or None
    for dimensions that do not follow the LR size (output-sized, fixed)."""
    parsed = _parse_dim(expr)
    if isinstance(parsed, int) or parsed[2].isupper():
        return None
    return size // parsed[0]


def stage_profiles(package: Package, stage: str, profile: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every input of ``stage`` for an LR ``profile``, read off the
    manifest's dimensions (``[1, C, "4*h", "4*w"]``, padded ``"2*ceil(h/2)"``, output-sized ``"H"``).

    Output-sized dimensions of an any-scale network range from the smallest LR size at its lowest
    scale to the largest at its highest, tuned for the optimum LR size at the highest scale.
    """
    # A fixed-scale network writes its output sizes as multiples of the LR size ("4*h"), never "H".
    low, high = package.scale_range or (1.0, 1.0)
    shapes = {}
    for spec in package.manifest["stages"][stage]["inputs"]:
        _, channels, hexpr, wexpr = spec["shape"]
        corners = []
        for (h, w), scale in ((profile.min, low), (profile.opt, high), (profile.max, high)):
            oh, ow = round(h * scale), round(w * scale)
            corners.append((1, int(channels), dim_size(hexpr, h, oh), dim_size(wexpr, w, ow)))
        shapes[spec["name"]] = tuple(corners)
    return shapes


def package_plugins(package: Package, precision: str) -> list[plugins.PluginSpec]:
    """Our plugins that the ``precision`` graphs of ``package`` need (none for standard-op graphs)."""
    graphs = [package.stage_file(stage, precision) for stage in package.stage_names()]
    return plugins.required(plugins.custom_ops(graphs))


def engine_key(
    package: Package, precision: str, profile: Profile, gpu: GpuInfo, tensorrt: str, specs: list[plugins.PluginSpec]
) -> EngineKey:
    """The cache key of the engines of ``package``: GPU, TensorRT, graphs, precision, profile, plugin kernels."""
    return EngineKey(gpu, tensorrt, package_hash(package.root), precision, profile, plugins.fingerprint(specs))


def use_timing_cache(config: Any, blob: bytes, log: Callable[[str], None]) -> bool:
    """Give ``config`` the timing cache ``blob``; True if TensorRT took it.

    ``set_timing_cache(..., ignore_mismatch=False)`` refuses a cache made on another GPU or TensorRT
    release: the build then starts from an empty cache (and writes a new one), and ``log`` says so.
    """
    if not blob:
        return False  # Polygraphy's CreateConfig gave the config an empty cache already
    if config.set_timing_cache(config.create_timing_cache(blob), False):
        return True
    log("the timing cache was made on another GPU or TensorRT release and is not used: every tactic is timed again")
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        raise BuildError("TensorRT refused even an empty timing cache; see its messages above")
    return False


def check_inputs(network: Any, inputs: dict[str, Any], onnx_path: Path) -> None:
    """Every input of the parsed ``network`` must have a profile from the manifest (else Polygraphy
    would fill in a default one silently)."""
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    unknown = [name for name in names if name not in inputs]
    if unknown:
        raise BuildError(
            f"{onnx_path} has input(s) {unknown} the manifest does not describe (it lists {sorted(inputs)}); "
            "export the package again"
        )


def build_stage(
    onnx_path: Path,
    inputs: dict[str, tuple[tuple[int, ...], ...]],
    *,
    workspace_gb: float,
    timing_cache: Path,
    log: Callable[[str], None] = print,
) -> bytes:
    """Parse one ONNX graph and build a serialized engine; ``timing_cache`` is read and written back."""
    trt, pg = import_tensorrt(), import_polygraphy()
    from polygraphy.exception import PolygraphyException

    profile = pg.Profile()
    for name, (low, opt, high) in inputs.items():
        profile.add(name, min=low, opt=opt, max=high)
    network = pg.PostprocessNetwork(
        pg.NetworkFromOnnxPath(str(onnx_path), strongly_typed=True),
        lambda network: check_inputs(network, inputs, onnx_path),
        name="check the inputs",
    )
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    config = pg.PostprocessConfig(
        pg.CreateConfig(
            profiles=[profile], tf32=False, memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_gb * 2**30)}
        ),
        lambda builder, network, config: use_timing_cache(config, blob, log),
    )
    staged = StagedPath(timing_cache)
    try:
        with open(staged.path, "wb") as out:
            engine = pg.EngineBytesFromNetwork(network, config, save_timing_cache=out)()
    except PolygraphyException as exc:
        staged.discard()
        raise BuildError(
            f"TensorRT could not build {onnx_path}: {exc} (TensorRT's messages are above; "
            "vsr-export --check-tensorrt shows the nodes its parser cannot take)"
        ) from exc
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return bytes(engine)


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

    The plugins of the package's custom nodes (and only those) are registered first; the timing
    cache of this GPU and TensorRT release is read before and written after each stage.
    """
    trt = import_tensorrt()
    index = cuda_device(device)
    torch.cuda.set_device(index)  # TensorRT builds on the current device
    specs = plugins.load_for(plugins.custom_ops(package.stage_file(s, precision) for s in package.stage_names()), trt)
    for spec in specs:
        log(f"registered the TensorRT plugin {spec} for the package's {spec.domain}::{spec.op_type} nodes")
    gpu = gpu_info(index)
    cache = cache or EngineCache()
    key = engine_key(package, precision, profile, gpu, trt.__version__, specs)
    timing = cache.timing_cache_path(gpu, trt.__version__)
    engines = {}
    for stage in package.stage_names():
        start = time.perf_counter()
        engines[stage] = build_stage(
            package.stage_file(stage, precision),
            stage_profiles(package, stage, profile),
            workspace_gb=workspace_gb,
            timing_cache=timing,
            log=log,
        )
        log(f"built {stage} ({precision}, LR {profile}) in {time.perf_counter() - start:.0f} s")
    return cache.write(key, package.manifest["model"], engines)


def find_engines(
    package: Package,
    precision: str,
    device: str = "cuda",
    size: tuple[int, int] | None = None,
    cache: EngineCache | None = None,
) -> list[EngineSet]:
    """Engine sets in the cache for this package, GPU, TensorRT release, precision and plugin kernels
    (covering ``size`` if given). Raises :class:`TensorRTUnavailable` without TensorRT or a GPU."""
    trt = import_tensorrt()
    gpu = gpu_info(cuda_device(device))
    cache = cache or EngineCache()
    fingerprint = plugins.fingerprint(package_plugins(package, precision))
    sets = cache.candidates(package_hash(package.root), gpu, trt.__version__, precision, fingerprint)
    return [s for s in sets if size is None or s.key.profile.covers(*size)]
