"""Segments on a Ray cluster (``pip install 'vsr[cluster]'``).

One actor per GPU (``num_gpus=1``: Ray sets ``CUDA_VISIBLE_DEVICES``, so each actor sees its GPU as
``cuda:0``) or per CPU worker; each loads the package and backend once. Each segment is one actor
task, with at most ``per_actor`` tasks in flight per actor. An actor computes its segment into a
temporary folder on its own node and returns the encoded bytes, so the nodes need the input at the
same path (shared storage) but no shared output folder; the driver writes each segment into the
work folder and stitches them in order. A dead actor is restarted by Ray and its task retried
(``max_restarts``, ``max_task_retries``); an error raised by the task comes back to the driver,
which retries it like any pool (:func:`runtime.workers.run_jobs`).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from vsr_models.errors import VSRError

from .devices import Device
from .options import RunOptions
from .segments import Runner, SegmentResult, SegmentTask, read_segment, render_segment, store_segment
from .workers import Outcome, StepHook, WorkerDied


class ClusterUnavailable(VSRError, RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def load_ray() -> ModuleType:
    """Ray, imported on first use (it is an optional extra and takes a second to import)."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ClusterUnavailable("--cluster needs Ray: pip install 'vsr[cluster]'") from exc


def connect(address: str) -> dict[str, float]:
    """Join the Ray cluster at ``address`` (``auto``: the one this process or machine already runs,
    else a new local one) and return its resources."""
    ray = load_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "auto" else address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterUnavailable(
                f"cannot reach the Ray cluster at {address}: {exc}; start one with `ray start --head` "
                "or pass --cluster auto to start a local one"
            ) from exc
    return dict(ray.cluster_resources())


class SegmentActor:
    """Holds one :class:`~runtime.segments.Runner`; computes segments and returns their files as bytes."""

    def __init__(self, options: RunOptions, device: str) -> None:
        self.runner = Runner(options, device)

    def render(self, task: SegmentTask) -> tuple[SegmentResult, dict[str, bytes]]:
        with tempfile.TemporaryDirectory(prefix="vsr-segment-") as tmp:
            dest = Path(tmp) / task.dest.name
            result = render_segment(self.runner, task, dest)
            return result, read_segment(dest)

    def pid(self) -> int:
        return os.getpid()


class RayPool:
    """``actors`` Ray actors (one per GPU when the cluster has GPUs and ``gpu`` is set)."""

    def __init__(
        self, options: RunOptions, actors: int, *, gpu: bool, retries: int = 2, per_actor: int = 2, cpus: float = 1
    ) -> None:
        self.ray = ray = load_ray()
        ray_options: dict[str, Any] = {"max_restarts": -1, "max_task_retries": retries}
        ray_options.update({"num_gpus": 1, "num_cpus": cpus} if gpu else {"num_cpus": cpus})
        remote = ray.remote(SegmentActor).options(**ray_options)
        device = str(Device("cuda", 0) if gpu else Device("cpu"))
        self.actors = [remote.remote(options, device) for _ in range(actors)]
        self.capacity = actors * per_actor
        self.local_workers = 0  # actors may run on other machines: their memory is theirs to check
        self._refs: dict[Any, tuple[SegmentTask, int]] = {}
        self._load = [0] * actors

    def submit(self, task: SegmentTask) -> None:
        actor = min(range(len(self.actors)), key=self._load.__getitem__)
        self._refs[self.actors[actor].render.remote(task)] = (task, actor)
        self._load[actor] += 1

    def wait(self, on_steps: StepHook) -> list[tuple[SegmentTask, Outcome]]:
        ray = self.ray
        errors = importlib.import_module("ray.exceptions")
        done, _ = ray.wait(list(self._refs), num_returns=1)
        finished: list[tuple[SegmentTask, Outcome]] = []
        for ref in done:
            task, actor = self._refs.pop(ref)
            self._load[actor] -= 1
            try:
                result, files = ray.get(ref)
            except errors.RayTaskError as exc:
                finished.append((task, exc.as_instanceof_cause()))
                continue
            except (errors.ActorDiedError, errors.WorkerCrashedError) as exc:
                finished.append((task, WorkerDied(f"segment {task.segment.index}: {exc}")))
                continue
            store_segment(task.dest, files)
            on_steps(task.file, task.steps, None)
            finished.append((task, result))
        return finished

    def pids(self) -> list[int]:
        """The process ids of the actors (for logs, and for tests that kill one)."""
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
