"""Speed levers: backend options parsed from contenders, their parity on real frames, the profilers and FLOP counts
behind ``vsr-bench --profile``, and the device check's CPU dry run. The GPU paths run only on a GPU (``gpu``)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from runtime.backends import LeverError, make_backend, parse_levers
from runtime.backends.ort import OrtBackend, OrtOptionError, OrtOptions, session_options
from runtime.backends.static import StaticCalls
from runtime.backends.torch_eager import OptionError, PrecisionUnavailable, TorchOptions, check_options, native_bf16
from runtime.cli.bench import ContenderError, parse_contenders
from runtime.cli.measure import stage_flops, torch_op_profile
from runtime.devices import Device
from runtime.pipeline import upscale_clip
from runtime.samples import psnr
from tests.conftest import lr_clip

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """(2, 3, 16, 16) LR frames: a real crop of bikes.mp4 downscaled x4."""
    return lr_clip(2, 16, 16)[0]


@pytest.fixture(scope="module")
def reference(basicvsr_package, frames) -> np.ndarray:
    return upscale_clip(make_backend("torch", basicvsr_package), basicvsr_package, frames, (4, 4))


# ------------------------------------------------------------------ levers
def test_levers_parse_to_typed_option_values():
    assert parse_levers("torch", ["channels_last", "compile=flow/backward_step"]) == {
        "channels_last": True,
        "compile": frozenset({"flow", "backward_step"}),
    }
    assert parse_levers("torch", ["compile"]) == {"compile": frozenset({"all"})}
    assert parse_levers("onnxruntime", ["no_spinning", "optimization=basic", "arena=0"]) == {
        "spinning": False,
        "optimization": "basic",
        "arena": False,
    }
    assert parse_levers("onnxruntime", ["spinning"]) == {"spinning": True}
    [c] = parse_contenders("onnxruntime:fp16+prefer_nhwc")
    assert (c.label, c.kind, c.precision) == ("onnxruntime:fp16+prefer_nhwc", "onnxruntime", "fp16")
    assert c.levers == {"prefer_nhwc": True}


def test_onnxruntime_threads_sleep_unless_asked_to_spin():
    """Idle intra-op threads sleep by default (measured faster, see OrtOptions); +spinning restores ORT's own."""
    key = "session.intra_op.allow_spinning"
    assert session_options(OrtOptions(), "s").get_session_config_entry(key) == "0"
    assert session_options(OrtOptions(spinning=True), "s").get_session_config_entry(key) == "1"


def test_wrong_levers_and_contenders_name_the_fix(basicvsr_package):
    with pytest.raises(LeverError, match=r"torch has no lever 'spinning'; its levers: channels_last, cuda_graphs"):
        parse_levers("torch", ["spinning"])
    with pytest.raises(LeverError, match=r"'optimization' takes =VALUE \(one of disable, basic"):
        parse_levers("onnxruntime", ["optimization=fast"])
    with pytest.raises(LeverError, match="not auto"):
        make_backend("auto", basicvsr_package, levers={"channels_last": True})
    with pytest.raises(ContenderError, match="precision 'int8'; choose from fp32, fp16, bf16"):
        parse_contenders("torch:int8")
    with pytest.raises(ContenderError, match="backend 'tvm'"):
        parse_contenders("torch:fp32,tvm")


def test_options_the_device_cannot_honour_are_refused():
    with pytest.raises(OptionError, match="cuda_graphs needs --device cuda"):
        check_options(TorchOptions(cuda_graphs=True))
    with pytest.raises(OrtOptionError, match="use --device cuda"):
        OrtOptions(cuda_graphs=True)
    with pytest.raises(OrtOptionError, match="run bf16 with --backend torch"):
        OrtOptions(precision="bf16")


def test_bf16_runs_only_where_the_hardware_has_it(basicvsr_package, frames, reference):
    """BF16 on a CPU without AVX-512 BF16 or AMX is refused (emulated BF16 is slower than FP32); with
    it, the output stays within 30 dB of FP32 (BF16 keeps 8 bits of mantissa)."""
    if not native_bf16(Device()):
        with pytest.raises(PrecisionUnavailable, match="no BF16 arithmetic"):
            make_backend("torch", basicvsr_package, precision="bf16")
        return
    out = upscale_clip(make_backend("torch", basicvsr_package, precision="bf16"), basicvsr_package, frames, (4, 4))
    assert psnr(np.clip(out, 0, 1), np.clip(reference, 0, 1)) > 30


# ------------------------------------------------------------------ parity of the CPU levers
def test_channels_last_matches_the_reference(basicvsr_package, frames, reference):
    backend = make_backend("torch", basicvsr_package, levers={"channels_last": True})
    out = upscale_clip(backend, basicvsr_package, frames, (4, 4))
    assert np.abs(out - reference).max() <= 1e-4


@pytest.mark.slow
def test_torch_compile_on_the_cpu_matches_the_reference(basicvsr_package, frames, reference):
    """Every stage through torch.compile (Inductor's C++ code on the CPU; a minute or two of compiling)."""
    backend = make_backend("torch", basicvsr_package, levers=parse_levers("torch", ["compile"]))
    out = upscale_clip(backend, basicvsr_package, frames, (4, 4))
    assert np.abs(out - reference).max() <= 1e-4


def test_onnxruntime_levers_keep_parity(basicvsr_package, frames, reference):
    levers = parse_levers("onnxruntime", ["optimization=basic", "spinning", "arena=0"])
    out = upscale_clip(make_backend("onnxruntime", basicvsr_package, levers=levers), basicvsr_package, frames, (4, 4))
    assert np.abs(out - reference).max() <= 1e-4


def test_static_calls_copy_inputs_in_and_outputs_out():
    """StaticCalls' bookkeeping with a capture that records the call on the CPU (no CUDA graph involved):
    one capture per signature, each replay reads the current inputs, and the caller's outputs are copies."""
    captured = []

    def capture(stage, static_inputs):
        captured.append((stage, tuple(static_inputs["x"].shape)))
        static_out = {"y": torch.empty_like(static_inputs["x"])}
        return (lambda: torch.mul(static_inputs["x"], 2, out=static_out["y"])), static_out

    calls = StaticCalls(capture)
    first = calls.run("s", {"x": torch.ones(2)})
    second = calls.run("s", {"x": torch.full((2,), 3.0)})
    calls.run("s", {"x": torch.ones(3)})
    assert captured == [("s", (2,)), ("s", (3,))]
    assert first["y"].tolist() == [2.0, 2.0]
    assert second["y"].tolist() == [6.0, 6.0]


# ------------------------------------------------------------------ what --profile reads
def test_stage_flops_count_the_convolutions(basicvsr_package):
    """backward_step is a 3x3 convolution 67 -> 64 channels and 30 residual blocks of two 64 -> 64 ones."""
    h, w = 16, 16
    shapes = {"x": (1, 3, h, w), "flow": (1, 2, h, w), "h_next": (1, 64, h, w)}
    flops = stage_flops(basicvsr_package, {"backward_step": shapes})
    assert flops["backward_step"] == 2 * 9 * (67 * 64 + 60 * 64 * 64) * h * w


def test_torch_profile_times_ops_and_keeps_the_terminal_clean(capfd):
    """The profiler's native library writes "USDT: ... profiler_start/stop" to file descriptor 2 on
    every call; vsr-bench --profile profiles every stage call, so those lines are kept off the terminal."""
    per_op: dict[str, float] = {}
    a = torch.randn(256, 256)
    out = torch_op_profile(lambda: a @ a, Device(), per_op)
    assert torch.equal(out, a @ a)
    assert per_op.get("aten::mm", 0) > 0
    assert "profiler_st" not in capfd.readouterr().err


def test_onnxruntime_profile_times_each_op(basicvsr_package, frames, tmp_path):
    backend = OrtBackend(basicvsr_package, OrtOptions(profile=tmp_path / "profile"))
    upscale_clip(backend, basicvsr_package, frames, (4, 4))
    ops = backend.end_profiling()
    assert set(ops) == {"flow", "backward_step", "forward_step"}
    for per_op in ops.values():
        conv = sum(s for op, s in per_op.items() if "Conv" in op)
        assert conv > 0 and conv >= 0.5 * sum(per_op.values())


# ------------------------------------------------------------------ the device check
def test_device_check_dry_run_on_the_cpu(basicvsr_fp16_package, tmp_path):
    """``tests/device_check.sh --cpu`` runs every step at tiny sizes (IART's bench left out: exporting IART
    takes minutes); ``vsr-bench`` prints the measured peak, the % of it, the PSNR against the first
    contender and ``--profile``'s per-op tables, and the GPU-only contenders as not run, with the reason."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = ["bash", str(ROOT / "tests/device_check.sh"), "--cpu", "--basicvsr", str(basicvsr_fp16_package.root)]
    done = subprocess.run(
        [*cmd, "--iart", "none", "--work", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "device check finished" in out and "parity OK" in out
    assert re.search(r"basicvsr 16x16 -> 64x64, 2 frames, cpu: ", out)
    assert re.search(r"peak FP32: \d+ GFLOP/s \(ONNX Runtime FP32 MatMul 256\^3", out)
    assert "% of peak (whole run)" in out and "PSNR vs torch:fp32" in out and "speed-up vs torch:fp32" in out
    assert "torch:fp32+channels_last+cuda_graphs: not run: cuda_graphs needs --device cuda" in out
    assert "onnxruntime:fp16+cuda_graphs: not run: cuda_graphs and prefer_nhwc are options of the CUDA" in out
    assert "torch:fp32: where the time goes" in out and "aten::" in out
    assert "onnxruntime:fp32: where the time goes" in out and "Conv" in out
    assert "test_tiled_kernel_matches_the_reference_in_the_interpreter" in out


# ------------------------------------------------------------------ on a GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_torch_fp16_channels_last_and_cuda_graphs_on_the_gpu(basicvsr_package):
    """FP16 under autocast (warps FP32) stays above 50 dB of FP32 on real frames; CUDA graphs replay the
    same kernels (1e-3), one graph per stage for one frame size."""
    lr = lr_clip(4, 64, 96)[0]
    ref = upscale_clip(make_backend("torch", basicvsr_package, "cuda"), basicvsr_package, lr, (4, 4))
    fast = make_backend("torch", basicvsr_package, "cuda", "fp16", levers={"channels_last": True})
    half = upscale_clip(fast, basicvsr_package, lr, (4, 4))
    assert psnr(np.clip(half, 0, 1), np.clip(ref, 0, 1)) > 50
    graphs = make_backend(
        "torch", basicvsr_package, "cuda", "fp16", levers={"channels_last": True, "cuda_graphs": True}
    )
    replayed = upscale_clip(graphs, basicvsr_package, lr, (4, 4))
    assert np.abs(replayed - half).max() <= 1e-3
    assert len(graphs.graphs.entries) == len(basicvsr_package.stage_names())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_onnxruntime_cuda_provider_and_its_cuda_graphs(basicvsr_package):
    lr = lr_clip(3, 32, 32)[0]
    ref = upscale_clip(make_backend("onnxruntime", basicvsr_package), basicvsr_package, lr, (4, 4))
    for levers in ({}, {"cuda_graphs": True}):
        backend = make_backend("onnxruntime", basicvsr_package, "cuda", levers=levers)
        assert np.abs(upscale_clip(backend, basicvsr_package, lr, (4, 4)) - ref).max() <= 1e-4
