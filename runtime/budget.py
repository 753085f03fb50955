"""What a run needs in memory, estimated before it starts, and the refusal when it does not fit.

One worker holds, at its busiest (LR frames h x w, output frames H x W, a window of ``frames``
input frames, tiles of th x tw LR pixels):

* the decoded input: the decode queue, the window's buffer and its stacked copy (3 windows of
  float32 RGB frames);
* the executor's sequences over one tile (:func:`runtime.pipeline.window_bytes`) and the
  network's step workspace (the manifest's ``step_workspace``, declared by the network);
* the largest node of any stage graph: its inputs and outputs at the tile's size, read off the
  graph's shapes (which the exporter writes as expressions of ``h`` and ``w``), so that a network's
  own widths (BasicVSR's 64-channel features at 4h x 4w before the last convolution) count;
* the output: the window's kept frames (and the canvas the tiles are pasted into), the frames
  queued for the encoder, and the encoder's look-ahead (x264 holds about 48 frames of 4:2:0);
* the graphs themselves.

This is an estimate from below (ONNX Runtime also keeps convolution workspaces and arena slack):
it is meant to refuse what certainly cannot fit (a 184 KB file of one 8000 x 8000 frame asks for
hundreds of GiB), before anything is allocated, with the tile or the size that would fit; a run
it lets through can still be close to the edge. With a GPU, the sequences and the graphs' nodes
live on the device and only the frames count here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from export.format import Package, dim_value
from vsr_models.errors import VSRError
from vsr_models.scales import Scale, output_size

from .memory import Available, available_memory, gib
from .pipeline import Upscaler

_FP32 = 4
#: Frames of 4:2:0 video (1.5 bytes per pixel) the encoder holds: x264's look-ahead and threads.
ENCODER_FRAMES = 48
#: Output frames queued between the backend and the encoder (:func:`runtime.lanes.run_lanes`).
QUEUED_FRAMES = 8

_BYTES = {
    onnx.TensorProto.FLOAT: 4,
    onnx.TensorProto.FLOAT16: 2,
    onnx.TensorProto.BFLOAT16: 2,
    onnx.TensorProto.DOUBLE: 8,
    onnx.TensorProto.INT64: 8,
    onnx.TensorProto.INT32: 4,
    onnx.TensorProto.BOOL: 1,
    onnx.TensorProto.UINT8: 1,
    onnx.TensorProto.INT8: 1,
}


class NotEnoughMemory(VSRError, MemoryError):
    """A run that cannot fit in the memory available; the message says what would."""


@dataclass(frozen=True)
class _Tensor:
    itemsize: int
    dims: tuple[int | str, ...]

    def bytes(self, sizes: dict[str, int]) -> int:
        total = self.itemsize
        for dim in self.dims:
            n = dim if isinstance(dim, int) else dim_value(dim, sizes)
            if n is None:
                return 0  # a size this estimate cannot read: left out (an estimate from below)
            total *= max(n, 0)
        return total


class GraphMemory:
    """The largest working set of one node (its inputs and outputs) over the stage graphs of a
    package, as a function of the frame size."""

    def __init__(self, package: Package, precision: str = "fp32") -> None:
        self.nodes: list[list[_Tensor]] = []
        self.weights = 0
        for stage in package.stage_names():
            path = package.stage_file(stage, precision if precision in package.precisions else "fp32")
            self.weights += Path(path).stat().st_size
            graph = onnx.load(str(path), load_external_data=False).graph
            shapes = {}
            for info in [*graph.input, *graph.output, *graph.value_info]:
                kind = info.type.tensor_type
                dims = tuple(d.dim_param if d.dim_param else d.dim_value for d in kind.shape.dim)
                shapes[info.name] = _Tensor(_BYTES.get(kind.elem_type, 4), dims)
            for node in graph.node:
                tensors = [shapes[n] for n in [*node.input, *node.output] if n in shapes]
                if tensors:
                    self.nodes.append(tensors)

    def peak(self, h: int, w: int, out: tuple[int, int]) -> int:
        sizes = {"h": h, "w": w, "H": out[0], "W": out[1]}
        return max((sum(t.bytes(sizes) for t in node) for node in self.nodes), default=0)


@dataclass(frozen=True)
class Need:
    """Bytes one worker needs, by part."""

    frames_in: int
    network: int
    frames_out: int
    fixed: int

    @property
    def total(self) -> int:
        return self.frames_in + self.network + self.frames_out + self.fixed


def worker_need(
    up: Upscaler,
    graphs: GraphMemory,
    h: int,
    w: int,
    scale: Scale,
    *,
    tile: int | None,
    on_gpu: bool,
    length: int,
    chunk: int | None = None,
) -> Need:
    """What one worker needs for a video of ``length`` LR frames of h x w with ``up``'s windows (or
    windows of ``chunk``) and tiles of ``tile``."""
    chunk = min(chunk or up.chunk or length, length)
    frames = min(chunk + 2 * up.overlap, length)
    out_h, out_w = output_size(h, w, scale)
    rate = up.plan.output_rate
    frames_in = 3 * frames * 3 * h * w * _FP32
    span = (h, w) if not tile else (min(tile + 2 * up.tile_overlap, h), min(tile + 2 * up.tile_overlap, w))
    ph, pw = up.constraints.padded(*span)
    network = 0
    if not on_gpu:
        network = up.estimate(frames, *span) + graphs.peak(ph, pw, output_size(ph, pw, scale))
    kept = chunk * rate
    tiled = tile is not None and (h > tile or w > tile)
    queued = min(QUEUED_FRAMES, length * rate)
    frames_out = (kept * (2 if tiled else 1) + queued) * 3 * out_h * out_w * _FP32
    frames_out += int(min(ENCODER_FRAMES, length * rate) * 1.5 * out_h * out_w)
    return Need(frames_in, network, frames_out, graphs.weights)


def check_fits(
    up: Upscaler,
    graphs: GraphMemory,
    h: int,
    w: int,
    scale: Scale,
    *,
    length: int,
    workers: int,
    on_gpu: bool,
    what: str,
    room: Available | None = None,
) -> None:
    """Raise :class:`NotEnoughMemory` when ``workers`` workers upscaling ``what`` (``length`` LR frames
    of h x w) need more memory than is available, naming the tile, the chunk or the frame size that fits."""
    room = room if room is not None else available_memory()
    if room is None or workers < 1:
        return
    tile = up.tile_for(min((up.chunk or length) + 2 * up.overlap, length), h, w)
    args = {"on_gpu": on_gpu, "length": length}
    need = worker_need(up, graphs, h, w, scale, tile=tile, **args)
    budget = room.bytes // workers
    if need.total <= budget:
        return
    each = f" each of {workers} workers" if workers > 1 else ""
    head = (
        f"{what}: upscaling {h}x{w} frames to {output_size(h, w, scale)[0]}x{output_size(h, w, scale)[1]} needs about "
        f"{gib(need.total)}{each} (input {gib(need.frames_in)}, network {gib(need.network)}, output "
        f"{gib(need.frames_out)}), but {room} is available"
    )
    fits = _largest_tile(up, graphs, h, w, scale, budget, args) if up.integral and not on_gpu else None
    if fits is not None and (tile is None or fits < tile):
        raise NotEnoughMemory(f"{head}; pass --tile {fits} (the largest tile that fits), or free memory")
    if up.chunk is not None and min(up.chunk, length) > 1:
        chunk = _largest_chunk(up, graphs, h, w, scale, budget, tile, args)
        if chunk is not None:
            raise NotEnoughMemory(f"{head}; pass --chunk {chunk} (the longest window that fits), or free memory")
    side = _largest_frame(up, graphs, h, w, scale, budget, tile, args)
    hint = f"frames up to about {side[0]}x{side[1]} fit" if side else "not even small frames fit"
    raise NotEnoughMemory(f"{head}; downscale the input ({hint}) or free memory")


def _largest_tile(
    up: Upscaler, graphs: GraphMemory, h: int, w: int, scale: Scale, budget: int, args: dict
) -> int | None:
    step = max(up.constraints.multiple, 16)

    def fits(t: int) -> bool:
        return worker_need(up, graphs, h, w, scale, tile=t, **args).total <= budget

    lo, hi = step, max(h, w) // step * step
    if hi < lo or not fits(lo):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return hi if fits(hi) else lo


def _largest_chunk(
    up: Upscaler, graphs: GraphMemory, h: int, w: int, scale: Scale, budget: int, tile: int | None, args: dict
) -> int | None:
    chunk = min(up.chunk or 1, args["length"])
    while chunk > 1:
        chunk //= 2
        if worker_need(up, graphs, h, w, scale, tile=tile, chunk=chunk, **args).total <= budget:
            return chunk
    return None


def _largest_frame(
    up: Upscaler, graphs: GraphMemory, h: int, w: int, scale: Scale, budget: int, tile: int | None, args: dict
) -> tuple[int, int] | None:
    """The largest (height, width) of the input's shape that fits, by bisection on the scale."""
    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        sh, sw = max(1, math.floor(h * mid)), max(1, math.floor(w * mid))
        if worker_need(up, graphs, sh, sw, scale, tile=tile, **args).total <= budget:
            lo = mid
        else:
            hi = mid
    if lo == 0.0:
        return None
    return max(1, math.floor(h * lo)), max(1, math.floor(w * lo))
