"""Segments on a local Ray cluster of CPU actors: the same frames as one worker, also when an
actor is killed in the middle of a segment. Ray is started once for this module and each actor
loads the package, so the module is ``slow`` (about a minute on 2 cores)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from runtime.cluster import RayPool
from runtime.workers import Progress, run_jobs

from .test_segments import _frames, _job, _ok, _run, _spec, make_clip, work_in_tmp  # noqa: F401

ray = pytest.importorskip("ray", reason="Ray is the 'cluster' extra: pip install 'vsr[cluster]'")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("ray") / "bikes20.mp4", 20)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, clip, tiny_package) -> np.ndarray:
    out = tmp_path_factory.mktemp("one") / "frames"
    _ok(_run([clip, "-o", out, "--model", tiny_package.root, "--segment", "8", "--work-dir", out.parent / "work"]))
    return _frames(out)


def test_cluster_gives_the_frames_of_one_worker(tmp_path, clip, tiny_package, one_worker, cluster):
    result = _run(
        [
            clip,
            "-o",
            tmp_path / "frames",
            "--model",
            tiny_package.root,
            "--segment",
            "8",
            "--cluster",
            "auto",
            "--workers",
            "2",
        ]
    )
    _ok(result)
    assert "3 segments computed" in result.output and "2 actors" in result.output
    assert np.array_equal(_frames(tmp_path / "frames"), one_worker)


def test_an_actor_killed_mid_segment_is_restarted_and_its_segment_retried(
    tmp_path, clip, tiny_package, one_worker, cluster
):
    """5 segments, two in flight per actor: the actor that hands in the first result is killed while
    it computes its next one; Ray restarts it and retries the segment, and the output is unchanged."""
    job = _job(clip, tmp_path / "frames", tiny_package, segment_frames=4)
    pool = RayPool(_spec(tiny_package), 2, gpu=False)
    first_pids = set(pool.pids())
    by = []

    def on_result(task, result):
        by.append(result.pid)
        if len(by) == 1:
            os.kill(result.pid, signal.SIGKILL)

    try:
        result = run_jobs([job], pool, progress=Progress(on_result=on_result))
    finally:
        pool.close()
    assert not result.failed and result.report.segments_computed == 5
    assert set(by) - first_pids, f"no segment was computed by a restarted actor: {by} vs {first_pids}"
    assert np.array_equal(_frames(tmp_path / "frames"), one_worker)
