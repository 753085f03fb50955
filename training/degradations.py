"""Degradations made on the fly, as the papers make their training data from ground truth.

Every function takes and returns float32 frames (T, 3, H, W) in [0, 1].

* ``bi``: bicubic downscaling with antialiasing (Keys a = -0.5 over the scaled support, as
  MATLAB's ``imresize`` does; borders are renormalised instead of mirrored).
* ``bd``: the BD scripts of the originals (MATLAB): a 12 x 12 Gaussian of sigma 1.6
  (``fspecial('gaussian', 12, 1.6)``), ``imfilter`` with replicated borders (correlation, anchor at
  the kernel's 6th tap, 1-based), then every 4th pixel from the 2nd (``2:4:end-2``).
* ``compress``: H.264 at a given CRF through PyAV (libx264, yuv420p, default preset), decoded back.
* ``temporal_mean``: the mean of each run of ``rate`` frames (DAVSR's REDS "blur" frames: a
  long exposure over five 120 fps frames).

``quantize`` rounds to 8-bit levels, as the originals' data were PNG files.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import torch
from torch.nn import functional as F

#: BD: Gaussian sigma and kernel size of the MATLAB scripts for x4 (``ceil(3 sigma) * 2 + 2``).
BD_SIGMA = 1.6
BD_KERNEL = 12


def quantize(frames: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels (what writing a PNG does)."""
    return torch.round(frames.clamp(0, 1) * 255) / 255


def resize_bicubic(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize with antialiasing to ``size`` (H, W): (T, 3, H0, W0) -> (T, 3, H, W)."""
    return F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)


def bi(frames: torch.Tensor, scale: int) -> torch.Tensor:
    """BI: bicubic x1/``scale``; H and W must be multiples of ``scale``."""
    h, w = frames.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"frame size {h}x{w} is not a multiple of {scale}")
    return resize_bicubic(frames, (h // scale, w // scale))


def bd_kernel(size: int = BD_KERNEL, sigma: float = BD_SIGMA) -> torch.Tensor:
    """MATLAB's ``fspecial('gaussian', size, sigma)`` as its separable 1-D factor (size,)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def bd(frames: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """BD: Gaussian blur (sigma 1.6) with replicated borders, then every ``scale``-th pixel.

    Taps of output pixel y (0-based) are y - 5 .. y + 6 (MATLAB anchors an even kernel of 12 at
    its 6th tap); kept pixels are y = scale/2 - 1, + scale, ... (MATLAB's ``scale/2:scale:end-scale/2``).
    """
    if scale % 2:
        raise ValueError("bd is defined here for even scales (the x4 BD data of the papers)")
    h, w = frames.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"frame size {h}x{w} is not a multiple of {scale}")
    k = bd_kernel().to(frames)
    before, after = BD_KERNEL // 2 - 1, BD_KERNEL // 2
    first = scale // 2 - 1
    c = frames.shape[1]
    x = F.pad(frames, (before, after, before, after), mode="replicate")
    x = x[:, :, first:, first:]
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(scale, 1), groups=c)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, scale), groups=c)
    return x[:, :, : h // scale, : w // scale]


def temporal_mean(frames: torch.Tensor, rate: int) -> torch.Tensor:
    """(rate * T, 3, H, W) -> (T, 3, H, W): the mean of each run of ``rate`` frames."""
    n = frames.shape[0]
    if n % rate:
        raise ValueError(f"{n} frames are not a whole number of runs of {rate}")
    return frames.view(n // rate, rate, *frames.shape[1:]).mean(dim=1)


def compress(frames: torch.Tensor, crf: int) -> torch.Tensor:
    """Encode the clip with H.264 at ``crf`` (libx264, yuv420p) and decode it back.

    Odd sizes are padded to even by replication for 4:2:0 and cropped back.
    """
    t, _, h, w = frames.shape
    ph, pw = h % 2, w % 2
    x = F.pad(frames, (0, pw, 0, ph), mode="replicate") if ph or pw else frames
    rgb = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = w + pw, h + ph
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"crf": str(int(crf))}
    decoder = av.CodecContext.create("h264", "r")
    out: list[np.ndarray] = []

    def decode(packets: list[av.Packet]) -> None:
        for packet in packets:
            for frame in decoder.decode(packet):
                out.append(frame.reformat(format="gbrp").to_ndarray())

    for i in range(t):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[i]), format="gbrp")  # PyAV: RGB order
        frame.pts = i
        decode(encoder.encode(frame.reformat(format="yuv420p")))
    decode(encoder.encode(None))
    for frame in decoder.decode(None):
        out.append(frame.reformat(format="gbrp").to_ndarray())
    if len(out) != t:
        raise RuntimeError(f"H.264 round trip returned {len(out)} frames for {t}")
    decoded = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255
    return decoded[:, :, :h, :w].contiguous()
