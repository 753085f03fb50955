"""DAVSR's Fourier data layer: the closed-form solution of its data term, with and without complex numbers.

The degradation DAVSR inverts (released configuration, ``sf = (5, 4, 4)``) maps an HR clip x of
5T frames (H, W) = (4h, 4w) to T LR frames: ``y = S(k * x)`` with circular boundaries in time and
space, where k is a 5-tap temporal box (1/5 each, taps at -2..2) times the fixed 25 x 25 spatial
kernel :func:`degradation_kernel` (centre at index 12), and S keeps frame 5t and pixel (4i, 4j).
Each alternating iteration replaces the clip z by

    x = argmin_x ||S(k * x) - y||^2 + alpha ||x - z||^2.

:func:`data_step_fft` is the original's formulation: full complex 3-D FFTs of the whole clip
(``ps2ot`` for the kernel, then USRNet's closed form with 5 x 4 x 4 aliases). It is the
reference; torch's complex FFT has no ONNX/TensorRT path before TensorRT 11.2.

:func:`data_step_block` is what is deployed, exact in exact arithmetic. Because the temporal box
is exactly as long as the temporal subsampling, the problem splits into independent blocks of
five HR frames J_t = {5t-2, ..., 5t+2} (mod 5T, so block 0 takes frames 5T-2 and 5T-1 too):
LR frame t sees only the mean m of its block, so the deviations of each frame from the block
mean stay those of z, and

    m = argmin_m ||S_s(k_s * m) - y_t||^2 + 5 alpha ||m - mean_J(z)||^2,    x_d = z_d + m - mean_J(z),

a 2-D USRNet problem (16 spatial aliases) solved with DFTs written as matrix products in real
arithmetic (cos and sin matrices built in the graph from the frame size, with integer phase
indices, so they stay exact in FP32). It needs no complex tensors and no ``DFT`` operator, and
per block it costs one 2-D transform forward and one back.
"""

from __future__ import annotations

import base64
import math

import numpy as np
import torch
from torch.nn import functional as F

#: (temporal, vertical, horizontal) subsampling of the released model.
SCALE_FACTORS = (5, 4, 4)

# The released model's fixed spatial blur (``ker_x4`` in DAVSR's davsr_net.py), 25 x 25, sums to
# 0.9999 with its peak at (10, 10); stored as the FP32 values the original computes with
# (little-endian float32, row-major, base64).
_KERNEL_X4 = (
    "4DretnHOcLes2qE4M5kzuZgR6znJUeS5d757ODZVNTmH/Cy6Y+ItOn1YB7lV+gq5jVcuOq9hLLqFAjU5oop1OPQf5Lkemeo5"
    "ueIwuVv4nDggtkq3MAPPth/GvDVKgSW2PFD+tbTqg7dI4i24LJcPOMSGNbndXpA5Ed+euaT86TewQQM55xj7uW23wzmLB0W5"
    "Ck1HuXwcxTncvfq5JPL4ONFyCjjRaqC5VoOQOUCnLbmKHwI4qgsLuDNsybdvS4G3cbytt2xUUrcNhrg4kAI8OMFxFjmCk6q4"
    "gN7pOZSlg7lqNDA5evaTObNA2rlWbCw6WrMRNbPmd7aeVC061tjYubdAlTl7ay45DtCEuVMi6Tk2w7e4T2MIOfAqWTiqLGM4"
    "18OGOKbrSziBZKs4T/pOudu9S7kyw+64ZaG9ucNmPzl/SAq65IIjubYKCLlQs4G6VuUDuUSta7pEqG26jLcBubx3gboGyQW5"
    "EF0fuWhfCbp82EQ5grezuSsh57j+kUG5bNkguTWqHLnjvBK5btg3uXkfEToQfqY5nTwBOrF/hjl6YXg6fda0Od8PQTqTzAw6"
    "vHh3uq3+O7p4EQS7A7EDuzjmPLqyT3e6LrcIOgFOQTrhr6w5ycVyOpnNgTkvFOQ5R4DAOQSGnjnkBrk5i/qCOQSi/DmfzQ66"
    "2vSvuYKXo7liLhG6bMaGOfA+ErrHLzu5HvlKurCQRrtiEmC7u0euu/KQrruYtF+7fnZGu96nSLrEVzO54a8PugrAkzlmIg+6"
    "4b6DuZAny7mqsIy5DWGuuSyUXbkuFvm5js+UOIyRLzgmIC85xdgDuTELPjoG+Ra5aY/FOd+ylDh/mta6oDKzuhASPLvp9Du7"
    "Co6zuuPz1br+LYM4mFPHOVNoJblzUT06puYYubAcLTn/B403iXWOONzyLzh1QII4hsQ6OKtzYDlgyiI5NzWlOVr6xLjOkQ86"
    "uHlAurERyzi6KoI6KSTkOrI8qDsLArY7vNK1O9mDqDu7m+M6/SuCOrU30jhlCUC6jNkPOloYvLhG+6M5wlYlOau7UDlSBzg5"
    "JPxCOdHLSDmkd1q69OwPumsMBbr6M4y6epuFuj/eS7sB1d26kKzbOnsbATxf1488DJC2PFqFtjyz3I88fzMBPNo92zqjO926"
    "e2JMu/YAg7rVuI66BQvmuWLXK7pkHvu5lhIXusfX0LnVdUu6pi5eOp+O5Dka70c6QE1yuOvyIbpWO1y75u+pum6IqTvJMJA8"
    "1CEPPS5fNj2tWjY94CUPPVshkDyrkak7S6yquuk1XLsCNie6PcEiuH+cNDrl3g46O0AAOv2VETqf7so5YidKOp0QMrly82S5"
    "/ea5tyMddrqzjwO7cCiwuy2XPLuASbU7Sl+2PEdhNj3zkWs9vZFrPe1gNj1Ja7Y81F21O06qPLtsELC7K5kDu45FdLpaPMq3"
    "02Feub7rFbmo8RW5dOgbufb6GrkpryW5F+lmuS/70LeEkna6L1IEu3QcsLs3xTy7ajm1OxZptjxmWzY9rpFrPbuIaz2VYDY9"
    "hl62PO4vtTsZ3jy7Bhywu32yA7vIkXW6gyy6t4vWYLlQyxi5m3shuSdWG7nSIiK51adcOheT5jmQaUg6cX5SuFkuIbr8qFu7"
    "FkuqurPXqTszLZA8Bi0PPfZgNj0aajY9DCoPPe45kDxFs6k7cr6pumnOW7tZxSe6s7j6t5ZYNTrtQg86/OMBOon4EzrKkcw5"
    "+plLOk95XbrrsA+6vK4HuqgujLrNXYe65fRLu/+o3rpN6do6ug0BPEbKjzyDgLY8jnS2PJjXjzyvBQE8lR/bOlRs3rrXOky7"
    "llmEup0xjrq8/em5Bz4suvMk/7lVlxi6Dq7Suc3yTLq4oWc5WsQhOU4hpTmtzLq4I0kROkErQLqid8844puCOgh/4zqdkqg7"
    "dcO1O2MPtjvxbag7O9jjOkMrgjqo3Ns4hRpAukEiEjqPdNK4sx6nOVdDITmGdVM5WBw9Od+CQjmViU05/auOOG32QzhLiS85"
    "C+wEucT7Ozri7xG5s2DGOQCfoTiI59W6jMGyukR5O7ua2zu7kWCyuh0X1rru75s48xPFOd0QHLn0GDs6NjwIuQP7KzkvTtA3"
    "216LOJEzLDj6zIQ4tDEqOI0ND7rqOrS5Ccajuee5EbqIboc5rKcTum3/RrkgyU26QqNHu7K+YLv9zq674/Kuu3cKYLuBiUe7"
    "d35LutK9P7nglBC67miPOY1fErp/CYS5cwvRuVWki7lOAbG5FoFhubLX+rk/tRQ6sh2qObCwAzqLDIk5xv51OsKDvzlYZEQ6"
    "95sOOtTScLpzcDq6vuQCuydiArvQJT265ztxujRNDTqCpUA6yPW7OQ1AcDruFIk5+gDoOWcUxDnv7aA50Oq6OXothTmbRwA6"
    "2Ddguc/ISrmseAO5dxe5ubFhPDm6Dw26QZgvudyoErmyYIW6zxL2uGljbrpZcG66whHruFAfhbrPGgi5vdIzuXNzCrpEyD45"
    "eMKzubgi9LjpT0O5szcnuaN1FrktbBm5Yzw4uafSzjjyZUA4xpgMOV+Tlbj/atI5ardNuWVyLjkiCpc5mXS7ude8ITrxh5o1"
    "Pv7/NlBpIToD+bu54LaUOW3WLDlzsVC5LIHTOQdBn7hvLgc5XdV6OMWbZziYoYE4PsBQONYnsDjyT6e3SzkLuNwOJjhqijC5"
    "Ou2kORNst7lcOzI3F40AOZUYFrrClvA5JK5BubOWR7l5jfA5hTAVukM7Ajns5Bs3yjG4uX7mpDnk9Cy58gEjOBpzFLi0ULK3"
    "KxkQt582zre5pjC3QQgXt56cprd2qDA4mKoBuYHtgzlW8Gm58idwOFFvLDkN+NG5sj/VOaSV+LgQ2+u4aVXVOav20bmfBC05"
    "2YBmOEM8Z7kJZYM5BgcDuWdINTgnrIq3pl6ntprMP7YH1Xa2hAnVtl8UP7R5cCq3ZmxXOIQGA7lcyps5jruSudJkHzi6mhg5"
    "yQj6udfh8DkBkQS574oBuUEA8Tkx9fm5MOMbOZsSCzhCkZC5nQabOSWECLlffG84I4ZQt93Bq7UVHHQ22zctNc33MTbcjga2"
    "W3SHtwczIzgkgO24ELlaOfueQbkK1GE4BRwWOUXWsLlLEq45vPX/uBay77iR86o5K8mxuchTHDlf+lM4rg1HuYPwYjmQ/eu4"
    "ciQkOLR2hLd1omK2jcWstVn2WLZo7IS2ugE8NVlYP7eBQo84VNgVuS1iyzkygsa5iwopOEtBHzlmWx26AFEcOsJN/7gYNvu4"
    "EecdOssqH7rkMyU5F3oMOCd3wbmltcg5V3kZuaj7kDjyoBe3MwpBtmTeKjZbmuC02o+eNg=="
)
_KERNEL_SIZE = 25


def degradation_kernel() -> torch.Tensor:
    """The fixed 25 x 25 spatial blur of DAVSR's degradation, FP32."""
    raw = base64.b64decode("".join(_KERNEL_X4))
    return torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(_KERNEL_SIZE, _KERNEL_SIZE).copy())


# ---------------------------------------------------------------------- the original, complex
def otf(psf: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad a (N, C, kt, kh, kw) point spread function to ``shape``, centre it by a circular shift
    of -floor(k / 2) on each axis, and take its 3-D FFT (complex)."""
    out = psf.new_zeros(psf.shape[:2] + tuple(shape))
    out[:, :, : psf.shape[2], : psf.shape[3], : psf.shape[4]] = psf
    for axis, size in enumerate(psf.shape[2:]):
        out = torch.roll(out, -(size // 2), dims=axis + 2)
    return torch.fft.fftn(out, dim=(-3, -2, -1))


def _alias_mean(a: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """Mean over the aliases of a spectrum: each of the last len(factors) axes, of length f * n, is cut
    into f contiguous pieces of length n and the pieces are averaged."""
    lead = a.shape[: a.ndim - len(factors)]
    split: list[int] = []
    for f, size in zip(factors, a.shape[len(lead) :]):
        split += [f, size // f]
    pieces = a.reshape(*lead, *split)
    return pieces.mean(dim=tuple(len(lead) + 2 * i for i in range(len(factors))))


def data_step_fft(z: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """The original data step over a whole clip, with complex FFTs (reference).

    Args:
        z: (N, C, 5T, H, W) the current HR clip, H = 4h, W = 4w.
        y: (N, C, T, h, w) the LR clip.
        alpha: the iteration's weight, a float or a tensor broadcastable to (N, 1, 1, 1, 1).

    Returns:
        (N, C, 5T, H, W), the minimiser (real part of the inverse FFT, as the original).
    """
    n, _, t, h, w = y.shape
    st, sh, sw = SCALE_FACTORS
    if z.shape[2:] != (st * t, sh * h, sw * w):
        raise ValueError(f"the HR clip must be {st}x{sh}x{sw} the LR clip, got {tuple(z.shape)} for {tuple(y.shape)}")
    kernel = degradation_kernel().to(z.device, z.dtype).repeat(n, 1, st, 1, 1) / st
    fb = otf(kernel, (st * t, sh * h, sw * w))
    fbc = torch.conj(fb)
    f2b = torch.pow(torch.abs(fb), 2)
    sty = z.new_zeros((*z.shape[:2], st * t, sh * h, sw * w))
    sty[:, :, ::st, ::sh, ::sw] = y
    fbfy = fbc * torch.fft.fftn(sty, dim=(2, 3, 4))
    fr = fbfy + torch.fft.fftn(alpha * z, dim=(2, 3, 4))
    fbr = _alias_mean(fb * fr, SCALE_FACTORS)
    inv_w = _alias_mean(f2b, SCALE_FACTORS)
    fx = (fr - fbc * (fbr / (inv_w + alpha)).repeat(1, 1, st, sh, sw)) / alpha
    return torch.real(torch.fft.ifftn(fx, dim=(2, 3, 4)))


# ---------------------------------------------------------------------- real arithmetic, per block
def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """FP32, or FP64 for FP64 inputs (tests): never less than FP32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def dft_matrices(n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the n-point DFT phases 2 pi (j k mod n) / n, each (n, n), FP32 (FP64 for FP64 ``like``).

    The product j k is reduced modulo n in integers first, so every angle is below 2 pi and
    exact to its own rounding whatever n is.
    """
    k = torch.arange(n, device=like.device)
    return _cos_sin(k.view(-1, 1) * k.view(1, -1), k[-1] + 1, _work_dtype(like))


def _cos_sin(phase: torch.Tensor, n: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of 2 pi (phase mod n) / n; ``n`` is a tensor so that exported graphs keep it dynamic."""
    angle = torch.remainder(phase, n).to(dtype) * (2 * math.pi) / n.to(dtype)
    return torch.cos(angle), torch.sin(angle)


def _shifted_phases(n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of 2 pi k (a - 12) / n for k < n and the 25 kernel taps a, each (n, 25)."""
    k = torch.arange(n, device=like.device)
    a = torch.arange(_KERNEL_SIZE, device=like.device) - _KERNEL_SIZE // 2
    return _cos_sin(k.view(-1, 1) * a.view(1, -1), k[-1] + 1, _work_dtype(like))


def kernel_power_aliased(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``mean over the 16 aliases of |K|^2`` on the LR grid, (h, w): the spectrum of S B B^T S^T.

    K is the 2-D DFT of the centred spatial kernel on the (4h, 4w) grid (the original's ``ps2ot``).
    """
    kernel = degradation_kernel().to(like.device, _work_dtype(like))
    _, sh, sw = SCALE_FACTORS
    ch, sn_h = _shifted_phases(sh * h, like)
    cw, sn_w = _shifted_phases(sw * w, like)
    re = ch @ kernel @ cw.T - sn_h @ kernel @ sn_w.T
    im = sn_h @ kernel @ cw.T + ch @ kernel @ sn_w.T
    return _alias_mean(re * re + im * im, (sh, sw))


def _wrap_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Circular padding of the last two axes by ``pad`` on each side (slices and concatenation)."""
    x = torch.cat([x[..., -pad:, :], x, x[..., :pad, :]], dim=-2)
    return torch.cat([x[..., -pad:], x, x[..., :pad]], dim=-1)


def _depthwise_kernel(x: torch.Tensor, flip: bool) -> torch.Tensor:
    kernel = degradation_kernel().to(x.device, x.dtype)
    if flip:
        kernel = kernel.flip(0, 1)
    return kernel.expand(x.shape[1], 1, _KERNEL_SIZE, _KERNEL_SIZE)


def blur_subsample(x: torch.Tensor) -> torch.Tensor:
    """``S(k * x)``: circular convolution with the spatial kernel, then keep pixel (4i, 4j).

    (N, C, 4h, 4w) -> (N, C, h, w).
    """
    _, sh, sw = SCALE_FACTORS
    half = _KERNEL_SIZE // 2
    return F.conv2d(_wrap_pad(x, half), _depthwise_kernel(x, flip=True), stride=(sh, sw), groups=x.shape[1])


def upsample_blur(u: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`blur_subsample`: zero-fill x4, then circular correlation with the kernel.

    (N, C, h, w) -> (N, C, 4h, 4w).
    """
    _, sh, sw = SCALE_FACTORS
    half = _KERNEL_SIZE // 2
    border = -(-half // sh)  # LR pixels whose taps reach across an edge
    h, w = u.shape[-2:]
    full = F.conv_transpose2d(_wrap_pad(u, border), _depthwise_kernel(u, flip=True), stride=(sh, sw), groups=u.shape[1])
    top = sh * border + half
    return full[..., top : top + sh * h, top : top + sw * w]


def _dft2(
    x: torch.Tensor, c_rows: torch.Tensor, s_rows: torch.Tensor, c_cols: torch.Tensor, s_cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward 2-D DFT of a real (..., n, m) tensor: (real, imaginary). The matrices are symmetric."""
    xc, xs = x @ c_cols, x @ s_cols
    return c_rows @ xc - s_rows @ xs, -(s_rows @ xc + c_rows @ xs)


def _circulant_solve(r: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """``(S B B^T S^T + alpha)^-1 r`` on the LR grid, by 2-D DFTs written as matrix products."""
    h, w = r.shape[-2:]
    ch, sh = dft_matrices(h, r)
    cw, sw = dft_matrices(w, r)
    re, im = _dft2(r, ch, sh, cw, sw)
    gain = kernel_power_aliased(h, w, r) + alpha
    re, im = re / gain, im / gain
    out = ch @ (re @ cw - im @ sw) - sh @ (re @ sw + im @ cw)  # real part of the inverse DFT
    return out / (h * w)


def data_step_block(z: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """The data step on one block of five HR frames, exact to :func:`data_step_fft` on the whole clip.

    Args:
        z: (N, 5, C, H, W) the block J_t = (5t-2 .. 5t+2 mod 5T) of the current HR clip, any order.
        y: (N, C, h, w) LR frame t.
        alpha: the iteration's weight, float or tensor broadcastable to (N, 1, 1, 1).

    Returns:
        (N, 5, C, H, W): the block of the minimiser, in the order of ``z``, FP32 (FP64 for FP64 z):
        every frame moves by the same correction, the one that makes the block mean solve the
        2-D problem with weight 5 alpha.
    """
    if z.ndim != 5 or z.shape[1] != SCALE_FACTORS[0]:
        raise ValueError(f"a data block is (N, {SCALE_FACTORS[0]}, C, H, W), got {tuple(z.shape)}")
    z = z.to(_work_dtype(z))
    mean = z.mean(dim=1)
    correction = upsample_blur(_circulant_solve(y.to(z.dtype) - blur_subsample(mean), SCALE_FACTORS[0] * alpha))
    return z + correction.unsqueeze(1)
