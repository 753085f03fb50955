"""Decoding, the backend and encoding in three concurrent lanes joined by bounded queues.

The decode lane (a thread) reads frames ahead into a queue of at most ``ahead`` frames, the
backend lane (the calling thread) runs the :class:`~runtime.pipeline.Upscaler`, and the encode lane
(a thread) writes its outputs from a queue of at most ``behind`` frames. PyAV and ONNX Runtime
release the GIL while they decode, encode or compute, so the lanes overlap and the backend waits
only when the decoder cannot keep up or the encoder falls behind; :class:`LaneStats` counts those
waits. An error in any lane stops the others and is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .pipeline import Upscaler

_END = object()


@dataclass
class LaneStats:
    """What one run of the lanes did: ``frames`` written, ``steps`` run, ``wall`` seconds from the
    first read to the last write, and ``busy`` seconds the backend lane spent working (not
    waiting for input or for room in the output queue)."""

    frames: int = 0
    steps: int = 0
    wall: float = 0.0
    busy: float = 0.0

    @property
    def busy_share(self) -> float:
        return self.busy / self.wall if self.wall > 0 else 0.0

    def add(self, other: LaneStats) -> None:
        self.frames += other.frames
        self.steps += other.steps
        self.wall += other.wall
        self.busy += other.busy


class _Cancelled(Exception):
    """Raised inside a lane when another lane failed."""


class _Lane(threading.Thread):
    """A daemon thread whose exception is kept for the caller."""

    def __init__(self, name: str, target: Callable[[], None], cancel: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn, self._cancel = target, cancel
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except _Cancelled:
            pass
        except BaseException as exc:
            self.error = exc
            self._cancel.set()


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Cancelled
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Cancelled
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def run_lanes(
    upscaler: Upscaler,
    frames: Iterable[np.ndarray],
    write: Callable[[np.ndarray], None],
    *,
    first: int = 0,
    start: int = 0,
    stop: int | None = None,
    on_step: Callable[[str], None] | None = None,
    ahead: int | None = None,
    behind: int = 8,
) -> LaneStats:
    """Upscale ``frames`` (input frames ``first, first + 1, ...``; see
    :meth:`Upscaler.stream <runtime.pipeline.Upscaler.stream>` for ``start`` and ``stop``) and call
    ``write`` on each output frame, in order, from the encode lane.

    ``ahead`` bounds the decoded frames waiting for the backend (default: one window), ``behind``
    the output frames waiting for the encoder.
    """
    window = (upscaler.chunk or 64) + 2 * upscaler.overlap
    inbox: queue.Queue = queue.Queue(maxsize=ahead or window)
    outbox: queue.Queue = queue.Queue(maxsize=behind)
    cancel = threading.Event()
    stats = LaneStats()
    waited = 0.0

    def decode() -> None:
        source = iter(frames)
        try:
            for frame in source:
                _put(inbox, frame, cancel)
            _put(inbox, _END, cancel)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a reader stopped early (a segment's end) releases its file now

    def encode() -> None:
        while (item := _get(outbox, cancel)) is not _END:
            write(item)
            stats.frames += 1

    def incoming() -> Iterator[np.ndarray]:
        nonlocal waited
        while True:
            t0 = time.perf_counter()
            item = _get(inbox, cancel)
            waited += time.perf_counter() - t0
            if item is _END:
                return
            yield item

    def step(stage: str) -> None:
        stats.steps += 1
        if on_step is not None:
            on_step(stage)

    lanes = [_Lane("vsr-decode", decode, cancel), _Lane("vsr-encode", encode, cancel)]
    began = time.perf_counter()
    computed = began
    for lane in lanes:
        lane.start()
    try:
        for out in upscaler.stream(incoming(), step, first=first, start=start, stop=stop):
            t0 = time.perf_counter()
            _put(outbox, out, cancel)
            waited += time.perf_counter() - t0
        computed = time.perf_counter()
        _put(outbox, _END, cancel)
        lanes[1].join()
    except _Cancelled:
        pass  # another lane failed: its error is raised below
    finally:
        cancel.set()
        for lane in lanes:
            lane.join()
    for lane in lanes:
        if lane.error is not None:
            raise lane.error
    stats.wall = time.perf_counter() - began
    stats.busy = max(computed - began - waited, 0.0)
    return stats
