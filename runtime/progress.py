"""Progress of a run in frames, with a remaining time weighted by what each stage costs.

A stage call is not a unit of work: a flow network, a recurrent step at LR and an upsampler writing HR
pixels differ several times over, and a bidirectional window runs all its backward steps before its
first frame comes out. :class:`WorkMeter` measures each stage's seconds per call as the run goes and
prices the calls still to come at those rates. A stage not seen yet (a window's upsampling steps while its
flows run) is priced by its cost (``costs``: the seconds per call an earlier run here recorded,
:mod:`runtime.costs`, else the FLOPs counted from the network) at the seconds per unit of cost measured so
far, or without costs at the mean of the calls so far:
the remaining time is their sum, and the work done is shown in frames (the share of the run's cost
done, times its frames), so that the bar moves in proportion to time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    """What the meter says after a stage call: seconds since the start, the share of the work done
    (0 to 1) and the estimated seconds left (``None`` before the first call)."""

    elapsed: float
    done: float
    remaining: float | None


class WorkMeter:
    """The work of a run, ``calls`` (stage name -> calls planned) over ``frames`` output frames;
    ``costs``: the cost of one call of each stage, in any one unit (FLOPs, or seconds recorded by an earlier
    run); stages it lacks are priced at the mean.

    :meth:`step` hears of each finished stage call (``stage`` None: a call whose stage is not known,
    from a worker process, priced at the mean). :attr:`readings` keeps every reading, so that the
    estimate can be compared with the real remaining time afterwards.
    """

    def __init__(
        self,
        calls: Mapping[str, int],
        frames: int,
        costs: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.costs = {k: v for k, v in (costs or {}).items() if v > 0}
        self.planned = Counter({k: v for k, v in calls.items() if v > 0})
        self.total_calls = sum(self.planned.values())
        self.frames, self.clock = frames, clock
        self.done: Counter[str | None] = Counter()
        self.seconds: Counter[str | None] = Counter()
        self.first: dict[str | None, tuple[float, int]] = {}  # each stage's first report: (seconds, calls)
        self.started = self.last = clock()
        self.readings: list[Reading] = []

    def restart(self) -> None:
        """Start the clock now (when the first stage call begins, after loading the backend)."""
        self.started = self.last = self.clock()

    def step(self, stage: str | None, n: int = 1) -> Reading:
        now = self.clock()
        self.done[stage] += n
        self.seconds[stage] += now - self.last
        self.first.setdefault(stage, (now - self.last, n))
        self.last = now
        reading = Reading(now - self.started, self.fraction(now), self.remaining())
        self.readings.append(reading)
        return reading

    def warm(self, stage: str | None) -> tuple[float, int]:
        """(seconds, calls) of ``stage`` past its first report where there were more: a backend's first call
        of a stage also allocates its buffers, and the first call of a run waits for the first frames to
        decode and the output to open, time that the calls to come will not take again."""
        seconds, first = self.first.get(stage, (0.0, 0))
        if self.done[stage] > first:
            return self.seconds[stage] - seconds, self.done[stage] - first
        return self.seconds[stage], self.done[stage]

    def rate(self, stage: str | None) -> float:
        """Seconds per call of ``stage`` measured so far (warm calls where there are any)."""
        seconds, calls = self.warm(stage)
        return seconds / calls

    def remaining(self) -> float | None:
        """Seconds the calls not made yet will take at the rates measured so far."""
        calls = sum(self.done.values())
        if not calls:
            return None
        mean = sum(self.seconds.values()) / calls
        if self.done[None]:  # calls of unknown stages: every call at the mean
            return max(self.total_calls - calls, 0) * mean
        priced = [s for s in self.planned if self.done[s] and s in self.costs]
        work = sum(self.warm(s)[1] * self.costs[s] for s in priced)
        per_unit = sum(self.warm(s)[0] for s in priced) / work if work else None
        left = 0.0
        for stage, planned in self.planned.items():
            if self.done[stage]:
                rate = self.rate(stage)
            elif per_unit is not None and stage in self.costs:
                rate = self.costs[stage] * per_unit
            else:
                rate = mean
            left += max(planned - self.done[stage], 0) * rate
        return left

    def timed_every_stage(self) -> bool:
        """Whether every stage of the plan has been timed at least once (the estimate rests on measurements)."""
        return self.done[None] > 0 or all(self.done[s] for s in self.planned)

    def fraction(self, now: float | None = None) -> float:
        """The share of the run's work done: elapsed / (elapsed + remaining)."""
        remaining = self.remaining()
        if remaining is None:
            return 0.0
        elapsed = (self.clock() if now is None else now) - self.started
        return 1.0 if elapsed + remaining <= 0 else elapsed / (elapsed + remaining)

    def frames_done(self) -> float:
        """The work done, in frames."""
        return self.frames * self.fraction()


def eta_text(seconds: float | None) -> str:
    """``1:02:03``, ``4:05`` or ``?``."""
    if seconds is None:
        return "?"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
