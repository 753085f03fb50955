"""What a user meets around a run (issue 27): --dry-run writes nothing, a run its backend refuses leaves
nothing in the cache, --fps on PNG output is said to be ignored, a checkpoint named as the zoo lists it is
found where its package installed it, and the help says where segments are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from export.format import Package
from runtime.cli.commands.export import installed_copy
from runtime.cli.run import main as run_main
from tests.conftest import clip_frames, heard_meters
from vsr_models.registry import all_weights


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VSR_CACHE_DIR", str(cache))
    return cache


def _frames(folder: Path, count: int = 2, h: int = 32, w: int = 48) -> Path:
    """``count`` real frames (bikes.mp4, an h x w crop) as 0001.png, 0002.png, ..."""
    folder.mkdir()
    for i, frame in enumerate(clip_frames(count=count)):
        rgb = (frame[:, 100 : 100 + h, 200 : 200 + w].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{i + 1:04d}.png")
    return folder


def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path, own_cache: Path, sample_video: Path, basicvsr_package: Package
):
    out = tmp_path / "out" / "up.mp4"
    args = [str(sample_video), "-o", str(out), "--model", str(basicvsr_package.root), "--dry-run", "--segment", "60"]
    result = CliRunner().invoke(run_main, [*args, "--backend", "onnxruntime", "--frames", "100"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "100 frames of" in result.output and "windows of 30 frames + 6 each side: 4 window(s)" in result.output
    assert "2 segment(s)" in result.output and "1 tile(s) per frame" in result.output
    assert "GFLOPs per frame" in result.output and "backend onnxruntime on cpu, precision fp32" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "the dry run wrote something"
    assert not own_cache.exists()


def test_dry_run_of_several_inputs_creates_no_output_folder(
    tmp_path: Path, own_cache: Path, sample_video: Path, basicvsr_package: Package
):
    outdir = tmp_path / "outdir"
    args = [str(sample_video), str(sample_video.parent / "carphone_distorted.mp4"), "-o", f"{outdir}/"]
    result = CliRunner().invoke(run_main, [*args, "--model", str(basicvsr_package.root), "--dry-run"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.count(" -> ") >= 2
    assert not outdir.exists() and not own_cache.exists()


def test_dry_run_of_a_zoo_network_not_yet_exported_says_how_and_exports_nothing(
    tmp_path: Path, own_cache: Path, sample_video: Path
):
    result = CliRunner().invoke(run_main, [str(sample_video), "-o", str(tmp_path / "up.mp4"), "--dry-run"])
    assert result.exit_code == 1 and "basicvsr is not exported yet" in result.output, result.output
    assert "run vsr-export basicvsr -o PKG and pass --model PKG" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [] and not list(own_cache.glob("packages/*"))


def test_a_run_its_backend_refuses_leaves_no_work_folder(
    tmp_path: Path, own_cache: Path, sample_video: Path, basicvsr_package: Package
):
    """The package has FP32 graphs only: --precision fp16 is refused before any work folder is made."""
    out = tmp_path / "up.mp4"
    args = [str(sample_video), "-o", str(out), "--model", str(basicvsr_package.root), "--backend", "onnxruntime"]
    result = CliRunner().invoke(run_main, [*args, "--precision", "fp16", "--frames", "2"])
    assert result.exit_code == 1 and "has no fp16 graphs" in result.output, result.output
    assert not out.exists()
    assert not (own_cache / "work").exists(), sorted(str(p) for p in own_cache.rglob("*"))


def test_fps_on_png_output_is_said_to_be_ignored(tmp_path: Path, own_cache: Path, basicvsr_package: Package):
    source, out = _frames(tmp_path / "in"), tmp_path / "out"
    args = [str(source), "-o", str(out), "--model", str(basicvsr_package.root), "--backend", "onnxruntime"]
    result = CliRunner().invoke(run_main, [*args, "--fps", "24"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"--fps 24 is ignored: {out} is a folder of PNG frames" in result.output
    assert len(list(out.glob("*.png"))) == 2
    assert "2 frames, 128x192" in result.output  # HxW, as the flags take sizes


def test_a_checkpoint_named_as_the_zoo_lists_it_is_found_where_it_was_installed(tmp_path: Path, monkeypatch):
    released = all_weights()
    installed = released["basicvsr"]
    try:
        expected = installed.path()
    except Exception as exc:  # NotInstalled
        pytest.skip(f"needs the BasicVSR weights: {exc}")
    monkeypatch.chdir(tmp_path)  # no such file here
    assert installed_copy(Path(Path(installed.filename).name), released) == expected
    assert installed_copy(Path("nowhere") / "BasicVSR_REDS4.pth", released) == Path("nowhere") / "BasicVSR_REDS4.pth"
    (tmp_path / "BasicVSR_REDS4.pth").write_bytes(b"")
    assert installed_copy(Path("BasicVSR_REDS4.pth"), released) == Path("BasicVSR_REDS4.pth")  # the user's own file


def test_help_says_where_segments_are_kept() -> None:
    text = CliRunner().invoke(run_main, ["--help"], terminal_width=200).output
    assert "cache's work folder" in text and "beside the output" not in text


def test_a_run_records_what_it_cost_and_the_next_dry_run_of_that_size_says_it(
    tmp_path: Path, own_cache: Path, tiny_package: Package, monkeypatch: pytest.MonkeyPatch
):
    """A first --dry-run can only count FLOPs; the run records the seconds each stage call took, and a dry
    run of the same size afterwards prints the cost per frame and the total they imply; another size, or
    the record damaged, gives no such line and no error. The next run's meter starts from the record."""
    frames = _frames(tmp_path / "frames", count=3)
    other = _frames(tmp_path / "other", count=3, h=32, w=64)
    base = ["--model", str(tiny_package.root), "--backend", "onnxruntime"]
    line = "cost here, as an earlier run of this size measured it: about "

    def dry(source: Path) -> str:
        result = CliRunner().invoke(run_main, [str(source), "-o", str(tmp_path / "dry.mp4"), *base, "--dry-run"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    assert line not in dry(frames)
    result = CliRunner().invoke(run_main, [str(frames), "-o", str(tmp_path / "up.mp4"), *base])
    assert result.exit_code == 0, result.output + repr(result.exception)
    (record,) = (own_cache / "costs").iterdir()
    assert set(json.loads(record.read_text())["seconds_per_call"]) == set(tiny_package.manifest["stages"])
    shown = dry(frames)
    assert line in shown and " ms per frame, " in shown and " in all (one process" in shown, shown
    meters = heard_meters(monkeypatch)
    recorded = json.loads(record.read_text())["seconds_per_call"]
    result = CliRunner().invoke(run_main, [str(frames), "-o", str(tmp_path / "again.mp4"), *base])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert meters[0].costs == recorded  # the second run starts from the first run's seconds
    assert json.loads(record.read_text())["seconds_per_call"] != recorded  # and records its own
    assert line not in dry(other)
    record.write_text("{}")
    assert line not in dry(frames)
