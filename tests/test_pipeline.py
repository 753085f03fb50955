"""Chunks in time, tiles in space and padding: the runtime against independent references on real frames.

The references: one whole-clip window (chunks), untiled frames (tiles), the PyTorch network run on
frames padded here with numpy (padding and crop-back, tile cores). Limits come from the figures
measured on this machine class (2-core x86-64 CPU, ONNX Runtime, the REDS4 weights), each stated
with its margin beside the test; the printed figures (``pytest -s``) remeasure them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.backends import OrtBackend, OrtOptions, model_for_package
from runtime.pipeline import DEFAULT_CHUNK, DEFAULT_OVERLAP, Upscaler, plan_tiles
from runtime.samples import psnr

from .conftest import lr_clip


def _run(package, lr, **kw):
    backend = OrtBackend(package, OrtOptions(threads=2))
    up = Upscaler(backend, package.plan, package.scale, package.constraints, **kw)
    return np.stack(list(up.stream(iter(lr))))


def _forward(model, lr: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(lr))[None])[0].numpy()


def _pad_to(lr: np.ndarray, h: int, w: int, mode: str = "edge") -> np.ndarray:
    """(T, 3, h0, w0) padded at the bottom and right to h x w, written out with numpy."""
    return np.pad(lr, ((0, 0), (0, 0), (0, h - lr.shape[2]), (0, w - lr.shape[3])), mode=mode)


def test_tiles_cover_the_frame_exactly_once():
    tiles = plan_tiles(100, 230, 64, 8)
    cover = np.zeros((100, 230), int)
    for t in tiles:
        cover[t.core_y0 : t.core_y1, t.core_x0 : t.core_x1] += 1
        assert t.y0 <= t.core_y0 and t.y1 >= t.core_y1 and t.y1 - t.y0 <= 64 + 16
    assert (cover == 1).all()


# ---------------------------------------------------------------- chunks in time
#: Measured: 40 frames of bikes.mp4 / 4 (36x40 at y0=64, x0=160), default 30 + 6, REDS4, ONNX
#: Runtime: worst frame 81.8 dB (frame 30, the first of the second window), 89.9 dB over the clip
#: (`pytest -s tests/test_pipeline.py -k every_frame`). Limit: the worst frame less 3 dB.
CHUNK_FRAME_LIMIT = 78.8


def test_chunked_run_matches_whole_clip_on_every_frame(basicvsr_package):
    """The default chunk and overlap against one whole-clip window, frame by frame: two windows, so
    frames 0-29 lose the last 4 frames' backward context and frames 30-39 the first 24 frames'."""
    count = DEFAULT_CHUNK + DEFAULT_OVERLAP + 4
    lr, _ = lr_clip(count, 36, 40)
    whole = _run(basicvsr_package, lr, chunk=None)
    chunked = _run(basicvsr_package, lr, chunk=DEFAULT_CHUNK, overlap=DEFAULT_OVERLAP)
    assert chunked.shape == whole.shape == (count, 3, 144, 160)
    per_frame = np.array([psnr(chunked[i], whole[i]) for i in range(count)])
    worst, at, clip = per_frame.min(), per_frame.argmin(), psnr(chunked, whole)
    print(f"chunked vs whole: worst {worst:.2f} dB at frame {at}, clip {clip:.2f}")
    assert np.isfinite(per_frame).all(), "a frame equals the whole-clip run: the windows were not used"
    assert per_frame.min() >= CHUNK_FRAME_LIMIT, per_frame.round(1)


@pytest.mark.slow
def test_chunked_run_as_the_readme_measures_it(basicvsr_package):
    """The README's chunk figure, through its command: ``vsr-parity basicvsr --chunked --frames 100
    --crop 60x80``: 58.0 dB on the worst frame. Limit: 56 dB (2 dB margin)."""
    import re

    from click.testing import CliRunner

    from runtime.cli.parity import main as parity_main

    args = [str(basicvsr_package.root), "--chunked", "--frames", "100", "--crop", "60x80", "--backend", "onnxruntime"]
    result = CliRunner().invoke(parity_main, args)
    assert result.exit_code == 0, result.output
    low = float(re.search(r"min PSNR ([\d.]+) dB", result.output).group(1))
    print(f"vsr-parity --chunked, 100 frames 60x80: worst frame {low:.2f} dB")
    assert low >= 56.0


# ---------------------------------------------------------------- tiles in space
def _seam_band(h: int, w: int, tiles, scale: int, half_width: int) -> np.ndarray:
    """HR pixels within ``half_width`` of a boundary between two tile cores."""
    band = np.zeros((h * scale, w * scale), bool)
    for y in {t.core_y0 for t in tiles} - {0}:
        band[max(y * scale - half_width, 0) : y * scale + half_width, :] = True
    for x in {t.core_x0 for t in tiles} - {0}:
        band[:, max(x * scale - half_width, 0) : x * scale + half_width] = True
    return band


#: Measured: 2 frames of bikes.mp4 / 4 (48x80 at y0=64, x0=160), tiles of 40 (2x2, seams at LR row 24
#: and column 40), REDS4, ONNX Runtime; PSNR against the untiled run per frame, in the seam bands
#: (8 HR pixels each side of a seam) / elsewhere: overlap 12: 59.7 / 60.9 and 64.2 / 58.8 dB; no
#: overlap: 42.0 / 52.3 and 43.1 / 50.6 dB (`pytest -s tests/test_pipeline.py -k seams`).
#: Limits: seam bands >= 57.5 dB with the default-like overlap (2 dB below the worst frame), and not
#: more than 3 dB below the rest of the frame; the run without overlap must fail both by a margin
#: (bands <= 47 dB, >= 6 dB below the rest), which shows the check can see a seam.
SEAM_LIMIT, SEAM_CONTROL_LIMIT = 57.5, 47.0


def test_tile_seams_match_untiled_and_a_run_without_overlap_does_not(basicvsr_package):
    lr, _ = lr_clip(2, 48, 80)
    whole = _run(basicvsr_package, lr, chunk=None)
    tiles = plan_tiles(48, 80, 40, 12)
    assert len(tiles) == 4
    band = _seam_band(48, 80, tiles, 4, 8)
    figures = {}
    for overlap in (12, 0):
        tiled = _run(basicvsr_package, lr, chunk=None, tile=40, tile_overlap=overlap)
        assert tiled.shape == whole.shape
        figures[overlap] = [
            (psnr(tiled[i][:, band], whole[i][:, band]), psnr(tiled[i][:, ~band], whole[i][:, ~band])) for i in range(2)
        ]
    print("tiles vs untiled, (seam band, elsewhere) per frame:", figures)
    for seams, rest in figures[12]:
        assert seams >= SEAM_LIMIT and seams >= rest - 3.0
    for seams, rest in figures[0]:  # the negative control: without overlap, the seams show
        assert seams <= SEAM_CONTROL_LIMIT and seams <= rest - 6.0


def test_each_tile_core_is_the_network_on_its_own_padded_region(tiny_package):
    """Tiles of 22x24 LR pixels, below BasicVSR's 33x33: each tile's core in the output equals the
    PyTorch network run on that tile's region padded by edge replication (here, with numpy) and
    cropped back."""
    model = model_for_package(tiny_package)
    lr, _ = lr_clip(2, 36, 40)
    out = _run(tiny_package, lr, chunk=None, tile=20, tile_overlap=4)
    tiles = plan_tiles(36, 40, 20, 4)
    assert len(tiles) == 4 and all(t.y1 - t.y0 < 33 and t.x1 - t.x0 < 33 for t in tiles)
    for t in tiles:
        th, tw = t.y1 - t.y0, t.x1 - t.x0
        ref = _forward(model, _pad_to(lr[:, :, t.y0 : t.y1, t.x0 : t.x1], 33, 33))[:, :, : 4 * th, : 4 * tw]
        rows, cols = (
            slice(4 * (t.core_y0 - t.y0), 4 * (t.core_y1 - t.y0)),
            slice(4 * (t.core_x0 - t.x0), 4 * (t.core_x1 - t.x0)),
        )
        core = ref[:, :, rows, cols]
        got = out[:, :, 4 * t.core_y0 : 4 * t.core_y1, 4 * t.core_x0 : 4 * t.core_x1]
        assert np.abs(got - core).max() <= 1e-4, t


# ---------------------------------------------------------------- padding and crop-back
@pytest.mark.parametrize("size", [(20, 27), (40, 27)], ids=["both_sides_small", "width_small"])
def test_small_frames_are_padded_by_edge_replication_and_cropped_back(basicvsr, basicvsr_package, size):
    """Frames below BasicVSR's 33x33: the output equals the PyTorch network run on the frames padded
    (here, with numpy) at the bottom and right by edge replication, cropped to 4h x 4w; zero padding
    would differ by far more than the parity bound (the negative control)."""
    h, w = size
    lr, _ = lr_clip(2, 40, 40)
    lr = np.ascontiguousarray(lr[:, :, :h, :w])
    out = _run(basicvsr_package, lr, chunk=None)
    assert out.shape == (2, 3, 4 * h, 4 * w)
    ph, pw = max(h, 33), max(w, 33)
    edge = _forward(basicvsr, _pad_to(lr, ph, pw))[:, :, : 4 * h, : 4 * w]
    assert np.abs(out - edge).max() <= 1e-4  # the ONNX Runtime parity bound
    zeros = _forward(basicvsr, _pad_to(lr, ph, pw, "constant"))[:, :, : 4 * h, : 4 * w]
    assert np.abs(out - zeros).max() > 1e-2


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
