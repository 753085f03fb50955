"""Upscale a stream of frames: chunks with overlap in time, tiles with overlap in space.

Bidirectional networks need the future, so frames are processed in windows of
``chunk + 2 * overlap`` frames; only the middle ``chunk`` outputs of each window are kept (the
first window keeps its start, the last its end). Memory is bounded by the window, not the video.
Windows are placed at global multiples of ``chunk``, so a range of whole windows (a segment) can be
computed anywhere and equals, bit for bit, the same frames of one run over the whole video.
Frames larger than ``tile`` (LR pixels) are cut into tiles with ``tile_overlap`` pixels of
context on each side; each tile runs the whole plan over the window and only its core is kept.
With a memory budget and no tile size, the tile is the largest whose estimated working memory
(:func:`window_bytes` plus the network's step workspace) fits the budget.
Frames are padded (edge replication) to the network's size constraints and cropped back.

A causal network (forward sweeps only, a bounded look-ahead: AnimeSR) needs no overlap: its chunks
run one after the other with the sweeps' state carried across them
(:class:`~runtime.live.LiveUpscaler` with the plan's own look-ahead), which gives the whole-clip run
exactly. Its output depends on every frame before it, so a video is one sequential run (one segment).

A sliding-window network (a plan with ``window`` r, SAVSR) carries no state across frames: each
output frame reads r frames either side, so windows get exactly r frames of overlap and chunking
changes nothing in the output. An arbitrary-scale network runs at the scale :func:`resolve_scale`
settles (``--scale`` or ``--size``); the output is then ``round(h * s_h) x round(w * s_w)``.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from export.format import Package
from vsr_models.errors import VSRError
from vsr_models.plan import Plan, Read, SizeConstraints
from vsr_models.scales import Scale, ScaleError, output_size, scale_for_size

from .defaults import DEFAULT_CHUNK, DEFAULT_OVERLAP
from .executor import Backend, run_plan
from .live import LiveUpscaler
from .tiles import Tile, pad_to, plan_tiles

#: Memory budget (bytes) for networks with a step workspace (:attr:`Package.step_workspace`) when none is given.
DEFAULT_MEMORY_BUDGET = 8 << 30
_FP32 = 4


class MemoryBudgetError(VSRError, ValueError):
    """Not even the smallest tile fits the memory budget."""


def window_bytes(plan: Plan, frames: int, h: int, w: int, out: tuple[int, int] | None = None) -> int:
    """FP32 bytes of the sequences the executor holds at the busiest step of a window of ``frames``
    LR frames of h x w (output frames of ``out``; the output sequence, handed over as it is made,
    is not counted).

    A sequence lives from the step that first writes it to the last step that reads it, with all
    its frames, except a state read only by the sweep that writes it: that one holds the frames
    its reads reach back plus the one being written and one copy in flight.
    """
    last = plan.last_use()
    first = {"lr": 0}
    readers: dict[str, set[int]] = {}
    reach: dict[str, int] = {}
    for i, step in enumerate(plan.steps):
        for seq in step.outputs.values():
            first.setdefault(seq, i)
        for read in step.inputs.values():
            r: Read | str | None = read
            while isinstance(r, Read):
                readers.setdefault(r.seq, set()).add(i)
                reach[r.seq] = max(reach.get(r.seq, 0), abs(r.offset))
                r = r.default

    def held(seq: str) -> int:
        writers = {i for i, step in enumerate(plan.steps) if seq in step.outputs.values()}
        if readers.get(seq) and readers[seq] == writers:
            return min(reach[seq] + 2, plan.length(seq, frames))
        return plan.length(seq, frames)

    peak = 0
    for i in range(len(plan.steps)):
        live = [s for s in first if s != plan.output and first[s] <= i <= last.get(s, -1)]
        total = 0
        for seq in live:
            spec = plan.tensors[seq]
            total += held(seq) * math.prod(spec.shape(h, w, out)) * _FP32
        peak = max(peak, total)
    return peak


#: Default chunk of a sliding-window network: its output does not depend on the chunk, its memory
#: does (every per-frame feature of the chunk is held until the chunk's last stage has run).
DEFAULT_WINDOW_CHUNK = 4


def _text(scale: Scale) -> str:
    return f"x{scale[0]:.4g}" if scale[0] == scale[1] else f"x{scale[0]:.4g} by x{scale[1]:.4g}"


def resolve_scale(
    package: Package, h: int, w: int, scale: Scale | None = None, size: tuple[int, int] | None = None
) -> Scale:
    """The output scale (s_h, s_w) for h x w frames: ``scale``, the scale that gives exactly
    ``size`` (H, W), or the package's own; a :class:`ScaleError` if the network cannot produce it."""
    if scale is not None and size is not None:
        raise ScaleError("give either --scale or --size, not both")
    own = (float(package.scale), float(package.scale))
    wanted = scale if size is None else scale_for_size(h, w, size)
    if wanted is None:
        return own
    what = f"{size[0]}x{size[1]}" if size is not None else _text(wanted)
    needs = f"; {what} from {h}x{w} needs {_text(wanted)}" if size is not None else f", not {what}"
    scale_range = package.scale_range
    if scale_range is None:
        if tuple(wanted) != own:
            raise ScaleError(
                f"{package.model} upscales by exactly x{package.scale} ({h}x{w} -> {h * package.scale}x"
                f"{w * package.scale}) and cannot make {what}; --scale and --size need an arbitrary-scale "
                "network (savsr)"
            )
        return own
    lo, hi = scale_range
    if not all(lo <= v <= hi for v in wanted):
        raise ScaleError(f"{package.model} upscales by x{lo:g} to x{hi:g} on each axis{needs}")
    return float(wanted[0]), float(wanted[1])


def _pad_for(frames: np.ndarray, constraints: SizeConstraints, scale: Scale) -> np.ndarray:
    """:func:`pad_to`, refused at a fractional scale (the output of padded frames cannot be cropped
    back to exactly ``round(h * s)``)."""
    padded = pad_to(frames, constraints)
    if padded.shape != frames.shape and not all(float(s).is_integer() for s in scale):
        h, w = frames.shape[-2:]
        raise ScaleError(
            f"frames of {h}x{w} are smaller than the network's minimum {constraints.min_h}x{constraints.min_w}"
        )
    return padded


class Upscaler:
    """Runs a plan over windows and tiles of a frame stream.

    A plan with an output rate r > 1 (space-time networks) yields r output frames per input frame.

    Args:
        backend: where the stages run.
        plan: the network's plan.
        scale: spatial scale of the output: the network's integer scale, or (s_h, s_w) for an
            arbitrary-scale network (output ``round(h * s_h) x round(w * s_w)``).
        constraints: LR size constraints (frames are padded to meet them).
        chunk: output frames per window (``None``: the whole clip in one window).
        overlap: extra frames of context on each side of a window (a causal plan has none: its
            state is carried from one chunk to the next instead).
        tile: maximum tile size in LR pixels (``None``: whole frames).
        tile_overlap: LR pixels of context around each tile.

    ``lookahead`` is the plan's :meth:`~vsr_models.plan.Plan.lookahead` (``None``: not causal).
    """

    def __init__(
        self,
        backend: Backend,
        plan: Plan,
        scale: int | Scale,
        constraints: SizeConstraints,
        *,
        chunk: int | None = DEFAULT_CHUNK,
        overlap: int = DEFAULT_OVERLAP,
        tile: int | None = None,
        tile_overlap: int = 16,
        memory_budget: int | None = None,
        workspace: Callable[[int, int], int] | None = None,
    ) -> None:
        if chunk is not None and chunk < 1:
            raise ValueError("chunk must be at least 1 frame")
        if overlap < 0:
            raise ValueError("overlap must be >= 0")
        self.scale: Scale = (float(scale), float(scale)) if isinstance(scale, (int, float)) else scale
        self.backend, self.plan, self.constraints = backend, plan, constraints
        self.lookahead = plan.lookahead()
        if self.lookahead is not None:
            overlap = 0
        self.chunk, self.overlap, self.tile, self.tile_overlap = chunk, overlap, tile, tile_overlap
        self.integral = all(float(s).is_integer() for s in self.scale)
        if tile and not self.integral:
            raise ScaleError(f"tiles need an integer scale; {_text(self.scale)} does not cut into tiles: drop --tile")
        self.memory_budget, self.workspace = memory_budget, workspace

    def estimate(self, frames: int, h: int, w: int) -> int:
        """Estimated bytes of one run of the plan over ``frames`` frames of an h x w LR region
        (padded to the constraints): the executor's sequences and the step workspace."""
        ph, pw = self.constraints.padded(h, w)
        extra = self.workspace(ph, pw) if self.workspace is not None else 0
        return window_bytes(self.plan, frames, ph, pw, output_size(ph, pw, self.scale)) + extra

    def tile_for(self, frames: int, h: int, w: int) -> int | None:
        """The tile size this upscaler uses for a window of ``frames`` frames of h x w: ``tile``, or
        under a memory budget the largest (a multiple of the size constraint) that fits."""
        if self.tile is not None or self.memory_budget is None or not self.integral:
            return self.tile
        out_h, out_w = output_size(h, w, self.scale)
        out = frames * self.plan.output_rate * 3 * out_h * out_w * _FP32  # the window's output frames

        def fits(size: int) -> bool:
            span = min(size + 2 * self.tile_overlap, h), min(size + 2 * self.tile_overlap, w)
            return out + self.estimate(frames, *span) <= self.memory_budget

        if fits(max(h, w)):
            return None
        step = max(self.constraints.multiple, 1)
        lo, hi = step, max(h, w) // step * step
        if not fits(lo):
            raise MemoryBudgetError(
                f"{frames} frames of {h}x{w} need about {(out + self.estimate(frames, lo, lo)) / 2**30:.1f} GiB "
                f"even in {lo}x{lo} tiles, more than the budget of {self.memory_budget / 2**30:.1f} GiB: "
                "raise the budget or use shorter chunks (--chunk, --overlap)"
            )
        while hi - lo > step:  # the estimate grows with the tile: bisect for the largest that fits
            mid = (lo + hi) // 2 // step * step
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo

    def run_window(
        self,
        lr: np.ndarray,
        keep: range,
        emit: Callable[[int, np.ndarray], None],
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        """Upscale (T, 3, h, w) ``lr``; ``emit(t, (3, H, W))`` for the output frames of the
        input frames in ``keep`` (``rate`` of them per input frame), in order."""
        _, _, h, w = lr.shape
        rate = self.plan.output_rate
        keep = range(keep.start * rate, keep.stop * rate)
        tiles = plan_tiles(h, w, self.tile_for(len(lr), h, w), self.tile_overlap)
        out = np.empty((len(keep), 3, *output_size(h, w, self.scale)), dtype=np.float32) if len(tiles) > 1 else None
        for tile in tiles:
            self._run_tile(lr, tile, keep, out, emit, on_step)
        if out is not None:
            for i, t in enumerate(keep):
                emit(t, out[i])

    def _run_tile(
        self,
        lr: np.ndarray,
        tile: Tile,
        keep: range,
        out: np.ndarray | None,
        emit: Callable[[int, np.ndarray], None],
        on_step: Callable[[str], None] | None,
    ) -> None:
        """Run the plan over one tile of the window: its core goes into ``out`` (several tiles), or
        each output frame is emitted in order (one tile)."""
        region = _pad_for(lr[:, :, tile.y0 : tile.y1, tile.x0 : tile.x1], self.constraints, self.scale)
        th, tw = tile.y1 - tile.y0, tile.x1 - tile.x0
        out_h, out_w = output_size(th, tw, self.scale)
        sy, sx = int(self.scale[0]), int(self.scale[1])  # only used with tiles, whose scale is an integer
        oy, ox = (tile.core_y0 - tile.y0) * sy, (tile.core_x0 - tile.x0) * sx
        ch, cw = (tile.core_y1 - tile.core_y0) * sy, (tile.core_x1 - tile.core_x0) * sx
        pending: dict[int, np.ndarray] = {}
        next_t = keep.start

        def take(t: int, handle: object) -> None:
            nonlocal next_t
            if t not in keep:
                return
            hr = self.backend.download(handle)[0, :, :out_h, :out_w]
            if out is not None:
                core = hr[:, oy : oy + ch, ox : ox + cw]
                out[
                    t - keep.start,
                    :,
                    tile.core_y0 * sy : tile.core_y0 * sy + ch,
                    tile.core_x0 * sx : tile.core_x0 * sx + cw,
                ] = core
                return
            pending[t] = hr
            while next_t in pending:  # outputs may arrive out of order; emit in order
                emit(next_t, pending.pop(next_t))
                next_t += 1

        frames = [self.backend.upload(region[i : i + 1]) for i in range(len(region))]
        run_plan(self.plan, self.backend, frames, on_output=take, on_step=on_step, scale=self.scale)
        if out is None and pending:
            raise RuntimeError(f"plan produced frames {sorted(pending)} out of order with a gap")

    def window(self, start: int, available: int) -> tuple[int, int, int]:
        """(lo, hi, end) of the window whose kept outputs begin at input frame ``start``: it runs
        input frames ``lo:hi`` and keeps the outputs of ``start:end``. ``available`` is the number
        of input frames (or how many exist up to ``start + chunk + overlap``). Windows depend on
        global frame indices only, so any range of whole windows can be computed on its own."""
        if self.chunk is None:
            return 0, available, available
        end = min(start + self.chunk, available)
        return max(start - self.overlap, 0), min(end + self.overlap, available), end

    def windows(self, num_frames: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int, int]]:
        """The windows (lo, hi, end) that keep input frames ``start:stop`` of a ``num_frames`` clip."""
        stop = num_frames if stop is None else min(stop, num_frames)
        while start < stop:
            lo, hi, end = self.window(start, num_frames)
            yield lo, hi, min(end, stop)
            start = end

    def steps(self, num_frames: int, height: int, width: int, start: int = 0, stop: int | None = None) -> int:
        """How many stage calls (``on_step`` calls) keeping frames ``start:stop`` takes: the unit of
        progress, since a bidirectional window emits its first frame only after its backward sweeps."""
        return sum(self.stage_calls(num_frames, height, width, start, stop).values())

    def stage_calls(
        self, num_frames: int, height: int, width: int, start: int = 0, stop: int | None = None
    ) -> Counter[str]:
        """:meth:`steps`, stage by stage (stage name -> calls), for pricing each stage at its own cost."""
        tiles = len(plan_tiles(height, width, self.tile, self.tile_overlap))
        calls: Counter[str] = Counter()
        if self.lookahead is not None:  # each frame once, whatever the chunks
            stop = num_frames if stop is None else min(stop, num_frames)
            for step in self.plan.steps:  # frames first..T-1+last
                calls[step.stage] += tiles * max(0, min(num_frames + step.last, stop) - max(step.first, start))
            return calls
        for lo, hi, _ in self.windows(num_frames, start, stop):
            for step in self.plan.steps:
                calls[step.stage] += tiles * len(step.frames(hi - lo))
        return calls

    def check_range(self, first: int, start: int) -> None:
        """Raise ValueError unless frames from ``first`` on can produce the windows from ``start``."""
        if self.lookahead is not None and (first or start):
            raise ValueError(
                f"a causal network carries its state from the first frame: frames from {first} on cannot "
                f"give frame {start}; run from frame 0"
            )
        if self.chunk is None and start:
            raise ValueError("a whole-clip run (chunk=None) cannot start in the middle of the clip")
        if self.chunk is not None and start % self.chunk:
            raise ValueError(f"start={start} must be a multiple of chunk={self.chunk} (windows are global)")
        if first > max(start - self.overlap, 0):
            raise ValueError(f"frames from {first} on cannot give the context of frame {start}")

    def stream(
        self,
        frames: Iterable[np.ndarray],
        on_step: Callable[[str], None] | None = None,
        *,
        first: int = 0,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Upscale an iterable of (3, h, w) float32 frames, yielding (3, H, W) frames in order
        (``plan.output_rate`` of them per input frame).

        ``frames`` holds input frames ``first, first + 1, ...`` of a clip, and only the outputs of
        input frames ``start:stop`` are yielded (``start`` a multiple of ``chunk``; ``first`` at or
        before ``start - overlap``). Every window is the one a run over the whole clip uses, so
        the outputs equal that run's bit for bit. Frames are read ahead only as far as the current
        window needs.
        """
        self.check_range(first, start)
        if self.lookahead is not None:
            yield from self._stream_causal(frames, on_step, stop)
            return
        it = iter(frames)
        buffer: dict[int, np.ndarray] = {}
        read = first
        exhausted = False
        while stop is None or start < stop:
            want = None if self.chunk is None else start + self.chunk + self.overlap
            while not exhausted and (want is None or read < want):
                try:
                    frame = next(it)
                except StopIteration:
                    exhausted = True
                    break
                if buffer and frame.shape != next(iter(buffer.values())).shape:
                    raise ValueError(
                        f"frame {read} is {frame.shape[1]}x{frame.shape[2]}, earlier frames "
                        f"{next(iter(buffer.values())).shape[1:]}: all frames must have one size"
                    )
                buffer[read] = frame
                read += 1
            if start >= read:
                return
            lo, hi, end = self.window(start, read)
            end = end if stop is None else min(end, stop)
            window = np.stack([buffer[i] for i in range(lo, hi)])
            results: list[np.ndarray] = []
            self.run_window(window, range(start - lo, end - lo), lambda _t, f, into=results: into.append(f), on_step)
            yield from results
            start = end
            for i in [k for k in buffer if k < start - self.overlap]:
                del buffer[i]

    def _stream_causal(
        self, frames: Iterable[np.ndarray], on_step: Callable[[str], None] | None, stop: int | None
    ) -> Iterator[np.ndarray]:
        """A causal plan's stream: chunks of ``chunk`` output frames, each computed once input frame
        chunk end + lookahead has arrived, with the sweeps' state carried from one to the next."""
        if not self.integral or self.scale[0] != self.scale[1]:
            raise ScaleError(f"a causal network runs at its own integer scale, not {_text(self.scale)}")
        live = LiveUpscaler(
            self.backend,
            self.plan,
            int(self.scale[0]),
            self.constraints,
            latency=self.lookahead or 0,
            block=self.chunk or sys.maxsize,  # no chunk: the whole clip at its end
            tile=self.tile,
            tile_overlap=self.tile_overlap,
        )
        if stop is not None:  # outputs up to ``stop``, with their look-ahead as a whole-clip run has it
            frames = itertools.islice(frames, stop + (self.lookahead or 0))
        yield from itertools.islice(live.stream(frames, on_step), stop)


def upscaler_for(
    package: Package,
    backend: Backend,
    chunk: int | None = None,
    overlap: int | None = None,
    tile: int | None = None,
    tile_overlap: int = 16,
    scale: Scale | None = None,
    memory_budget: int | None = None,
) -> Upscaler:
    """An :class:`Upscaler` for a package; ``None`` picks the package's schedule: non-overlapping
    clips of ``clip_frames`` for a clip-level network, windows of ``DEFAULT_WINDOW_CHUNK`` with
    exactly the plan's context for a sliding-window network, else ``DEFAULT_CHUNK`` +
    ``DEFAULT_OVERLAP``. ``scale`` (from :func:`resolve_scale`) defaults to the package's own. For
    a network with a step workspace (:attr:`Package.step_workspace`), tiles that fit ``memory_budget``
    (default :data:`DEFAULT_MEMORY_BUDGET`) unless ``tile`` is given."""
    clip, window = package.clip_frames, package.plan.window
    lookahead = package.plan.lookahead()
    if lookahead is not None and overlap:
        raise ScaleError(
            f"{package.model} is causal: its state is carried from one chunk to the next exactly, so chunks need "
            f"no overlap; --overlap {overlap} does not apply: drop it"
        )
    if window is not None and overlap is not None and overlap < window:
        raise ScaleError(
            f"{package.model} reads {window} frames either side of each output frame and carries no state, "
            f"so windows overlap by exactly {window}; --overlap {overlap} would change frames at window edges: drop it"
        )
    if chunk is None:
        chunk = clip or (DEFAULT_WINDOW_CHUNK if window is not None else DEFAULT_CHUNK)
    if overlap is None:
        overlap = 0 if clip else (window if window is not None else DEFAULT_OVERLAP)
    workspace = package.step_workspace is not None
    if workspace and memory_budget is None:
        memory_budget = DEFAULT_MEMORY_BUDGET
    return Upscaler(
        backend,
        package.plan,
        scale or package.scale,
        package.constraints,
        chunk=chunk,
        overlap=overlap,
        tile=tile,
        tile_overlap=tile_overlap,
        memory_budget=memory_budget,
        workspace=package.step_workspace_bytes if workspace else None,
    )


def upscale_clip(backend: Backend, package: Package, lr: np.ndarray, scale: Scale | None = None) -> np.ndarray:
    """One whole-clip run of the package's plan: (T, 3, h, w) -> (T * rate, 3, H, W), padded to
    the network's constraints and cropped back (no windows, no tiles). ``scale`` (s_h, s_w) is
    that of an arbitrary-scale network (default: the package's own)."""
    h, w = lr.shape[-2:]
    scale = scale or (float(package.scale), float(package.scale))
    out_h, out_w = output_size(h, w, scale)
    padded = _pad_for(lr, package.constraints, scale)
    frames = [backend.upload(padded[i : i + 1]) for i in range(len(padded))]
    outs = run_plan(package.plan, backend, frames, scale=scale)
    return np.concatenate([backend.download(o) for o in outs])[:, :, :out_h, :out_w]
