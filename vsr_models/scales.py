"""Output sizes and per-scale inputs of arbitrary-scale networks, in numpy (no torch).

An arbitrary-scale network (SAVSR) upscales by ``scale = (s_h, s_w)``, any factors, the two axes
independent. Everything that depends only on the scale and the LR frame size is computed here,
once per clip, by the runtime (and by the network's own ``forward``, so both see the same
numbers), then fed to the stage graphs as inputs: one exported package serves every scale, and
the graphs' output size follows from these inputs' shapes.

All arithmetic is float32, one IEEE operation at a time in the order of the original PyTorch code,
so the arrays are bit-identical to what its eager CPU float32 ops compute.

Conventions (HR pixel X, LR width w, scale s_w; the same along the height):

* output size ``round(h * s_h), round(w * s_w)``, Python's round (half to even);
* LR coordinate of the HR pixel centre: ``x = (X + 0.5) / s_w - 0.5``;
* sub-pixel phase ``R(X) = (X + 0.5) / s_w - floor((X + 0.5) / s_w + 1e-3) - 0.5``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .errors import VSRError

Scale = tuple[float, float]
_F = np.float32


class ScaleError(VSRError, ValueError):
    """A scale or output size that a network cannot produce."""


def output_size(h: int, w: int, scale: Scale) -> tuple[int, int]:
    """The HR size for an h x w LR frame: ``(round(h * s_h), round(w * s_w))``."""
    return round(h * scale[0]), round(w * scale[1])


def scale_for_size(h: int, w: int, size: tuple[int, int]) -> Scale:
    """The scale that makes an h x w frame exactly ``size`` (H, W): ``(H / h, W / w)``."""
    return size[0] / h, size[1] / w


def _lr_coordinate(n: int, s: float) -> np.ndarray:
    """(X + 0.5) / s for X = 0 .. n-1, float32."""
    return (np.arange(n, dtype=_F) + _F(0.5)) / _F(s)


def inverse_scale(h: int, w: int, scale: Scale) -> np.ndarray:
    """(1, 2, 1, 1): ``[1 / s_h, 1 / s_w]``, the scale vector the scale-attention convolutions route on."""
    inv = np.array([_F(1) / _F(scale[0]), _F(1) / _F(scale[1])], dtype=_F)
    return inv.reshape(1, 2, 1, 1)


def sampling_grid(h: int, w: int, scale: Scale) -> np.ndarray:
    """(1, 2, H, W): where each HR pixel centre falls in the LR frame, normalised for
    ``grid_sample(align_corners=True)``: channel 0 is x (``x * 2 / (w - 1) - 1``), channel 1 is y."""
    out_h, out_w = output_size(h, w, scale)
    x = (_lr_coordinate(out_w, scale[1]) - _F(0.5)) * _F(2) / _F(w - 1) - _F(1)
    y = (_lr_coordinate(out_h, scale[0]) - _F(0.5)) * _F(2) / _F(h - 1) - _F(1)
    grid = np.empty((1, 2, out_h, out_w), dtype=_F)
    grid[0, 0] = x[None, :]
    grid[0, 1] = y[:, None]
    return grid


def _phase(n: int, s: float) -> np.ndarray:
    q = _lr_coordinate(n, s)
    return q - np.floor(q + _F(1e-3)) - _F(0.5)


def phase_map(h: int, w: int, scale: Scale) -> np.ndarray:
    """(1, 4, H, W): ``[1 / s_w, 1 / s_h, R(Y), R(X)]`` per HR pixel, the upsampler's position embedding."""
    out_h, out_w = output_size(h, w, scale)
    phase = np.empty((1, 4, out_h, out_w), dtype=_F)
    phase[0, 0] = _F(1) / _F(scale[1])
    phase[0, 1] = _F(1) / _F(scale[0])
    phase[0, 2] = _phase(out_h, scale[0])[:, None]
    phase[0, 3] = _phase(out_w, scale[1])[None, :]
    return phase


#: The inputs a plan may ask the runtime for (``Plan.given``), by recipe name.
RUNTIME_INPUTS: dict[str, Callable[[int, int, Scale], np.ndarray]] = {
    "inverse_scale": inverse_scale,
    "sampling_grid": sampling_grid,
    "phase_map": phase_map,
}


def runtime_inputs(given: Mapping[str, str], h: int, w: int, scale: Scale) -> dict[str, np.ndarray]:
    """The arrays of a plan's ``given`` sequences (name -> recipe) for an h x w clip at ``scale``."""
    unknown = sorted(set(given.values()) - set(RUNTIME_INPUTS))
    if unknown:
        raise ScaleError(
            f"the plan asks for runtime inputs {unknown}, which this version does not know "
            f"(it knows {', '.join(RUNTIME_INPUTS)}); upgrade vsr or export the package again"
        )
    return {name: RUNTIME_INPUTS[recipe](h, w, scale) for name, recipe in given.items()}
