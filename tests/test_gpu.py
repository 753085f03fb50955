"""On a CUDA GPU: the PyTorch backend (FP32 parity, FP16), ONNX Runtime's CUDA provider, DeformConv,
IART on the GPU, and TensorRT's switch between engine sets built for different frame sizes.

Run with ``pytest -m "gpu or tensorrt" -rP tests/test_gpu.py`` (``-rP`` keeps the figures the tests
print; tests/device_check.sh also writes them into its summary) under whatever CUDA build of PyTorch the
machine has (nothing here needs the CPU build's pins); each test skips with its reason where the GPU,
onnxruntime-gpu, torchvision or TensorRT is absent. FP32 is FP32 here: TF32 is off around every FP32
comparison (the PyTorch backend sets it per stage call; the DeformConv tests set it themselves).
IART's Triton kernel against its reference on the GPU is in tests/test_implicit_warp_plugin.py.

None of these has run: no machine of this project has had a GPU. The limits are the CPU suite's
(the FP32 parity bound of ONNX Runtime against PyTorch, 1e-4; 50 dB for FP16, vsr-parity's default);
replace them with measured figures and margins after the first run on a GPU.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.format import Package
from runtime.backends import OrtBackend, OrtOptions, TorchBackend, TorchOptions
from runtime.backends.torch_eager import tf32_math
from runtime.devices import Device
from runtime.pipeline import upscale_clip
from runtime.samples import psnr
from tests.conftest import real_lr
from vsr_models.ops.deform_conv import deform_conv2d_reference

CUDA = torch.cuda.is_available()
ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and a CUDA build of PyTorch")]
needs_ort_cuda = pytest.mark.skipif(
    not ORT_CUDA, reason="needs onnxruntime-gpu (this onnxruntime has no CUDAExecutionProvider)"
)


def _forward(model, lr: np.ndarray) -> np.ndarray:
    """The whole-clip forward in FP32 on the CPU: the reference."""
    with torch.inference_mode():
        return model(torch.from_numpy(lr)[None])[0].numpy()


def _on_cuda(model, precision: str = "fp32") -> TorchBackend:
    """A PyTorch backend on the GPU for a copy of ``model`` (the backend moves the network it gets)."""
    return TorchBackend(copy.deepcopy(model), TorchOptions(device=Device("cuda"), precision=precision))


class _PlanOf:
    """What :func:`upscale_clip` reads from a package, from an in-memory network."""

    def __init__(self, model) -> None:
        self.plan, self.scale, self.constraints = model.plan(), model.scale, model.constraints


def _per_frame_psnr(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.array([psnr(out[i], ref[i]) for i in range(len(ref))])


# ---------------------------------------------------------------- the PyTorch backend
def test_torch_backend_fp32_on_cuda_equals_the_cpu_forward(basicvsr):
    """The executor on CUDA against the CPU's whole-clip forward, 6 real frames. cuDNN's default TF32
    convolutions (Ampere and later) would miss this bound by an order of magnitude: FP32 must be FP32."""
    lr = real_lr(6, (40, 56))
    ref = _forward(basicvsr, lr)
    out = upscale_clip(_on_cuda(basicvsr), _PlanOf(basicvsr), lr)
    errors = np.abs(out - ref).reshape(len(ref), -1).max(axis=1)
    print("torch CUDA fp32 vs CPU: max abs per frame", errors)
    assert errors.max() <= 1e-4


def test_torch_backend_fp16_on_cuda(basicvsr):
    """``model.half()`` on CUDA (warps sampled in FP32) against the CPU FP32 forward, per frame."""
    lr = real_lr(6, (40, 56))
    ref = _forward(basicvsr, lr)
    per_frame = _per_frame_psnr(upscale_clip(_on_cuda(basicvsr, "fp16"), _PlanOf(basicvsr), lr), ref)
    print("torch CUDA fp16 vs CPU fp32: PSNR per frame", per_frame.round(2))
    assert per_frame.min() >= 50.0


def test_iart_on_cuda_equals_the_cpu_forward():
    """IART (a small configuration, random weights) through the executor on CUDA: the Swin windows,
    the implicit warp's PyTorch reference and the four sweeps against the CPU forward."""
    from vsr_models import create_model

    torch.manual_seed(0)
    model = create_model("iart", embed_dim=32, depths=[2], num_heads=[2])
    lr = real_lr(3, (64, 64))
    ref = _forward(model, lr)
    out = upscale_clip(_on_cuda(model), _PlanOf(model), lr)
    print("IART torch CUDA fp32 vs CPU: max abs", np.abs(out - ref).max())
    assert np.abs(out - ref).max() <= 1e-4


# ---------------------------------------------------------------- ONNX Runtime's CUDA provider
@needs_ort_cuda
def test_onnxruntime_cuda_fp32_equals_the_cpu_provider(tiny_package: Package):
    lr = real_lr(4, (36, 40))
    ref = upscale_clip(OrtBackend(tiny_package), tiny_package, lr)
    backend = OrtBackend(tiny_package, OrtOptions(device=Device("cuda")))
    assert backend.sessions["flow"].get_providers()[0] == "CUDAExecutionProvider"
    out = upscale_clip(backend, tiny_package, lr)
    assert np.abs(out - ref).max() <= 1e-4


@needs_ort_cuda
def test_onnxruntime_cuda_fp16_graphs_on_real_frames(basicvsr_fp16_package: Package):
    """The FP16 graphs where they really run in FP16 (unlike on the CPU provider), REDS4 weights,
    against the CPU provider's FP32 graphs, per frame."""
    lr = real_lr(6, (40, 56))
    ref = upscale_clip(OrtBackend(basicvsr_fp16_package), basicvsr_fp16_package, lr)
    backend = OrtBackend(basicvsr_fp16_package, OrtOptions(device=Device("cuda"), precision="fp16"))
    per_frame = _per_frame_psnr(upscale_clip(backend, basicvsr_fp16_package, lr), ref)
    print("onnxruntime CUDA fp16 vs CPU fp32: PSNR per frame", per_frame.round(2))
    assert per_frame.min() >= 50.0


# ---------------------------------------------------------------- DeformConv
def _deform_case(device: str, seed: int = 3) -> dict[str, torch.Tensor]:
    """BasicVSR++'s alignment shape: 64 -> 64 channels, 16 offset groups, offsets up to ~10 px."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w, groups = 1, 64, 24, 32, 16
    case = {
        "x": torch.randn(n, c, h, w, generator=gen),
        "offset": 4 * torch.randn(n, groups * 18, h, w, generator=gen),
        "weight": torch.randn(c, c, 3, 3, generator=gen) / 24,
        "bias": torch.randn(c, generator=gen),
        "mask": torch.rand(n, groups * 9, h, w, generator=gen),
    }
    return {k: v.to(device) for k, v in case.items()}


def _ours(case: dict[str, torch.Tensor]) -> torch.Tensor:
    return deform_conv2d_reference(
        case["x"], case["offset"], case["weight"], case["bias"], mask=case["mask"], padding=(1, 1)
    )


def test_deform_conv_reference_on_cuda_equals_cpu():
    cpu = _ours(_deform_case("cpu"))
    with tf32_math(False):  # the reference's matrix products in FP32, whatever the process-wide switches say
        gpu = _ours(_deform_case("cuda")).cpu()
    print("DeformConv reference CUDA vs CPU: max abs", (gpu - cpu).abs().max().item())
    assert (gpu - cpu).abs().max().item() <= 1e-4


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="needs torchvision (the original's op)")
def test_deform_conv_reference_equals_torchvision_on_cuda():
    """The original DAVSR calls torchvision.ops.deform_conv2d (modulated, DCNv2) on the GPU."""
    from torchvision.ops import deform_conv2d

    case = _deform_case("cuda")
    with tf32_math(False):
        ours = _ours(case)
        x, offset, weight, bias, mask = (case[k] for k in ("x", "offset", "weight", "bias", "mask"))
        theirs = deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    print("DeformConv reference vs torchvision on CUDA: max abs", (ours - theirs).abs().max().item())
    assert (ours - theirs).abs().max().item() <= 1e-4


# ---------------------------------------------------------------- TensorRT: one engine set per size range
def _tensorrt_missing() -> str | None:
    from engines.tensorrt import TensorRTUnavailable, import_polygraphy, import_tensorrt

    try:
        import_tensorrt()
        import_polygraphy()
    except TensorRTUnavailable as exc:
        return str(exc).split(":")[0]
    return None


TENSORRT_MISSING = _tensorrt_missing()


@pytest.mark.tensorrt
@pytest.mark.skipif(TENSORRT_MISSING is not None, reason=f"needs TensorRT and Polygraphy: {TENSORRT_MISSING}")
def test_tensorrt_switches_engine_sets_with_the_frame_size(tiny_package: Package, tmp_path: Path):
    """Engines built for small and for larger frames: the backend takes the tightest set covering each
    frame size, switches when the size leaves its range, and matches ONNX Runtime's CPU provider."""
    from engines.cache import EngineCache, Profile
    from engines.tensorrt import build_engines
    from runtime.backends import TensorRTBackend, TensorRTOptions

    cache = EngineCache(tmp_path / "engines")
    small = Profile((33, 33), (40, 48), (48, 64))
    large = Profile((33, 33), (64, 96), (96, 128))
    for profile in (small, large):
        build_engines(tiny_package, "fp32", profile, cache=cache, workspace_gb=1, log=print)
    backend = TensorRTBackend(tiny_package, TensorRTOptions(precision="fp32", cache=cache))
    seen = []
    for size in [(40, 48), (64, 112), (36, 40)]:  # LR sizes (bikes.mp4 / 4 is 68x160)
        lr = real_lr(3, size)
        ref = upscale_clip(OrtBackend(tiny_package), tiny_package, lr)
        out = upscale_clip(backend, tiny_package, lr)
        assert np.abs(out - ref).max() <= 1e-3, size  # FP32 engines are built without TF32
        seen.append(backend.current.key.profile)
    assert seen == [small, large, large]  # the set in use is kept while it covers the frames
