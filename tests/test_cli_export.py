"""vsr-export from its command line: a trained checkpoint exported with FP16 graphs and the TensorRT
check, the check failing on a node TensorRT cannot take, random weights, and failed exports that
leave nothing behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto

import export.fp16
import export.package
import runtime.cli.commands.export
from export.atomic import PARTIAL_MARK
from export.format import Package
from export.fp16 import FP16Error
from runtime.backends import OrtBackend, OrtOptions
from runtime.cli.export import main as export_main
from runtime.pipeline import upscale_clip
from runtime.samples import load_lr, psnr
from vsr_models.checkpoint import sha256sum

from .conftest import TINY_CONFIG


def _leftovers(folder: Path) -> list[str]:
    """Staged outputs (``.name.partial-XXXX``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARK in p.name)


def _fail(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output + repr(result.exception)
    assert "Traceback" not in result.output
    return result.output


def test_export_of_a_trained_checkpoint_with_fp16_and_the_tensorrt_check(tiny_export, tiny_checkpoint):
    """The session's ``vsr-export basicvsr --checkpoint tiny.pth --precision fp16 --check-tensorrt``."""
    result, out = tiny_export
    assert result.exit_code == 0, result.output + result.exception
    text = result.output
    assert f"wrote {out}: stages flow, backward_step, forward_step; opset 19; precisions fp32, fp16" in text
    assert re.search(r"fp16: nodes kept in FP32 .*: flow \d+, backward_step \d+, forward_step \d+", text)
    for graph in ("fp32/flow", "fp32/backward_step", "fp32/forward_step", "fp16/flow", "fp16/forward_step"):
        assert re.search(rf"^{graph}: \d+ nodes, needs TensorRT >= 10\.1: OK$", text, re.M), graph
    assert "TensorRT check OK: every node of every graph is supported by the ONNX parser of TensorRT >= 10.1" in text

    package = Package.open(out)
    assert package.manifest["config"] == {**package.manifest["config"], **TINY_CONFIG}  # rebuilt from meta
    (ckpt,) = package.manifest["provenance"]["checkpoints"]
    assert ckpt["sha256"] == sha256sum(tiny_checkpoint) and package.manifest["weights"] is None
    fp16 = onnx.load(str(package.stage_file("forward_step", "fp16")))
    inits = {i.name: i.data_type for i in fp16.graph.initializer}
    assert all(inits[n.input[1]] == TensorProto.FLOAT16 for n in fp16.graph.node if n.op_type == "Conv")
    assert _leftovers(out.parent) == []

    # both precisions run, and agree on real frames
    lr = load_lr(None, 3, (36, 40))
    ref = upscale_clip(OrtBackend(package, OrtOptions(precision="fp32", threads=1)), package, lr)
    half = upscale_clip(OrtBackend(package, OrtOptions(precision="fp16", threads=1)), package, lr)
    assert ref.shape == (3, 3, 144, 160) and min(psnr(half[i], ref[i]) for i in range(3)) >= 50.0


def _opset20_grid_sample_export(source: Path):
    """An ``export_package`` stand-in writing the package at ``source`` with backward_step's GridSample
    carrying the opset-20 mode name 'linear' (which TensorRT's parser reads as nearest); and that
    node's name."""
    path = source / "fp32" / "backward_step.onnx"
    name = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "GridSample")

    def export_package(net, out_dir, **kw):
        shutil.copytree(source, out_dir, dirs_exist_ok=True)
        graph = Path(out_dir) / "fp32" / "backward_step.onnx"
        model = onnx.load(str(graph))
        node = next(n for n in model.graph.node if n.name == name)
        next(a for a in node.attribute if a.name == "mode").s = b"linear"
        onnx.save(model, str(graph))
        return Package.open(out_dir)

    return export_package, name


def test_check_tensorrt_fails_naming_the_node(tmp_path, monkeypatch, tiny_package, tiny_checkpoint):
    fake_export, grid_sample = _opset20_grid_sample_export(tiny_package.root)
    monkeypatch.setattr(runtime.cli.commands.export, "export_package", fake_export)
    out = tmp_path / "pkg"
    args = ["basicvsr", "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--check-tensorrt"]
    text = _fail(CliRunner().invoke(export_main, args))
    assert re.search(r"^fp32/backward_step: .*FAIL", text, re.M), text
    assert grid_sample in text and "mode='linear' is the opset-20 name" in text
    assert "TensorRT check FAILED for fp32/backward_step (the package is written)" in text
    assert re.search(r"^fp32/flow: .*: OK$", text, re.M)
    assert Package.open(out).stage_names() == ["flow", "backward_step", "forward_step"]


def test_random_weights_excludes_a_checkpoint_and_is_offered_where_no_weights_are_installed(tmp_path, tiny_checkpoint):
    both = ["basicvsr", "--random-weights", "--checkpoint", str(tiny_checkpoint), "-o", str(tmp_path / "a")]
    assert "--random-weights and --checkpoint exclude each other" in _fail(CliRunner().invoke(export_main, both), 2)
    text = _fail(CliRunner().invoke(export_main, ["iart", "-o", str(tmp_path / "b")]), 2)
    assert "iart has no installed weights" in text and "--random-weights" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_random_weights_export_keeps_the_weights_for_the_pytorch_reference(tmp_path):
    """``vsr-export basicvsr --random-weights``: the official configuration with random weights, which
    the package keeps (torch/weights.safetensors) so that vsr-parity can rebuild the PyTorch network."""
    from runtime.cli.parity import main as parity_main

    out = tmp_path / "pkg"
    result = CliRunner().invoke(export_main, ["basicvsr", "--random-weights", "-o", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    package = Package.open(out)
    assert package.manifest["weights"] is None and package.manifest["provenance"]["checkpoints"] == []
    assert package.manifest["torch_weights"] == "torch/weights.safetensors"
    assert package.manifest["config"]["num_feat"] == 64 and package.manifest["config"]["num_block"] == 30
    parity = CliRunner().invoke(parity_main, [str(out), "--frames", "3", "--crop", "36x40", "--threads", "1"])
    assert parity.exit_code == 0 and "parity OK" in parity.output, parity.output


def test_export_interrupted_between_stages_leaves_nothing(tmp_path, monkeypatch, tiny_checkpoint):
    """Ctrl-C while the second stage graph is written: no package, no staged folder."""
    written = []

    def export_stage(stage, ins, outs, constraints, path):
        if written:
            raise KeyboardInterrupt
        path.write_bytes(b"half a graph")
        written.append(path)
        return {}

    monkeypatch.setattr(export.package, "export_stage", export_stage)
    out = tmp_path / "out" / "pkg"
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(export_main, ["basicvsr", "--checkpoint", str(tiny_checkpoint), "-o", str(out)])
    assert result.exit_code == 1 and "Aborted" in result.output, result.output
    assert len(written) == 1 and list((tmp_path / "out").iterdir()) == []


def test_failed_fp16_conversion_leaves_nothing(tmp_path, monkeypatch, tiny_package, tiny_checkpoint):
    """The FP16 conversion of the second stage fails after the FP32 package was written: the user asked
    for a package with FP16 graphs and gets an error, and no package (neither an FP32-only one at -o
    nor a staged folder beside it); an existing package replaced with --overwrite stays as it was."""

    def fp32_only_export(net, out_dir, **kw):
        out_dir = Path(out_dir)
        shutil.copytree(tiny_package.root, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("fp16"))
        manifest = json.loads((out_dir / "manifest.json").read_text())
        manifest["precisions"] = {"fp32": manifest["precisions"]["fp32"]}
        manifest.pop("precision_notes")
        (out_dir / "manifest.json").write_text(json.dumps(manifest))
        return Package.open(out_dir)

    real_convert, converted = export.fp16.convert_to_fp16, []

    def convert_to_fp16(model, fp32_io):
        if converted:
            raise FP16Error("a coordinate would be rounded to FP16 and back (test)")
        converted.append(model.graph.name)
        return real_convert(model, fp32_io)

    monkeypatch.setattr(runtime.cli.commands.export, "export_package", fp32_only_export)
    monkeypatch.setattr(export.fp16, "convert_to_fp16", convert_to_fp16)
    folder = tmp_path / "out"
    folder.mkdir()
    args = ["basicvsr", "--checkpoint", str(tiny_checkpoint), "--precision", "fp16", "-o", str(folder / "pkg")]
    assert "rounded to FP16 and back" in _fail(CliRunner().invoke(export_main, args))
    assert converted and list(folder.iterdir()) == []

    (folder / "pkg").mkdir()
    (folder / "pkg" / "mine.txt").write_text("an older package")
    converted.clear()
    _fail(CliRunner().invoke(export_main, [*args, "--overwrite"]))
    assert sorted(p.name for p in folder.rglob("*")) == ["mine.txt", "pkg"]


def test_export_refuses_an_existing_output(tmp_path, tiny_checkpoint):
    (tmp_path / "pkg").mkdir()
    args = ["basicvsr", "--checkpoint", str(tiny_checkpoint), "-o", str(tmp_path / "pkg")]
    assert "pass --overwrite" in _fail(CliRunner().invoke(export_main, args))
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"] and not list((tmp_path / "pkg").iterdir())
