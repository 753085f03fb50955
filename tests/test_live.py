"""Live mode: the schedule derived from the plan, its latency, its equality with its definition and
with the whole-clip run, and pipes through standard input and output.

Most schedule tests run the networks' real plans (BasicVSR, IART) on a toy backend whose stages are
cheap nonlinear mixes of their inputs: every output depends on every input, so a schedule that
reads a wrong frame, one too many or one too few changes the result. The real weights run where
the figure is about images.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import threading
import zlib
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from click.testing import CliRunner

from runtime.backends import OrtBackend
from runtime.cli.commands.parity import compare_live
from runtime.cli.parity import main as parity_main
from runtime.cli.run import main as run_main
from runtime.executor import run_plan
from runtime.live import LiveError, LivePlan, LiveScheduler, LiveUpscaler, live_upscaler_for
from runtime.pipeline import Upscaler
from runtime.samples import load_lr
from runtime.stream import run_stream
from runtime.video import InputError
from runtime.video.pipes import PipeInput, pipe_writer
from vsr_models import create_model, networks
from vsr_models.plan import Plan, SizeConstraints

from .conftest import clip_frames, lr_clip

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


class ToyBackend:
    """Stages as cheap numpy functions with the plan's shapes: each output channel is ``tanh`` of a
    fixed mix of every input's channel mean (plus a shift per channel), upsampled where the output is."""

    name = "toy"

    def __init__(self, plan: Plan) -> None:
        self.specs = {
            step.stage: {name: plan.tensors[seq] for name, seq in step.outputs.items()} for step in plan.steps
        }

    @staticmethod
    def _weight(stage: str, name: str) -> float:
        return 0.3 + 0.4 * (zlib.crc32(f"{stage}/{name}".encode()) % 1000) / 1000

    def upload(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=np.float32)

    def download(self, handle: np.ndarray) -> np.ndarray:
        return handle

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, np.float32)

    def shape(self, handle: np.ndarray) -> tuple[int, ...]:
        return handle.shape

    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mix = sum(self._weight(stage, name) * x.mean(axis=1) for name, x in sorted(inputs.items()))
        outputs = {}
        for name, spec in self.specs[stage].items():
            up = np.repeat(np.repeat(mix, spec.scale, axis=-2), spec.scale, axis=-1)
            shift = 0.2 * np.sin(np.arange(spec.channels, dtype=np.float32))[None, :, None, None]
            outputs[name] = np.tanh(up[:, None] + shift).astype(np.float32)
        return outputs


def basicvsr_plan() -> Plan:
    return create_model("basicvsr").plan()


def iart_plan() -> Plan:
    return create_model("iart", **networks()["iart"].quick.config).plan()


def whole(plan: Plan, backend, lr: np.ndarray) -> np.ndarray:
    return np.concatenate([backend.download(o) for o in run_plan(plan, backend, [backend.upload(f[None]) for f in lr])])


def live(plan: Plan, backend, lr: np.ndarray, latency: int, block: int = 1, **kw) -> tuple[np.ndarray, LiveUpscaler]:
    up = LiveUpscaler(backend, plan, 4, SizeConstraints(), latency=latency, block=block, **kw)
    return np.stack(list(up.stream(iter(lr)))), up


def basicvsr_by_definition(plan: Plan, backend, lr: np.ndarray, latency: int, block: int) -> np.ndarray:
    """BasicVSR live, written out by hand: for each block [s, s+B) the backward sweep of the clip
    lr[s : s+B+K] (the executor on that clip, from zeros at its end), then the forward steps of the
    block from the hidden state the previous block left."""
    steps = {step.outputs[next(iter(step.outputs))]: step for step in plan.steps}
    backward_only = Plan(steps=[steps["flow_bwd"], steps["hb"]], tensors=plan.tensors, output="hb")
    frames = [backend.upload(f[None]) for f in lr]
    _, _, h, w = lr.shape
    hf = backend.zeros(plan.tensors["hf"].shape(h, w))
    out = []
    for s in range(0, len(lr), block):
        hb = run_plan(backward_only, backend, frames[s : s + block + latency])
        for t in range(s, min(s + block, len(lr))):
            flow = (
                backend.run("flow", {"a": frames[t], "b": frames[t - 1]})["flow"]
                if t
                else backend.zeros(plan.tensors["flow_fwd"].shape(h, w))
            )
            result = backend.run("forward_step", {"x": frames[t], "flow": flow, "h_prev": hf, "hb": hb[t - s]})
            hf = result["h"]
            out.append(backend.download(result["hr"]))
    return np.concatenate(out)


# ---- what the plan says -------------------------------------------------------------------------


def test_the_plan_says_which_steps_are_sweeps():
    assert LivePlan.of(basicvsr_plan()).kinds == ("per-frame", "per-frame", "backward sweep", "forward sweep")
    iart = LivePlan.of(iart_plan())
    assert iart.kinds == (
        ("per-frame",) * 5 + ("backward sweep", "forward sweep", "backward sweep", "forward sweep") + ("per-frame",)
    )
    assert iart.keep["forward_1"] == 2 and iart.keep["backward_1"] == 0 and iart.keep["lr"] == 1


def test_a_clip_network_says_it_cannot_stream():
    plan = create_model("davsr", **networks()["davsr"].quick.config).plan()
    with pytest.raises(LiveError, match="clip network"):
        LivePlan.of(plan, "davsr")
    package = SimpleNamespace(manifest={"model": "davsr"}, clip_frames=12, plan=plan)
    with pytest.raises(LiveError, match="davsr is a clip network: it solves clips of 12 frames"):
        live_upscaler_for(package, ToyBackend(basicvsr_plan()), 4)


def test_a_sliding_window_network_says_its_look_ahead_is_its_own():
    plan = create_model("savsr", **networks()["savsr"].quick.config).plan()
    package = SimpleNamespace(manifest={"model": "savsr"}, clip_frames=None, plan=plan)
    with pytest.raises(LiveError, match=f"savsr is a sliding-window network: each output frame reads {plan.window}"):
        live_upscaler_for(package, ToyBackend(basicvsr_plan()), 4)


# ---- the schedule, on the real plans ------------------------------------------------------------


@pytest.mark.parametrize("make_plan", [basicvsr_plan, iart_plan], ids=["basicvsr", "iart"])
@pytest.mark.parametrize("block", [1, 3])
def test_look_ahead_past_the_stream_gives_the_whole_clip_run(make_plan, block):
    plan = make_plan()
    backend = ToyBackend(plan)
    lr, _ = lr_clip(9, 8, 8)
    reference = whole(plan, backend, lr)
    out, _ = live(plan, backend, lr, latency=len(lr), block=block)
    np.testing.assert_array_equal(out, reference)
    short, _ = live(plan, backend, lr, latency=1, block=block)
    assert np.abs(short - reference).max() > 1e-5  # a short look-ahead does change frames (float noise: 1e-7)


@pytest.mark.parametrize(("latency", "block"), [(0, 1), (2, 1), (3, 2), (1, 4)])
def test_basicvsr_live_equals_its_definition(latency, block):
    plan = basicvsr_plan()
    backend = ToyBackend(plan)
    lr, _ = lr_clip(11, 8, 8)
    out, _ = live(plan, backend, lr, latency, block)
    np.testing.assert_allclose(out, basicvsr_by_definition(plan, backend, lr, latency, block), atol=1e-6)


@pytest.mark.parametrize("make_plan", [basicvsr_plan, iart_plan], ids=["basicvsr", "iart"])
@pytest.mark.parametrize(("latency", "block"), [(2, 1), (1, 3)])
def test_an_output_frame_depends_on_exactly_k_plus_b_frames_ahead(make_plan, latency, block):
    """Output n (n the first of its block) sees input n + K + B - 1 but nothing after it: the later
    sweeps (IART's second pair) reach the look-ahead through the earlier ones."""
    plan = make_plan()
    backend = ToyBackend(plan)
    lr, _ = lr_clip(12, 8, 8)
    out, _ = live(plan, backend, lr, latency, block)
    n = block  # the first frame of the second block
    edge = n + latency + block - 1
    beyond = lr.copy()
    beyond[edge + 1 :] = 1 - beyond[edge + 1 :]
    np.testing.assert_array_equal(live(plan, backend, beyond, latency, block)[0][: n + 1], out[: n + 1])
    within = lr.copy()
    within[edge] = np.clip(within[edge] + 0.4, 0, 1)  # moves the frame's mean, which the toy stages see
    assert np.abs(live(plan, backend, within, latency, block)[0][n] - out[n]).max() > 1e-5


@pytest.mark.parametrize(("latency", "block"), [(8, 1), (8, 3), (0, 1)])
def test_output_n_is_written_before_input_n_plus_k_plus_b_is_read(latency, block):
    """Frames fed one by one through a reader that logs each read; the writer logs each write."""
    plan = basicvsr_plan()
    backend = ToyBackend(plan)
    lr, _ = lr_clip(20, 8, 8)
    events: list[tuple[str, int]] = []

    def reader():
        for i, frame in enumerate(lr):
            events.append(("read", i))
            yield frame

    up = LiveUpscaler(backend, plan, 4, SizeConstraints(), latency=latency, block=block)
    measured = run_stream(reader(), up.stream, lambda n, frame: events.append(("write", n)))
    reads = {i: k for k, (what, i) in enumerate(events) if what == "read"}
    writes = {n: k for k, (what, n) in enumerate(events) if what == "write"}
    assert sorted(writes) == list(range(len(lr)))
    for n, at in writes.items():
        if n + latency + block < len(lr):
            assert at < reads[n + latency + block], f"output {n} was written after input {n + latency + block} was read"
    assert max(measured.behind) == latency + block - 1 == up.frames_behind
    assert all(s >= 0 for s in measured.seconds())


def test_backward_sweeps_are_redone_over_the_look_ahead_and_the_rest_is_not():
    """IART, K = 3, B = 2, 12 frames: each window while the stream runs covers B + K frames for the
    first three sweeps; the first window that ends at the stream's real end covers the rest once
    (its values no longer depend on a window's end, so the last windows share them)."""
    plan = iart_plan()
    backend = ToyBackend(plan)
    count, latency, block = 12, 3, 2
    lr, _ = lr_clip(count, 8, 8)
    _, up = live(plan, backend, lr, latency, block)
    running = [s for s in range(0, count, block) if s + block + latency <= count]
    redone = len(running) * (block + latency) + count - (running[-1] + block)
    for stage in ("backward_1", "forward_1", "backward_2"):
        assert up.calls[stage] == redone == 24, stage
    for stage in ("forward_2", "upsample", "embed"):
        assert up.calls[stage] == count, stage
    assert up.calls["flow"] == 2 * (count - 1) and up.calls["compose"] == 2 * (count - 2)


def test_tiles_run_live_as_they_run_whole():
    plan = basicvsr_plan()
    backend = ToyBackend(plan)
    lr, _ = lr_clip(5, 16, 24)
    tiled = Upscaler(backend, plan, 4, SizeConstraints(), chunk=None, tile=10, tile_overlap=3)
    reference = np.stack(list(tiled.stream(iter(lr))))
    out, up = live(plan, backend, lr, latency=len(lr), tile=10, tile_overlap=3)
    assert up.tiles == 6
    np.testing.assert_array_equal(out, reference)


def test_a_frame_of_another_size_is_refused():
    plan = basicvsr_plan()
    up = LiveUpscaler(ToyBackend(plan), plan, 4, SizeConstraints(), latency=1)
    with pytest.raises(LiveError, match="frame 1 is 8x6"):
        list(up.stream(iter([np.zeros((3, 8, 8), np.float32), np.zeros((3, 8, 6), np.float32)])))


def test_scheduler_refuses_negative_latency():
    with pytest.raises(LiveError, match="latency must be >= 0"):
        LiveScheduler(LivePlan.of(basicvsr_plan()), ToyBackend(basicvsr_plan()), -1)


# ---- real weights --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort(basicvsr_package) -> OrtBackend:
    """The real BasicVSR package on ONNX Runtime, shared by this module's tests."""
    return OrtBackend(basicvsr_package)


@pytest.mark.slow
def test_real_basicvsr_live_equals_its_definition_and_the_whole_clip(basicvsr_package, ort):
    plan = basicvsr_package.plan
    lr, _ = lr_clip(4, 34, 34)
    out, _ = live(plan, ort, lr, latency=1)
    np.testing.assert_allclose(out, basicvsr_by_definition(plan, ort, lr, 1, 1), atol=1e-5)
    np.testing.assert_array_equal(live(plan, ort, lr, latency=3)[0], whole(plan, ort, lr))


@pytest.mark.slow
def test_parity_reports_the_live_error_and_fails_past_min_psnr(basicvsr_package):
    args = [str(basicvsr_package.root), "--frames", "5", "--crop", "34x34", "--latency", "1", "--block", "2"]
    result = CliRunner().invoke(parity_main, [*args, "--min-psnr", "200"])
    assert result.exit_code == 1, result.output
    mean, worst = map(
        float, re.search(r"mean ([\d.]+) dB, worst ([\d.]+) dB over the first 2 frames", result.output).groups()
    )
    assert 30 < worst <= mean < 200
    assert "at block edges" in result.output and "work per frame relative to the whole-clip run" in result.output
    assert "below 200 dB" in result.output


# ---- pipes -------------------------------------------------------------------------------------


def encode_stream(
    container_format: str, frames: np.ndarray, time_base: Fraction = Fraction(1, 25), live: bool = False
) -> bytes:
    """(T, 3, h, w) frames in [0, 1] as an H.264 stream in ``container_format``, made with PyAV
    (``live``: x264's zero-latency tuning, one packet per frame and no reordering, as a camera sends)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as out:
        options = {"crf": "12", **({"tune": "zerolatency"} if live else {})}
        stream = out.add_stream("libx264", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[-1], frames.shape[-2], "yuv420p"
        stream.time_base = time_base
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.rint(f.transpose(1, 2, 0) * 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(i / 25 / time_base), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def packet_chunks(data: bytes) -> list[bytes]:
    """A NUT stream cut where each video packet starts: chunk j ends packet j (chunk 0 holds the header)."""
    with av.open(io.BytesIO(data), "r") as container:
        starts = [p.pos for p in container.demux(container.streams.video[0]) if p.size]
    cuts = [0, *starts[1:], len(data)]
    return [data[a:b] for a, b in pairwise(cuts)]


class Trickle:
    """A pipe's reading end that holds chunk j until the reader asks past chunk j - 1; logs each release."""

    def __init__(self, chunks: list[bytes], log: list[tuple[str, int]]) -> None:
        self.chunks, self.log, self.released, self.buffer = chunks, log, 0, b""

    def read1(self, size: int = -1) -> bytes:
        if not self.buffer and self.released < len(self.chunks):
            self.log.append(("released", self.released))
            self.buffer, self.released = self.chunks[self.released], self.released + 1
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def frame_times(data: bytes) -> tuple[list[Fraction], tuple[int, int]]:
    """Presentation times (s) of the video frames in a stream, and the frame size (w, h)."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    return [frame.pts * stream.time_base for frame in frames], (frames[0].width, frames[0].height)


@pytest.mark.parametrize("container_format", ["nut", "mpegts"])
def test_a_pipe_round_trips_frames_and_timestamps(container_format):
    lr, _ = lr_clip(5, 16, 24)
    data = encode_stream(container_format, lr)
    source = PipeInput(io.BytesIO(data))
    assert (source.info.width, source.info.height, source.info.num_frames) == (24, 16, None)
    out = io.BytesIO()
    with pipe_writer(24, 16, source.info.fps, container_format="nut", time_base=source.info.time_base, stream=out) as w:
        for frame in source.frames():
            w.write(frame.rgb, pts=frame.pts)
    assert frame_times(out.getvalue())[0] == frame_times(data)[0]


def test_a_pipe_hands_over_each_frame_as_soon_as_its_packet_has_arrived():
    """No read-ahead: frame j comes out of the pipe reader before packet j + 1 is let through.

    FFmpeg's format probe always takes the stream's first 2 KiB at once; real 96x128 frames put
    that inside the first packet (header and key frame), as any camera-sized frame does.
    """
    frames = clip_frames("bikes.mp4", 25)[:, :, :96, :128]
    chunks = packet_chunks(encode_stream("nut", frames, live=True))
    assert len(chunks[0]) >= 2048
    events: list[tuple[str, int]] = []
    source = PipeInput(Trickle(chunks, events))
    assert source.info.fps == 25
    for frame in source.frames():
        events.append(("frame", frame.index))
    order = {event: k for k, event in enumerate(events)}
    assert [i for what, i in events if what == "frame"] == list(range(len(frames)))
    for j in range(len(frames) - 1):
        assert order[("frame", j)] < order[("released", j + 1)], f"frame {j} waited for packet {j + 1}"


class Recorder(io.RawIOBase):
    """A pipe's writing end that keeps what it was given."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def test_a_live_pipe_writer_puts_out_each_frame_as_soon_as_it_is_given():
    """After frame i is written, the bytes in the pipe decode to frames 0..i (no encoder delay)."""
    frames = clip_frames("bikes.mp4", 6)[:, :, :64, :96]
    pipe = Recorder()
    with pipe_writer(96, 64, Fraction(25), live=True, stream=pipe) as writer:
        for i, frame in enumerate(frames):
            writer.write(frame.transpose(1, 2, 0), pts=i)
            with av.open(io.BytesIO(bytes(pipe.data)), "r") as container:
                assert sum(1 for _ in container.decode(video=0)) == i + 1, f"frame {i} is not out yet"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "standard input is empty"),
        (b"not a video at all " * 200, "cannot read a video stream from standard input"),
    ],
    ids=["empty", "garbage"],
)
def test_a_bad_pipe_is_a_clear_error(data, message):
    with pytest.raises(InputError, match=message):
        PipeInput(io.BytesIO(data))


def shell_pipeline(tmp_path: Path, package, source_format: str, options: str, out_name: str) -> tuple[Path, Path, str]:
    """``cat in | vsr-run - -o - OPTIONS | cat > out`` in bash (pipefail), with PyAV-made input."""
    lr, _ = lr_clip(5, 24, 32)
    source = tmp_path / f"in.{source_format}"
    source.write_bytes(encode_stream(source_format, lr, Fraction(1, 1000)))
    out = tmp_path / out_name
    run = [sys.executable, "-c", "from runtime.cli.run import main; main()"]
    command = (
        f"set -o pipefail; cat {shlex.quote(str(source))} | {shlex.join(run)} - -o - {options} "
        f"--model {shlex.quote(str(package.root))} --backend onnxruntime | cat > {shlex.quote(str(out))}"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return source, out, result.stderr


def test_vsr_run_in_a_shell_pipeline_keeps_frame_count_and_timestamps(tmp_path, basicvsr_package):
    """PyAV-made NUT | vsr-run - -o - --latency 2 --format mpegts | cat > out.ts"""
    source, out, stderr = shell_pipeline(tmp_path, basicvsr_package, "nut", "--latency 2 --format mpegts", "out.ts")
    times, size = frame_times(out.read_bytes())
    assert size == (128, 96)
    assert times == frame_times(source.read_bytes())[0]
    assert "latency: each output frame was written at most 2 input frames after its own" in stderr


def vsr_run_command(package, *options: str) -> tuple[list[str], dict[str, str]]:
    """vsr-run from this worktree as a child process: its command line and environment."""
    run = [sys.executable, "-c", "from runtime.cli.run import main; main()", *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return [*run, "--model", str(package.root), "--backend", "onnxruntime"], env


@pytest.mark.slow
def test_a_pipe_fed_frame_by_frame_gets_output_n_before_input_n_plus_8_plus_b_exists(basicvsr_package):
    """vsr-run - -o - --latency 8 --block 2 as a child process on real OS pipes, fed one H.264
    packet at a time: packet j is written only once output frame j - 10 has come out of the child's
    standard output (read and decoded here), so the stream gets through only if every output frame
    n leaves vsr-run before input frame n + 8 + B even exists. Real frames, real weights."""
    latency, block = 8, 2
    frames = clip_frames("bikes.mp4", 16)[:, :, 100:164, 200:296]
    chunks = packet_chunks(encode_stream("nut", frames, live=True))
    command, env = vsr_run_command(basicvsr_package, "-", "-o", "-", "--latency", str(latency), "--block", str(block))
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    arrived: list[int] = []  # per output frame: the input packets written when it came out
    written, failures, stderr = [0], [], []
    condition = threading.Condition()

    def receive() -> None:
        try:
            for _ in PipeInput(child.stdout, "vsr-run's standard output").frames():
                with condition:
                    arrived.append(written[0])
                    condition.notify_all()
        except Exception as e:  # handed to the test thread
            failures.append(e)
        with condition:
            condition.notify_all()

    threads = [threading.Thread(target=receive), threading.Thread(target=lambda: stderr.append(child.stderr.read()))]
    for thread in threads:
        thread.start()
    try:
        for j, chunk in enumerate(chunks):
            n = j - latency - block
            with condition:
                condition.wait_for(lambda n=n: len(arrived) > n or failures or child.poll() is not None, timeout=300)
                assert len(arrived) > n, f"output frame {n} had not come out before input frame {j} was sent"
            child.stdin.write(chunk)
            child.stdin.flush()
            with condition:
                written[0] += 1
        child.stdin.close()
        child.wait(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
        for thread in threads:
            thread.join(timeout=60)
    assert child.returncode == 0 and not failures, (failures, stderr)
    assert len(arrived) == len(frames)
    assert all(at <= n + latency + block for n, at in enumerate(arrived[: len(frames) - latency - block]))


@pytest.mark.slow
def test_mpegts_in_nut_out_in_blocks_keeps_frame_count_and_timestamps(tmp_path, basicvsr_package):
    source, out, stderr = shell_pipeline(tmp_path, basicvsr_package, "mpegts", "--latency 0 --block 2", "out.nut")
    assert frame_times(out.read_bytes())[0] == frame_times(source.read_bytes())[0]
    assert "at most 1 input frames after its own" in stderr


@pytest.mark.slow
def test_real_basicvsr_writes_output_n_before_reading_input_n_plus_8_plus_b(basicvsr_package, ort):
    lr, _ = lr_clip(12, 34, 34)
    for block in (1, 2):
        events: list[tuple[str, int]] = []
        log = events.append

        def reader(log=log):
            for i, frame in enumerate(lr):
                log(("read", i))
                yield frame

        up = live_upscaler_for(basicvsr_package, ort, 8, block)
        run_stream(reader(), up.stream, lambda n, frame, log=log: log(("write", n)))
        order = {event: k for k, event in enumerate(events)}
        for n in range(len(lr) - 8 - block):
            assert order[("write", n)] < order[("read", n + 8 + block)], (block, n)


def test_run_refuses_options_that_mean_nothing(basicvsr_package, tmp_path):
    runner = CliRunner()
    args = ["-", "-o", str(tmp_path / "x.mp4"), "--model", str(basicvsr_package.root)]
    result = runner.invoke(run_main, [*args, "--block", "2"])
    assert result.exit_code == 2 and "give --latency K with it" in result.output
    result = runner.invoke(run_main, [*args, "--format", "nut"])
    assert result.exit_code == 2 and "use it with -o -" in result.output
    result = runner.invoke(run_main, [*args, "--latency", "2", "--chunk", "10"])
    assert result.exit_code == 2 and "--latency replaces them" in result.output
    result = runner.invoke(run_main, [*args, "--latency", "2", "--resume", "--workers", "2"])
    assert result.exit_code == 2 and "--resume, --workers: a live run is one stream" in result.output
    result = runner.invoke(run_main, [*args, "--latency", "2"], input=b"")
    assert result.exit_code == 1 and "standard input is empty" in result.output
    assert not (tmp_path / "x.mp4").exists()


# ---- slow: the README's figures -------------------------------------------------------------------


def live_section() -> str:
    return README.read_text().split("## Live video", 1)[1].split("\n## ", 1)[0]


def readme_live_table() -> dict[tuple[int, int], tuple[float, float, float]]:
    """(K, B) -> (mean PSNR, worst PSNR, work per frame) from the README's Live video table."""
    rows = re.findall(
        r"^\| (\d+) \| (\d+) \| [^|]+\| ([\d.]+) \| ([\d.]+) \| \d+ \| ([\d.]+)x \|", live_section(), re.M
    )
    return {(int(k), int(b)): (float(mean), float(worst), float(work)) for k, b, mean, worst, work in rows}


@pytest.mark.slow
def test_more_look_ahead_is_never_worse_and_the_readme_live_table_holds(basicvsr_package, ort):
    """The README's clip: bikes.mp4 downscaled x4, centre 64x96, first 40 frames, on ONNX Runtime. Every row
    (the B = 4 row too): mean and worst PSNR within 0.05 dB either way, work per frame to its 2 decimals;
    the B = 4 row's block-edge figures (last and first frame of a block) within 0.05 dB."""
    table = readme_live_table()
    assert sorted(table) == [(0, 1), (2, 1), (4, 1), (4, 4), (8, 1), (16, 1)]
    lr = load_lr(None, 40, (64, 96))
    results = {kb: compare_live(basicvsr_package, ort, lr, *kb) for kb in sorted(table)}
    single = [kb for kb in sorted(table) if kb[1] == 1]
    means = [results[kb].mean for kb in single]
    worsts = [results[kb].worst for kb in single]
    assert means == sorted(means), f"mean PSNR by look-ahead: {means}"
    assert worsts == sorted(worsts), f"worst PSNR by look-ahead: {worsts}"
    for kb, (mean, worst, work) in table.items():
        got = results[kb]
        print(f"K={kb[0]} B={kb[1]}: mean {got.mean:.2f} worst {got.worst:.2f} dB, work {got.work:.2f}x")
        assert abs(got.mean - mean) < 0.05 and abs(got.worst - worst) < 0.05, (kb, got.mean, got.worst)
        assert abs(got.work - work) <= 0.005, (kb, got.work)
    edges = r"give ([\d.]+) dB at each block's last frame .* and ([\d.]+) dB at\s+its first"
    last, first = map(float, re.search(edges, live_section(), re.S).groups())
    blocks = results[(4, 4)]
    print(f"K=4 B=4: block's last frame {blocks.at_position(3):.2f} dB, first {blocks.at_position(0):.2f} dB")
    assert abs(blocks.at_position(3) - last) < 0.05 and abs(blocks.at_position(0) - first) < 0.05
