"""The PyTorch backend: a network's stages in eager mode, the reference every other backend meets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from export.format import Package
from vsr_models.base import VSRNetwork
from vsr_models.checkpoint import CheckpointError, load_checkpoint, load_state_dict_strict, sha256sum
from vsr_models.registry import all_weights, create_model, pretrained

from ..devices import Device, DeviceError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass(frozen=True, kw_only=True)
class TorchOptions:
    """Options of :class:`TorchBackend`.

    Attributes:
        device: where the network runs.
        precision: ``fp32``, or ``fp16`` (``model.half()``, what PyTorch users do today; the inputs
            and outputs a stage marks FP32 (flows) stay FP32 and warps sample in FP32). A speed
            baseline: less faithful than the FP16 graphs, whose coordinate math stays FP32 throughout.
    """

    device: Device = field(default_factory=Device)
    precision: str = "fp32"


def check_torch_device(device: Device) -> None:
    """Fail clearly if this PyTorch cannot use ``device``."""
    if not device.is_cuda:
        return
    if not torch.cuda.is_available():
        raise DeviceError(
            f"--device {device} with --backend torch needs a CUDA build of PyTorch and a GPU; this "
            f"PyTorch ({torch.__version__}) sees none: use --device cpu"
        )
    if device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")


class TorchBackend:
    """Runs a network's stages in PyTorch eager mode; values stay torch tensors on the device."""

    name = "torch"

    def __init__(self, model: VSRNetwork, options: TorchOptions | None = None) -> None:
        self.options = options or TorchOptions()
        check_torch_device(self.options.device)
        self.device = torch.device(str(self.options.device))
        self.dtype = DTYPES[self.options.precision]
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
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


def model_for_package(package: Package) -> VSRNetwork:
    """The PyTorch network a package was exported from, with the same weights (sha256 checked)."""
    manifest = package.manifest
    if manifest.get("weights") in all_weights():
        return pretrained(manifest["weights"])
    model = create_model(manifest["model"], **manifest.get("config", {}))
    if manifest.get("torch_weights"):
        from safetensors.torch import load_file

        path = package.root / manifest["torch_weights"]
        load_state_dict_strict(model, load_file(str(path)), str(path))
        return model
    for ckpt in manifest["provenance"].get("checkpoints", []):
        path = Path(ckpt["path"])
        if not path.is_file():
            raise CheckpointError(
                f"the PyTorch backend needs {path}, the checkpoint this package was exported "
                "from; it is gone: export again or use --backend onnxruntime"
            )
        if sha256sum(path) != ckpt["sha256"]:
            raise CheckpointError(f"{path} changed since the package was exported (sha256 differs)")
        load_checkpoint(model, path)
    return model
