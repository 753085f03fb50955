"""The PyTorch backend: a network's stages in eager mode (the reference every other backend meets), with the
levers: autocast FP16/BF16, channels-last, CUDA graphs per stage and input size (CUDA only), TF32 (CUDA only),
``torch.compile`` per stage (on the CPU too, as Inductor's C++ code; measured in the README's Speed)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from export.format import Package
from vsr_models.base import VSRNetwork
from vsr_models.checkpoint import CheckpointError, load_checkpoint, load_state_dict_strict, sha256sum
from vsr_models.errors import VSRError
from vsr_models.registry import all_weights, checked_settings, create_model, pretrained

from ..devices import BF16_CPU, Device, DeviceError, cpu_name
from .static import StaticCalls, cuda_graph_capture

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PrecisionUnavailable(VSRError, ValueError):
    """A precision this device cannot run natively (BF16 without AVX-512 BF16 or AMX, or on an older GPU)."""


class OptionError(VSRError, ValueError):
    """A backend option that does not fit the device or the network (CUDA graphs on the CPU, an unknown stage)."""


@dataclass(frozen=True, kw_only=True)
class TorchOptions:
    """Options of :class:`TorchBackend`.

    Attributes:
        device: where the network runs.
        precision: ``fp32``; ``fp16`` or ``bf16`` run the stages under ``torch.autocast`` with FP32
            weights: convolutions and matrix products in the low precision, normalisations,
            softmax and upsampling in FP32, and the warps (whose grids come from FP32 flows) in
            FP32, as the FP16 graphs keep them. ``bf16`` needs AVX-512 BF16 or AMX on the CPU.
        emulate_bf16: run ``bf16`` on a CPU without BF16 arithmetic (PyTorch emulates it, several times
            slower than FP32): for vsr-parity, which measures BF16's accuracy, not its speed.
        channels_last: convolution weights and frames in NHWC (Tensor Core and oneDNN friendly).
        cuda_graphs: capture each stage once per input signature as a CUDA graph and replay it
            (:class:`~runtime.backends.static.StaticCalls`); CUDA only.
        tf32: FP32 convolutions and matrix products on the GPU in TensorFloat-32 (10-bit mantissa,
            Ampere and later); CUDA only. Off, FP32 is FP32: PyTorch's own default lets cuDNN
            convolve in TF32, so the backend sets both switches around each of its stage calls.
        compile: stages run through ``torch.compile`` (``{"all"}`` for every stage); the others stay eager.
    """

    device: Device = field(default_factory=Device)
    precision: str = "fp32"
    emulate_bf16: bool = False
    channels_last: bool = False
    cuda_graphs: bool = False
    tf32: bool = False
    compile: frozenset[str] = frozenset()


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


def native_bf16(device: Device) -> bool:
    """Whether ``device`` computes BF16 in hardware (AVX-512 BF16 or AMX on the CPU; sm_80+ on a GPU)."""
    if device.is_cuda:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def check_options(options: TorchOptions) -> None:
    """Fail clearly on options the device cannot honour."""
    if options.precision not in DTYPES:
        raise OptionError(f"precision {options.precision!r}: the torch backend runs {', '.join(DTYPES)}")
    if options.precision == "bf16" and not native_bf16(options.device) and not options.emulate_bf16:
        if options.device.is_cuda:
            gpu = torch.cuda.get_device_name(options.device.index)
            what = f"this GPU ({gpu}) has no BF16 arithmetic (sm_80 or newer)"
        else:
            what = (
                f"this CPU ({cpu_name()}; PyTorch sees {torch.backends.cpu.get_cpu_capability()}) has no BF16 "
                f"arithmetic: no {BF16_CPU}"
            )
        raise PrecisionUnavailable(
            f"--precision bf16: {what}, so PyTorch would emulate BF16, slower than FP32: use fp32 (or fp16 graphs on "
            "ONNX Runtime); vsr-parity --backend torch --precision bf16 measures BF16's accuracy by emulation"
        )
    if options.cuda_graphs and not options.device.is_cuda:
        raise OptionError("cuda_graphs needs --device cuda: CUDA graphs do not exist on the CPU")
    if options.tf32 and not options.device.is_cuda:
        raise OptionError("tf32 needs --device cuda: TensorFloat-32 is a mode of NVIDIA GPUs (Ampere and later)")


@contextlib.contextmanager
def tf32_math(enabled: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matrix products in TF32 (``enabled``) or in full FP32 for the block;
    the previous switches are put back after it (they are process-wide)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


class TorchBackend:
    """Runs a network's stages in PyTorch (eager, or compiled where asked); values stay torch tensors on the device."""

    name = "torch"

    def __init__(self, model: VSRNetwork, options: TorchOptions | None = None) -> None:
        self.options = options or TorchOptions()
        check_torch_device(self.options.device)
        check_options(self.options)
        self.device = torch.device(str(self.options.device))
        self.autocast = self.options.precision != "fp32"
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.model = model.eval().to(device=self.device, dtype=torch.float32, memory_format=self.memory_format)
        self.stages = model.stages()
        compiled = set(self.stages) if "all" in self.options.compile else set(self.options.compile)
        unknown = compiled - set(self.stages)
        if unknown:
            raise OptionError(f"compile: no stage {sorted(unknown)} in {model.name} (stages: {', '.join(self.stages)})")
        self.modules = {
            name: torch.compile(spec.module, dynamic=False) if name in compiled else spec.module
            for name, spec in self.stages.items()
        }
        self.graphs = StaticCalls(cuda_graph_capture(self._call)) if self.options.cuda_graphs else None

    def upload(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)
        return tensor.contiguous(memory_format=self.memory_format)

    def download(self, handle: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(handle.detach().float().cpu().numpy())

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, device=self.device).contiguous(memory_format=self.memory_format)

    def shape(self, handle: torch.Tensor) -> tuple[int, ...]:
        return tuple(handle.shape)

    def run(self, stage: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fp32 = self.stages[stage].fp32
        feeds = {k: (v.float() if k in fp32 else v) for k, v in inputs.items()}
        return self.graphs.run(stage, feeds) if self.graphs is not None else self._call(stage, feeds)

    def _call(self, stage: str, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One stage call. Under autocast the outputs are cast back to FP32, as the FP16 graphs keep their
        inputs and outputs FP32: a recurrent state then has one dtype from its first call (on zeros) on,
        and a CUDA graph is captured once per stage and input size, not twice."""
        spec = self.stages[stage]
        dtype = DTYPES[self.options.precision]
        with (
            torch.inference_mode(),
            tf32_math(self.options.tf32) if self.device.type == "cuda" else contextlib.nullcontext(),
            torch.autocast(self.device.type, dtype=dtype, enabled=self.autocast, cache_enabled=False),
        ):
            out = self.modules[stage](*(feeds[name] for name in spec.inputs))
        out = (out,) if isinstance(out, torch.Tensor) else out
        return {k: (v.float() if v.is_floating_point() else v) for k, v in zip(spec.outputs, out)}


def model_for_package(package: Package) -> VSRNetwork:
    """The PyTorch network a package was exported from, with the same weights (sha256 checked); a copy
    of the network itself for a network that was not exported (:class:`runtime.resolve.Unexported`)."""
    network = getattr(package, "network", None)
    if isinstance(network, VSRNetwork):
        return copy.deepcopy(network)
    manifest = package.manifest
    if manifest.get("weights") in all_weights():
        return pretrained(manifest["weights"])
    settings = checked_settings(manifest["model"], manifest.get("config") or {}, f"package {package.root}")
    model = create_model(manifest["model"], **settings)
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
