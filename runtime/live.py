"""Live video: a plan run as the frames arrive, each output frame a bounded number of frames behind.

The stream is cut into output blocks of ``block`` (B) frames. Block ``[s, s+B)`` is computed as
soon as input frame ``s+B+K-1`` has arrived (K is the ``latency``, the frames of look-ahead), over
the window ``[s, s+B+K)`` and as if the clip ended there: a read past the window, or of a frame
that a per-frame step could not make without a frame past it, falls back to the read's default,
exactly as it does at the real end of a clip. So a backward sweep starts from zeros K frames after
the block, and every sweep after it sees the earlier ones over the same window.

Values of frames before ``s`` come from earlier blocks and are never recomputed: forward sweeps
carry their state across the whole stream. A value that does not depend on where the window ends
(a flow between two frames already read, a forward sweep fed only by such values) is kept and
reused by later windows; one that does (a backward sweep, everything computed from it) is final
only for the block's own frames and is recomputed by the next window beyond them. The last
window ends at the real end of the stream, so with a look-ahead at least as long as the stream
the result is the whole-clip run's, value for value.

Output frame n is handed over before input frame n + K + B is taken; the work per frame grows
with (B + K) / B for the steps that must be redone over the look-ahead.

What can stream is read off the plan (:class:`LivePlan`): each step is a per-frame step, or a
forward or backward sweep (a step that reads its own outputs at earlier or later frames), and
every read is ``seq[t + offset]``. A clip-level plan (frames at another rate, strided or wrapped
reads: DAVSR) cannot stream and raises :class:`LiveError`. A causal plan (no backward sweep, a
look-ahead L read off the plan: AnimeSR's 1) is exact with K = L: :func:`live_upscaler_for` runs it
there, refusing a smaller K and lowering a larger one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from export.format import Package
from vsr_models.errors import VSRError
from vsr_models.plan import Plan, Read, SizeConstraints, Step

from .executor import Backend, PlanError
from .tiles import pad_to, plan_tiles

StepKind = Literal["per-frame", "forward sweep", "backward sweep"]


class LiveError(VSRError, ValueError):
    """A plan or setting that cannot run live; the message says why and what to do instead."""


def _chain(read: Read) -> Iterator[Read]:
    """A read and the reads of its default chain, in order."""
    r: Read | str | None = read
    while isinstance(r, Read):
        yield r
        r = r.default


@dataclass(frozen=True)
class LivePlan:
    """What the live scheduler needs to know about a plan, derived from it as data.

    Attributes:
        plan: the plan.
        kinds: per step, ``"per-frame"``, ``"forward sweep"`` or ``"backward sweep"``.
        first, last: per sequence, the ``first`` and ``last`` of the step that writes it (0 for
            ``lr``): a clip of T frames has its frames ``first`` .. ``T - 1 + last``.
        keep: per sequence, how many frames before the current one any step reads (how far back
            finished values must be kept).
    """

    plan: Plan
    kinds: tuple[StepKind, ...]
    first: dict[str, int]
    last: dict[str, int]
    keep: dict[str, int]

    @classmethod
    def of(cls, plan: Plan, name: str = "this network") -> LivePlan:
        """Analyse ``plan``; raises :class:`LiveError` if it cannot stream."""
        cannot = f"{name} cannot stream with a bounded latency"
        if plan.output_rate != 1 or any(spec.rate != 1 for spec in plan.tensors.values()):
            raise LiveError(
                f"{cannot}: it is a clip network that makes several output frames per input frame and "
                "solves each clip as a whole; run it on a file without --latency"
            )
        writer: dict[str, int] = {}
        kinds: list[StepKind] = []
        keep: dict[str, int] = {}
        for index, step in enumerate(plan.steps):
            if step.rate != 1 or step.write_at:
                raise LiveError(f"{cannot}: step {step.stage!r} writes frames at strided positions (a clip network)")
            own = set(step.outputs.values())
            back, ahead = False, False
            for read in step.inputs.values():
                for r in _chain(read):
                    if r.stride != 1 or r.wrap:
                        raise LiveError(
                            f"{cannot}: step {step.stage!r} reads {r}, a frame that depends on the length of the "
                            "clip; run it on a file without --latency"
                        )
                    keep[r.seq] = max(keep.get(r.seq, 0), -r.offset)
                    if r.seq in own:
                        back |= r.offset < 0
                        ahead |= r.offset > 0
                        if r.offset == 0:
                            raise LiveError(f"{cannot}: step {step.stage!r} reads its own output {r} at the same frame")
            if back and ahead:
                raise LiveError(f"{cannot}: step {step.stage!r} reads its own outputs both before and after t")
            if back != ahead and (step.order == "forward") != back:
                raise LiveError(f"{cannot}: step {step.stage!r} runs {step.order} but reads its state the other way")
            kinds.append("forward sweep" if back else "backward sweep" if ahead else "per-frame")
            for seq in own:
                if seq in writer or seq == "lr":
                    raise LiveError(f"{cannot}: sequence {seq!r} is written by more than one step")
                writer[seq] = index
        first = {"lr": 0, **{seq: plan.steps[i].first for seq, i in writer.items()}}
        last = {"lr": 0, **{seq: plan.steps[i].last for seq, i in writer.items()}}
        return cls(plan, tuple(kinds), first, last, keep)

    def whole_calls_per_frame(self) -> dict[str, int]:
        """Stage calls per frame of a whole-clip run of a long clip: one per step using the stage."""
        calls: dict[str, int] = {}
        for step in self.plan.steps:
            calls[step.stage] = calls.get(step.stage, 0) + 1
        return calls

    def describe(self) -> str:
        """One line per step: its stage, kind and what it reads."""
        lines = []
        for step, kind in zip(self.plan.steps, self.kinds):
            reads = ", ".join(str(r) for r in step.inputs.values())
            lines.append(f"{step.stage}: {kind} -> {', '.join(sorted(set(step.outputs.values())))} (reads {reads})")
        return "\n".join(lines)


class LiveScheduler:
    """Runs a plan over frames pushed one by one; hands back each output frame once it is final.

    Args:
        plan: the analysed plan.
        backend: where the stages run.
        latency: K, frames of look-ahead.
        block: B, output frames computed per window.
        on_step: called with the stage's name after every stage call (progress).

    Usage: ``push(handle)`` each (1, 3, h, w) LR frame as it arrives and collect the
    ``(t, handle)`` pairs it returns; ``finish()`` at the end of the stream returns the rest.
    ``calls`` counts the stage calls made so far; ``steady`` holds those of the latest block whose
    window lay inside the stream, after the first (the calls per B frames of a long stream).
    """

    def __init__(
        self,
        plan: LivePlan,
        backend: Backend,
        latency: int,
        block: int = 1,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        if latency < 0 or block < 1:
            raise LiveError(f"latency must be >= 0 and block >= 1, got latency {latency} and block {block}")
        self.live, self.backend, self.latency, self.block = plan, backend, latency, block
        self.on_step = on_step
        self.calls: Counter[str] = Counter()
        self.steady: Counter[str] | None = None
        self._final: dict[str, dict[int, Any]] = {"lr": {}}
        self._zeros: dict[str, Any] = {}
        self._read = 0  # frames pushed
        self._next = 0  # first output frame not yet handed back

    def push(self, frame: Any) -> list[tuple[int, Any]]:
        """Take the next LR frame; returns the output frames that became final, in order."""
        self._final["lr"][self._read] = frame
        self._read += 1
        done: list[tuple[int, Any]] = []
        while self._next + self.block + self.latency <= self._read:
            done += self._run_block(self._next + self.block + self.latency, ended=False)
        return done

    def finish(self) -> list[tuple[int, Any]]:
        """The stream has ended: the remaining output frames, their windows ending at its end."""
        done: list[tuple[int, Any]] = []
        while self._next < self._read:
            done += self._run_block(self._read, ended=True)
        return done

    # ---- one block ------------------------------------------------------------------------

    def _run_block(self, end: int, ended: bool) -> list[tuple[int, Any]]:
        """Compute output frames [s, s+B) over the window [s, end); ``ended``: ``end`` is the stream's end."""
        start = self._next
        stop = min(start + self.block, end)
        plan = self.live.plan
        local: dict[str, dict[int, tuple[Any, bool]]] = {}
        calls: Counter[str] = Counter()
        for index, frames in enumerate(self._schedule(start, stop, end)):
            step = plan.steps[index]
            for t in frames:
                inputs: dict[str, Any] = {}
                windowed = False
                for name, read in step.inputs.items():
                    inputs[name], w = self._resolve(read, t, end, ended, local, step)
                    windowed |= w
                outputs = self.backend.run(step.stage, inputs)
                calls[step.stage] += 1
                if self.on_step is not None:
                    self.on_step(step.stage)
                for out_name, seq in step.outputs.items():
                    local.setdefault(seq, {})[t] = (outputs[out_name], windowed)
        out = local.get(plan.output, {})
        missing = [t for t in range(start, stop) if t not in out]
        if missing:
            raise PlanError(f"the plan made no output for frames {missing} (a bug in the live schedule)")
        result = [(t, out[t][0]) for t in range(start, stop)]
        self.calls.update(calls)
        if start > 0 and not ended:
            self.steady = calls
        for seq, values in local.items():
            for t, (value, windowed) in values.items():
                if t < stop or not windowed:
                    self._final.setdefault(seq, {})[t] = value
        self._next = stop
        for seq, values in self._final.items():
            horizon = stop - self.live.keep.get(seq, 0)
            for t in [t for t in values if t < horizon]:
                del values[t]
        return result

    def _schedule(self, start: int, stop: int, end: int) -> list[list[int]]:
        """Per step, the frames to run it on (in its order) so that outputs [start, stop) can be made.

        Demand flows from the output back through the steps: a step runs on every frame of the
        window its outputs are needed at and not yet final, plus, for a sweep, the frames its
        state there needs in turn (back to the last final frame of a forward sweep, on to the
        window's end for a backward one).
        """
        plan = self.live.plan
        need: dict[str, set[int]] = {plan.output: set(range(start, stop))}
        todo: list[list[int]] = [[] for _ in plan.steps]
        for index in reversed(range(len(plan.steps))):
            step = plan.steps[index]
            lo, hi = step.first, end - 1 + step.last
            own = [
                (r.seq, r.offset)
                for read in step.inputs.values()
                for r in _chain(read)
                if r.seq in step.outputs.values()
            ]
            work = [
                t
                for seq in set(step.outputs.values())
                for t in need.get(seq, ())
                if lo <= t <= hi and t not in self._final.get(seq, {})
            ]
            chosen: set[int] = set()
            while work:
                t = work.pop()
                if t in chosen:
                    continue
                chosen.add(t)
                work += [t + o for seq, o in own if lo <= t + o <= hi and t + o not in self._final.get(seq, {})]
            for t in chosen:
                for read in step.inputs.values():
                    for r in _chain(read):
                        if 0 <= t + r.offset < end:
                            need.setdefault(r.seq, set()).add(t + r.offset)
            todo[index] = sorted(chosen, reverse=step.order == "backward")
        return todo

    def _resolve(
        self,
        read: Read,
        t: int,
        end: int,
        ended: bool,
        local: dict[str, dict[int, tuple[Any, bool]]],
        step: Step,
    ) -> tuple[Any, bool]:
        """(value, windowed) of ``read`` at frame ``t``; ``windowed``: it depends on where the window ends."""
        windowed = False
        for r in _chain(read):
            i = t + r.offset
            if i in local.get(r.seq, {}):
                value, w = local[r.seq][i]
                return value, windowed or w
            if i in self._final.get(r.seq, {}):
                return self._final[r.seq][i], windowed
            if i > end - 1 + self.live.last[r.seq]:
                windowed |= not ended  # past the window: the clip would have it, the window does not
            elif i >= max(0, self.live.first[r.seq]):
                raise PlanError(
                    f"stage {step.stage!r} reads {r} at t={t} before it was made (a bug in the live schedule)"
                )
            if r.default == "zeros":
                return self._zero(r.seq), windowed
        raise PlanError(f"stage {step.stage!r} reads {read} at t={t}: that frame does not exist and has no default")

    def _zero(self, seq: str) -> Any:
        if seq not in self._zeros:
            _, _, h, w = self.backend.shape(self._final["lr"][next(iter(self._final["lr"]))])
            self._zeros[seq] = self.backend.zeros(self.live.plan.tensors[seq].shape(h, w))
        return self._zeros[seq]


class LiveUpscaler:
    """Upscales a stream of frames live: pads each frame, cuts it into tiles, runs one
    :class:`LiveScheduler` per tile and yields output frames as soon as they are final.

    Args:
        backend: where the stages run.
        plan: the network's plan (analysed here; :class:`LiveError` if it cannot stream).
        scale: spatial scale of the output.
        constraints: LR size constraints (frames are padded to meet them).
        latency: K, frames of look-ahead of the backward sweeps.
        block: B, output frames per window.
        tile: maximum tile size in LR pixels (``None``: whole frames).
        tile_overlap: LR pixels of context around each tile.
        name: the network's name, for messages.

    ``note`` says how a requested look-ahead was adjusted (:func:`live_upscaler_for`), or is ``None``.
    """

    note: str | None = None

    def __init__(
        self,
        backend: Backend,
        plan: Plan,
        scale: int,
        constraints: SizeConstraints,
        *,
        latency: int,
        block: int = 1,
        tile: int | None = None,
        tile_overlap: int = 16,
        name: str = "this network",
    ) -> None:
        self.live = LivePlan.of(plan, name)
        if latency < 0 or block < 1:
            raise LiveError(f"--latency must be >= 0 and --block >= 1, got {latency} and {block}")
        self.backend, self.scale, self.constraints = backend, scale, constraints
        self.latency, self.block, self.tile, self.tile_overlap = latency, block, tile, tile_overlap
        self._schedulers: list[LiveScheduler] = []

    @property
    def calls(self) -> Counter[str]:
        """Stage calls made so far, over all tiles."""
        total: Counter[str] = Counter()
        for scheduler in self._schedulers:
            total.update(scheduler.calls)
        return total

    def steady_calls_per_frame(self) -> dict[str, float] | None:
        """Stage calls per frame (and tile) in a long stream: one block inside it, after the first
        (``None`` until such a block has run)."""
        steady = self._schedulers[0].steady if self._schedulers else None
        return None if steady is None else {stage: n / self.block for stage, n in steady.items()}

    @property
    def tiles(self) -> int:
        """Tiles each frame is cut into (known once the first frame has arrived)."""
        return len(self._schedulers)

    @property
    def frames_behind(self) -> int:
        """The most input frames taken after an output frame's own before it is handed over: K + B - 1."""
        return self.latency + self.block - 1

    def stream(
        self, frames: Iterable[np.ndarray], on_step: Callable[[str], None] | None = None
    ) -> Iterator[np.ndarray]:
        """Upscale (3, h, w) float32 frames, yielding (3, s*h, s*w) frames in order.

        The next input frame is taken only after every output frame that became final has been
        yielded (and consumed), so output n is out before input n + K + B is read. ``on_step(stage)``
        is called after every stage call (progress).
        """
        schedulers: list[LiveScheduler] = []
        tiles = []
        shape = None
        for index, frame in enumerate(frames):
            if shape is None:
                shape = frame.shape
                tiles = plan_tiles(shape[1], shape[2], self.tile, self.tile_overlap)
                schedulers = [LiveScheduler(self.live, self.backend, self.latency, self.block, on_step) for _ in tiles]
                self._schedulers = schedulers
            elif frame.shape != shape:
                raise LiveError(
                    f"frame {index} is {frame.shape[1]}x{frame.shape[2]}, earlier frames {shape[1]}x{shape[2]}: "
                    "all frames of a stream must have one size"
                )
            done = []
            for tile, scheduler in zip(tiles, schedulers):
                region = pad_to(frame[None, :, tile.y0 : tile.y1, tile.x0 : tile.x1], self.constraints)
                done.append(scheduler.push(self.backend.upload(region)))
            yield from self._assemble(shape, tiles, done)
        if shape is None:
            return
        yield from self._assemble(shape, tiles, [scheduler.finish() for scheduler in schedulers])

    def _assemble(self, shape: tuple[int, ...], tiles: list, done: list[list[tuple[int, Any]]]) -> Iterator[np.ndarray]:
        """Whole output frames from each tile's finished frames (all tiles finish the same frames)."""
        s = self.scale
        _, h, w = shape
        for outputs in zip(*done):
            frame = np.empty((3, h * s, w * s), dtype=np.float32)
            for tile, (_, handle) in zip(tiles, outputs):
                hr = self.backend.download(handle)[0]
                oy, ox = (tile.core_y0 - tile.y0) * s, (tile.core_x0 - tile.x0) * s
                ch, cw = (tile.core_y1 - tile.core_y0) * s, (tile.core_x1 - tile.core_x0) * s
                frame[:, tile.core_y0 * s : tile.core_y0 * s + ch, tile.core_x0 * s : tile.core_x0 * s + cw] = hr[
                    :, oy : oy + ch, ox : ox + cw
                ]
            yield frame


def live_upscaler_for(
    package: Package,
    backend: Backend,
    latency: int,
    block: int = 1,
    tile: int | None = None,
    tile_overlap: int = 16,
) -> LiveUpscaler:
    """A :class:`LiveUpscaler` for a package; :class:`LiveError` for a network that cannot stream.

    A causal network (:meth:`~vsr_models.plan.Plan.lookahead` L) runs with exactly L frames of
    look-ahead: its output is final then and carries its state forward, so a smaller ``latency`` is
    refused (it would change every later frame) and a larger one is lowered to L (it would only hold
    frames back), with a ``note`` that says so.
    """
    name = package.manifest["model"]
    lookahead = package.plan.lookahead()
    note = None
    if lookahead is not None and latency != lookahead:
        why = (
            f"{name} is causal: it reads {lookahead} frame{'s' if lookahead != 1 else ''} ahead and carries its "
            f"state forward, so each output frame is final {lookahead} input frame{'s' if lookahead != 1 else ''} "
            "after its own"
        )
        if latency < lookahead:
            raise LiveError(
                f"{why}; --latency {latency} would feed it a repeated frame in place of the next one and change "
                f"every frame after: use --latency {lookahead}, or leave --latency out (a pipe run of {name} is "
                f"{lookahead} frame{'s' if lookahead != 1 else ''} behind already)"
            )
        note = f"{why}; --latency {latency} would only hold frames back: running with --latency {lookahead}"
        latency = lookahead
    if package.clip_frames:
        raise LiveError(
            f"{name} is a clip network: it solves clips of {package.clip_frames} frames as a whole, so it cannot "
            "stream with a bounded latency; run it on a file without --latency"
        )
    if package.plan.window is not None:
        raise LiveError(
            f"{name} is a sliding-window network: each output frame reads {package.plan.window} frames either "
            "side and no state crosses frames, so its look-ahead is fixed by the network; --latency does not "
            "apply: run it without --latency (pipes work)"
        )
    upscaler = LiveUpscaler(
        backend,
        package.plan,
        package.scale,
        package.constraints,
        latency=latency,
        block=block,
        tile=tile,
        tile_overlap=tile_overlap,
        name=name,
    )
    upscaler.note = note
    return upscaler
