"""vsr-parity from its command line: it passes on a faithful package and fails (exit 1) on a graph that
disagrees with the network, and --chunked compares windows with a whole-clip run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import numpy_helper

from export.format import Package
from runtime.cli.parity import main as parity_main

QUICK = ["--frames", "3", "--crop", "36x40", "--threads", "1"]


def _parity(*args: object) -> Result:
    return CliRunner().invoke(parity_main, [str(a) for a in args])


def _figures(output: str) -> tuple[float, float]:
    """(max abs error, min PSNR) from the summary line."""
    found = re.search(r"max abs error ([\d.e+-]+), min PSNR ([\d.]+|inf) dB", output)
    assert found, output
    return float(found.group(1)), float(found.group(2))


@pytest.fixture(scope="module")
def altered(tmp_path_factory: pytest.TempPathFactory, tiny_package: Package) -> Path:
    """The tiny package with one weight of the forward step's last convolution moved by 0.05: a graph
    that no longer computes what the network computes."""
    root = tmp_path_factory.mktemp("altered") / "pkg"
    shutil.copytree(tiny_package.root, root)
    path = root / "fp32" / "forward_step.onnx"
    model = onnx.load(str(path))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weight = numpy_helper.to_array(init).copy()
    weight.flat[0] += 0.05
    init.CopyFrom(numpy_helper.from_array(weight, init.name))
    onnx.save(model, str(path))
    return root


def test_parity_passes_on_the_package_and_fails_on_an_altered_graph(tiny_package: Package, altered: Path):
    good = _parity(tiny_package.root, *QUICK)
    assert good.exit_code == 0 and "parity OK" in good.output, good.output
    assert _figures(good.output)[0] <= 1e-4

    bad = _parity(altered, *QUICK)
    assert bad.exit_code == 1 and isinstance(bad.exception, SystemExit), bad.output
    assert "Error: parity FAILED: beyond the tolerance (max abs 0.0001)" in bad.output
    assert "parity OK" not in bad.output and _figures(bad.output)[0] > 1e-3


def test_chunked_compares_windows_with_the_whole_clip(tiny_package: Package):
    result = _parity(tiny_package.root, "--chunked", "--chunk", "3", "--overlap", "2", "--frames", "8", *QUICK[2:])
    assert result.exit_code == 0, result.output
    title = "basicvsr: chunk 3 + overlap 2 vs whole clip on onnxruntime fp32, 8 frames 36x40"
    assert title in " ".join(result.output.split())  # rich wraps the table's title
    worst, low = _figures(result.output)
    assert worst > 0 and low >= 45.0 and "parity OK" in result.output  # windows differ, within the default bound

    strict = _parity(
        tiny_package.root,
        "--chunked",
        "--chunk",
        "3",
        "--overlap",
        "0",
        "--frames",
        "8",
        "--min-psnr",
        low + 1000,
        *QUICK[2:],
    )
    assert strict.exit_code == 1 and "parity FAILED: beyond the tolerance (PSNR" in strict.output, strict.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--frames", "1"], "1 is not in the range x>=2"),
        (["--crop", "36by40"], "write sizes as HxW"),
        (["--precision", "fp8"], "'fp8' is not one of"),
    ],
)
def test_bad_options_are_clean_errors(tiny_package: Package, args: list[str], needle: str):
    result = _parity(tiny_package.root, *args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert needle in result.output and "Traceback" not in result.output


def test_unknown_package_is_a_clean_error(tmp_path: Path):
    result = _parity(tmp_path / "nosuch", *QUICK)
    assert result.exit_code == 1 and "is neither a package folder nor known weights" in result.output
