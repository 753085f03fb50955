"""Stages and plans: how a recurrent network is cut into pure per-step graphs.

A network exposes *stages* (small modules, pure functions of tensors) and a *plan* (data) that
says how the stages are driven over the frames of a clip. The plan is written into the model
package's manifest as JSON and run by :mod:`runtime.executor` on any backend.

Vocabulary:

* A *sequence* is a per-frame list of tensors, ``name[t]`` for t in 0..T-1. ``lr`` is the input
  clip; every other sequence is written by a step.
* A :class:`Step` runs one stage for each t of a range, in ascending (``forward``) or descending
  (``backward``) order. Each stage input reads ``seq[t + offset]`` (:class:`Read`); a read outside
  the clip, or of a frame the step's range did not write, falls back to the read's ``default``:
  zeros (shaped by the sequence's :class:`TensorSpec`) or another read.
* Each stage output is written to ``seq[t]``, or to the frame its :class:`At` in
  ``Step.write_at`` names.

All tensors are (1, C, h * scale, w * scale) with (h, w) the LR frame size.

This module is plain Python (no torch): the runtime reads plans from manifests without it.

Frame rates: a sequence whose :class:`TensorSpec` has ``rate`` r holds r * T frames for T input
frames (DAVSR writes 5 HR frames per LR frame). A step with ``rate`` r runs over t in
0..r*T-1 (before ``first``/``last``). A read or write may address frame ``stride * t + offset``
and, with ``wrap``, take that index modulo the sequence's length (a clip whose time axis is
circular). The defaults (rate 1, stride 1, no wrap, write at t) are the per-frame plans.

Windows and arbitrary scales (SAVSR): a read with ``reflect`` mirrors an index outside the clip at
its ends (t = 0 reading t-3 .. t+3 gets frames 3, 2, 1, 0, 1, 2, 3), and a plan with ``window`` r
is a sliding-window plan: every output frame depends on ``lr[t-r .. t+r]`` only and no state
crosses frames, so the runtime runs it in windows with exactly r frames of context. ``given``
names sequences the runtime computes from the output scale and the LR size (a sampling grid, a
sub-pixel phase map, the scale vector) and feeds once per clip, as frame 0, read with stride 0
(``Read("grid", stride=0)``). A :class:`TensorSpec` says which size a tensor follows: the LR frame
(optionally padded up to a ``multiple``), the ``output`` frame, or ``one`` (1 x 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

_READ_RE = re.compile(r"^(?P<seq>[A-Za-z_][A-Za-z0-9_]*)\[(?P<stride>\d+)?t(?P<off>[+-]\d+)?\]$")


@dataclass(frozen=True)
class TensorSpec:
    """A per-frame tensor: ``channels`` x (h * scale) x (w * scale), in ``dtype``.

    ``rate``: frames of this sequence per input frame (1: one per LR frame; DAVSR's HR clip: 5).
    ``size``: which size the spatial dimensions follow: ``"lr"`` (the LR frame h x w, rounded up
    to a multiple of ``multiple``, times ``scale``), ``"output"`` (the output frame H x W of an
    arbitrary-scale network), or ``"one"`` (1 x 1, a vector).
    """

    channels: int
    scale: int = 1
    dtype: str = "float32"
    rate: int = 1
    size: Literal["lr", "output", "one"] = "lr"
    multiple: int = 1

    def __post_init__(self) -> None:
        if self.size not in ("lr", "output", "one"):
            raise ValueError(f"TensorSpec size {self.size!r}: use 'lr', 'output' or 'one'")
        if self.multiple < 1:
            raise ValueError(f"TensorSpec multiple {self.multiple}: it must be at least 1")

    def shape(self, h: int, w: int, out: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """(1, C, ., .) for LR frames of h x w; ``out`` is the output size (needed for ``"output"``)."""
        if self.size == "one":
            return (1, self.channels, 1, 1)
        if self.size == "output":
            if out is None:
                raise ValueError("an output-sized tensor needs the output size")
            return (1, self.channels, *out)
        m = self.multiple
        return (1, self.channels, -(-h // m) * m * self.scale, -(-w // m) * m * self.scale)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"channels": self.channels, "scale": self.scale, "dtype": self.dtype, "rate": self.rate}
        if self.size != "lr":
            d["size"] = self.size
        if self.multiple != 1:
            d["multiple"] = self.multiple
        return d


def reflect_index(index: int, length: int) -> int:
    """``index`` mirrored into 0 .. length-1 at both ends, without repeating the end frame
    (-1 -> 1, length -> length - 2), as often as needed for a clip shorter than the reach.

    Where one mirror suffices this is BasicSR's ``generate_frame_indices(padding='reflection')``.
    """
    if length == 1:
        return 0
    period = 2 * (length - 1)
    index %= period
    return index if index < length else period - index


def frame_index(t: int, stride: int, offset: int, wrap: bool, length: int, reflect: bool = False) -> int:
    """``stride * t + offset``, taken modulo ``length`` when ``wrap``, mirrored at the ends when ``reflect``."""
    index = stride * t + offset
    if reflect:
        return reflect_index(index, length)
    return index % length if wrap else index


def _index_text(stride: int, offset: int, wrap: bool, reflect: bool = False) -> str:
    text = f"{stride if stride != 1 else ''}t{f'{offset:+d}' if offset else ''}" if stride else str(offset)
    if reflect:
        return f"reflect({text})"
    return f"({text}) mod len" if wrap else text


@dataclass(frozen=True)
class At:
    """Where a step writes an output: frame ``stride * t + offset``, modulo the length with ``wrap``."""

    stride: int = 1
    offset: int = 0
    wrap: bool = False

    def index(self, t: int, length: int) -> int:
        return frame_index(t, self.stride, self.offset, self.wrap, length)

    def to_json(self) -> dict[str, Any]:
        return {"stride": self.stride, "offset": self.offset, "wrap": self.wrap}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> At:
        return cls(int(d.get("stride", 1)), int(d.get("offset", 0)), bool(d.get("wrap", False)))


@dataclass(frozen=True)
class Read:
    """``seq[stride * t + offset]``, or ``default`` where that frame does not exist.

    ``default`` is ``"zeros"``, another :class:`Read`, or ``None`` (a missing frame is an error).
    With ``wrap`` the index is taken modulo the sequence's length (rate * T), so it always exists
    once the sequence is complete; with ``reflect`` it is mirrored at the clip's ends
    (:func:`reflect_index`). ``stride`` 0 reads frame ``offset`` for every t (a per-clip input).
    """

    seq: str
    offset: int = 0
    default: Read | Literal["zeros"] | None = None
    stride: int = 1
    wrap: bool = False
    reflect: bool = False

    def __post_init__(self) -> None:
        if self.wrap and self.reflect:
            raise ValueError(f"read of {self.seq!r}: wrap and reflect exclude each other")

    def index(self, t: int, length: int) -> int:
        return frame_index(t, self.stride, self.offset, self.wrap, length, self.reflect)

    @classmethod
    def parse(cls, text: str, default: Read | str | None = None) -> Read:
        """``Read.parse("hb[t+1]", default="zeros")``; ``"x[5t+2]"`` reads with stride 5."""
        m = _READ_RE.match(text.replace(" ", ""))
        if not m:
            raise ValueError(f"bad read {text!r}: write it as name[t], name[t+1], name[t-2] or name[5t+2]")
        if isinstance(default, str) and default != "zeros":
            default = cls.parse(default)
        return cls(m["seq"], int(m["off"] or 0), default, int(m["stride"] or 1))  # type: ignore[arg-type]

    def __str__(self) -> str:
        text = f"{self.seq}[{_index_text(self.stride, self.offset, self.wrap, self.reflect)}]"
        return f"{text} ?? {self.default}" if self.default is not None else text

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"seq": self.seq, "offset": self.offset}
        if self.stride != 1:
            d["stride"] = self.stride
        if self.wrap:
            d["wrap"] = True
        if self.reflect:
            d["reflect"] = True
        if isinstance(self.default, Read):
            d["default"] = self.default.to_json()
        elif self.default is not None:
            d["default"] = self.default
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Read:
        default = d.get("default")
        if isinstance(default, dict):
            default = cls.from_json(default)
        return cls(
            d["seq"],
            int(d.get("offset", 0)),
            default,
            int(d.get("stride", 1)),
            bool(d.get("wrap", False)),
            bool(d.get("reflect", False)),
        )


@dataclass(frozen=True)
class Step:
    """Run ``stage`` for t = ``first`` .. rate*T-1+``last`` (inclusive), in ``order``.

    ``first`` >= 0 skips frames at the start, ``last`` <= 0 at the end (a flow between frame t and
    t+1 has ``last = -1``). ``rate`` > 1 runs over a sequence of ``rate`` frames per input frame.
    An output listed in ``write_at`` goes to that frame of its sequence instead of ``seq[t]``.
    """

    stage: str
    inputs: dict[str, Read]
    outputs: dict[str, str]
    order: Literal["forward", "backward"] = "forward"
    first: int = 0
    last: int = 0
    rate: int = 1
    write_at: dict[str, At] = field(default_factory=dict)

    def frames(self, num_frames: int) -> range:
        lo, hi = self.first, num_frames * self.rate - 1 + self.last
        return range(lo, hi + 1) if self.order == "forward" else range(hi, lo - 1, -1)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "stage": self.stage,
            "order": self.order,
            "first": self.first,
            "last": self.last,
            "inputs": {k: r.to_json() for k, r in self.inputs.items()},
            "outputs": dict(self.outputs),
        }
        if self.rate != 1:
            d["rate"] = self.rate
        if self.write_at:
            d["write_at"] = {k: a.to_json() for k, a in self.write_at.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        return cls(
            stage=d["stage"],
            order=d["order"],
            first=d["first"],
            last=d["last"],
            inputs={k: Read.from_json(r) for k, r in d["inputs"].items()},
            outputs=dict(d["outputs"]),
            rate=int(d.get("rate", 1)),
            write_at={k: At.from_json(a) for k, a in d.get("write_at", {}).items()},
        )


@dataclass(frozen=True)
class Plan:
    """The whole schedule: ``steps`` in order, the ``tensors`` they pass, and the ``output``.

    ``lr`` is always the input sequence; ``output`` names the sequence returned per frame.
    ``given`` maps sequences the runtime computes from the output scale and the LR size to their
    recipe (``"sampling_grid"``, ...; :mod:`vsr_models.scales`); each holds one frame, read with
    stride 0. ``window`` r makes this a sliding-window plan: output frame t depends on
    ``lr[t-r .. t+r]`` only (reflected at the ends) and no step carries state across frames.
    """

    steps: list[Step]
    tensors: dict[str, TensorSpec]
    output: str = "hr"
    given: dict[str, str] = field(default_factory=dict)
    window: int | None = None

    def __post_init__(self) -> None:
        for name in self.given:
            if name == "lr" or name not in self.tensors:
                raise ValueError(f"runtime input {name!r} needs a TensorSpec and a name other than 'lr'")
        known = {"lr", *self.given}
        for step in self.steps:
            if step.rate < 1:
                raise ValueError(f"step {step.stage!r} has rate {step.rate}; it must be at least 1")
            for name, read in step.inputs.items():
                r: Any = read
                while isinstance(r, Read):
                    if r.seq not in self.tensors:
                        raise ValueError(f"step {step.stage!r} input {name!r} reads {r.seq!r}, which has no TensorSpec")
                    r = r.default
            stray = set(step.write_at) - set(step.outputs)
            if stray:
                raise ValueError(f"step {step.stage!r} places outputs {sorted(stray)} it does not have")
            unknown = [seq for name, seq in step.outputs.items() if step.write_at.get(name) and seq not in self.tensors]
            if unknown:
                raise ValueError(f"step {step.stage!r} writes {unknown} at strided frames; they need a TensorSpec")
            known.update(step.outputs.values())
        if self.output not in known:
            raise ValueError(f"plan output {self.output!r} is written by no step")
        written = {seq for step in self.steps for seq in step.outputs.values()}
        if written & set(self.given):
            raise ValueError(f"runtime inputs {sorted(written & set(self.given))} are also written by steps")
        if self.window is not None:
            self._check_window()

    def _check_window(self) -> None:
        """A window plan reads only within ``window`` frames of t (reflected) and carries no state."""
        written = {seq for step in self.steps for seq in step.outputs.values()}
        reach = dict.fromkeys(set(self.tensors) - written, 0)  # the input, runtime inputs, zeros
        for step in self.steps:
            far = 0
            for read in step.inputs.values():
                r: Any = read
                while isinstance(r, Read):
                    if r.seq in step.outputs.values():
                        raise ValueError(f"window plan: step {step.stage!r} reads its own output {r.seq!r} (a state)")
                    if r.seq in self.given:
                        if r.stride != 0:
                            raise ValueError(f"window plan: runtime input {r.seq!r} must be read with stride 0")
                    elif r.stride != 1 or r.wrap or (r.offset and not r.reflect) or r.seq not in reach:
                        raise ValueError(
                            f"window plan: step {step.stage!r} reads {r}; a window plan reads earlier "
                            "sequences at t + offset, reflected at the clip's ends"
                        )
                    else:
                        far = max(far, reach[r.seq] + abs(r.offset))
                    r = r.default
            for seq in step.outputs.values():
                reach[seq] = max(reach.get(seq, 0), far)
        if reach[self.output] > self.window:
            raise ValueError(
                f"window plan: the output reaches {reach[self.output]} frames from t, beyond its window {self.window}"
            )

    def lookahead(self) -> int | None:
        """For a causal plan, how many input frames past t output frame t depends on; ``None`` otherwise.

        A plan is causal when every step is a per-frame step or a forward sweep (it reads its own
        outputs only at earlier frames), every read is ``seq[t + offset]``, and no sequence runs at
        another rate. Its output t is then final once input t + lookahead has arrived, and a stream
        cut into chunks gives the whole-clip run exactly when the sweeps' state is carried across
        them (AnimeSR: 1, for its ``lr[t+1]``). A backward sweep reads the future through its
        state, and strided, wrapped or reflected reads depend on the clip's length: ``None``.
        """
        if self.window is not None or self.given or any(spec.rate != 1 for spec in self.tensors.values()):
            return None
        reach = {"lr": 0}  # per sequence: the latest input frame past t that its frame t depends on
        for step in self.steps:
            if step.rate != 1 or step.write_at:
                return None
            own = set(step.outputs.values())
            far = 0
            for read in step.inputs.values():
                r: Read | str | None = read
                while isinstance(r, Read):
                    if r.stride != 1 or r.wrap or r.reflect:
                        return None
                    if r.seq in own:
                        if r.offset >= 0 or step.order != "forward":
                            return None
                    else:
                        far = max(far, reach.get(r.seq, 0) + r.offset)
                    r = r.default
            for seq in own:
                reach[seq] = max(reach.get(seq, 0), far)
        return reach[self.output]

    @property
    def output_rate(self) -> int:
        """Output frames per input frame (1 for per-frame super-resolution, 5 for DAVSR)."""
        spec = self.tensors.get(self.output)
        return spec.rate if spec is not None else 1

    def length(self, seq: str, num_frames: int) -> int:
        """Frames of sequence ``seq`` for ``num_frames`` input frames."""
        spec = self.tensors.get(seq)
        return num_frames * (spec.rate if spec is not None else 1)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "output": self.output,
            "tensors": {k: v.to_json() for k, v in self.tensors.items()},
            "steps": [s.to_json() for s in self.steps],
        }
        if self.given:
            d["given"] = dict(self.given)
        if self.window is not None:
            d["window"] = self.window
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(
            steps=[Step.from_json(s) for s in d["steps"]],
            output=d["output"],
            tensors={k: TensorSpec(**v) for k, v in d["tensors"].items()},
            given=dict(d.get("given", {})),
            window=d.get("window"),
        )

    def last_use(self) -> dict[str, int]:
        """Index of the last step that reads each sequence (so an executor can free it after)."""
        last: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for read in step.inputs.values():
                r: Any = read
                while isinstance(r, Read):
                    last[r.seq] = i
                    r = r.default
        return last


@dataclass(frozen=True)
class SizeConstraints:
    """What LR frame sizes a network accepts: at least ``min_h`` x ``min_w``, multiples of ``multiple``.

    The runtime pads frames at the bottom and right to meet them and crops the output back:
    ``pad="edge"`` replicates the last row and column, ``pad="zeros"`` fills with black (as the
    test scripts of networks that zero-pad do).
    """

    min_h: int = 1
    min_w: int = 1
    multiple: int = 1
    pad: Literal["edge", "zeros"] = "edge"

    def padded(self, h: int, w: int) -> tuple[int, int]:
        ph = max(h, self.min_h)
        pw = max(w, self.min_w)
        m = self.multiple
        return (ph + m - 1) // m * m, (pw + m - 1) // m * m

    def check(self, h: int, w: int) -> None:
        if (h, w) != self.padded(h, w):
            raise ValueError(
                f"frames of {h}x{w} do not fit this network: it needs at least {self.min_h}x{self.min_w} "
                f"in multiples of {self.multiple}; pad them (vsr-run does this for you)"
            )
