"""The command-line tools end to end, as a user runs them, including bad input."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from rich.table import Table

import runtime.options
from export.atomic import PARTIAL_MARK
from runtime.cli.commands.tables import print_table
from runtime.cli.export import main as export_main
from runtime.cli.parity import main as parity_main
from runtime.cli.run import main as run_main
from runtime.devices import DeviceError
from runtime.video import probe, read_frames
from tests.conftest import in_zoo_cache


def _short_clip(src: Path, out: Path, frames: int = 4, crop=(0, 0, 128, 96)) -> Path:
    """A few real frames of ``src`` re-encoded losslessly, cropped to keep the test quick."""
    x0, y0, w, h = crop
    with av.open(str(src)) as inp, av.open(str(out), "w") as outc:
        stream = outc.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == frames:
                break
            rgb = frame.to_ndarray(format="rgb24")[y0 : y0 + h, x0 : x0 + w]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                outc.mux(packet)
        for packet in stream.encode():
            outc.mux(packet)
    return out


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, sample_video) -> Path:
    return _short_clip(sample_video, tmp_path_factory.mktemp("clips") / "short.mp4", crop=(200, 60, 48, 40))


def _ok(result) -> None:
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_run_upscales_a_video_with_onnxruntime(tmp_path, short_clip, basicvsr_package):
    out = tmp_path / "up.mp4"
    result = CliRunner().invoke(
        run_main,
        [
            str(short_clip),
            "-o",
            str(out),
            "--model",
            str(basicvsr_package.root),
            "--backend",
            "onnxruntime",
            "--crf",
            "0",
        ],
    )
    _ok(result)
    assert re.search(r"wrote .*up\.mp4: 4 frames, 160x192, [\d.]+ frames/s", result.output)
    info, src = probe(out), probe(short_clip)
    assert (info.width, info.height, info.num_frames) == (192, 160, 4)
    assert info.fps == src.fps
    assert not list(tmp_path.glob(".*partial*"))


def test_run_writes_png_frames_and_torch_backend_agrees(tmp_path, short_clip, basicvsr_package):
    outs = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / backend
        _ok(
            CliRunner().invoke(
                run_main, [str(short_clip), "-o", str(out), "--model", str(basicvsr_package.root), "--backend", backend]
            )
        )
        outs[backend] = np.stack([f.rgb for f in read_frames(out)])
    assert outs["torch"].shape == (4, 160, 192, 3)
    # both are quantised to 8 bits: at most one level apart
    assert np.abs(outs["torch"] - outs["onnxruntime"]).max() <= 1 / 255 + 1e-6


def _staged(folder: Path) -> list[str]:
    """Staged outputs (``.name.partial-XXXX``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARK in p.name)


def test_run_refuses_to_overwrite_and_leaves_no_partial_file(tmp_path, short_clip, basicvsr_package):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"user data")
    result = CliRunner().invoke(run_main, [str(short_clip), "-o", str(out), "--model", str(basicvsr_package.root)])
    assert result.exit_code != 0 and "--overwrite" in result.output
    assert out.read_bytes() == b"user data"
    assert [p.name for p in tmp_path.iterdir()] == ["exists.mp4"] and _staged(tmp_path) == []


class _FailsMidRun:
    """The backend of the run, failing at its ``fail_at``-th stage call as a device running out of
    memory would (a user error, VSRError), after some frames were written."""

    def __init__(self, backend, fail_at: int) -> None:
        self.backend, self.fail_at, self.calls = backend, fail_at, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def run(self, stage, inputs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise DeviceError("out of device memory (stand-in)")
        return self.backend.run(stage, inputs)


@pytest.mark.parametrize("output", ["out.mp4", "frames"])
def test_a_run_failing_mid_way_leaves_no_partial_file_and_the_old_output(
    tmp_path, short_clip, tiny_package, monkeypatch, output
):
    """Windows of one frame, so that two frames are written when the fifth stage call fails: the
    staged file (or folder) is removed and the output being replaced is kept as it was."""
    made, real = [], runtime.options.make_backend

    def failing_backend(*args, **kwargs):
        made.append(_FailsMidRun(real(*args, **kwargs), fail_at=5))
        return made[-1]

    monkeypatch.setattr(runtime.options, "make_backend", failing_backend)  # every run builds its backend there
    out = tmp_path / output
    if output == "frames":
        out.mkdir()
        (out / "00000000.png").write_bytes(b"an older frame")
    else:
        out.write_bytes(b"an older video")
    before = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    args = [str(short_clip), "-o", str(out), "--model", str(tiny_package.root), "--overwrite"]
    options = ["--chunk", "1", "--overlap", "0", "--threads", "1", "--retries", "0"]  # no second try
    result = CliRunner().invoke(run_main, [*args, *options])
    assert result.exit_code == 1 and "Error: out of device memory (stand-in)" in result.output, result.output
    assert made and made[0].calls == 5
    assert {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert _staged(tmp_path) == []


@pytest.mark.parametrize("case", ["missing", "not_video", "bad_dir"])
def test_run_bad_input_is_a_clear_error(tmp_path, short_clip, basicvsr_package, case):
    src, out = short_clip, tmp_path / "o.mp4"
    if case == "missing":
        src = tmp_path / "nope.mp4"
    elif case == "not_video":
        src = tmp_path / "text.mp4"
        src.write_text("this is not a video\n")
    else:
        blocker = tmp_path / "file.txt"
        blocker.write_text("x")
        out = blocker / "o.mp4"
    result = CliRunner().invoke(run_main, [str(src), "-o", str(out), "--model", str(basicvsr_package.root)])
    assert result.exit_code != 0
    assert "Error:" in result.output and "Traceback" not in result.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"missing": [], "not_video": ["text.mp4"], "bad_dir": ["file.txt"]}[case]
    )


@pytest.mark.parametrize("where", ["file", "pipe"])
def test_run_refuses_a_codec_the_container_cannot_carry_before_any_export(tmp_path, short_clip, monkeypatch, where):
    """AV1 in MPEG-TS: one line, before the network is exported into the (empty) cache or loaded."""
    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    out = ["-o", str(tmp_path / "o.ts")] if where == "file" else ["-o", "-", "--format", "mpegts"]
    result = CliRunner().invoke(run_main, [str(short_clip), *out, "--codec", "libsvtav1"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "MPEG-TS has no stream type for libsvtav1 (av1)" in result.output
    assert "exporting" not in result.output.lower() and not (tmp_path / "cache").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_run_unknown_model_names_the_known_ones(tmp_path, short_clip):
    result = CliRunner().invoke(run_main, [str(short_clip), "-o", str(tmp_path / "o.mp4"), "--model", "nosuch"])
    assert result.exit_code != 0 and "basicvsr" in result.output


def test_parity_passes_on_the_exported_package(basicvsr_package):
    result = CliRunner().invoke(parity_main, [str(basicvsr_package.root), "--frames", "4", "--crop", "36x40"])
    _ok(result)
    worst = float(re.search(r"max abs error ([\d.e+-]+)", result.output).group(1))
    assert worst <= 1e-4 and "parity OK" in result.output


def test_export_refuses_existing_output_and_unknown_model(tmp_path):
    (tmp_path / "pkg").mkdir()
    result = CliRunner().invoke(export_main, ["basicvsr", "-o", str(tmp_path / "pkg")])
    assert result.exit_code != 0 and "--overwrite" in result.output
    result = CliRunner().invoke(export_main, ["nosuch", "-o", str(tmp_path / "x")])
    assert result.exit_code != 0 and "known:" in result.output


def test_demo_upscales_the_sample_clip_and_beats_bicubic(tmp_path, monkeypatch, basicvsr_package):
    """The README's first command, on 3 frames, with the zoo name resolved through the cache to the
    package found there (nothing exported)."""
    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    in_zoo_cache(basicvsr_package)
    out = tmp_path / "demo.mp4"
    result = CliRunner().invoke(run_main, ["--demo", "-o", str(out), "--frames", "3"])
    _ok(result)
    assert "export" not in result.output, result.output
    gain = float(re.search(r"gain ([+-][\d.]+) dB", result.output).group(1))
    assert gain >= 3.0 and probe(out).num_frames == 3


@pytest.mark.slow
def test_a_zoo_name_is_exported_into_an_empty_cache_on_first_use_and_reused(tmp_path, monkeypatch):
    """The README's "exported into the cache on first use": ``vsr-run --demo`` (the zoo's basicvsr) with an
    empty cache exports the REDS4 package into it; a second run reuses it without exporting again."""
    from export.format import Package, cache_dir, tool_version
    from vsr_models import get_weights

    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    cached = cache_dir() / "packages" / f"basicvsr-{get_weights('basicvsr').sha256[:12]}-vsr{tool_version()}"
    assert not (tmp_path / "cache").exists()
    first = CliRunner().invoke(run_main, ["--demo", "-o", str(tmp_path / "a.mp4"), "--frames", "2"])
    _ok(first)
    assert f"exporting basicvsr to {cached} (first use; later runs reuse it)" in first.output
    package = Package.open(cached)
    assert package.model == "basicvsr" and package.manifest["weights"] == "basicvsr"
    second = CliRunner().invoke(run_main, ["--demo", "-o", str(tmp_path / "b.mp4"), "--frames", "2"])
    _ok(second)
    assert "exporting" not in second.output and probe(tmp_path / "b.mp4").num_frames == 2


@pytest.mark.parametrize("name", ["basicvsr-vimeo-bi", "basicvsr-vimeo-bd"])
def test_a_vimeo_zoo_name_resolves_to_its_own_weights(tmp_path, monkeypatch, name):
    """``--model basicvsr-vimeo-bi/bd`` (resolved by ``resolve_package``, as vsr-run, vsr-parity and vsr-bench
    do): the network handed to the export carries exactly that file's weights (and not the other releases'),
    into a cache entry named after it and its sha256, with the name recorded as the package's weights. The
    export itself is replaced by a recorder (the real one is the slow zoo test's, for the default name)."""
    import torch

    import runtime.resolve
    from export.format import cache_dir, tool_version
    from vsr_models import get_weights

    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    exported = []

    def record(model, target, **kw):
        exported.append((model, target, kw))
        raise SystemExit("recorded")

    monkeypatch.setattr(runtime.resolve, "export_package", record)
    with pytest.raises(SystemExit, match="recorded"):
        runtime.resolve.resolve_package(name, log=lambda line: None)
    [(model, target, kw)] = exported
    entry = get_weights(name)
    assert target == cache_dir() / "packages" / f"{name}-{entry.sha256[:12]}-vsr{tool_version()}"
    assert kw["weights"] == name and kw["checkpoints"] == [entry.path()]
    state = model.state_dict()
    for other in ("basicvsr", "basicvsr-vimeo-bi", "basicvsr-vimeo-bd"):
        params = torch.load(get_weights(other).path(), weights_only=True)["params"]
        same = all(torch.equal(state[k], v) for k, v in params.items())
        assert same == (other == name), other  # the three releases differ, so this tells them apart


def test_a_damaged_cached_export_is_exported_again(tmp_path, monkeypatch, basicvsr_package):
    """A zoo name whose cached package was damaged (a truncated graph) is re-exported, not reported
    as the user's broken package."""
    import shutil

    import runtime.resolve
    from export.format import Package

    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    cached = in_zoo_cache(basicvsr_package)
    assert runtime.resolve.resolve_package("basicvsr", log=pytest.fail).root == cached  # sound: used as it is
    graph = cached / "fp32" / "flow.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    exported = []

    def export_again(model, target, **kw):  # the real export takes a minute; copy the good package instead
        exported.append((target, kw["overwrite"]))
        shutil.rmtree(target)
        shutil.copytree(basicvsr_package.root, target)
        return Package.open(target)

    monkeypatch.setattr(runtime.resolve, "export_package", export_again)
    monkeypatch.setattr(runtime.resolve, "pretrained", lambda name: None)
    lines = []
    package = runtime.resolve.resolve_package("basicvsr", log=lines.append)
    assert exported == [(cached, True)] and package.root == cached
    assert "damaged" in lines[0] and "exporting it again" in lines[0]


def test_a_table_into_a_pipe_is_printed_whole(capsys):
    """Into a pipe or a file (no terminal) a table of vsr-bench or vsr-parity is as wide as its
    columns need: rich alone assumes 80 columns there and folds every cell in two."""
    table = Table(title="six contenders")
    cells = [f"contender {i}: 1234.5 ms per frame" for i in range(6)]
    for i in range(6):
        table.add_column(f"column {i}")
    table.add_row(*cells)
    print_table(table)
    row = next(line for line in capsys.readouterr().out.splitlines() if "contender 0" in line)
    assert all(cell in row for cell in cells), row
