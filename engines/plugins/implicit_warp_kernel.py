"""The Triton kernel of the ``vsr::ImplicitWarp`` plugin (imports Triton; see :mod:`.implicit_warp`).

``implicit_warp_kernel`` handles ``BLOCK_P`` target pixels per program, with NCHW tensors. The
projections run over (``BLOCK_K`` input x ``BLOCK_N`` output) channel tiles of the weights in two
passes: the per-head logits of the four slots first, then the values and the output, so the shared
memory a program needs does not grow with the channel count.
"""

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def _query_tile(target, pe_divisors, base, rem, hw, pmask, angle_y, angle_x, kch, C: tl.constexpr):
    """(BLOCK_P, BLOCK_K) query input ``x + code`` for the channels ``kch``; zero outside."""
    HALF: tl.constexpr = C // 2
    kmask = kch < C
    m2 = pmask[:, None] & kmask[None, :]
    # Channels [0, C/2) code y, [C/2, C) code x; within each, (sin, cos) per divisor.
    within = kch % HALF
    div = tl.load(pe_divisors + within // 2, mask=kmask, other=1.0)
    angle = tl.where((kch < HALF)[None, :], angle_y[:, None], angle_x[:, None])
    arg = tl.math.div_rn(angle, div[None, :])
    code = tl.where((within % 2 == 0)[None, :], libdevice.sin(arg), libdevice.cos(arg))
    x = tl.load(target + base[:, None] + kch[None, :] * hw + rem[:, None], mask=m2, other=0.0)
    return tl.where(m2, x + code.to(x.dtype), 0.0).to(x.dtype)


@triton.jit
def _key_tile(source, key_pe, base, offset, hw, pmask, kch, S: tl.constexpr, C: tl.constexpr):
    """(BLOCK_P, BLOCK_K) key/value input ``y_s + key_pe[s]`` of corner slot S; zero outside."""
    kmask = kch < C
    m2 = pmask[:, None] & kmask[None, :]
    y = tl.load(source + base[:, None] + kch[None, :] * hw + offset[:, None], mask=m2, other=0.0)
    pe = tl.load(key_pe + S * C + kch, mask=kmask, other=0.0).to(y.dtype)
    return tl.where(m2, y + pe[None, :], 0.0).to(y.dtype)


@triton.jit
def _weight_tile(weight, kch, nch, C: tl.constexpr):
    """(BLOCK_K, BLOCK_N) tile of W^T for an (out x in) row-major C x C weight; zero outside."""
    wmask = (kch < C)[:, None] & (nch < C)[None, :]
    return tl.load(weight + nch[None, :] * C + kch[:, None], mask=wmask, other=0.0)


@triton.jit
def _bias(bias, nch, C: tl.constexpr):
    return tl.load(bias + nch, mask=nch < C, other=0.0).to(tl.float32)


@triton.jit
def implicit_warp_kernel(
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
    pe_divisors,
    n_pixels,
    hw,
    height,
    width,
    output,
    C: tl.constexpr,
    HEADS: tl.constexpr,
    SCALE: tl.constexpr,
    INV_WINDOW: tl.constexpr,
    TWO_PI: tl.constexpr,
    C_PAD: tl.constexpr,
    H_PAD: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """``vsr::ImplicitWarp`` for BLOCK_P target pixels (flattened N*h*w), NCHW tensors."""
    HEAD_DIM: tl.constexpr = C // HEADS
    pid = tl.program_id(0)
    pix = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = pix < n_pixels
    n = pix // hw
    rem = pix - n * hw
    i = rem // width
    j = rem - i * width
    base = n * (C * hw)

    # Positions, corners and offsets in FP32.
    dx = tl.load(flow + n * (2 * hw) + rem, mask=pmask, other=0.0)
    dy = tl.load(flow + n * (2 * hw) + hw + rem, mask=pmask, other=0.0)
    py = i.to(tl.float32) + dy
    px = j.to(tl.float32) + dx
    top = tl.floor(py)
    left = tl.floor(px)
    angle_y = ((py - top) * INV_WINDOW) * TWO_PI
    angle_x = ((px - left) * INV_WINDOW) * TWO_PI
    hmax = (height - 1).to(tl.float32)
    wmax = (width - 1).to(tl.float32)
    row0 = tl.minimum(tl.maximum(top, 0.0), hmax).to(tl.int32)
    row1 = tl.minimum(tl.maximum(top + 1.0, 0.0), hmax).to(tl.int32)
    col0 = tl.minimum(tl.maximum(left, 0.0), wmax).to(tl.int32)
    col1 = tl.minimum(tl.maximum(left + 1.0, 0.0), wmax).to(tl.int32)
    off0 = row0 * width + col0
    off1 = row0 * width + col1
    off2 = row1 * width + col0
    off3 = row1 * width + col1
    hh = tl.arange(0, H_PAD)

    # Pass 1: per-head logits of the four slots, one tile of output channels at a time.
    l0 = tl.zeros((BLOCK_P, H_PAD), tl.float32)
    l1 = tl.zeros((BLOCK_P, H_PAD), tl.float32)
    l2 = tl.zeros((BLOCK_P, H_PAD), tl.float32)
    l3 = tl.zeros((BLOCK_P, H_PAD), tl.float32)
    for n0 in range(0, C_PAD, BLOCK_N):
        nch = n0 + tl.arange(0, BLOCK_N)
        q = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        k0 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        k1 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        k2 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        k3 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        for c0 in range(0, C_PAD, BLOCK_K):
            kch = c0 + tl.arange(0, BLOCK_K)
            xq = _query_tile(target, pe_divisors, base, rem, hw, pmask, angle_y, angle_x, kch, C)
            q = tl.dot(xq, _weight_tile(q_weight, kch, nch, C), q, input_precision="ieee")
            kw = _weight_tile(k_weight, kch, nch, C)
            k0 = tl.dot(_key_tile(source, key_pe, base, off0, hw, pmask, kch, 0, C), kw, k0, input_precision="ieee")
            k1 = tl.dot(_key_tile(source, key_pe, base, off1, hw, pmask, kch, 1, C), kw, k1, input_precision="ieee")
            k2 = tl.dot(_key_tile(source, key_pe, base, off2, hw, pmask, kch, 2, C), kw, k2, input_precision="ieee")
            k3 = tl.dot(_key_tile(source, key_pe, base, off3, hw, pmask, kch, 3, C), kw, k3, input_precision="ieee")
        q += _bias(q_bias, nch, C)[None, :]
        kb = _bias(k_bias, nch, C)[None, :]
        # One-hot channel -> head (BLOCK_N x H_PAD); padding rows are zero.
        onehot = tl.where(((nch[:, None] // HEAD_DIM) == hh[None, :]) & (nch < C)[:, None], 1.0, 0.0)
        l0 = tl.dot(q * (k0 + kb), onehot, l0, input_precision="ieee")
        l1 = tl.dot(q * (k1 + kb), onehot, l1, input_precision="ieee")
        l2 = tl.dot(q * (k2 + kb), onehot, l2, input_precision="ieee")
        l3 = tl.dot(q * (k3 + kb), onehot, l3, input_precision="ieee")

    # Softmax over the four slots, per head.
    l0 = l0 * SCALE
    l1 = l1 * SCALE
    l2 = l2 * SCALE
    l3 = l3 * SCALE
    m = tl.maximum(tl.maximum(l0, l1), tl.maximum(l2, l3))
    e0 = libdevice.exp(l0 - m)
    e1 = libdevice.exp(l1 - m)
    e2 = libdevice.exp(l2 - m)
    e3 = libdevice.exp(l3 - m)
    den = e0 + e1 + e2 + e3
    p0 = e0 / den
    p1 = e1 / den
    p2 = e2 / den
    p3 = e3 / den

    # Pass 2: values and the output, one tile of output channels at a time.
    for n0 in range(0, C_PAD, BLOCK_N):
        nch = n0 + tl.arange(0, BLOCK_N)
        v0 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        v1 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        v2 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        v3 = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        for c0 in range(0, C_PAD, BLOCK_K):
            kch = c0 + tl.arange(0, BLOCK_K)
            vw = _weight_tile(v_weight, kch, nch, C)
            v0 = tl.dot(_key_tile(source, key_pe, base, off0, hw, pmask, kch, 0, C), vw, v0, input_precision="ieee")
            v1 = tl.dot(_key_tile(source, key_pe, base, off1, hw, pmask, kch, 1, C), vw, v1, input_precision="ieee")
            v2 = tl.dot(_key_tile(source, key_pe, base, off2, hw, pmask, kch, 2, C), vw, v2, input_precision="ieee")
            v3 = tl.dot(_key_tile(source, key_pe, base, off3, hw, pmask, kch, 3, C), vw, v3, input_precision="ieee")
        vb = _bias(v_bias, nch, C)[None, :]
        # Head weights -> channel weights through the transposed one-hot (exact: one term per channel).
        onehot_t = tl.where(((nch[None, :] // HEAD_DIM) == hh[:, None]) & (nch < C)[None, :], 1.0, 0.0)
        out = tl.dot(p0, onehot_t, input_precision="ieee") * (v0 + vb)
        out = out + tl.dot(p1, onehot_t, input_precision="ieee") * (v1 + vb)
        out = out + tl.dot(p2, onehot_t, input_precision="ieee") * (v2 + vb)
        out = out + tl.dot(p3, onehot_t, input_precision="ieee") * (v3 + vb)
        m2 = pmask[:, None] & (nch < C)[None, :]
        tl.store(output + base[:, None] + nch[None, :] * hw + rem[:, None], out.to(output.dtype.element_ty), mask=m2)
