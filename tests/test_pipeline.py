"""Chunks in time, tiles in space and padding: the runtime against whole-clip runs on real frames."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.backends import OrtBackend
from runtime.pipeline import DEFAULT_CHUNK, DEFAULT_OVERLAP, Upscaler, plan_tiles
from runtime.samples import psnr

from .conftest import lr_clip


def _run(package, lr, **kw):
    up = Upscaler(OrtBackend(package), package.plan, package.scale, package.constraints, **kw)
    return np.stack(list(up.stream(iter(lr))))


def test_tiles_cover_the_frame_exactly_once():
    tiles = plan_tiles(100, 230, 64, 8)
    cover = np.zeros((100, 230), int)
    for t in tiles:
        cover[t.core_y0 : t.core_y1, t.core_x0 : t.core_x1] += 1
        assert t.y0 <= t.core_y0 and t.y1 >= t.core_y1 and t.y1 - t.y0 <= 64 + 16
    assert (cover == 1).all()


def test_chunked_run_matches_whole_clip_above_45db(basicvsr_package):
    """The default chunk and overlap against one whole-clip window (README states the figure)."""
    count = DEFAULT_CHUNK + DEFAULT_OVERLAP + 4
    lr, _ = lr_clip(count, 36, 40)
    whole = _run(basicvsr_package, lr, chunk=None)
    chunked = _run(basicvsr_package, lr, chunk=DEFAULT_CHUNK, overlap=DEFAULT_OVERLAP)
    assert chunked.shape == whole.shape == (count, 3, 144, 160)
    value = psnr(chunked, whole)
    assert value >= 45.0, f"chunked vs whole clip: {value:.2f} dB"


def test_tiled_run_matches_untiled(basicvsr_package):
    lr, _ = lr_clip(3, 48, 80)
    whole = _run(basicvsr_package, lr, chunk=None)
    tiled = _run(basicvsr_package, lr, chunk=None, tile=40, tile_overlap=12)
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) >= 40.0


@pytest.mark.parametrize("size", [(20, 27), (35, 61)])
def test_small_and_odd_frames_are_padded_and_cropped_back(basicvsr_package, size):
    lr, _ = lr_clip(2, 40, 64)
    lr = np.ascontiguousarray(lr[:, :, : size[0], : size[1]])
    out = _run(basicvsr_package, lr, chunk=None)
    assert out.shape == (2, 3, 4 * size[0], 4 * size[1])
    assert np.isfinite(out).all()


def test_space_time_plans_yield_rate_frames_per_input_frame_in_order():
    """A plan with output rate 2 (as DAVSR's 5) through windows: 2 frames per input, in time order."""
    from torch import nn

    from runtime.backends import TorchBackend
    from vsr_models.base import Stage
    from vsr_models.plan import At, Plan, Read, SizeConstraints, Step, TensorSpec

    class Twice(nn.Module):
        def forward(self, x):
            return x, x + 0.5

    class Net(nn.Module):
        def stages(self):
            return {"twice": Stage(Twice(), ["x"], ["a", "b"])}

    plan = Plan(
        tensors={"lr": TensorSpec(3), "hr": TensorSpec(3, rate=2)},
        steps=[Step("twice", {"x": Read("lr")}, {"a": "hr", "b": "hr"}, write_at={"a": At(2, 0), "b": At(2, 1)})],
        output="hr",
    )
    frames = [np.full((3, 2, 2), i, np.float32) for i in range(5)]
    up = Upscaler(TorchBackend(Net()), plan, 1, SizeConstraints(), chunk=2, overlap=0)
    out = [float(f[0, 0, 0]) for f in up.stream(iter(frames))]
    assert out == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5]
