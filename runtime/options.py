"""A run's options as values: built once by a tool from its flags, then passed as they are through
the demo, file runs (planning, segments, worker processes, Ray actors) and live runs.

- :class:`RunOptions`: what runs (the package, by path so that it pickles; the backend, already
  resolved: never ``auto``; precision, CPU threads) and how it is scheduled (:class:`Schedule`);
- :class:`Encoding`: how the output is written (codec, quality, frame rate, frame limit, overwrite);
- :class:`LiveOptions`: a live run's look-ahead and blocks, and the container of a stream written
  to standard output.

:func:`resolve_backend` is the one place where ``auto`` becomes a backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from export.format import Package
from vsr_models.scales import Scale

from .backends import BACKENDS, make_backend, resolve_auto
from .devices import Device
from .executor import Backend
from .pipeline import Upscaler, upscaler_for

#: The backends a resolved run names (``auto`` is not one: :func:`resolve_backend` replaces it).
KINDS = tuple(kind for kind in BACKENDS if kind != "auto")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Windows and tiles: ``chunk`` output frames per window with ``overlap`` frames of context each
    side (None: the network's defaults), frames cut into tiles past ``tile`` LR pixels with
    ``tile_overlap`` pixels of context."""

    chunk: int | None = None
    overlap: int | None = None
    tile: int | None = None
    tile_overlap: int = 16

    def upscaler(self, package: Package, backend: Backend | None, scale: Scale | None = None) -> Upscaler:
        """This schedule of ``package`` on ``backend`` (None: only to plan and count steps) at ``scale``
        (default: the network's own)."""
        return upscaler_for(package, backend, self.chunk, self.overlap, self.tile, self.tile_overlap, scale=scale)


@dataclass(frozen=True, kw_only=True)
class Encoding:
    """How outputs are written: the encoder ``codec`` at ``crf``; ``fps`` for an input without a
    frame rate (a frame folder; None: 25); stop after ``frames`` input frames (None: all); replace an
    existing output only with ``overwrite``."""

    codec: str = "libx264"
    crf: int = 18
    fps: Fraction | None = None
    frames: int | None = None
    overwrite: bool = False


@dataclass(frozen=True, kw_only=True)
class LiveOptions:
    """A run on streams: ``latency`` frames of look-ahead for a live run (None: not live), output
    frames per backward pass ``block``, the container written to standard output (None: NUT)."""

    latency: int | None = None
    block: int = 1
    container_format: str | None = None


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What runs and how it is scheduled; picklable, so worker processes and Ray actors get it as is.

    ``package`` is the package folder; ``backend`` one of :data:`KINDS` (``auto`` was resolved by
    :func:`resolve_backend`).
    """

    package: str
    backend: str
    precision: str = "fp32"
    threads: int = 0
    schedule: Schedule = field(default_factory=Schedule)

    def __post_init__(self) -> None:
        if self.backend not in KINDS:
            raise ValueError(f"RunOptions.backend is {self.backend!r}; resolve it first (one of {', '.join(KINDS)})")

    def make_backend(self, package: Package, device: Device, log: Callable[[str], None] | None = None) -> Backend:
        """The backend these options name, for ``package`` (opened from :attr:`package`) on ``device``."""
        return make_backend(self.backend, package, device, self.precision, self.threads, log=log)


def resolve_backend(
    kind: str, package: Package, device: Device, precision: str, log: Callable[[str], None] | None = None
) -> tuple[str, Device]:
    """(backend, device) that ``--backend kind --device device`` means for ``package``: ``auto`` becomes
    TensorRT, ONNX Runtime with CUDA or ONNX Runtime on the CPU (:func:`~runtime.backends.resolve_auto`;
    ``log`` hears why a GPU or TensorRT asked for is not used); a named backend stays as it is."""
    if kind != "auto":
        return kind, device
    kind, device, note = resolve_auto(package, device, precision)
    if note and log is not None:
        log(note)
    return kind, device
