"""Shared fixtures: real frames from the installed sample clips, the BasicVSR weights, one exported package."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from export.format import Package
from runtime.samples import downscale, sample_clip
from runtime.video import read_frames


def has_cuda() -> bool:
    return torch.cuda.is_available()


def clip_frames(name: str = "bikes.mp4", count: int = 8, start: int = 0) -> np.ndarray:
    """(T, 3, H, W) float32 RGB frames of an installed sample clip."""
    frames = []
    for frame in read_frames(sample_clip(name)):
        if frame.index < start:
            continue
        if len(frames) == count:
            break
        frames.append(frame.rgb.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(frames))


def lr_clip(
    count: int, h: int, w: int, name: str = "bikes.mp4", y0: int = 64, x0: int = 160
) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) pair: an HR crop of a real clip (4h x 4w at y0, x0) and its x4 bicubic downscale."""
    hr = clip_frames(name, count)[:, :, y0 : y0 + 4 * h, x0 : x0 + 4 * w]
    assert hr.shape[-2:] == (4 * h, 4 * w), "crop outside the clip"
    return downscale(hr, 4), hr


@pytest.fixture(scope="session")
def basicvsr():
    from vsr_models import pretrained

    return pretrained("basicvsr")


@pytest.fixture(scope="session")
def basicvsr_package(tmp_path_factory, basicvsr):
    """The REDS4 BasicVSR exported once per test session."""
    from export.package import export_package
    from vsr_models import get_weights

    out = tmp_path_factory.mktemp("packages") / "basicvsr"
    return export_package(basicvsr, out, weights="basicvsr", checkpoints=[get_weights("basicvsr").path()])


@pytest.fixture(scope="session")
def sample_video() -> Path:
    return sample_clip("bikes.mp4")


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


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """The folder of a BasicVSR with 8 features and one residual block, random weights (seeded),
    exported once per session: fast enough to run a few hundred tiny frames through the runtime."""
    from export.package import export_package
    from vsr_models import create_model

    torch.manual_seed(0)
    model = create_model("basicvsr", num_feat=8, num_block=1)
    return export_package(model, tmp_path_factory.mktemp("tiny") / "basicvsr-tiny").root
