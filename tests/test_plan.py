"""The plan schema and the executor, on a toy network whose arithmetic is easy to check by hand."""

from __future__ import annotations

import json

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


def test_executor_computes_the_recurrence_and_frees_states():
    toy = _Toy()
    frames = np.arange(5, dtype=np.float32)[:, None, None, None, None] * np.ones((5, 1, 3, 2, 2), np.float32)
    backend = TorchBackend(toy)
    out = [backend.download(o)[0, 0, 0, 0] for o in run_plan(toy.plan(), backend, [backend.upload(f) for f in frames])]
    b = np.cumsum(np.arange(5)[::-1])[::-1]  # suffix sums
    np.testing.assert_allclose(out, np.cumsum(b))


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
