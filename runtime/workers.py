"""Running segments: in this process, in several local processes, and the loop that drives any pool.

A pool takes :class:`~runtime.segments.SegmentTask`\\ s and hands back results as they finish:

* :class:`InlinePool` computes them here, one after another;
* :class:`ProcessPool` runs one process per worker (``concurrent.futures``, started by
  :func:`worker_context`), each loading the package and backend once, on its own device (``cuda:0``,
  ``cuda:1``, ... or the CPU); a worker that dies breaks the executor, which is rebuilt, and the
  segments it held are retried; a worker whose parent dies (even by SIGKILL) ends at once
  (:func:`runtime.lifeline.die_with_parent`), so no worker outlives its run or holds a GPU for nothing;
* :class:`runtime.cluster.RayPool` runs Ray actors.

:func:`run_jobs` feeds a bounded queue of segments from every input into a pool, retries a failed
segment up to ``retries`` times, stitches each input as soon as its last segment is done, and goes
on past an input that fails.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vsr_models.errors import VSRError

from . import lifeline
from .devices import Device
from .options import RunOptions
from .segments import FileJob, Runner, RunReport, SegmentResult, SegmentTask, render_segment, stitch

#: ``on_steps(file, n, stage)``: ``n`` more stage calls of input ``file`` finished (``stage`` named where the
#: pool knows it: the inline pool; worker processes report counts).
StepHook = Callable[[int, int, str | None], None]

Outcome = SegmentResult | BaseException


class WorkerDied(RuntimeError):
    """The process computing a segment ended without a result (killed, out of memory, crashed)."""


class Pool(Protocol):
    """Where segments are computed."""

    #: How many segments may be in flight at once (a few per worker).
    capacity: int
    #: How many workers compute on this machine at once (their memory is checked before any
    #: starts; 0 for workers elsewhere).
    local_workers: int

    def submit(self, task: SegmentTask) -> None:
        """Start computing ``task``."""

    def wait(self, on_steps: StepHook) -> list[tuple[SegmentTask, Outcome]]:
        """Block until at least one submitted task finishes; return the finished ones with their
        result or error. ``on_steps(file, n, stage)`` hears of progress (``n`` more steps) meanwhile."""

    def close(self) -> None:
        """Release the workers."""


class InlinePool:
    """Computes each segment in this process, on one :class:`~runtime.segments.Runner` loaded once."""

    capacity = 1
    local_workers = 1

    def __init__(self, options: RunOptions, device: Device) -> None:
        self.runner = Runner(options, device)
        self._todo: list[SegmentTask] = []

    def submit(self, task: SegmentTask) -> None:
        self._todo.append(task)

    def wait(self, on_steps: StepHook) -> list[tuple[SegmentTask, Outcome]]:
        task = self._todo.pop(0)
        try:
            outcome: Outcome = render_segment(self.runner, task, on_step=lambda stage: on_steps(task.file, 1, stage))
        except Exception as exc:
            outcome = exc
        return [(task, outcome)]

    def close(self) -> None:
        self._todo.clear()


# ---- one process per worker ---------------------------------------------------------------------

_runner: Runner | None = None
_progress: mp.Queue | None = None


def worker_context() -> mp.context.BaseContext:
    """How worker processes start: from a fork server that has imported the worker's code once
    (POSIX), so that a new worker runs :func:`~runtime.lifeline.die_with_parent` within milliseconds
    instead of after seconds of imports, during which a SIGKILL of the parent would go unnoticed; by
    ``spawn`` where there is no fork server (Windows). Either way a worker is a fresh interpreter's
    child, never a fork of the parent with its threads and devices.

    The fork server imports :mod:`runtime.lifeline` before anything else, so that it too ends with
    its parent (at once on Linux) instead of finishing seconds of imports first. It does not import
    the parent's ``__main__`` (multiprocessing would import that first of all): a worker runs the
    console script's two lines itself. The fork server is started by the first worker, from the
    thread that makes the pool (the main thread of ``vsr-run``); on Linux it ends when that thread does.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    lifeline.announce_parent()
    context.set_forkserver_preload([lifeline.__name__, __name__])
    return context


def _start_worker(options: RunOptions, devices: mp.Queue, progress: mp.Queue) -> None:
    """Process initializer: die with the parent, load the package and its backend once, on the next free device."""
    global _runner, _progress
    lifeline.die_with_parent()
    _runner = Runner(options, devices.get())
    _progress = progress


def _work(task: SegmentTask) -> SegmentResult:
    assert _runner is not None and _progress is not None
    pending, last = 0, time.monotonic()

    def step(_stage: str) -> None:
        nonlocal pending, last
        pending += 1
        if time.monotonic() - last > 0.2:
            _progress.put((task.file, pending))
            pending, last = 0, time.monotonic()

    result = render_segment(_runner, task, on_step=step)
    _progress.put((task.file, pending))
    return result


class ProcessPool:
    """``workers`` local processes, each with its own :class:`~runtime.segments.Runner`; ``devices``
    are handed out in turn."""

    def __init__(self, options: RunOptions, devices: Sequence[Device], workers: int, per_worker: int = 2) -> None:
        self.options, self.workers, self.local_workers = options, workers, workers
        self.devices = [str(devices[i % len(devices)]) for i in range(workers)]
        self.capacity = workers * per_worker
        self._context = worker_context()
        self._futures: dict[cf.Future, SegmentTask] = {}
        self._executor = self._new_executor()

    def _new_executor(self) -> cf.ProcessPoolExecutor:
        # New queues with each executor: a worker killed while writing to a queue leaves its lock
        # taken, which would block the workers that replace it.
        self._progress = self._context.Queue()
        devices = self._context.Queue()
        for device in self.devices:
            devices.put(device)
        return cf.ProcessPoolExecutor(
            self.workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(self.options, devices, self._progress),
        )

    def submit(self, task: SegmentTask) -> None:
        try:
            future = self._executor.submit(_work, task)
        except cf.BrokenExecutor:
            self._executor = self._new_executor()
            future = self._executor.submit(_work, task)
        self._futures[future] = task

    def _drain(self, on_steps: StepHook) -> None:
        while True:
            try:
                file, n = self._progress.get_nowait()
            except queue.Empty:
                return
            on_steps(file, n, None)

    def wait(self, on_steps: StepHook) -> list[tuple[SegmentTask, Outcome]]:
        while True:
            done, _ = cf.wait(list(self._futures), timeout=0.2, return_when=cf.FIRST_COMPLETED)
            self._drain(on_steps)
            if done:
                break
        finished: list[tuple[SegmentTask, Outcome]] = []
        for future in done:
            try:
                finished.append((self._futures[future], future.result()))
            except cf.BrokenExecutor:
                # a worker died: every segment this executor held is lost; start a new one
                finished = [
                    (
                        task,
                        WorkerDied(
                            f"a worker died while segment {task.segment.index} of input {task.file} was in flight"
                        ),
                    )
                    for task in self._futures.values()
                ]
                self._futures.clear()
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
                return finished
            except Exception as exc:
                finished.append((self._futures[future], exc))
        for future in done:
            del self._futures[future]
        return finished

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._progress.close()


# ---- the loop that drives a pool ------------------------------------------------------------------


@dataclass
class Failure:
    """An input that could not be finished, and why."""

    job: FileJob
    error: BaseException


@dataclass
class Progress:
    """Hooks the driver calls (all in the driver's thread)."""

    on_start: Callable[[FileJob], None] = lambda job: None  # its first segment is handed to a worker
    on_steps: StepHook = lambda file, n, stage: None
    on_file_done: Callable[[FileJob], None] = lambda job: None
    on_result: Callable[[SegmentTask, SegmentResult], None] = lambda task, result: None
    on_retry: Callable[[SegmentTask, BaseException], None] = lambda task, error: None


@dataclass
class RunResult:
    """What :func:`run_jobs` did."""

    done: list[FileJob] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    report: RunReport = field(default_factory=RunReport)


def run_jobs(jobs: Sequence[FileJob], pool: Pool, *, retries: int = 2, progress: Progress | None = None) -> RunResult:
    """Compute every missing segment of ``jobs`` on ``pool`` and stitch each finished input.

    A segment that fails is retried up to ``retries`` times (a user error, :class:`VSRError`, is
    not: it would fail again); when it still fails, its input is reported in ``failed``, its
    finished segments stay in the work folder for ``--resume``, and no output is written for it.
    An input's staged output is reserved when its first segment starts; whatever stops the run
    (an error, Ctrl-C, SIGTERM) discards the staged outputs of the inputs not finished. Every job is
    closed at the end (its output's lock released).
    """
    try:
        return _drive(jobs, pool, retries, progress or Progress())
    finally:
        for job in jobs:
            job.close()


def _drive(jobs: Sequence[FileJob], pool: Pool, retries: int, hooks: Progress) -> RunResult:
    result = RunResult()
    result.report.segments_reused = sum(j.reused for j in jobs)
    queued = [task for job in jobs for task in job.missing]
    remaining = {job.number: len(job.missing) for job in jobs}
    by_number = {job.number: job for job in jobs}
    failed: set[int] = set()
    attempts: dict[tuple[int, int], int] = {}
    in_flight = 0

    def finish(job: FileJob) -> None:
        try:
            stitch(job)
        except Exception as exc:
            result.failed.append(Failure(job, exc))
            return
        result.done.append(job)
        hooks.on_file_done(job)

    for job in jobs:
        if not job.missing:
            finish(job)
        elif job.check_memory is not None:
            try:  # before any segment starts: a run that cannot fit is refused, not retried
                job.check_memory(pool.local_workers)
            except VSRError as exc:
                failed.add(job.number)
                result.failed.append(Failure(job, exc))
    while queued or in_flight:
        while queued and in_flight < pool.capacity:
            task = queued.pop(0)
            if task.file in failed:
                continue
            job = by_number[task.file]
            if job.staged is None:
                hooks.on_start(job)
            job.reserve()
            pool.submit(task)
            in_flight += 1
        if not in_flight:
            break
        for task, outcome in pool.wait(hooks.on_steps):
            in_flight -= 1
            key = (task.file, task.segment.index)
            if isinstance(outcome, BaseException):
                attempts[key] = attempts.get(key, 0) + 1
                if task.file not in failed and not isinstance(outcome, VSRError) and attempts[key] <= retries:
                    hooks.on_retry(task, outcome)
                    queued.insert(0, task)
                    continue
                if task.file not in failed:
                    failed.add(task.file)
                    result.failed.append(Failure(by_number[task.file], outcome))
                continue
            result.report.segments_computed += 1
            result.report.lanes.add(outcome.stats)
            hooks.on_result(task, outcome)
            remaining[task.file] -= 1
            if remaining[task.file] == 0 and task.file not in failed:
                finish(by_number[task.file])
    return result
