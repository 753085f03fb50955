"""PSNR and SSIM as the papers compute them (BasicSR's ``calculate_psnr`` / ``calculate_ssim``).

Frames are first rounded to 8-bit levels (``tensor2img``), optionally reduced to luma (ITU-R
BT.601, the ``bgr2ycbcr(y_only=True)`` of MATLAB: 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on
a [0, 255] scale), cropped by ``crop_border`` pixels on each side, then compared in float64.
SSIM uses an 11 x 11 Gaussian window of sigma 1.5 over the valid region, per channel, averaged.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def to_levels(frames: torch.Tensor, channels: str = "rgb", crop_border: int = 0) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> float64 8-bit levels, (..., 3 or 1, H - 2b, W - 2b)."""
    x = torch.round(frames.detach().double().clamp(0, 1) * 255)
    if channels == "y":
        w = x.new_tensor(_Y_WEIGHTS).view(3, 1, 1)
        x = (x * w).sum(dim=-3, keepdim=True) / 255 + 16
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
    return x


def psnr(a: torch.Tensor, b: torch.Tensor, channels: str = "rgb", crop_border: int = 0) -> float:
    """PSNR in dB of one frame pair (3, H, W) in [0, 1]; inf where equal."""
    mse = float(torch.mean((to_levels(a, channels, crop_border) - to_levels(b, channels, crop_border)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, channels: str = "rgb", crop_border: int = 0) -> float:
    """SSIM of one frame pair (3, H, W) in [0, 1], the mean over channels."""
    x = to_levels(a, channels, crop_border).unsqueeze(1)  # (C, 1, H, W)
    y = to_levels(b, channels, crop_border).unsqueeze(1)
    window = _gaussian().to(x).view(1, 1, 11, 11)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((num / den).mean(dim=(1, 2, 3)).mean())


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The Charbonnier loss of BasicSR and mmediting: mean of sqrt((pred - target)^2 + eps)."""
    return torch.sqrt((pred - target) ** 2 + eps).mean()
