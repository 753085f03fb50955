"""The plan schema and the executor, on a toy network whose arithmetic is easy to check by hand."""

from __future__ import annotations

import json
import weakref
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from runtime.backends import TorchBackend
from runtime.executor import PlanError, run_plan
from vsr_models.base import Stage
from vsr_models.plan import Plan, Read, SizeConstraints, Step, TensorSpec


class _Add(nn.Module):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x + h


class _Toy(nn.Module):
    """cumulative sums in both directions, as a recurrent network would carry state."""

    name, scale, constraints = "toy", 1, SizeConstraints()

    def stages(self):
        return {"step": Stage(_Add(), ["x", "h"], ["y"])}

    def plan(self, default="zeros"):
        return Plan(
            tensors={"lr": TensorSpec(3), "b": TensorSpec(3), "f": TensorSpec(3)},
            steps=[
                Step("step", {"x": Read("lr"), "h": Read("b", 1, default)}, {"y": "b"}, order="backward"),
                Step("step", {"x": Read("b"), "h": Read("f", -1, default)}, {"y": "f"}),
            ],
            output="f",
        )


def test_plan_round_trips_through_json():
    plan = _Toy().plan()
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan
    nested = Read.parse("hb[t-2]", default="feat[t]")
    assert nested == Read("hb", -2, Read("feat", 0)) and Read.from_json(nested.to_json()) == nested


def test_bad_reads_and_unknown_sequences_are_rejected():
    with pytest.raises(ValueError, match="name\\[t\\+1\\]"):
        Read.parse("hb[x+1]")
    with pytest.raises(ValueError, match="has no TensorSpec"):
        Plan(tensors={"lr": TensorSpec(3)}, steps=[Step("s", {"x": Read("nope")}, {"y": "lr"})], output="lr")
    with pytest.raises(ValueError, match="must differ"):
        Stage(_Add(), ["x", "h"], ["h"])


def test_executor_computes_the_recurrence():
    toy = _Toy()
    frames = np.arange(5, dtype=np.float32)[:, None, None, None, None] * np.ones((5, 1, 3, 2, 2), np.float32)
    backend = TorchBackend(toy)
    out = [backend.download(o)[0, 0, 0, 0] for o in run_plan(toy.plan(), backend, [backend.upload(f) for f in frames])]
    b = np.cumsum(np.arange(5)[::-1])[::-1]  # suffix sums
    np.testing.assert_allclose(out, np.cumsum(b))


class _Sub(nn.Module):
    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        return x - prev


class _AddTwice(nn.Module):
    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + h, 2 * (x + h)


class _ThreeSweeps(nn.Module):
    """d[t] = lr[t] - lr[t-1]; b[t] = d[t] + b[t+1] (backward); f[t] = b[t] + f[t-1], y[t] = 2 f[t]
    (forward; y is the output). d is last read by the backward sweep, b by the forward sweep, and f
    only by its own sweep, one frame back."""

    def stages(self):
        return {
            "diff": Stage(_Sub(), ["x", "prev"], ["d"]),
            "bwd": Stage(_Add(), ["x", "h"], ["y"]),
            "fwd": Stage(_AddTwice(), ["x", "h"], ["state", "y"]),
        }

    def plan(self):
        return Plan(
            tensors={name: TensorSpec(3) for name in ("lr", "d", "b", "f", "out")},
            steps=[
                Step("diff", {"x": Read("lr"), "prev": Read("lr", -1, "zeros")}, {"d": "d"}),
                Step("bwd", {"x": Read("d"), "h": Read("b", 1, "zeros")}, {"y": "b"}, order="backward"),
                Step("fwd", {"x": Read("b"), "h": Read("f", -1, "zeros")}, {"state": "f", "y": "out"}),
            ],
            output="out",
        )


class _Handle:
    def __init__(self, value: torch.Tensor, label: str) -> None:
        self.value, self.label = value, label


class _CountingBackend:
    """Runs the stages in PyTorch on handles it can count while they live: before every stage call
    it records how many handles of each kind (``lr``, ``zeros``, ``<stage>.<output>``) the executor
    still holds. CPython frees a handle as soon as its last reference goes."""

    name = "counting"

    def __init__(self, net: _ThreeSweeps) -> None:
        self.stages = net.stages()
        self.live: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self.calls: list[tuple[str, Counter[str]]] = []

    def _new(self, value: torch.Tensor, label: str) -> _Handle:
        handle = _Handle(value, label)
        self.live.add(handle)
        return handle

    def counts(self) -> Counter[str]:
        return Counter(h.label for h in self.live)

    def upload(self, array: np.ndarray) -> _Handle:
        return self._new(torch.from_numpy(array), "lr")

    def download(self, handle: _Handle) -> np.ndarray:
        return handle.value.numpy()

    def zeros(self, shape: tuple[int, ...]) -> _Handle:
        return self._new(torch.zeros(shape), "zeros")

    def shape(self, handle: _Handle) -> tuple[int, ...]:
        return tuple(handle.value.shape)

    def run(self, stage: str, inputs: dict[str, _Handle]) -> dict[str, _Handle]:
        self.calls.append((stage, self.counts()))
        outputs = self.stages[stage](**{k: v.value for k, v in inputs.items()})
        return {k: self._new(v, f"{stage}.{k}") for k, v in outputs.items()}


@pytest.mark.parametrize("count", [5, 12])
def test_executor_frees_each_sequence_after_its_last_reader(count: int):
    """The README's "each sequence is freed after its last reader", counted on live handles: d is
    gone before the forward sweep starts, the forward state is held one frame at a time however long
    the clip, and when the run returns only the outputs (and the caller's frames) are alive."""
    net = _ThreeSweeps()
    backend = _CountingBackend(net)
    values = np.arange(count, dtype=np.float32) ** 2
    frames = [backend.upload(np.full((1, 3, 2, 2), v, np.float32)) for v in values]
    out = run_plan(net.plan(), backend, frames)

    b = np.cumsum(np.diff(values, prepend=0)[::-1])[::-1]  # suffix sums of the differences
    np.testing.assert_allclose([backend.download(o)[0, 0, 0, 0] for o in out], 2 * np.cumsum(b))

    forward = [seen for stage, seen in backend.calls if stage == "fwd"]
    assert len(forward) == count
    assert all(seen["diff.d"] == 0 for seen in forward), "d outlived its last reader, the backward sweep"
    assert max(seen["fwd.state"] for seen in forward) == 1, "the forward state piles up along the clip"
    assert max(seen["bwd.y"] for seen in forward) == count  # b is read at every t of the forward sweep
    assert backend.counts() == Counter({"lr": count, "fwd.y": count}), "something but the outputs outlived the run"
    del out
    assert backend.counts() == Counter({"lr": count})


def test_missing_frame_without_default_is_a_clear_error():
    toy = _Toy()
    backend = TorchBackend(toy)
    with pytest.raises(PlanError, match="has no default"):
        run_plan(toy.plan(default=None), backend, [backend.upload(np.zeros((1, 3, 2, 2), np.float32))])
    with pytest.raises(PlanError, match="no frames"):
        run_plan(toy.plan(), backend, [])


def test_size_constraints_pad_up():
    c = SizeConstraints(min_h=64, min_w=64, multiple=8)
    assert c.padded(10, 100) == (64, 104)
    with pytest.raises(ValueError, match="pad them"):
        c.check(64, 100)
