"""SpyNet optical flow (Ranjan & Black, CVPR 2017) as used by BasicVSR, IART and others.

Key names follow BasicSR (``basic_module.{level}.basic_module.{0,2,4,6,8}``, ``mean``, ``std``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import flow_warp

#: Number of pyramid levels; the input is resized to a multiple of 2 ** (LEVELS - 1).
LEVELS = 6
#: Frames are resized to a multiple of this before the pyramid is built.
SIZE_MULTIPLE = 2 ** (LEVELS - 1)


class _Level(nn.Module):
    """One pyramid level: five 7x7 convolutions, (N, 8, H, W) -> (N, 2, H, W) residual flow."""

    def __init__(self) -> None:
        super().__init__()
        chans = [8, 32, 64, 32, 16, 2]
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 7, 1, 3))
            if i < 4:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """Coarse-to-fine flow network.

    ``forward(ref, supp)`` returns the flow that warps ``supp`` onto ``ref``
    (``flow_warp(supp, flow) ~ ref``).

    Shapes: ref, supp (N, 3, H, W) RGB in [0, 1] -> flow (N, 2, H, W) in pixels.
    Any H, W >= 1 work: frames are resized (bilinear) to multiples of 32 internally, and the flow
    is resized back and rescaled, exactly as BasicSR does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList([_Level() for _ in range(LEVELS)])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [(x - self.mean) / self.std]
        for _ in range(LEVELS - 1):
            levels.insert(0, F.avg_pool2d(levels[0], kernel_size=2, stride=2, count_include_pad=False))
        return levels

    def _process(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs, supps = self._pyramid(ref), self._pyramid(supp)
        # The original starts from a zero flow at half the coarsest size, upsamples it x2 and pads
        # it to the coarsest size by replication: that is a zero flow of the coarsest size.
        n, _, h0, w0 = refs[0].shape
        flow = refs[0].new_zeros(n, 2, h0, w0)
        for level in range(LEVELS):
            if level > 0:
                flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(supps[level], flow.permute(0, 2, 3, 1), padding_mode="border")
            flow = self.basic_module[level](torch.cat([refs[level], warped, flow], 1)) + flow
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        if ref.shape != supp.shape:
            raise ValueError(f"SpyNet needs frames of one shape, got {tuple(ref.shape)} and {tuple(supp.shape)}")
        h, w = ref.shape[2], ref.shape[3]
        h_up = (h + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE
        w_up = (w + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE
        ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = F.interpolate(self._process(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        # Scaled by multiplications with the size ratios (no tensor made from them), so that an
        # export with dynamic sizes traces the ratio instead of guarding on its example value.
        return torch.cat([flow[:, :1] * (w / w_up), flow[:, 1:] * (h / h_up)], dim=1)


class _ConvAct(nn.Module):
    """A convolution with an optional ReLU, under mmcv ``ConvModule``'s key name ``conv``."""

    def __init__(self, cin: int, cout: int, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 7, 1, 3)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class _MMEditLevel(nn.Module):
    """One SpyNet pyramid level in mmediting's layout (``basic_module.{0..4}.conv``)."""

    def __init__(self) -> None:
        super().__init__()
        chans = [8, 32, 64, 32, 16, 2]
        self.basic_module = nn.Sequential(*[_ConvAct(chans[i], chans[i + 1], relu=i < 4) for i in range(5)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class MMEditSpyNet(SpyNet):
    """:class:`~vsr_models.spynet.SpyNet` with mmediting's parameter names; the computation is the same."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList([_MMEditLevel() for _ in range(LEVELS)])
