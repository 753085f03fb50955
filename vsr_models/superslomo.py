"""Super SloMo (Jiang et al., CVPR 2018): intermediate frames from two frames, as DAVSR uses it.

Two U-Nets, under the key names of the public ``SuperSloMo.ckpt`` (``state_dictFC`` for the
flow network, ``state_dictAT`` for the arbitrary-time refinement network): ``conv1``, ``conv2``,
``down{1..5}.conv{1,2}``, ``up{1..5}.conv{1,2}``, ``conv3``.

For frames I0, I1 (already normalised by subtracting :data:`MEAN`) and a time s in (0, 1):

1. ``F01, F10 = flow(I0, I1)``;
2. ``Ft0 = -(1-s) s F01 + s^2 F10``, ``Ft1 = (1-s)^2 F01 - s (1-s) F10``;
3. ``interp(I0, I1, F01, F10, Ft1, Ft0, g(I1, Ft1), g(I0, Ft0))`` refines both flows (channels 0-1,
   2-3) and gives a visibility logit (channel 4), V0 = sigmoid, V1 = 1 - V0;
4. ``It = ((1-s) V0 g(I0, Ft0') + s V1 g(I1, Ft1')) / ((1-s) V0 + s V1)``,

where g is :func:`back_warp`. Quirks kept: the network's last layer is a leaky ReLU (also on the
flows), and :func:`back_warp` normalises positions by the size (not size - 1) with
``align_corners=False``, i.e. it samples half a pixel up and left of ``p + flow``.

The U-Net pools five times, so frames must be multiples of 32 in height and width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: Per-channel mean subtracted from frames before interpolation (and added back after).
MEAN = (0.429, 0.431, 0.397)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=0.1)


class _Down(nn.Module):
    """2x2 average pooling, then two convolutions with leaky ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel, stride=1, padding=(kernel - 1) // 2)
        self.conv2 = nn.Conv2d(cout, cout, kernel, stride=1, padding=(kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2)
        return _lrelu(self.conv2(_lrelu(self.conv1(x))))


class _Up(nn.Module):
    """Bilinear x2 to the skip's size, a convolution, then a convolution over [x, skip]."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(2 * cout, cout, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # Exactly the original's x2 (half-pixel) bilinear for sizes that are multiples of 32; the
        # target size is taken from the skip so that exported graphs need no divisibility guard.
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = _lrelu(self.conv1(x))
        return _lrelu(self.conv2(torch.cat((x, skip), 1)))


class UNet(nn.Module):
    """Super SloMo's U-Net.

    Args:
        in_channels: 6 for the flow network, 20 for the refinement network.
        out_channels: 4 (two flows) or 5 (two flow residuals and a visibility logit).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W), H and W multiples of 32.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 7, stride=1, padding=3)
        self.conv2 = nn.Conv2d(32, 32, 7, stride=1, padding=3)
        self.down1 = _Down(32, 64, 5)
        self.down2 = _Down(64, 128, 3)
        self.down3 = _Down(128, 256, 3)
        self.down4 = _Down(256, 512, 3)
        self.down5 = _Down(512, 512, 3)
        self.up1 = _Up(512, 512)
        self.up2 = _Up(512, 256)
        self.up3 = _Up(256, 128)
        self.up4 = _Up(128, 64)
        self.up5 = _Up(64, 32)
        self.conv3 = nn.Conv2d(32, out_channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = _lrelu(self.conv2(_lrelu(self.conv1(x))))
        s2 = self.down1(s1)
        s3 = self.down2(s2)
        s4 = self.down3(s3)
        s5 = self.down4(s4)
        x = self.down5(s5)
        x = self.up1(x, s5)
        x = self.up2(x, s4)
        x = self.up3(x, s3)
        x = self.up4(x, s2)
        x = self.up5(x, s1)
        return _lrelu(self.conv3(x))


def back_warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Super SloMo's backward warp: ``img`` (N, C, H, W) read at ``p + flow`` (N, 2, H, W), FP32 grid.

    Positions are normalised as ``2 (x / W - 0.5)`` and sampled with ``align_corners=False`` and
    zero padding, as the original (a half-pixel shift against the usual convention).
    """
    _, _, h, w = img.shape
    flow = flow.float()
    x = torch.arange(w, device=img.device, dtype=torch.float32).view(1, 1, w) + flow[:, 0]
    y = torch.arange(h, device=img.device, dtype=torch.float32).view(1, h, 1) + flow[:, 1]
    x = 2 * (x / w - 0.5)
    y = 2 * (y / h - 0.5)
    grid = torch.stack((x, y), dim=3)
    return F.grid_sample(img, grid.to(img.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


class SuperSloMo(nn.Module):
    """The two networks of Super SloMo, ``flow`` (UNet(6, 4)) and ``interp`` (UNet(20, 5)).

    :meth:`interpolate` makes the ``factor - 1`` frames at s = 1/factor .. (factor-1)/factor between
    two mean-subtracted frames, exactly as DAVSR's ``interpolate_batch``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flow = UNet(6, 4)
        self.interp = UNet(20, 5)

    def interpolate(self, i0: torch.Tensor, i1: torch.Tensor, factor: int) -> list[torch.Tensor]:
        """(N, 3, H, W) x2, mean-subtracted -> ``factor - 1`` frames (N, 3, H, W), mean-subtracted."""
        flows = self.flow(torch.cat([i0, i1], dim=1))
        f01, f10 = flows[:, :2], flows[:, 2:]
        frames = []
        for i in range(1, factor):
            s = i / factor
            cross = -s * (1 - s)
            ft0 = cross * f01 + s * s * f10
            ft1 = (1 - s) * (1 - s) * f01 + cross * f10
            g0 = back_warp(i0, ft0)
            g1 = back_warp(i1, ft1)
            out = self.interp(torch.cat((i0, i1, f01, f10, ft1, ft0, g1, g0), dim=1))
            ft0f = out[:, :2] + ft0
            ft1f = out[:, 2:4] + ft1
            v0 = torch.sigmoid(out[:, 4:5])
            v1 = 1 - v0
            w0, w1 = 1 - s, s
            frames.append((w0 * v0 * back_warp(i0, ft0f) + w1 * v1 * back_warp(i1, ft1f)) / (w0 * v0 + w1 * v1))
        return frames
