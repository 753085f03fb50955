"""Resolve what the user names (a package folder or a zoo name) into packages, networks, backends."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from export.package import Package, PackageError, export_package, package_tool_version
from vsr_models import WEIGHTS, create_model, load_checkpoint, pretrained
from vsr_models.base import VSRNetwork
from vsr_models.checkpoint import CheckpointError, sha256sum

from .executor import Backend

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def cache_dir() -> Path:
    """Where exported packages and engines are cached: ``$VSR_CACHE_DIR`` or ``~/.cache/vsr``."""
    if "VSR_CACHE_DIR" in os.environ:
        return Path(os.environ["VSR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vsr"


def resolve_package(model: str, log=print) -> Package:
    """A package folder as given, or the cached export of a zoo name (exported on first use)."""
    path = Path(model)
    if path.is_dir():
        return Package.open(path)
    if model in WEIGHTS:
        entry = WEIGHTS[model]
        # Keyed by the weights and by this tool's version: a new release re-exports.
        target = cache_dir() / "packages" / f"{model}-{entry.sha256[:12]}-vsr{package_tool_version()}"
        if (target / "manifest.json").is_file():
            return Package.open(target)
        log(f"exporting {model} to {target} (first use; later runs reuse it) ...")
        return export_package(pretrained(model), target, weights=model, checkpoints=[entry.path()])
    if path.exists():
        raise PackageError(f"{model} is not a model package folder; make one with vsr-export")
    raise PackageError(f"--model {model!r} is neither a package folder nor a known model; "
                       f"known: {', '.join(sorted(WEIGHTS))}")


def torch_model(package: Package) -> VSRNetwork:
    """The PyTorch network a package was exported from, with the same weights (sha256 checked)."""
    manifest = package.manifest
    if manifest.get("weights") in WEIGHTS:
        return pretrained(manifest["weights"])
    model = create_model(manifest["model"], **manifest.get("config", {}))
    if manifest.get("torch_weights"):
        from safetensors.torch import load_file

        from vsr_models.checkpoint import load_state_dict_strict

        load_state_dict_strict(model, load_file(str(package.root / manifest["torch_weights"])),
                               f"{package.root / manifest['torch_weights']}")
        return model
    for ckpt in manifest["provenance"].get("checkpoints", []):
        path = Path(ckpt["path"])
        if not path.is_file():
            raise CheckpointError(f"the PyTorch backend needs {path}, the checkpoint this package was exported "
                                  "from; it is gone: export again or use --backend onnxruntime")
        if sha256sum(path) != ckpt["sha256"]:
            raise CheckpointError(f"{path} changed since the package was exported (sha256 differs)")
        load_checkpoint(model, path)
    return model


def make_backend(kind: str, package: Package, device: str = "cpu", precision: str = "fp32",
                 threads: int = 0) -> Backend:
    """Build a backend. ``auto`` picks the fastest available: TensorRT engines (if TensorRT
    imports, a GPU is present and engines for this package, GPU and precision are cached), else
    ONNX Runtime with the CUDA provider when ``device`` is cuda and the provider exists, else ONNX
    Runtime on the CPU. TensorRT always runs on a GPU (``cuda:0`` unless ``device`` names one)."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")
    if kind == "auto":
        kind, device = _auto(package, device, precision)
    if kind == "torch":
        from .backends import TorchBackend

        dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
        return TorchBackend(torch_model(package), device=device, dtype=dtype)
    if kind == "onnxruntime":
        from .backends import OrtBackend

        return OrtBackend(package, device=device, precision=precision, threads=threads)
    from engines.tensorrt import TensorRTBackend

    return TensorRTBackend(package, device=_gpu(device), precision=precision)


def _gpu(device: str) -> str:
    return device if device.startswith("cuda") else "cuda"


def _auto(package: Package, device: str, precision: str) -> tuple[str, str]:
    """(backend, device) for ``--backend auto``; see :func:`make_backend`."""
    from engines.tensorrt import TensorRTUnavailable, find_engines, tensorrt_available

    if tensorrt_available():
        try:
            if find_engines(package, precision, _gpu(device)):
                return "tensorrt", _gpu(device)
        except TensorRTUnavailable:
            pass
    if device.startswith("cuda"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "onnxruntime", device
    return "onnxruntime", "cpu"
