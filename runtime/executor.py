"""The one executor: runs a :class:`~vsr_models.plan.Plan` over a clip on any backend.

Values stay as backend handles (torch tensors, ONNX Runtime ``OrtValue``\\ s, device buffers)
from the first upload to the last download; the executor never looks inside them. A sequence is
released as soon as the last step that reads it has run, so memory follows the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from vsr_models.errors import VSRError
from vsr_models.plan import Plan, Read
from vsr_models.scales import Scale, output_size, runtime_inputs


class Backend(Protocol):
    """What the executor needs from a backend. ``Handle`` is whatever the backend keeps."""

    name: str

    def upload(self, array: np.ndarray) -> Any:
        """(1, C, H, W) float32 numpy -> handle."""

    def download(self, handle: Any) -> np.ndarray:
        """handle -> (1, C, H, W) float32 numpy."""

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """A handle of zeros of ``shape`` (float32)."""

    def shape(self, handle: Any) -> tuple[int, ...]:
        """The shape of a handle."""

    def run(self, stage: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run one stage on handles; returns handles by output name."""


class PlanError(VSRError, RuntimeError):
    """The plan asked for a frame that no step wrote and no default covers."""


def run_plan(
    plan: Plan,
    backend: Backend,
    frames: Sequence[Any],
    on_output: Callable[[int, Any], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    scale: Scale | None = None,
) -> list[Any]:
    """Run ``plan`` over ``frames`` (handles of (1, 3, h, w) LR frames, already uploaded).

    Returns the plan's output sequence as handles, in frame order; with ``on_output(t, handle)``
    each output frame is handed over as it is produced instead and the list is empty (an output a
    step reads back, such as AnimeSR's previous SR frame, is also kept until read). ``t`` is
    the output frame's index: 0 .. ``plan.output_rate`` * len(frames) - 1.
    ``on_step(stage)`` is called after every stage call (progress). ``scale`` (s_h, s_w) is the
    output scale of an arbitrary-scale plan (one with ``given`` inputs, computed here from it).
    """
    num = len(frames)
    if num == 0:
        raise PlanError("no frames to process")
    _, _, h, w = backend.shape(frames[0])
    seqs: dict[str, dict[int, Any]] = {"lr": dict(enumerate(frames))}
    out_size = None
    if plan.given:
        if scale is None:
            raise PlanError("this plan upscales by any scale: give the scale (s_h, s_w) to run it")
        out_size = output_size(h, w, scale)
        for name, array in runtime_inputs(plan.given, h, w, scale).items():
            seqs[name] = {0: backend.upload(array)}
    zeros_cache: dict[str, Any] = {}
    last_use = plan.last_use()
    handed = plan.output if on_output is not None else None  # the sequence handed over as it is made

    def feed(read: Read, t: int, why: str) -> Any:
        r: Read | str | None = read
        while isinstance(r, Read):
            value = seqs.get(r.seq, {}).get(r.index(t, plan.length(r.seq, num)))
            if value is not None:
                return value
            if r.default == "zeros":
                if r.seq not in zeros_cache:
                    zeros_cache[r.seq] = backend.zeros(plan.tensors[r.seq].shape(h, w, out_size))
                return zeros_cache[r.seq]
            r = r.default
        raise PlanError(f"{why} reads {read} at t={t}: that frame does not exist and the read has no default")

    for index, step in enumerate(plan.steps):
        carried = _carried_states(plan, index, last_use, handed)
        for t in step.frames(num):
            inputs = {name: feed(read, t, f"stage {step.stage!r} input {name!r}") for name, read in step.inputs.items()}
            outputs = backend.run(step.stage, inputs)
            for out_name, seq in step.outputs.items():
                at = step.write_at.get(out_name)
                slot = t if at is None else at.index(t, plan.length(seq, num))
                if seq == handed and on_output is not None:
                    on_output(slot, outputs[out_name])
                    if seq not in last_use:
                        continue
                seqs.setdefault(seq, {})[slot] = outputs[out_name]
            # A state read only by its own sweep is dropped once the sweep has moved past it.
            for seq, lo, hi in carried:
                frames = seqs.get(seq, {})
                for old in [k for k in frames if (k < t + 1 + lo if step.order == "forward" else k > t - 1 + hi)]:
                    del frames[old]
            if on_step is not None:
                on_step(step.stage)
        for seq, last in last_use.items():
            if last == index and seq != "lr" and (seq != plan.output or seq == handed):
                seqs.pop(seq, None)
                zeros_cache.pop(seq, None)
    if handed is not None:
        return []
    result = seqs.get(plan.output, {})
    return [result[t] for t in sorted(result)]


def _carried_states(plan: Plan, index: int, last_use: dict[str, int], handed: str | None) -> list[tuple[str, int, int]]:
    """(sequence, min offset, max offset) of the states step ``index`` writes and is the last to read.

    Only plain states qualify (read at ``t + offset``, written at ``t``); strided, wrapped or reflected
    sequences are kept until the step ends. The plan's output qualifies only when it is ``handed``
    over as it is made (otherwise it is the result).
    """
    step = plan.steps[index]
    offsets: dict[str, list[int]] = {}
    irregular = {step.outputs[name] for name in step.write_at}
    for read in step.inputs.values():
        r: Read | str | None = read
        while isinstance(r, Read):
            offsets.setdefault(r.seq, []).append(r.offset)
            if r.stride != 1 or r.wrap or r.reflect:
                irregular.add(r.seq)
            r = r.default
    return [
        (seq, min(offs), max(offs))
        for seq, offs in offsets.items()
        if seq in step.outputs.values()
        and last_use.get(seq) == index
        and (seq != plan.output or seq == handed)
        and seq not in irregular
    ]
