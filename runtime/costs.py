"""What each stage call cost on this machine in an earlier run: the prior of the next run's remaining time.

Before a run has timed a stage, :class:`~runtime.progress.WorkMeter` prices its calls by their FLOPs at the
seconds per FLOP measured on the stages already timed. FLOPs rank a network's stages, but how a processor
spends its time on them is its own: a flow network's small convolutions at a fraction of the frame can run at
a lower rate per FLOP than the recurrent steps, by a ratio that changes from one CPU to the next (in one CI
run, 2026-12-06, under the test suite's own load, the FLOPs prior was 68 % high at 10 % of an 8-frame BasicVSR
run that it put within 25 % on the AMD EPYC this was written on). So each run records the seconds per call it
measured for every stage, keyed by everything that sets them (the package, backend, precision, threads,
schedule, device, machine, LR size and scale); the next run with the same key starts from those figures
instead of the FLOPs, and ``--dry-run`` prints the cost per frame they imply. A record that is missing,
unreadable or from another key is never used.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Mapping

from export.atomic import write_text_atomic
from export.format import cache_dir, cache_folder
from vsr_models.scales import Scale

from .devices import Device, cpu_name
from .options import RunOptions
from .progress import WorkMeter


def cost_key(manifest: Mapping, options: RunOptions, device: Device, height: int, width: int, scale: Scale) -> str:
    """The name of the record for runs of the package with ``manifest`` under ``options`` on ``device`` of
    this machine, at LR frames of ``height`` x ``width`` and ``scale`` (the package folder's own path is
    left out: a copy of a package times as the original)."""
    fields = {
        "manifest": hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest(),
        "backend": options.backend,
        "precision": options.precision,
        "threads": options.threads,
        "schedule": repr(options.schedule),
        "device": str(device),
        "machine": [platform.node(), cpu_name()],
        "lr": [height, width],
        "scale": [float(s) for s in scale],
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def recorded_costs(key: str, stages: set[str]) -> dict[str, float] | None:
    """Seconds per call of each of ``stages`` recorded under ``key``, or None (no record, one unreadable, or
    one that lacks a stage: a record is used whole or not at all, never mixed with FLOPs)."""
    path = cache_dir() / "costs" / f"{key}.json"
    try:
        record = json.loads(path.read_text())
        seconds = {str(stage): float(value) for stage, value in record["seconds_per_call"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not stages <= set(seconds) or not all(math.isfinite(v) and v > 0 for v in seconds.values()):
        return None
    return {stage: seconds[stage] for stage in stages}


def record_costs(key: str, meter: WorkMeter) -> bool:
    """Record the seconds per call ``meter`` measured for each stage, where it timed every stage of its plan
    and knew each call's stage (a run on worker processes does not: nothing is recorded). A cache that
    cannot be written costs the next run its prior, not this run its output: False then."""
    if meter.done[None] or not all(meter.done[stage] for stage in meter.planned):
        return False
    seconds = {stage: meter.rate(stage) for stage in meter.planned}
    if not all(v > 0 for v in seconds.values()):
        return False
    try:
        write_text_atomic(cache_folder("costs") / f"{key}.json", json.dumps({"seconds_per_call": seconds}) + "\n")
    except OSError:
        return False
    return True
