"""Building blocks shared by several networks.

Key names follow BasicSR so that official checkpoints load without remapping.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlockNoBN(nn.Module):
    """``x + conv2(relu(conv1(x)))``, 3x3 convolutions, no batch norm.

    Args:
        num_feat: channels in and out.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class ConvResidualBlocks(nn.Module):
    """A 3x3 conv with LeakyReLU(0.1), then ``num_block`` residual blocks.

    Args:
        num_in_ch: input channels.
        num_out_ch: feature channels.
        num_block: number of :class:`ResidualBlockNoBN`.

    Shapes: (N, num_in_ch, H, W) -> (N, num_out_ch, H, W).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 64, num_block: int = 15) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(num_in_ch, num_out_ch, 3, 1, 1, bias=True),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Sequential(*[ResidualBlockNoBN(num_out_ch) for _ in range(num_block)]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def pixel_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Integer pixel coordinates as an (h, w, 2) tensor in (x, y) order, FP32."""
    ys = torch.arange(h, device=like.device, dtype=torch.float32)
    xs = torch.arange(w, device=like.device, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=2)


def flow_warp(
    x: torch.Tensor,
    flow: torch.Tensor,
    interp_mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Warp ``x`` by a dense flow with ``grid_sample`` (BasicSR convention).

    The sampling position of output pixel (x, y) is (x + flow_x, y + flow_y), normalised with
    ``align_corners=True`` spacing, i.e. ``2 * p / max(size - 1, 1) - 1``. The coordinate
    arithmetic and the sampling are done in FP32 whatever the dtype of ``x``.

    Args:
        x: (N, C, H, W) features or images.
        flow: (N, H, W, 2) flow in pixels, channel 0 horizontal, channel 1 vertical.

    Returns:
        (N, C, H, W) warped ``x``.
    """
    _, _, h, w = x.shape
    grid = pixel_grid(h, w, x) + flow.float()
    gx = 2.0 * grid[..., 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * grid[..., 1] / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=3)
    # Sampling runs in FP32 too (as the FP16 graphs do): an FP16 grid is 0.47 px coarse at 1920.
    out = F.grid_sample(x.float(), grid, mode=interp_mode, padding_mode=padding_mode, align_corners=align_corners)
    return out.to(x.dtype)


def compose_flow(flow1: torch.Tensor, flow_next: torch.Tensor) -> torch.Tensor:
    """Second-order flow: ``flow1`` (t -> t1) followed by ``flow_next`` (t1 -> t2), FP32.

    Shapes: (N, 2, H, W) x2 -> (N, 2, H, W).
    """
    flow1, flow_next = flow1.float(), flow_next.float()
    return flow1 + flow_warp(flow_next, flow1.permute(0, 2, 3, 1))


class ComposeFlow(nn.Module):
    """:func:`compose_flow` as a stage module."""

    def forward(self, flow1: torch.Tensor, flow_next: torch.Tensor) -> torch.Tensor:
        return compose_flow(flow1, flow_next)


def flow_pair(spynet: nn.Module, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SpyNet flows between the neighbours of a clip, computed in one batch per direction.

    Shapes: lr (N, T, 3, h, w) -> (backward flows, forward flows), each (N, T-1, 2, h, w):
    ``backward[:, t]`` warps frame t+1 onto frame t, ``forward[:, t]`` frame t onto frame t+1.
    """
    n, t, c, h, w = lr.shape
    first, second = lr[:, :-1].reshape(-1, c, h, w), lr[:, 1:].reshape(-1, c, h, w)
    return spynet(first, second).view(n, t - 1, 2, h, w), spynet(second, first).view(n, t - 1, 2, h, w)


class UpsampleX4(nn.Module):
    """The x4 reconstruction head of BasicVSR, IART and BasicVSR++, sharing its owner's layers.

    ``up1``, ``up2`` each map features to pixel-shuffled x2 features (a conv then
    ``PixelShuffle(2)``); each is followed by LeakyReLU(0.1), then ``conv_hr`` + LeakyReLU(0.1)
    and ``conv_last``. The skip connection (bilinear x4 of the LR frame, see
    :func:`bilinear_x4`) is the caller's.

    Shapes: (N, C, h, w) -> (N, 3, 4h, 4w).
    """

    def __init__(self, up1: nn.Module, up2: nn.Module, conv_hr: nn.Module, conv_last: nn.Module) -> None:
        super().__init__()
        self.up1, self.up2, self.conv_hr, self.conv_last = up1, up2, conv_hr, conv_last

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.up1(feat), 0.1)
        out = F.leaky_relu(self.up2(out), 0.1)
        return self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))


def conv_shuffle(conv: nn.Module) -> nn.Module:
    """``conv`` followed by a x2 pixel shuffle (for :class:`UpsampleX4`)."""
    return nn.Sequential(conv, nn.PixelShuffle(2))


def bilinear_x4(lr: torch.Tensor) -> torch.Tensor:
    """The skip of the x4 networks: bilinear (not bicubic) x4, half-pixel centres. (N, 3, h, w) -> (N, 3, 4h, 4w)."""
    return F.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)


class PixelShufflePack(nn.Module):
    """A convolution to ``out_channels * scale**2`` channels, then pixel shuffle (mmediting's names).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, scale * H, scale * W).
    """

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int, upsample_kernel: int) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.upsample_conv = nn.Conv2d(
            in_channels, out_channels * scale_factor * scale_factor, upsample_kernel, padding=(upsample_kernel - 1) // 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.upsample_conv(x), self.scale_factor)
