"""FTVSR (Qiu et al., ECCV 2022): compressed-video super-resolution with a frequency transformer.

This follows the released code (``researchmm/FTVSR``, about 45.8 M parameters), not the paper.
Constructor arguments and parameter names are the official ``FTVSR`` generator's, so the released
mmcv files (``FTVSR_REDS.pth``, ``FTVSR_Vimeo90K.pth``: ``state_dict`` with ``generator.*`` keys,
a ``step_counter``, maybe ``optimizer`` and ``meta``) load strictly, DCT/IDCT weights and the
fine-tuned SpyNet included.

Two stages, both bidirectional (h, w: LR size; H, W = 4h, 4w; C = ``mid_channels``; F = 512):

**Stage 1, TTVSR.** ``f_t = feat_extractor(lr_t)``; SpyNet flows between LR neighbours. Each sweep
(backward, then forward) carries ``h`` (C, h, w) and a memory of *keyframes* (every
``keyframe_stride``-th frame of the sweep, counted from its first frame) with, per keyframe,
four token maps of 4x4 patches (C*16 values at each of the P = (h/4)(w/4) token positions):
``S1`` = tokens of the propagated feature, ``S2``/``S3`` = the same feature through the 6x6 and
8x8 overlapping patches (stride 4) folded side by side, average-pooled back to (h, w) (a 1.5h ->
h and a 2h -> h adaptive pool), then tokens, and ``IDX`` = tokens of ``f``. A location map per
keyframe says which of its tokens each position tracks: it starts as the identity and follows the
flow, average-pooled 4x4 and divided by 4, by nearest sampling with border clamping (coordinates
stay integer). A step warps ``h`` (bilinear, border), then *trajectory-aware attention*: cosine
similarity of ``f``'s tokens with each keyframe's ``IDX`` token on the trajectory, a hard top-1
over the keyframes (no softmax; the first of equal maxima wins), the winner's ``S1, S2, S3``
tokens folded back, ``fusion`` (3x3), times the winning similarity, plus the warped ``h``; then
``h = resblocks(cat(f, that))`` (60 blocks, shared by both sweeps). The first step of a sweep has
no warp and no attention: ``h = resblocks(cat(f, 0))``. Output ``sr1_t = conv_last(...(fusion(
cat(hb_t, f_t, hf_t)))) + bilinear_x4(lr_t)`` (PixelShuffle x2 twice).

**Stage 2, frequency transformer.** On the x4 frames, zero-padded to multiples of 8 with the
original's corner copy (only when h or w is odd): the 8x8 block DCT (a fixed grouped conv) of
``sr1`` and of ``bilinear_x4(lr)``, each L2-normalised per DCT channel over the *whole frame*,
``conv_layer1`` and ``feat_extractor`` (F channels on the H/8 x W/8 grid) give ``Y_t`` and
``B_t``. A frequency attention ``FTTA(q, k, v)`` cuts each of 64 channel groups into 8x8 patches
(L = 64 * floor(H/64) * floor(W/64) tokens; positions past the last whole patch come back as
zeros, as the original's fold leaves them) and runs one joint multi-head attention over all L
tokens, then a residual LayerNorm and a small FFN. Each sweep carries ``g`` (F, H/8, W/8), warped
by SpyNet flow computed on the x4 frames and resized to H/8 (values / 8):
``g = resblocks(cat(Y_t, FTTA(FTTA(B_t, Y_t, Y_t), warp(g), warp(g))))`` (first step: ``cat(Y_t,
0)``). Output ``hr_t = IDCT(conv_layer2(fusion(cat(gb_t, Y_t, gf_t))) + DCT(sr1_t)) + sr1_t``
(= IDCT(delta) + 2 * sr1_t, the DCT being orthonormal), cropped.

Deployment (stages and plan). The keyframe memory becomes a fixed-shape state of ``keyframe_slots``
(K) slots, written as a ring at slot ``(s // stride) mod K`` (s: steps since the sweep started,
carried as the state ``count``); the first keyframe fills every slot, so unfilled slots repeat
the oldest keyframe and change neither the maximum nor the winner's tokens: while a sweep has at
most K keyframes before its last step, a step equals the original. K defaults to the keyframes
of the runtime's default window (:data:`WINDOW_FRAMES`), so a chunked run is exact inside each
window. Stages, for frames of multiples of 4 (the runtime pads to them):

* ``flow(a, b)``: LR SpyNet -> ``flow`` (1, 2, h, w).
* ``extract(x)`` -> ``feat`` (1, C, h, w), ``valid`` (1, 1, h, w) of ones (zeros past the clip ends).
* ``ttvsr_backward(feat, flow, h_prev, memory_prev, loc_prev, count_prev)`` ->
  ``(h, memory, loc, count)``; ``memory`` (1, 4CK, h, w) holds the (4, K, P, C*16) slots,
  ``loc`` (1, K, h, w) each slot's tracked token index (constant over each 4x4 block), ``count``
  (1, 1, 1, 1) the steps done (0: the first step).
* ``ttvsr_forward(lr, feat, flow, h_prev, memory_prev, loc_prev, count_prev, hb)`` -> the same
  and ``sr1`` (1, 3, 4h, 4w).
* ``flow_hr(a, b)``: SpyNet on two stage-1 frames, resized to the DCT grid -> ``flow``
  (1, 2, h, w): the (2, h/2, w/2) flow with each value repeated over a 2x2 block.
* ``ftt_embed(lr, sr1)`` -> ``spectrum`` (Y), ``attended`` (FTTA(B, Y, Y), computed once per frame
  for both sweeps), each (1, F/4, h, w): the (F, h/2, w/2) map pixel-shuffled by 2.
* ``ftt_backward(spectrum, attended, g_prev, flow, has_prev)`` -> ``g`` (1, F/4, h, w); ``has_prev``
  is the neighbour's ``valid`` (zeros past the clip's end: the sweep's first step).
* ``ftt_forward(spectrum, attended, g_prev, flow, has_prev, sr1, gb)`` -> ``g``, ``hr`` (1, 3, 4h, 4w).

Export forms (equal numbers): 4x4 unfold/fold as reshapes; the overlapping 6x6/8x8 unfold +
fold + adaptive pool as index gathers of pixel pairs summed in the pool's order; nearest
sampling as the sampler's own index arithmetic (normalise, unnormalise, clamp, round half to
even) and a gather; hard attention as max + gather; ``nn.MultiheadAttention`` as explicit
matrix products (no attention weights are returned); the keyframe lists as slot tensors written
with ``where``.

Differences from the original: the whole-clip :meth:`FTVSR.forward` (frames of any size of at least
16 x 16) runs SpyNet and the feature extractors frame by frame where the original batches them
over the clip (the same math; the stage graphs then see the same numbers), and leaves out the
unused mirror-extension check and ``to_cpu``. The stage graphs need multiples of 4 and at least
33 x 33 (SpyNet's coarsest level; the runtime pads) and, past K keyframes in one sweep, overwrite
the oldest slot where the original keeps every keyframe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .base import Stage, VSRNetwork
from .blocks import ConvResidualBlocks, PixelShufflePack, UpsampleX4, bilinear_x4, flow_warp, pixel_grid
from .checkpoint import extract_state_dict
from .plan import Plan, Read, SizeConstraints, Step, TensorSpec
from .registry import Metric, QuickCheck, Weights, register_network
from .spynet import MMEditSpyNet
from .sweeps import flow_pair_steps

#: Frames of the runtime's default window (chunk 30 + 2 x overlap 6): the default keyframe slots
#: hold every keyframe such a window has, so a chunked run never evicts one.
WINDOW_FRAMES = 42
#: Token size of the trajectory attention (the official ``stride``) and the DCT block size.
TOKEN = 4
BLOCK = 8
#: Channel groups of the frequency attention (fixed in the original).
GROUPS = 64
#: Smallest LR side the whole-clip forward takes (one 8x8 patch on the DCT grid of the x4 frame).
MIN_SIZE = 16


def keyframe_slots_for(frames: int, keyframe_stride: int) -> int:
    """Keyframes a sweep of ``frames`` frames holds at its last step: ceil((frames - 1) / stride)."""
    return max(1, -(-(frames - 1) // keyframe_stride))


# ---------------------------------------------------------------------------------------- tokens
def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``F.unfold(x, 4, stride=4)``: (N, C, h, w) -> (N, C*16, (h//4)*(w//4)), channel c*16+4ky+kx;
    rows and columns past the last whole 4x4 block are dropped."""
    n, c, h, w = x.shape
    h4, w4 = h // TOKEN, w // TOKEN
    x = x[:, :, : h4 * TOKEN, : w4 * TOKEN].reshape(n, c, h4, TOKEN, w4, TOKEN)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(n, c * TOKEN * TOKEN, h4 * w4)


def from_tokens(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.fold(tokens, (h, w), 4, stride=4)``: (N, C*16, (h//4)*(w//4)) -> (N, C, h, w), zeros past
    the last whole block."""
    n, d, _ = tokens.shape
    h4, w4 = h // TOKEN, w // TOKEN
    x = tokens.reshape(n, d // (TOKEN * TOKEN), TOKEN, TOKEN, h4, w4).permute(0, 1, 4, 2, 5, 3)
    x = x.reshape(n, d // (TOKEN * TOKEN), h4 * TOKEN, w4 * TOKEN)
    return F.pad(x, (0, w - w4 * TOKEN, 0, h - h4 * TOKEN))


def _pair_index(n: int, offsets: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """Index ``4 * (i // 4) + offsets[i % 4]`` for i < n (int64)."""
    i = torch.arange(n, device=like.device)
    table = torch.tensor(list(offsets), device=like.device)
    return i - i % TOKEN + table[i % TOKEN]


def _pair_pool(x: torch.Tensor, pad: int, offsets: Sequence[int]) -> torch.Tensor:
    """Mean of the 2x2 pixels at rows/columns ``(4i + o, 4i + o + 1)`` of ``x`` zero-padded by ``pad``
    (o = ``offsets[i % 4]``), summed row by row as the adaptive pool sums. (N, C, h, w) -> same."""
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = _pair_index(x.shape[2], offsets, x)
    cols = _pair_index(x.shape[3], offsets, x)
    top, bottom = xp.index_select(2, rows), xp.index_select(2, rows + 1)
    total = top.index_select(3, cols) + top.index_select(3, cols + 1)
    total = total + bottom.index_select(3, cols) + bottom.index_select(3, cols + 1)
    return total / 2 / 2


#: (kernel, padding, fold-size factor, pair offsets) of the two cross-scale maps, S2 and S3. With
#: h a multiple of 4 the fold puts patch i's rows at 6i..6i+5 (8i..8i+7), and the pool to h averages
#: row pairs (0, 1), (1, 2), (3, 4), (4, 5) (resp. (0, 1), (2, 3), ...) of each: in the padded frame,
#: rows 4i + o and 4i + o + 1.
_CROSS_SCALES = ((6, 1, 1.5, (0, 1, 3, 4)), (8, 2, 2.0, (0, 2, 4, 6)))


def cross_scale_maps(feat: torch.Tensor, any_size: bool) -> list[torch.Tensor]:
    """S2 and S3 before their tokens: each overlapping patch (6x6, pad 1 / 8x8, pad 2; stride 4)
    folded side by side into a (1.5h, 1.5w) / (2h, 2w) map, adaptive-average-pooled to (h, w).

    ``any_size``: the original's unfold / fold / adaptive pool (any h, w); otherwise the pair
    pooling, which equals it for multiples of 4 and exports. (N, C, h, w) -> 2 x (N, C, h, w).
    """
    h, w = feat.shape[2:]
    maps = []
    for kernel, pad, factor, offsets in _CROSS_SCALES:
        if any_size:
            patches = F.unfold(feat, kernel, padding=pad, stride=TOKEN)
            folded = F.fold(patches, (int(factor * h), int(factor * w)), kernel, stride=kernel)
            maps.append(F.adaptive_avg_pool2d(folded, (h, w)))
        else:
            maps.append(_pair_pool(feat, pad, offsets))
    return maps


def keyframe_tokens(state: torch.Tensor, feat: torch.Tensor, any_size: bool) -> torch.Tensor:
    """One keyframe's memory: [S1, S2, S3, IDX] tokens, (N, 4, P, C*16)."""
    s2, s3 = cross_scale_maps(state, any_size)
    return torch.stack([to_tokens(state), to_tokens(s2), to_tokens(s3), to_tokens(feat)], dim=1).transpose(2, 3)


# ------------------------------------------------------------------------------------ trajectories
def pool_flow(flow: torch.Tensor, any_size: bool) -> torch.Tensor:
    """The flow on the token grid: adaptive average pool to (h//4, w//4), divided by 4.

    Without ``any_size`` (multiples of 4) as a 4x4 average pool, which is the same sum.
    (N, 2, h, w) -> (N, 2, h//4, w//4).
    """
    h4, w4 = flow.shape[2] // TOKEN, flow.shape[3] // TOKEN
    pooled = F.adaptive_avg_pool2d(flow, (h4, w4)) if any_size else F.avg_pool2d(flow, TOKEN)
    return pooled / TOKEN


def _nearest(coord: torch.Tensor, size: int) -> torch.Tensor:
    """``grid_sample(nearest, border, align_corners=True)``'s index along one axis of ``size``: the
    pixel coordinate normalised and unnormalised as the sampler does, clamped, rounded half to even."""
    g = 2.0 * coord / max(size - 1, 1) - 1.0
    return torch.round(((g + 1) / 2 * (size - 1)).clamp(0, size - 1)).long()


def nearest_sources(flow4: torch.Tensor) -> torch.Tensor:
    """For each token, the flat index (y * w4 + x) of the token its location is read from when the
    location maps follow ``flow4`` (the original's nearest ``flow_warp``). (N, 2, h4, w4) -> (N, P)."""
    n, _, h4, w4 = flow4.shape
    pos = pixel_grid(h4, w4, flow4) + flow4.float().permute(0, 2, 3, 1)
    return (_nearest(pos[..., 1], h4) * w4 + _nearest(pos[..., 0], w4)).reshape(n, h4 * w4)


def follow(loc: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Location maps after one step: ``loc[k, p] <- loc[k, sources[p]]``. (N, K, P) -> (N, K, P)."""
    return loc.gather(2, sources.unsqueeze(1).expand_as(loc))


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[i, index[i, j]]`` for a (N, R, D) table and (N, J) row indices -> (N, J, D), as one
    gather of whole rows (no index the size of the result)."""
    n, r, d = table.shape
    offsets = torch.arange(n, device=index.device).view(n, 1) * r
    return table.reshape(n * r, d).index_select(0, (index + offsets).reshape(-1)).view(n, -1, d)


def keyframe_scores(feat: torch.Tensor, memory: torch.Tensor, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of each token of ``feat`` with each keyframe's ``IDX`` token on its
    trajectory, and the rows of those tokens in the (K*P) slot tables.

    Every keyframe's score is reduced over the same contiguous axis, so equal tokens score
    bit-for-bit equally (and the first of them wins, as in ``torch.max``).
    Shapes: feat (N, C, h, w), memory (N, 4, K, P, C*16), loc (N, K, P) -> (N, K, P) x2.
    """
    n, _, k, p, d = memory.shape
    query = F.normalize(to_tokens(feat).transpose(1, 2), dim=2)  # (N, P, D)
    rows = loc.long() + torch.arange(k, device=loc.device).view(1, k, 1) * p
    keys = F.normalize(_rows(memory[:, 3].reshape(n, k * p, d), rows.view(n, k * p)), dim=2)
    return (keys.view(n, k, p, d) * query.unsqueeze(1)).sum(dim=3), rows


def trajectory_attention(
    feat: torch.Tensor, memory: torch.Tensor, loc: torch.Tensor, fusion: nn.Module
) -> torch.Tensor:
    """The LTAM: hard top-1 attention over K keyframes along each token's trajectory.

    Args:
        feat: (N, C, h, w) the frame's ``feat_extractor`` output (the query).
        memory: (N, 4, K, P, C*16) per keyframe [S1, S2, S3, IDX] tokens.
        loc: (N, K, P) the token of each keyframe that each position tracks (float, integral).
        fusion: the 3x3 conv 3C -> C.

    Returns:
        (N, C, h, w): ``fusion(cat(S1, S2, S3 of the best keyframe)) * its similarity`` (the
        caller adds the warped state).
    """
    n, _, k, p, d = memory.shape
    h, w = feat.shape[2:]
    score, rows = keyframe_scores(feat, memory, loc)
    similarity, best = score.max(dim=1)
    source = rows.gather(1, best.unsqueeze(1)).squeeze(1)  # (N, P): the winner's row
    picked = _rows(memory[:, :3].reshape(n, 3 * k * p, d), torch.cat([source + i * k * p for i in range(3)], 1))
    picked = picked.view(n, 3, p, d).transpose(2, 3).reshape(n, 3 * d, p)  # [S1, S2, S3] tokens
    confidence = from_tokens(similarity.unsqueeze(1).expand(n, TOKEN * TOKEN, p), h, w).to(feat.dtype)
    return fusion(from_tokens(picked, h, w).to(feat.dtype)) * confidence  # (the memory may be FP32)


class LTAM(nn.Module):
    """The trajectory-aware attention's one layer, under its official name (``LTAM.fusion``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fusion = nn.Conv2d(3 * channels, channels, 3, 1, 1, bias=True)


# ---------------------------------------------------------------------------------------- frequency
def dct_basis(size: int = BLOCK) -> torch.Tensor:
    """The orthonormal 2D DCT-II basis as conv filters: (size*size, 1, size, size), filter
    u*size + v at pixel (i, j) = c(u) c(v) cos(pi u (i + 1/2) / size) cos(pi v (j + 1/2) / size)."""
    pos = torch.arange(size, dtype=torch.float64) + 0.5
    freq = torch.arange(size, dtype=torch.float64)
    basis = torch.cos(math.pi * freq[:, None] * pos[None, :] / size) / math.sqrt(size)
    basis[1:] *= math.sqrt(2.0)
    return (basis[:, None, :, None] * basis[None, :, None, :]).reshape(size * size, 1, size, size).float()


class DCTLayer(nn.Module):
    """8x8 block DCT of each colour channel: (N, 3, H, W) -> (N, 192, H/8, W/8), channel 64*colour + u*8 + v."""

    def __init__(self, channels: int = 3, size: int = BLOCK) -> None:
        super().__init__()
        self.dct_conv = nn.Conv2d(channels, channels * size * size, size, size, bias=False, groups=channels)
        with torch.no_grad():
            self.dct_conv.weight.copy_(dct_basis(size).repeat(channels, 1, 1, 1))
        self.dct_conv.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dct_conv(x)


class ReverseDCTLayer(nn.Module):
    """The inverse of :class:`DCTLayer` (a transposed conv with the same basis)."""

    def __init__(self, channels: int = 3, size: int = BLOCK) -> None:
        super().__init__()
        self.reverse_dct_conv = nn.ConvTranspose2d(
            channels * size * size, channels, size, size, bias=False, groups=channels
        )
        with torch.no_grad():
            self.reverse_dct_conv.weight.copy_(dct_basis(size).repeat(channels, 1, 1, 1))
        self.reverse_dct_conv.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reverse_dct_conv(x)


class MultiheadAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameters and math (eval mode, no masks), written out so that
    it exports as plain matrix products and returns no attention weights.

    Shapes: query, key, value (N, L, E) -> (N, L, E).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"d_model {embed_dim} is not a multiple of n_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        e = x.shape[-1]
        w, b = self.in_proj_weight[part * e : (part + 1) * e], self.in_proj_bias[part * e : (part + 1) * e]
        n, length, _ = x.shape
        return F.linear(x, w, b).reshape(n, length, self.num_heads, e // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        n, length, e = query.shape
        q, k, v = self._heads(query, 0), self._heads(key, 1), self._heads(value, 2)
        q = q * math.sqrt(1.0 / (e // self.num_heads))
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(n, length, e)
        return self.out_proj(out)


def _group_patches(x: torch.Tensor) -> torch.Tensor:
    """(N, F, h8, w8) -> (N, 64 * nh * nw, (F/64) * 64) tokens: 64 channel groups, each cut into
    8x8 patches (nh = h8 // 8, nw = w8 // 8), features in (channel, ky, kx) order, group-major."""
    n, c, h, w = x.shape
    nh, nw = h // BLOCK, w // BLOCK
    x = x[:, :, : nh * BLOCK, : nw * BLOCK].reshape(n, GROUPS, c // GROUPS, nh, BLOCK, nw, BLOCK)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(n, GROUPS * nh * nw, (c // GROUPS) * BLOCK * BLOCK)


def _ungroup_patches(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_group_patches` into (N, F, h, w); zeros past the last whole patch."""
    n, _, d = tokens.shape
    nh, nw = h // BLOCK, w // BLOCK
    c = GROUPS * d // (BLOCK * BLOCK)
    x = tokens.reshape(n, GROUPS, nh, nw, c // GROUPS, BLOCK, BLOCK).permute(0, 1, 4, 2, 5, 3, 6)
    x = x.reshape(n, c, nh * BLOCK, nw * BLOCK)
    return F.pad(x, (0, w - nw * BLOCK, 0, h - nh * BLOCK))


class FTTALayer(nn.Module):
    """The frequency attention layer (official ``FTTA_layer``): joint attention over all channel-group
    patches of a frame, then ``norm1(attn + v)`` and ``linear2(norm2(x + lrelu(linear1(x))))``.

    Args:
        channel: F, the feature channels (512).
        d_model: attention width. n_heads: heads.

    Shapes: q, k, v (N, F, h8, w8) -> (N, F, h8, w8). Attention memory is quadratic in
    L = 64 * floor(h8/8) * floor(w8/8).
    """

    def __init__(self, channel: int = 512, d_model: int = 512, n_heads: int = 8) -> None:
        super().__init__()
        dim = (channel // GROUPS) * BLOCK * BLOCK
        self.layer_q = nn.Linear(dim, d_model)
        self.layer_k = nn.Linear(dim, d_model)
        self.layer_v = nn.Linear(dim, d_model)
        self.MultiheadAttention = MultiheadAttention(d_model, n_heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear2 = nn.Linear(d_model, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h, w = q.shape[2:]
        qs = self.layer_q(_group_patches(q))
        ks = self.layer_k(_group_patches(k))
        vs = self.layer_v(_group_patches(v))
        out = self.norm1(self.MultiheadAttention(qs, ks, vs) + vs)
        out = self.norm2(F.leaky_relu(self.linear1(out), 0.1) + out)
        return _ungroup_patches(self.linear2(out), h, w)


class FTT(nn.Module):
    """The frequency transformer stage's layers, under their official names (``FTT.*``).

    Args:
        channels: F (512 in the original, fixed there). blocks: residual blocks of
        ``feat_extractor`` and ``resblocks`` (3, fixed there). d_model, n_heads: of the attention.
    """

    def __init__(self, channels: int = 512, blocks: int = 3, d_model: int = 512, n_heads: int = 8) -> None:
        super().__init__()
        self.dct = DCTLayer()
        self.rdct = ReverseDCTLayer()
        self.conv_layer1 = nn.Conv2d(3 * BLOCK * BLOCK, channels, 1, 1, 0, bias=True)
        self.feat_extractor = ConvResidualBlocks(channels, channels, blocks)
        self.resblocks = ConvResidualBlocks(2 * channels, channels, blocks)
        self.fusion = nn.Sequential(
            nn.Conv2d(3 * channels, channels, 1, 1, 0, bias=True),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(channels, channels, 1, 1, 0, bias=True),
        )
        self.ftta = FTTALayer(channels, d_model, n_heads)
        self.conv_layer2 = nn.Conv2d(channels, 3 * BLOCK * BLOCK, 1, 1, 0, bias=True)

    def spectrum(self, img: torch.Tensor) -> torch.Tensor:
        """Features of a frame's DCT, each DCT channel L2-normalised over the whole frame.
        (N, 3, H, W), H and W multiples of 8 -> (N, F, H/8, W/8)."""
        coeffs = self.dct(img)
        n, c, h8, w8 = coeffs.shape
        coeffs = F.normalize(coeffs.reshape(n, c, h8 * w8), dim=2).reshape(n, c, h8, w8)
        return self.feat_extractor(self.conv_layer1(coeffs))

    def propagate(self, spectrum: torch.Tensor, attended: torch.Tensor, warped: torch.Tensor | None) -> torch.Tensor:
        """One sweep step: ``resblocks(cat(Y, FTTA(A, g, g)))`` with ``g`` the warped state
        (``None`` on a sweep's first step: zeros, no attention). (N, F, h8, w8) maps."""
        prop = torch.zeros_like(spectrum) if warped is None else self.ftta(attended, warped, warped)
        return self.resblocks(torch.cat([spectrum, prop], dim=1))

    def output(self, gb: torch.Tensor, spectrum: torch.Tensor, gf: torch.Tensor, sr1: torch.Tensor) -> torch.Tensor:
        """``IDCT(conv_layer2(fusion(cat(gb, Y, gf))) + DCT(sr1)) + sr1``: (N, 3, H, W)."""
        delta = self.conv_layer2(self.fusion(torch.cat([gb, spectrum, gf], dim=1)))
        return self.rdct(delta + self.dct(sr1)) + sr1


def hr_flow(spynet: nn.Module, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
    """SpyNet on x4 frames, resized to the DCT grid as the original's ``resize_flow`` does (values
    scaled by 1/8, bilinear, half-pixel). (N, 3, H, W) x2, multiples of 8 -> (N, 2, H/8, W/8)."""
    flow = spynet(ref, supp)
    h8, w8 = flow.shape[2] // BLOCK, flow.shape[3] // BLOCK
    return F.interpolate(flow * (1.0 / BLOCK), size=(h8, w8), mode="bilinear", align_corners=False)


def pad_to_blocks(frames: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """The original's padding to multiples of 8: zeros, then the last ``pad_h`` rows and ``pad_w``
    columns of the frame copied into the padded corner (with one of them 0, the whole last rows
    or columns). (..., H, W) -> (padded, pad_h, pad_w)."""
    h, w = frames.shape[-2:]
    pad_h, pad_w = -h % BLOCK, -w % BLOCK
    if not pad_h and not pad_w:
        return frames, 0, 0
    out = frames.new_zeros(*frames.shape[:-2], h + pad_h, w + pad_w)
    out[..., :h, :w] = frames
    rows = slice(-pad_h, None) if pad_h else slice(None)
    cols = slice(-pad_w, None) if pad_w else slice(None)
    out[..., rows, cols] = frames[..., rows, cols]
    return out, pad_h, pad_w


# ------------------------------------------------------------------------------------- stage modules
def _pack(x: torch.Tensor) -> torch.Tensor:
    """(N, F, h/2, w/2) -> (N, F/4, h, w): a DCT-grid map stored on the LR grid (pixel shuffle)."""
    return F.pixel_shuffle(x, 2)


def _unpack(x: torch.Tensor) -> torch.Tensor:
    return F.pixel_unshuffle(x, 2)


def _spread(x: torch.Tensor, r: int) -> torch.Tensor:
    """Each value repeated over an r x r block, (N, C, h, w) -> (N, C, r*h, r*w) (read back with
    ``[:, :, ::r, ::r]``): a map on a coarser grid stored on the LR grid."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, r, w, r).reshape(n, c, h * r, w * r)


def _first(x: torch.Tensor) -> torch.Tensor:
    """The value of a constant (N, 1, h, w) map, as (N, 1, 1, 1)."""
    return x[:, :1, :1, :1]


class _Extract(nn.Module):
    def __init__(self, feat_extractor: nn.Module) -> None:
        super().__init__()
        self.feat_extractor = feat_extractor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feat_extractor(x), torch.ones_like(x[:, :1])


class _TrajectoryStep(nn.Module):
    """One step of a TTVSR sweep (either direction) with a ``slots``-slot keyframe memory."""

    def __init__(self, net: FTVSR) -> None:
        super().__init__()
        self.resblocks, self.fusion = net.resblocks, net.LTAM.fusion
        self.slots, self.keyframe_stride = net.keyframe_slots, net.keyframe_stride

    def forward(
        self,
        feat: torch.Tensor,
        flow: torch.Tensor,
        h_prev: torch.Tensor,
        memory_prev: torch.Tensor,
        loc_prev: torch.Tensor,
        count_prev: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n, c, h, w = feat.shape
        h4, w4, k = h // TOKEN, w // TOKEN, self.slots
        p = h4 * w4
        steps = _first(count_prev).long()  # (N, 1, 1, 1): steps done before this one
        first = steps == 0
        memory = memory_prev.reshape(n, 4, k, p, c * TOKEN * TOKEN)
        loc = follow(loc_prev[:, :, ::TOKEN, ::TOKEN].reshape(n, k, p), nearest_sources(pool_flow(flow, False)))
        warped = flow_warp(h_prev, flow.permute(0, 2, 3, 1), padding_mode="border")
        aligned = trajectory_attention(feat, memory, loc, self.fusion) + warped
        state = self.resblocks(torch.cat([feat, torch.where(first, torch.zeros_like(aligned), aligned)], dim=1))

        # A keyframe fills slot (s // stride) mod K; the sweep's first fills every slot.
        slot_ids = torch.arange(k, device=feat.device).view(1, k)
        # (a truncating division: the steps are never negative, and a floor division would export
        # as sign tests on booleans, which TensorRT's Equal does not take)
        slot = torch.div(steps.view(n, 1), self.keyframe_stride, rounding_mode="trunc") % k
        write = (steps.view(n, 1) % self.keyframe_stride == 0) & ((slot_ids == slot) | first.view(n, 1))  # (N, K)
        tokens = keyframe_tokens(state, feat, any_size=False).unsqueeze(2)
        memory = torch.where(write.view(n, 1, k, 1, 1), tokens, memory)
        identity = torch.arange(p, device=feat.device, dtype=loc.dtype).view(1, 1, p)
        loc = torch.where(write.view(n, k, 1), identity, loc)
        return state, memory.reshape(n, -1, h, w), _spread(loc.reshape(n, k, h4, w4), TOKEN), count_prev + 1


class _Reconstruct(nn.Module):
    """``sr1 = head(lrelu(fusion(cat(hb, feat, hf)))) + bilinear_x4(lr)``."""

    def __init__(self, net: FTVSR) -> None:
        super().__init__()
        self.fusion = net.fusion
        self.head = UpsampleX4(net.upsample1, net.upsample2, net.conv_hr, net.conv_last)

    def forward(self, lr: torch.Tensor, hb: torch.Tensor, feat: torch.Tensor, hf: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.fusion(torch.cat([hb, feat, hf], dim=1)), 0.1)
        return self.head(out) + bilinear_x4(lr)


class _TrajectoryForward(nn.Module):
    def __init__(self, step: _TrajectoryStep, reconstruct: _Reconstruct) -> None:
        super().__init__()
        self.step, self.reconstruct = step, reconstruct

    def forward(
        self,
        lr: torch.Tensor,
        feat: torch.Tensor,
        flow: torch.Tensor,
        h_prev: torch.Tensor,
        memory_prev: torch.Tensor,
        loc_prev: torch.Tensor,
        count_prev: torch.Tensor,
        hb: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        state, memory, loc, count = self.step(feat, flow, h_prev, memory_prev, loc_prev, count_prev)
        return state, memory, loc, count, self.reconstruct(lr, hb, feat, state)


class _FrequencyEmbed(nn.Module):
    """``Y = spectrum(sr1)``, ``A = FTTA(spectrum(bilinear_x4(lr)), Y, Y)``, both packed."""

    def __init__(self, ftt: FTT) -> None:
        super().__init__()
        self.ftt = ftt

    def forward(self, lr: torch.Tensor, sr1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spectrum = self.ftt.spectrum(sr1)
        attended = self.ftt.ftta(self.ftt.spectrum(bilinear_x4(lr)), spectrum, spectrum)
        return _pack(spectrum), _pack(attended)


class _FlowHR(nn.Module):
    """SpyNet on two stage-1 frames, resized to the DCT grid and spread over the LR grid."""

    def __init__(self, spynet: nn.Module) -> None:
        super().__init__()
        self.spynet = spynet

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _spread(hr_flow(self.spynet, a, b), 2)


class _FrequencyStep(nn.Module):
    """One step of a frequency sweep: ``g = resblocks(cat(Y, FTTA(A, warp(g_prev), warp(g_prev))))``."""

    def __init__(self, ftt: FTT) -> None:
        super().__init__()
        self.ftt = ftt

    def forward(
        self,
        spectrum: torch.Tensor,
        attended: torch.Tensor,
        g_prev: torch.Tensor,
        flow: torch.Tensor,
        has_prev: torch.Tensor,
    ) -> torch.Tensor:
        y, a = _unpack(spectrum), _unpack(attended)
        flow = flow[:, :, ::2, ::2]
        warped = flow_warp(_unpack(g_prev), flow.permute(0, 2, 3, 1), padding_mode="border")
        prop = torch.where(_first(has_prev) > 0, self.ftt.ftta(a, warped, warped), torch.zeros_like(y))
        return _pack(self.ftt.resblocks(torch.cat([y, prop], dim=1)))


class _FrequencyForward(nn.Module):
    def __init__(self, step: _FrequencyStep) -> None:
        super().__init__()
        self.step = step

    def forward(
        self,
        spectrum: torch.Tensor,
        attended: torch.Tensor,
        g_prev: torch.Tensor,
        flow: torch.Tensor,
        has_prev: torch.Tensor,
        sr1: torch.Tensor,
        gb: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.step(spectrum, attended, g_prev, flow, has_prev)
        hr = self.step.ftt.output(_unpack(gb), _unpack(spectrum), _unpack(g), sr1)
        return g, hr


# ------------------------------------------------------------------------------------------ network
_RELEASE = (
    "https://github.com/researchmm/FTVSR#model (Google Drive "
    "https://drive.google.com/drive/folders/1AFvJymtnphlNCnkwJPQV31v3mNowkSCQ, Baidu "
    "https://pan.baidu.com/s/1ZIq6T98Iv1oGk7rC46WACg, code i42r)"
)
_COMPRESSION = "half uncompressed, half H.264 at CRF 15/25/35 (README; the code draws 62.5% / 12.5% each)"


@register_network(
    summary="FTVSR (ECCV 2022), x4, compressed video: TTVSR trajectory attention + frequency transformer",
    quick=QuickCheck(
        {"mid_channels": 16, "num_blocks": 1, "ftt_channels": 64, "ftt_blocks": 1, "d_model": 32, "n_heads": 2},
        size=(36, 44),  # multiples of 4 and >= 33, with DCT-grid rows and columns past the last patch
        frames=4,
        slow_export=True,
    ),
    configs={"default": {"n_heads": 4}, "vimeo": {"n_heads": 4, "keyframe_stride": 1}},
    checkpoint_keys=394,
    weights=(
        Weights(
            "ftvsr",
            "ftvsr",
            "FTVSR_REDS.pth",
            _RELEASE,
            "MIT",
            f"REDS (REDS4 held out), {_COMPRESSION}",
            "BI + H.264",
            metrics=(Metric("REDS4", "PSNR", 31.82, source="PapersWithCode, uncompressed input"),),
        ),
        Weights(
            "ftvsr-vimeo",
            "ftvsr",
            "FTVSR_Vimeo90K.pth",
            _RELEASE,
            "MIT",
            f"Vimeo-90K, {_COMPRESSION}",
            "BD + H.264",
            config="vimeo",
        ),
    ),
)
class FTVSR(VSRNetwork):
    """FTVSR, x4 (see the module docstring for the math).

    Args:
        mid_channels: stage-1 feature channels C (official: 64).
        num_blocks: residual blocks of the stage-1 trunk (official: 60).
        stride: token size of the trajectory attention (only 4, the released value).
        keyframe_stride: every how many frames a sweep stores a keyframe (3: REDS; 1: Vimeo-90K).
        dct_kernel: DCT block size (only (8, 8), the released value).
        d_model, n_heads: of the frequency attention (released: 512, 4; the class default is 8 heads).
        keyframe_slots: K, keyframe slots of the stage graphs (default: every keyframe of the
            runtime's default window, :data:`WINDOW_FRAMES` frames); the whole-clip ``forward``
            keeps every keyframe, as the original.
        ftt_channels, ftt_blocks: F and the residual blocks of stage 2 (fixed at 512 and 3 in the
            original; smaller values are for quick tests).

    ``forward``: (N, T, 3, h, w) in [0, 1], T >= 2, h and w >= 16 -> (N, T, 3, 4h, 4w).
    """

    name = "ftvsr"
    scale = 4
    constraints = SizeConstraints(min_h=33, min_w=33, multiple=TOKEN)
    checkpoint_layout = "mmcv"
    #: Trainer state saved beside the generator in the released mmcv files.
    TRAINER_KEYS = ("step_counter",)

    def __init__(
        self,
        mid_channels: int = 64,
        num_blocks: int = 60,
        stride: int = TOKEN,
        keyframe_stride: int = 3,
        dct_kernel: Sequence[int] = (BLOCK, BLOCK),
        d_model: int = 512,
        n_heads: int = 8,
        keyframe_slots: int | None = None,
        ftt_channels: int = 512,
        ftt_blocks: int = 3,
    ) -> None:
        super().__init__()
        if stride != TOKEN or tuple(dct_kernel) != (BLOCK, BLOCK):
            raise ValueError(f"FTVSR is implemented for stride {TOKEN} and dct_kernel (8, 8), the released values")
        if keyframe_stride < 1 or (keyframe_slots is not None and keyframe_slots < 1):
            raise ValueError("keyframe_stride and keyframe_slots must be at least 1")
        if ftt_channels % GROUPS:
            raise ValueError(f"ftt_channels must be a multiple of {GROUPS} (the attention's channel groups)")
        self.mid_channels, self.keyframe_stride = mid_channels, keyframe_stride
        self.keyframe_slots = keyframe_slots or keyframe_slots_for(WINDOW_FRAMES, keyframe_stride)
        self.ftt_channels = ftt_channels
        # stage 1 (TTVSR)
        self.spynet = MMEditSpyNet()
        self.feat_extractor = ConvResidualBlocks(3, mid_channels, 5)
        self.LTAM = LTAM(mid_channels)
        self.resblocks = ConvResidualBlocks(2 * mid_channels, mid_channels, num_blocks)
        self.fusion = nn.Conv2d(3 * mid_channels, mid_channels, 1, 1, 0, bias=True)
        self.upsample1 = PixelShufflePack(mid_channels, mid_channels, 2, upsample_kernel=3)
        self.upsample2 = PixelShufflePack(mid_channels, 64, 2, upsample_kernel=3)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        # stage 2 (frequency transformer)
        self.FTT = FTT(ftt_channels, ftt_blocks, d_model, n_heads)

        step, reconstruct = _TrajectoryStep(self), _Reconstruct(self)
        ftt_step = _FrequencyStep(self.FTT)
        self.share_layers(
            extract=_Extract(self.feat_extractor),
            flow_hr=_FlowHR(self.spynet),
            reconstruct=reconstruct,
            ttvsr_backward=step,
            ttvsr_forward=_TrajectoryForward(step, reconstruct),
            ftt_embed=_FrequencyEmbed(self.FTT),
            ftt_backward=ftt_step,
            ftt_forward=_FrequencyForward(ftt_step),
        )

    # ------------------------------------------------------------------------------ whole clip
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.ndim != 5 or lr.shape[2] != 3:
            raise ValueError(f"ftvsr takes (N, T, 3, h, w) RGB clips, got shape {tuple(lr.shape)}")
        t, h, w = lr.shape[1], lr.shape[3], lr.shape[4]
        if t < 2 or h < MIN_SIZE or w < MIN_SIZE:
            raise ValueError(f"FTVSR needs at least 2 frames of at least 16x16, got {t} of {h}x{w}")
        any_size = h % TOKEN != 0 or w % TOKEN != 0
        # Frame by frame (not batched over the clip as the original): the stage graphs see the same
        # numbers, and the hard attention's near-ties (see the README) then break the same way.
        feats = [self.feat_extractor(lr[:, i]) for i in range(t)]
        flows_bwd = [self.spynet(lr[:, i], lr[:, i + 1]) for i in range(t - 1)]
        flows_fwd = [self.spynet(lr[:, i + 1], lr[:, i]) for i in range(t - 1)]
        hb = self._sweep(feats, lambda i: flows_bwd[i], range(t - 1, -1, -1), any_size)
        hf = self._sweep(feats, lambda i: flows_fwd[i - 1], range(t), any_size)
        sr1 = [self.part("reconstruct")(lr[:, i], hb[i], feats[i], hf[i]) for i in range(t)]
        return self._frequency(lr, sr1)

    def _sweep(
        self, feats: list[torch.Tensor], flow_at: Callable[[int], torch.Tensor], order: range, any_size: bool
    ) -> list[torch.Tensor]:
        """One TTVSR sweep over frames in ``order``, keeping every keyframe (the original's lists).
        ``flow_at(i)`` is the flow from frame i to the sweep's previous frame. (N, C, h, w) maps."""
        n, c, h, w = feats[0].shape
        p = (h // TOKEN) * (w // TOKEN)
        identity = torch.arange(p, device=feats[0].device, dtype=feats[0].dtype).expand(n, 1, p)
        loc, memory = identity, []
        out: list[torch.Tensor] = [feats[0].new_zeros(0)] * len(feats)
        state = feats[0].new_zeros(n, c, h, w)
        for s, i in enumerate(order):
            keyframe = s % self.keyframe_stride == 0
            if s > 0:
                flow = flow_at(i)
                warped = flow_warp(state, flow.permute(0, 2, 3, 1), padding_mode="border")
                loc = follow(loc, nearest_sources(pool_flow(flow, any_size)))
                state = trajectory_attention(feats[i], torch.stack(memory, dim=2), loc, self.LTAM.fusion) + warped
                if keyframe:
                    loc = torch.cat([loc, identity], dim=1)
            state = self.resblocks(torch.cat([feats[i], state], dim=1))
            if keyframe:
                memory.append(keyframe_tokens(state, feats[i], any_size))
            out[i] = state
        return out

    def _frequency(self, lr: torch.Tensor, sr1: list[torch.Tensor]) -> torch.Tensor:
        """Stage 2 over the whole clip: (N, T, 3, h, w) and T x (N, 3, 4h, 4w) -> (N, T, 3, 4h, 4w)."""
        t = len(sr1)
        padded = [pad_to_blocks(frame) for frame in sr1]
        sr, (_, pad_h, pad_w) = [frame for frame, _, _ in padded], padded[0]
        h, w = sr[0].shape[2] - pad_h, sr[0].shape[3] - pad_w
        flows_bwd = [hr_flow(self.spynet, sr[i], sr[i + 1]) for i in range(t - 1)]
        flows_fwd = [hr_flow(self.spynet, sr[i + 1], sr[i]) for i in range(t - 1)]
        spectra = [self.FTT.spectrum(frame) for frame in sr]
        attended = []
        for i in range(t):
            bic = self.FTT.spectrum(pad_to_blocks(bilinear_x4(lr[:, i]))[0])
            attended.append(self.FTT.ftta(bic, spectra[i], spectra[i]))

        def warp(g: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
            return flow_warp(g, flow.permute(0, 2, 3, 1), padding_mode="border")

        gb: list[torch.Tensor] = [sr[0].new_zeros(0)] * t
        g = None
        for i in range(t - 1, -1, -1):
            g = self.FTT.propagate(spectra[i], attended[i], None if g is None else warp(g, flows_bwd[i]))
            gb[i] = g
        out, g = [], None
        for i in range(t):
            g = self.FTT.propagate(spectra[i], attended[i], None if g is None else warp(g, flows_fwd[i - 1]))
            out.append(self.FTT.output(gb[i], spectra[i], g, sr[i])[:, :, :h, :w])
        return torch.stack(out, dim=1)

    # ------------------------------------------------------------------------------ deployment
    def stages(self) -> dict[str, Stage]:
        trajectory = ["feat", "flow", "h_prev", "memory_prev", "loc_prev", "count_prev"]
        trajectory_out = ["h", "memory", "loc", "count"]
        # Flows, locations and step counts are coordinates; the keyframe memory feeds the hard
        # attention's scores, which FP16 rounding would tip at near-ties.
        coords = ["flow", "loc_prev", "count_prev", "loc", "count", "memory_prev", "memory"]
        frequency = ["spectrum", "attended", "g_prev", "flow", "has_prev"]
        return {
            "flow": Stage(self.spynet, ["a", "b"], ["flow"], fp32=["flow"]),
            "extract": Stage(self.part("extract"), ["x"], ["feat", "valid"]),
            "ttvsr_backward": Stage(self.part("ttvsr_backward"), trajectory, trajectory_out, fp32=coords),
            "ttvsr_forward": Stage(
                self.part("ttvsr_forward"), ["lr", *trajectory, "hb"], [*trajectory_out, "sr1"], fp32=coords
            ),
            "flow_hr": Stage(self.part("flow_hr"), ["a", "b"], ["flow"], fp32=["flow"]),
            "ftt_embed": Stage(self.part("ftt_embed"), ["lr", "sr1"], ["spectrum", "attended"]),
            "ftt_backward": Stage(self.part("ftt_backward"), frequency, ["g"], fp32=["flow"]),
            "ftt_forward": Stage(self.part("ftt_forward"), [*frequency, "sr1", "gb"], ["g", "hr"], fp32=["flow"]),
        }

    def plan(self) -> Plan:
        c, k, f4 = self.mid_channels, self.keyframe_slots, self.ftt_channels // 4

        def grid(channels: int, scale: int = 1) -> TensorSpec:
            # Frames are multiples of 4 (the constraints): saying so lets the export prove the
            # token reshapes without guards.
            return TensorSpec(channels, scale, multiple=TOKEN)

        tensors = {
            "lr": grid(3),
            "flow_bwd": grid(2),
            "flow_fwd": grid(2),
            "flow8_bwd": grid(2),
            "flow8_fwd": grid(2),
            "feat": grid(c),
            "valid": grid(1),
            "sr1": grid(3, self.scale),
            "spectrum": grid(f4),
            "attended": grid(f4),
            "gb": grid(f4),
            "gf": grid(f4),
            "hr": grid(3, self.scale),
        }
        for d in ("b", "f"):
            tensors.update({f"h{d}": grid(c), f"memory_{d}": grid(4 * c * k)})
            tensors.update({f"loc_{d}": grid(k), f"count_{d}": TensorSpec(1, size="one")})

        def carried(d: str, back: int) -> dict[str, Read]:
            return {
                "h_prev": Read(f"h{d}", back, "zeros"),
                "memory_prev": Read(f"memory_{d}", back, "zeros"),
                "loc_prev": Read(f"loc_{d}", back, "zeros"),
                "count_prev": Read(f"count_{d}", back, "zeros"),
            }

        def written(d: str) -> dict[str, str]:
            return {"h": f"h{d}", "memory": f"memory_{d}", "loc": f"loc_{d}", "count": f"count_{d}"}

        def frequency(d: str, back: int) -> dict[str, Read]:
            return {
                "spectrum": Read("spectrum"),
                "attended": Read("attended"),
                "g_prev": Read(f"g{d}", back, "zeros"),
                "flow": Read(f"flow8_{'bwd' if d == 'b' else 'fwd'}", 0, "zeros"),
                "has_prev": Read("valid", back, "zeros"),
            }

        steps = [
            *flow_pair_steps("lr"),
            Step("extract", {"x": Read("lr")}, {"feat": "feat", "valid": "valid"}),
            Step(
                "ttvsr_backward",
                {"feat": Read("feat"), "flow": Read("flow_bwd", 0, "zeros"), **carried("b", 1)},
                written("b"),
                order="backward",
            ),
            Step(
                "ttvsr_forward",
                {
                    "lr": Read("lr"),
                    "feat": Read("feat"),
                    "flow": Read("flow_fwd", 0, "zeros"),
                    **carried("f", -1),
                    "hb": Read("hb"),
                },
                {**written("f"), "sr1": "sr1"},
            ),
            Step("flow_hr", {"a": Read("sr1"), "b": Read("sr1", 1)}, {"flow": "flow8_bwd"}, last=-1),
            Step("flow_hr", {"a": Read("sr1"), "b": Read("sr1", -1)}, {"flow": "flow8_fwd"}, first=1),
            Step("ftt_embed", {"lr": Read("lr"), "sr1": Read("sr1")}, {"spectrum": "spectrum", "attended": "attended"}),
            Step("ftt_backward", frequency("b", 1), {"g": "gb"}, order="backward"),
            Step(
                "ftt_forward",
                {**frequency("f", -1), "sr1": Read("sr1"), "gb": Read("gb")},
                {"g": "gf", "hr": "hr"},
            ),
        ]
        return Plan(steps=steps, tensors=tensors, output="hr")

    def step_workspace(self) -> str:
        """The frequency attention on an h x w LR tile: scores and their softmax, n_heads x L x L
        FP32 each, L = 64 * floor(h/16) * floor(w/16) tokens (8x8 patches of the x4 frame's DCT grid)."""
        tokens = "64 * (h // 16) * (w // 16)"
        return f"2 * {self.FTT.ftta.MultiheadAttention.num_heads} * {tokens} * {tokens} * 4"

    # ------------------------------------------------------------------------------ checkpoints
    def route_checkpoint(self, obj: Any, key: str | None) -> tuple[str, dict[str, torch.Tensor]]:
        """The generator's tensors of a released mmcv file (``generator.`` removed, the trainer's
        ``step_counter`` dropped; ``optimizer`` and ``meta`` are not tensors of the state dict)."""
        state = extract_state_dict(obj, key)
        return "", {name: value for name, value in state.items() if name not in self.TRAINER_KEYS}
