"""Modulated deformable convolution (DCNv2): a PyTorch reference and its ONNX ``DeformConv`` form.

For output pixel (i, j), kernel tap (ky, kx) and offset group g, the input is read at

    p_y = i * stride_h - pad_h + ky * dilation_h + dy[g, ky, kx, i, j]
    p_x = j * stride_w - pad_w + kx * dilation_w + dx[g, ky, kx, i, j]

by bilinear interpolation, where any of the four neighbours that falls outside the frame counts
as zero (so a position more than one pixel outside reads exactly zero). The sample is multiplied
by ``mask[g, ky, kx, i, j]`` and the result is an ordinary convolution of these samples with
``weight`` plus ``bias``. Offset group g covers input channels ``g * C / G .. (g + 1) * C / G``.

Layouts, shared with ONNX ``DeformConv`` (opset 19) and ``torchvision.ops.deform_conv2d``:

==========  ==========================  =================================================
tensor      shape                       channel order
==========  ==========================  =================================================
``x``       (N, C, H, W)
``offset``  (N, G * kh * kw * 2, oh, ow)  group, then kernel row, kernel column, then (dy, dx)
``mask``    (N, G * kh * kw, oh, ow)      group, then kernel row, kernel column
``weight``  (oC, C / groups, kh, kw)
``bias``    (oC,)
==========  ==========================  =================================================

Positions are computed in FP32 whatever the dtype of ``x`` (in FP16 a position of 300 px moves in
0.25 px steps).

:func:`deform_conv2d` is what networks call: the reference in eager mode, one standard
``DeformConv`` node (default domain, opset 19) under ``torch.onnx.export(dynamo=True)``.
ONNX Runtime has CPU and CUDA kernels for it; TensorRT (10.1+) maps it onto its built-in
``ModulatedDeformConv2d`` plugin, which wants all inputs in one dtype and symmetric pads.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.utils import _pair

#: The four bilinear neighbours of a sampling position, as (row, column) steps from its floor.
_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _check(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None, groups: int) -> int:
    """Validate the shapes; returns the number of offset groups."""
    if x.ndim != 4 or offset.ndim != 4 or weight.ndim != 4:
        raise ValueError(
            f"deform_conv2d needs 4-D x, offset and weight, got {tuple(x.shape)}, "
            f"{tuple(offset.shape)}, {tuple(weight.shape)}"
        )
    taps = weight.shape[2] * weight.shape[3]
    if offset.shape[1] % (2 * taps):
        raise ValueError(f"offset has {offset.shape[1]} channels, not a multiple of 2 * {taps} kernel taps")
    offset_groups = offset.shape[1] // (2 * taps)
    c = x.shape[1]
    if c % offset_groups or c % groups or weight.shape[1] * groups != c or weight.shape[0] % groups:
        raise ValueError(
            f"channels do not divide: x has {c}, weight {tuple(weight.shape)}, groups {groups}, "
            f"offset groups {offset_groups}"
        )
    if mask is not None and (mask.shape[1] != offset_groups * taps or mask.shape[2:] != offset.shape[2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match offset {tuple(offset.shape)}")
    return offset_groups


def _sample(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` (N, G, Cg, H, W) at FP32 positions (N, G, oh, ow), zero outside.

    Returns (N, G, Cg, oh * ow) in the dtype of ``x``.
    """
    n, g, cg, h, w = x.shape
    flat = x.reshape(n, g, cg, h * w)
    top, left = torch.floor(py), torch.floor(px)
    fy, fx = py - top, px - left
    out = None
    for dy, dx in _CORNERS:
        row, col = top + dy, left + dx
        inside = (row >= 0) & (row <= h - 1) & (col >= 0) & (col <= w - 1)
        weight = (fy if dy else 1 - fy) * (fx if dx else 1 - fx) * inside
        index = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).to(torch.int64).reshape(n, g, 1, -1)
        term = torch.gather(flat, 3, index.expand(n, g, cg, index.shape[-1]))
        term = term * weight.reshape(n, g, 1, -1).to(x.dtype)
        out = term if out is None else out + term
    assert out is not None
    return out


def deform_conv2d_reference(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Modulated deformable convolution in plain PyTorch (see the module docstring).

    Args:
        x: (N, C, H, W) input.
        offset: (N, G * kh * kw * 2, oh, ow) sampling offsets in pixels, (dy, dx) pairs; used in FP32.
        weight: (oC, C / groups, kh, kw) convolution weights.
        bias: (oC,) or None.
        mask: (N, G * kh * kw, oh, ow) modulation, or None for all ones (DCNv1).
        stride, padding, dilation: as for ``nn.Conv2d`` (symmetric padding).
        groups: convolution groups.

    Returns:
        (N, oC, oh, ow) in the dtype of ``x``. It is computed one kernel tap at a time, so the
        peak extra memory is one (N, C, oh * ow) block of samples, not the whole im2col matrix.
    """
    offset_groups = _check(x, offset, weight, mask, groups)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = x.shape
    oc, cpg, kh, kw = weight.shape
    oh, ow = offset.shape[2], offset.shape[3]
    taps = kh * kw
    off = offset.to(torch.float32).reshape(n, offset_groups, taps, 2, oh, ow)
    gain = None if mask is None else mask.to(torch.float32).reshape(n, offset_groups, taps, oh, ow)
    rows = (torch.arange(oh, device=x.device, dtype=torch.float32) * sh - ph).view(1, 1, oh, 1)
    cols = (torch.arange(ow, device=x.device, dtype=torch.float32) * sw - pw).view(1, 1, 1, ow)
    grouped = x.reshape(n, offset_groups, c // offset_groups, h, w)
    kernel = weight.reshape(groups, oc // groups, cpg, taps)
    out = None
    for tap in range(taps):
        ky, kx = divmod(tap, kw)
        py = rows + ky * dh + off[:, :, tap, 0]
        px = cols + kx * dw + off[:, :, tap, 1]
        samples = _sample(grouped, py, px)  # (N, G, C/G, P)
        if gain is not None:
            samples = samples * gain[:, :, tap].reshape(n, offset_groups, 1, -1).to(x.dtype)
        samples = samples.reshape(n, groups, cpg, oh * ow)
        term = torch.matmul(kernel[..., tap], samples)  # (N, groups, oC/groups, P)
        out = term if out is None else out + term
    assert out is not None
    out = out.reshape(n, oc, oh, ow)
    return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    mask: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """:func:`deform_conv2d_reference`, or one ONNX ``DeformConv`` node under ``torch.onnx.export``.

    Same arguments and result. The exported node takes (X, W, offset, B, mask) with the attributes
    ``kernel_shape``, ``strides``, ``pads`` (symmetric), ``dilations``, ``group`` and
    ``offset_group``; ``offset`` is passed in FP32.
    """
    if not torch.onnx.is_in_onnx_export():
        return deform_conv2d_reference(
            x, offset, weight, bias, mask=mask, stride=stride, padding=padding, dilation=dilation, groups=groups
        )
    offset_groups = _check(x, offset, weight, mask, groups)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = weight.shape[2], weight.shape[3]
    attrs = {
        "kernel_shape": [kh, kw],
        "strides": [sh, sw],
        "pads": [ph, pw, ph, pw],
        "dilations": [dh, dw],
        "group": int(groups),
        "offset_group": int(offset_groups),
    }
    shape = (x.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
    return torch.onnx.ops.symbolic(
        "::DeformConv", [x, weight, offset.to(torch.float32), bias, mask], attrs, dtype=x.dtype, shape=shape, version=19
    )


class ModulatedDeformConv2d(nn.Module):
    """The weights of a modulated deformable convolution (mmcv's ``ModulatedDeformConv2d`` names).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        deform_groups: offset groups G (input channels are split into G groups, each with its own
            offsets and mask).
        bias: whether there is a bias.

    Parameters: ``weight`` (out, in / groups, k, k), ``bias`` (out,). ``forward(x, offset, mask)``
    applies :func:`deform_conv2d`; subclasses compute ``offset`` and ``mask`` themselves.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or in_channels % deform_groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must be divisible by "
                f"groups {groups}; in_channels also by deform_groups {deform_groups}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in +-1/sqrt(fan_in), bias zero (mmcv's initialisation)."""
        fan_in = self.in_channels * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            mask=mask,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deform_groups={self.deform_groups}, bias={self.bias is not None}"
        )
