"""Implicit warp: IART's attention resampling, as a custom operation with a PyTorch reference.

For every target pixel (i, j) the source feature map is read at the flow-displaced position
``(i + dy, j + dx)``. Instead of interpolating, a single-query cross-attention picks the result
from the 2x2 bilinear support of that position: the four integer corners
``(floor(i + dy) + a, floor(j + dx) + b)``, a, b in {0, 1}, clamped to the frame (border
replication). The query is the target feature plus a sinusoidal code of the sub-pixel offset; each
key/value is the corner's source feature plus a fixed code of its slot (a, b).

Definitions (C channels, H heads of d = C / H channels, F = C / 4 frequencies):

* offsets ``fy = py - floor(py)``, ``fx = px - floor(px)`` in [0, 1), FP32;
* ``enc(u)`` = [sin(u / D_0), cos(u / D_0), ..., sin(u / D_{F-1}), cos(u / D_{F-1})] (2F values);
* query code ``[enc(fy / (2 + 1e-6) * 2 pi), enc(fx / (2 + 1e-6) * 2 pi)]`` (C values, y first);
* ``q = Wq (x + code) + bq``, ``k_s = Wk (y_s + key_pe[s]) + bk``, ``v_s = Wv (y_s + key_pe[s]) + bv``
  for the four slots s = 2a + b, where y_s is the source at corner (a, b);
* per head: ``attn = softmax_s(scale * q . k_s)``, ``out = sum_s attn_s v_s``.

There is no output projection, no residual and no normalisation: that is the original module.

The ``vsr::ImplicitWarp`` ONNX operator (domain ``vsr``, version 1)
-------------------------------------------------------------------
Inputs, all float tensors (N batch, C channels, h x w LR size):

==============  ================  ==========================================================
name            shape             meaning
==============  ================  ==========================================================
``source``      (N, C, h, w)      the features resampled (y: the branch's earlier output)
``target``      (N, C, h, w)      the query features (x: this frame's input feature)
``flow``        (N, 2, h, w)      FP32 always; channel 0 = dx, 1 = dy, in pixels; the
                                  sampling position of (i, j) is (i + dy, j + dx)
``q_weight``    (C, C)            query projection (``nn.Linear`` layout: out x in)
``q_bias``      (C,)
``k_weight``    (C, C)            key projection
``k_bias``      (C,)
``v_weight``    (C, C)            value projection
``v_bias``      (C,)
``key_pe``      (4, C)            FP32; the slot codes, slot s = 2a + b (a: row, b: column)
``pe_divisors`` (C/4,)            FP32; D_0..D_{F-1} of ``enc``: temperature ** (2 j / (C/2))
==============  ================  ==========================================================

Attributes: ``num_heads`` (int), ``scale`` (float, the logit scale, head_dim ** -0.5), and for
TensorRT's parser ``plugin_namespace`` ("vsr"), ``plugin_version`` ("1") and ``aot`` (1).

Output: ``output`` (N, C, h, w), the dtype of ``target``.

Positions, offsets and code arguments are computed in FP32 whatever the feature dtype (in FP16 a
position of 300 px has 0.25 px steps, and the code arguments reach 270 rad).

Implementations here:

* :func:`implicit_warp`: the reference. One corner at a time: a gather of whole pixel rows
  (C values each) with an (N*h*w,) index, the slot code, the key (then value) projection; so it
  needs neither the original's (N, C, 4hw) int64 index nor its (N, 4hw, C) key/value tensors, and
  computes the same sums in the same order. It uses standard ops only and is the decomposed
  ONNX form (Gather, MatMul, Softmax, Sin, Cos, ...).
* :func:`implicit_warp_gather`: a straightforward restatement of the original's batched gather
  (one flattened index for all four corners, repeated over channels). Tests use it as the
  cross-check; do not deploy it: its peak memory is about eight times the reference's.
* :func:`implicit_warp_op`: what networks call. Under ``torch.onnx.export`` it emits the
  ``vsr::ImplicitWarp`` node when :func:`set_implicit_warp_export` chose ``"custom"``; otherwise
  (the default, ``"decomposed"``, which ONNX Runtime runs) it is :func:`implicit_warp`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

#: ONNX domain and name of the custom node.
DOMAIN = "vsr"
OP_NAME = "ImplicitWarp"
OP_VERSION = 1
#: What TensorRT's ONNX parser reads to find the plugin of the node: the plugin is looked up by
#: ``op_type``, the ``plugin_version`` attribute and the ``plugin_namespace`` attribute (the domain is
#: only a fallback, from TensorRT 10.10 on); ``aot=1`` asks for the ahead-of-time implementation.
#: ``tensorrt.plugin`` registers every plugin as version "1".
PLUGIN_ATTRIBUTES = {"plugin_namespace": DOMAIN, "plugin_version": "1", "aot": 1}
#: The (row, column) offsets of the four corner slots, slot s = 2a + b.
CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: The sampling window is 2x2; the query code divides offsets by this (+ 1e-6), as the original.
WINDOW = 2
_EPS = 1e-6

ExportMode = Literal["custom", "decomposed"]
_export_mode: ExportMode = "decomposed"


def set_implicit_warp_export(mode: ExportMode) -> None:
    """Choose how :func:`implicit_warp_op` appears in exported graphs.

    ``"decomposed"`` (default): standard opset-19 ops, which ONNX Runtime runs.
    ``"custom"``: one ``vsr::ImplicitWarp`` node, for a TensorRT plugin or a registered kernel.
    """
    global _export_mode
    if mode not in ("custom", "decomposed"):
        raise ValueError(f"implicit warp export mode must be 'custom' or 'decomposed', got {mode!r}")
    _export_mode = mode


def get_implicit_warp_export() -> ExportMode:
    return _export_mode


def pe_divisors(dim: int, temperature: float) -> torch.Tensor:
    """The F = dim / 4 divisors D_j = temperature ** (2 j / (dim / 2)) of the sine code, FP32.

    Computed with torch's FP32 ``pow`` exactly as the original does, so the code's arguments
    (up to ~270 rad for temperature 0.01) match it bit for bit.
    """
    half = dim // 2
    exponent = 2 * torch.div(torch.arange(half, dtype=torch.float32), 2, rounding_mode="trunc") / half
    return (temperature**exponent)[0::2].contiguous()


def sine_code(angle_y: torch.Tensor, angle_x: torch.Tensor, divisors: torch.Tensor) -> torch.Tensor:
    """Interleaved sin/cos code of two angle maps, y first: (...,) x2 -> (..., 4F), FP32."""
    parts = []
    for angle in (angle_y, angle_x):
        arg = angle.unsqueeze(-1) / divisors
        parts.append(torch.stack((arg.sin(), arg.cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


def key_position_encoding(dim: int, temperature: float) -> torch.Tensor:
    """The slot codes of the 2x2 window, (1, 4, dim), FP32, as the original's buffer.

    Slot (a, b) codes the angles ``a / (1 + 1e-6) * 2 pi`` (y) and ``b / (1 + 1e-6) * 2 pi`` (x).
    A checkpoint's ``position_bias`` buffer replaces this at load time.
    """
    a = torch.tensor([float(r) for r, _ in CORNERS])
    b = torch.tensor([float(c) for _, c in CORNERS])
    span = float(WINDOW - 1)
    code = sine_code(
        a / (span + _EPS) * (2 * math.pi), b / (span + _EPS) * (2 * math.pi), pe_divisors(dim, temperature)
    )
    return code.unsqueeze(0)


def _positions(flow: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling positions (rows, cols), each (N, h, w) FP32, of a (N, 2, h, w) flow."""
    flow = flow.to(torch.float32)
    rows = torch.arange(h, device=flow.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=flow.device, dtype=torch.float32).view(1, 1, w)
    return rows + flow[:, 1], cols + flow[:, 0]


def _query_code(frac_y: torch.Tensor, frac_x: torch.Tensor, divisors: torch.Tensor) -> torch.Tensor:
    """The sub-pixel offset code, (N, h, w) x2 -> (N, h, w, C), FP32."""
    scale = 2 * math.pi
    return sine_code(frac_y / (WINDOW + _EPS) * scale, frac_x / (WINDOW + _EPS) * scale, divisors)


def _check(source: torch.Tensor, target: torch.Tensor, flow: torch.Tensor, num_heads: int) -> None:
    if source.shape != target.shape or source.ndim != 4:
        raise ValueError(
            f"implicit warp needs source and target of one (N, C, h, w) shape, "
            f"got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    n, c, h, w = target.shape
    if tuple(flow.shape) != (n, 2, h, w):
        raise ValueError(
            f"implicit warp needs a (N, 2, h, w) flow, got {tuple(flow.shape)} for features {tuple(target.shape)}"
        )
    if c % num_heads or c % 4:
        raise ValueError(f"implicit warp needs channels ({c}) divisible by num_heads ({num_heads}) and by 4")


def implicit_warp(
    source: torch.Tensor,
    target: torch.Tensor,
    flow: torch.Tensor,
    q_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_weight: torch.Tensor,
    k_bias: torch.Tensor | None,
    v_weight: torch.Tensor,
    v_bias: torch.Tensor | None,
    key_pe: torch.Tensor,
    divisors: torch.Tensor,
    *,
    num_heads: int,
    scale: float | None = None,
) -> torch.Tensor:
    """The reference implicit warp (see the module docstring), memory-lean, standard ops only.

    Args:
        source: (N, C, h, w) features to resample.
        target: (N, C, h, w) query features.
        flow: (N, 2, h, w) flow from target to source, pixels, (dx, dy); used in FP32.
        q_weight, q_bias, k_weight, k_bias, v_weight, v_bias: (C, C) and (C,) projections.
        key_pe: (4, C) or (1, 4, C) slot codes.
        divisors: (C / 4,) sine-code divisors (:func:`pe_divisors`).
        num_heads: attention heads.
        scale: logit scale, default head_dim ** -0.5.

    Returns:
        (N, C, h, w) in the dtype of ``target``.
    """
    _check(source, target, flow, num_heads)
    n, c, h, w = target.shape
    heads, head_dim = num_heads, c // num_heads
    scale = head_dim**-0.5 if scale is None else scale
    dtype = target.dtype

    pos_y, pos_x = _positions(flow, h, w)
    top, left = torch.floor(pos_y), torch.floor(pos_x)
    code = _query_code(pos_y - top, pos_x - left, divisors.to(torch.float32))
    query = target.permute(0, 2, 3, 1) + code.to(dtype)  # (N, h, w, C)
    del code
    q = F.linear(query, q_weight, q_bias).mul_(scale).reshape(n * h * w, heads, head_dim)
    del query

    # Row index of each corner in the (N*h*w, C) token matrix; clamping is border replication.
    base = (torch.arange(n, device=flow.device) * (h * w)).view(n, 1, 1)
    index = []
    for a, b in CORNERS:
        row = torch.clamp(top + a, 0, h - 1).to(torch.int64)
        col = torch.clamp(left + b, 0, w - 1).to(torch.int64)
        index.append((base + row * w + col).reshape(-1))

    # Source pixels as token rows; each corner is a row gather with an (N*h*w,) index.
    tokens = source.permute(0, 2, 3, 1).reshape(n * h * w, c)
    slot_pe = key_pe.reshape(len(CORNERS), c).to(dtype)

    def corner(weight: torch.Tensor, bias: torch.Tensor | None, s: int) -> torch.Tensor:
        """Keys or values of corner slot ``s``: (N*h*w, heads, head_dim)."""
        rows = tokens.index_select(0, index[s])
        rows += slot_pe[s]  # in place on the fresh gather: one (N*h*w, C) buffer less
        return F.linear(rows, weight, bias).view(-1, heads, head_dim)

    # One (1 x d) @ (d x 1) product per head and slot: the original's dot products, term by term.
    q = q.unsqueeze(-2)
    logits = torch.cat(
        [(q @ corner(k_weight, k_bias, s).unsqueeze(-1)).squeeze(-1) for s in range(len(CORNERS))], dim=-1
    )
    del q
    attn = torch.softmax(logits, dim=-1)  # (N*h*w, heads, 4)
    out = attn[..., 0:1] * corner(v_weight, v_bias, 0)
    for s in range(1, len(CORNERS)):
        out = out + attn[..., s : s + 1] * corner(v_weight, v_bias, s)
    return out.reshape(n, h, w, c).permute(0, 3, 1, 2)


def implicit_warp_gather(
    source: torch.Tensor,
    target: torch.Tensor,
    flow: torch.Tensor,
    q_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_weight: torch.Tensor,
    k_bias: torch.Tensor | None,
    v_weight: torch.Tensor,
    v_bias: torch.Tensor | None,
    key_pe: torch.Tensor,
    divisors: torch.Tensor,
    *,
    num_heads: int,
    scale: float | None = None,
) -> torch.Tensor:
    """The original's formulation, for tests only: one gather with an (N, C, 4hw) int64 index.

    Same arguments and result as :func:`implicit_warp`. All four corners of every pixel are
    gathered at once through a flattened index repeated over the channels, the slot codes are
    added to the (N, 4hw, C) samples, and keys and values are projected from those, so peak
    memory is several (N, 4hw, C) tensors plus the index.
    """
    _check(source, target, flow, num_heads)
    n, c, h, w = target.shape
    p, slots = h * w, len(CORNERS)
    heads, head_dim = num_heads, c // num_heads
    scale = head_dim**-0.5 if scale is None else scale

    pos_y, pos_x = _positions(flow, h, w)
    pos = torch.stack((pos_y, pos_x), dim=-1)  # (N, h, w, 2)
    corner0 = torch.floor(pos).to(torch.int32)
    frac = (pos - corner0).reshape(n, p, 2)
    offsets = torch.tensor(CORNERS, dtype=torch.int64, device=flow.device)
    corners = (corner0.reshape(n, p, 1, 2) + offsets).reshape(n, p * slots, 2)
    rows = corners[..., 0].clamp(0, h - 1)
    cols = corners[..., 1].clamp(0, w - 1)
    flat = (cols + w * rows).unsqueeze(1).repeat(1, c, 1)  # (N, C, 4P) int64
    samples = source.contiguous().view(n, c, p).gather(-1, flat)
    samples = samples.reshape(n, c, p, slots).permute(0, 2, 3, 1).reshape(n, p * slots, c)
    kv_in = samples + key_pe.reshape(1, slots, c).to(samples.dtype).repeat(n, p, 1)

    code = _query_code(frac[..., 0], frac[..., 1], divisors.to(torch.float32))
    query = target.flatten(2).permute(0, 2, 1) + code.to(target.dtype)

    k = F.linear(kv_in, k_weight, k_bias).reshape(n * p, slots, heads, head_dim).permute(0, 2, 1, 3)
    v = F.linear(kv_in, v_weight, v_bias).reshape(n * p, slots, heads, head_dim).permute(0, 2, 1, 3)
    q = F.linear(query, q_weight, q_bias).reshape(n * p, heads, 1, head_dim)
    attn = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
    out = (attn @ v).reshape(n * p, c)
    return out.reshape(n, h, w, c).permute(0, 3, 1, 2)


def implicit_warp_op(
    source: torch.Tensor,
    target: torch.Tensor,
    flow: torch.Tensor,
    q_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_weight: torch.Tensor,
    k_bias: torch.Tensor | None,
    v_weight: torch.Tensor,
    v_bias: torch.Tensor | None,
    key_pe: torch.Tensor,
    divisors: torch.Tensor,
    *,
    num_heads: int,
    scale: float | None = None,
) -> torch.Tensor:
    """:func:`implicit_warp`, or the ``vsr::ImplicitWarp`` node when exporting in ``"custom"`` mode."""
    if _export_mode == "custom" and torch.onnx.is_in_onnx_export():
        _check(source, target, flow, num_heads)
        c = target.shape[1]
        scale = (c // num_heads) ** -0.5 if scale is None else scale
        zeros = target.new_zeros(c)
        inputs = [
            source,
            target,
            flow.to(torch.float32),
            q_weight,
            zeros if q_bias is None else q_bias,
            k_weight,
            zeros if k_bias is None else k_bias,
            v_weight,
            zeros if v_bias is None else v_bias,
            key_pe.reshape(len(CORNERS), c).to(torch.float32),
            divisors.to(torch.float32),
        ]
        return torch.onnx.ops.symbolic(
            f"{DOMAIN}::{OP_NAME}",
            inputs,
            {"num_heads": int(num_heads), "scale": float(scale), **PLUGIN_ATTRIBUTES},
            dtype=target.dtype,
            shape=target.shape,
            version=OP_VERSION,
        )
    return implicit_warp(
        source,
        target,
        flow,
        q_weight,
        q_bias,
        k_weight,
        k_bias,
        v_weight,
        v_bias,
        key_pe,
        divisors,
        num_heads=num_heads,
        scale=scale,
    )


class ImplicitWarp(nn.Module):
    """IART's ``ImplicitWarpModule`` (parameters and buffers under the same names).

    Args:
        dim: feature channels (IART: 120).
        pe_dim: width of the position codes; must equal ``dim`` (as in IART).
        num_heads: attention heads (IART: 6).
        pe_temp: sine-code temperature (IART: 0.01; below 1, so frequencies rise with the index).
        window_size: the sampling window; only the 2x2 bilinear support is implemented.
        qkv_bias: biases on the q/k/v projections.
        qk_scale: logit scale override (default head_dim ** -0.5).

    Buffers, both in the checkpoint: ``position_bias`` (1, 4, dim), the slot codes (used as
    stored), and ``window_idx_offset`` (4, 2) int64, the fixed corner table (row, col) that
    :data:`CORNERS` spells out. ``pe_divisors`` is derived and not saved.

    ``forward(source, target, flow)``: (N, C, h, w), (N, C, h, w), (N, 2, h, w) -> (N, C, h, w).
    Note the flow is channel-first here, unlike the original module's (N, h, w, 2).
    """

    def __init__(
        self,
        dim: int = 120,
        pe_dim: int = 120,
        num_heads: int = 6,
        pe_temp: float = 0.01,
        window_size: int = 2,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
    ) -> None:
        super().__init__()
        if pe_dim != dim:
            raise ValueError(f"pe_dim ({pe_dim}) must equal dim ({dim}); IART uses pe_dim = dim")
        if window_size != WINDOW:
            raise ValueError(f"only the 2x2 window (window_size=2) is implemented, got {window_size}")
        if dim % num_heads or dim % 4:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}) and by 4")
        self.dim, self.num_heads, self.pe_temp = dim, num_heads, pe_temp
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.q = nn.Linear(pe_dim, dim, bias=qkv_bias)
        self.k = nn.Linear(pe_dim, dim, bias=qkv_bias)
        self.v = nn.Linear(pe_dim, dim, bias=qkv_bias)
        self.register_buffer("position_bias", key_position_encoding(pe_dim, pe_temp))
        self.register_buffer("window_idx_offset", torch.tensor(CORNERS, dtype=torch.int64))
        self.register_buffer("pe_divisors", pe_divisors(pe_dim, pe_temp), persistent=False)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # ``model.half()`` must not round the code divisors: they set angles of up to ~270 rad.
        super()._apply(fn, recurse)
        self.pe_divisors = pe_divisors(self.dim, self.pe_temp).to(self.position_bias.device)
        return self

    def forward(self, source: torch.Tensor, target: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return implicit_warp_op(
            source,
            target,
            flow,
            self.q.weight,
            self.q.bias,
            self.k.weight,
            self.k.bias,
            self.v.weight,
            self.v.bias,
            self.position_bias,
            self.pe_divisors,
            num_heads=self.num_heads,
            scale=self.scale,
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, pe_temp={self.pe_temp}"
