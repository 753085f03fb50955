"""SAVSR (Li et al., AAAI 2024): video super-resolution by any scale, the two axes independent.

A sliding-window network: seven LR frames around frame t in, HR frame t out, at ``scale =
(s_h, s_w)`` (anything from 1 to 4, e.g. x2.5 by x3.5) from one set of weights. Constructor
arguments and parameter names follow the official ``SAVSR`` so that ``savsr_best.pth`` (BasicSR
``params``) loads strictly; the defaults are the released configuration.

The network, per window (h x w LR, reflect-padded to even sizes inside, as the original):

1. **Implicit alignment.** Two recurrent window units run over the window in opposite
   directions, three frames at a time, each state starting from zeros: ``f2p_win`` at window
   centres 5, 4, .., 1 and ``p2f_win`` at 1, .., 5. Their states at each centre are paired and
   fused by ``h_win`` (a window unit over the five pairs) into ``align`` (64 channels).
2. **Reconstruction.** Four RCAN residual groups, each followed by an ``OSAdapt`` (a masked
   scale-attention convolution) and a learned ``gamma`` skip from ``align``.
3. **Upsampling** (``STAUpsample``): features sampled at each HR pixel's LR position plus learned
   offsets, filtered per pixel by a mix of four expert bottlenecks routed on the pixel's sub-pixel
   phase and the scale, fused with a spatio-temporal branch (per-LR-pixel 5x5 kernels predicted
   from ``align``); a 3x3 ``tail`` and the bilinear upscale of the centre frame.

Every ``OSConv2d`` (omni-dimensional scale-attention convolution) computes its weights per frame:
a routing MLP on ``[1/s_h, 1/s_w, mean of its input]`` drives channel, filter, spatial and kernel
attentions over eight candidate kernels, so the convolution's weight is a tensor computed in the
graph (an ordinary Conv with a computed weight, at batch 1).

What depends only on the scale and the LR size (the scale vector, the sampling grid, the phase
map: :mod:`vsr_models.scales`) is computed in numpy and fed to the stages as inputs, so one
exported package serves every scale and the output size follows from those inputs' shapes.
Two sums are regrouped (exactly the same math, float rounding in another order): the experts'
bottleneck applies each expert's 1x1 weights and mixes the results (the original mixes the
weights per pixel first, with two ``(H*W, 4) @ (4, 512)`` matrices), and the spatio-temporal
filter sums 25 shifted products (the original unfolds 5x5 patches).

Stages (h x w LR; hp x wp = h, w rounded up to even; H x W = round(h*s_h) x round(w*s_w)):

* ``pad(lr)``: (1, 3, h, w) -> ``lrp`` (1, 3, hp, wp), reflect padding at the bottom and right.
* ``f2p(x0, x1, x2, h, inv_scale)`` and ``p2f(...)``: three padded frames, the unit's state
  (1, 64, hp, wp) and the scale vector (1, 2, 1, 1) -> the next state.
* ``fuse(f2p_1 .. f2p_5, p2f_1 .. p2f_5, inv_scale)`` -> ``align`` (1, 64, hp, wp).
* ``reconstruct(align, inv_scale)`` -> ``feat`` (1, 64, hp, wp).
* ``upsample(lr, feat, align, grid, phase)``: the centre frame (1, 3, h, w), features, the
  sampling grid (1, 2, H, W) and phase map (1, 4, H, W) -> ``hr`` (1, 3, H, W).

Plan (``window`` 3): ``lrp[t] = pad(lr[t])``; for window centre k = 5..1,
``f2p_k[t] = f2p(lrp[t+k-4], lrp[t+k-3], lrp[t+k-2], f2p_{k+1}[t])`` (``f2p_6``: zeros); for
k = 1..5 the same with ``p2f`` and ``p2f_{k-1}``; then ``fuse``, ``reconstruct``, ``upsample``,
each at t. Frame reads are reflected at the clip's ends, as the original's test data
(``generate_frame_indices(padding='reflection')``): t = 0 reads frames 3, 2, 1, 0, 1, 2, 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import Stage, VSRNetwork
from .plan import Plan, Read, SizeConstraints, Step, TensorSpec
from .registry import Metric, QuickCheck, Weights, register_network
from .scales import Scale, ScaleError, inverse_scale, phase_map, sampling_grid


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ScaleAttention(nn.Module):
    """The four attentions of an OSConv, from its routed vector ``v`` (N, C_in, 1, 1).

    Returns channel (N, C_in, 1, 1), filter (N, C_out, 1, 1), spatial (N, 1, 1, 1, k, k) and
    kernel (N, kernel_num, 1, 1, 1, 1) attentions (sigmoids; softmax over the kernels).
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, kernel_num: int) -> None:
        super().__init__()
        channels = max(int(in_planes * 0.0625), 16)
        self.kernel_size = kernel_size
        self.fc = nn.Conv2d(in_planes, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.channel_fc = nn.Conv2d(channels, in_planes, 1)
        self.filter_fc = nn.Conv2d(channels, out_planes, 1)
        self.spatial_fc = nn.Conv2d(channels, kernel_size * kernel_size, 1)
        self.kernel_fc = nn.Conv2d(channels, kernel_num, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n, k = v.shape[0], self.kernel_size
        a = F.relu(self.bn(self.fc(v)))
        channel = torch.sigmoid(self.channel_fc(a).view(n, -1, 1, 1))
        filters = torch.sigmoid(self.filter_fc(a).view(n, -1, 1, 1))
        spatial = torch.sigmoid(self.spatial_fc(a).view(n, 1, 1, 1, k, k))
        kernel = F.softmax(self.kernel_fc(a).view(n, -1, 1, 1, 1, 1), dim=1)
        return channel, filters, spatial, kernel


class OSConv2d(nn.Module):
    """Omni-dimensional scale-attention convolution (k x k, stride 1, ``kernel_num`` candidates).

    ``forward(x, inv_scale)``: (N, C_in, h, w) and the scale vector (1, 2, 1, 1) -> (N, C_out, h, w).
    The weight is computed per sample from the scale and the input's mean; the N samples run as
    one grouped convolution (groups = N; a plain convolution at batch 1).
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, kernel_num: int = 8) -> None:
        super().__init__()
        self.in_planes, self.out_planes, self.kernel_size = in_planes, out_planes, kernel_size
        self.attention = ScaleAttention(in_planes, out_planes, kernel_size, kernel_num)
        self.weight = nn.Parameter(torch.empty(kernel_num, out_planes, in_planes, kernel_size, kernel_size))
        for i in range(kernel_num):
            nn.init.kaiming_normal_(self.weight[i], mode="fan_out", nonlinearity="relu")
        self.scale_routing = nn.Sequential(
            nn.Linear(in_planes + 2, in_planes * 2), nn.ReLU(True), nn.Linear(in_planes * 2, in_planes), nn.ReLU(True)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = self.kernel_size
        routed = self.scale_routing(torch.cat([inv_scale.view(1, 2).expand(n, 2), self.avgpool(x).view(n, -1)], 1))
        channel, filters, spatial, kernel = self.attention(routed.view(n, c, 1, 1))
        x = (x * channel).reshape(1, -1, h, w)
        weight = torch.sum(spatial * kernel * self.weight.unsqueeze(0), dim=1).view(-1, c, k, k)
        out = F.conv2d(x, weight, padding=k // 2, groups=n)
        return out.view(n, self.out_planes, out.shape[-2], out.shape[-1]) * filters


class ResidualBlock(nn.Module):
    """``num_frame`` parallel branches mixed through one shared 1x1 (first block) or OSConv fusion.

    ``forward(feats, inv_scale)``: ``num_frame`` tensors (N, C, h, w) -> as many, each plus its residual.
    """

    def __init__(self, num_feat: int, num_frame: int, use_osconv: bool) -> None:
        super().__init__()
        self.use_osconv = use_osconv
        self.conv0 = nn.Sequential(*[nn.Conv2d(num_feat, num_feat, 3, 1, 1) for _ in range(num_frame)])
        if use_osconv:
            self.osconv = OSConv2d(num_feat * num_frame, num_feat, 3)
        else:
            self.conv1 = nn.Conv2d(num_feat * num_frame, num_feat, 1)
        self.conv2 = nn.Sequential(*[nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1) for _ in range(num_frame)])

    def forward(self, feats: Sequence[torch.Tensor], inv_scale: torch.Tensor) -> list[torch.Tensor]:
        branches = [_lrelu(conv(x)) for conv, x in zip(self.conv0, feats)]
        merged = torch.cat(branches, 1)
        base = _lrelu(self.osconv(merged, inv_scale) if self.use_osconv else self.conv1(merged))
        return [x + _lrelu(conv(torch.cat([base, b], 1))) for conv, x, b in zip(self.conv2, feats, branches)]


class WindowUnit(nn.Module):
    """One recurrent step over a sub-window of ``win_size`` frames (the original ``WindowUnit_l1``).

    ``forward(frames, h_past, inv_scale)``: ``win_size`` frames (N, 3, h, w), the previous state
    (N, C, h, w) -> the next state (N, C, h, w).
    """

    def __init__(self, num_in_ch: int, num_feat: int, win_size: int, num_block: int) -> None:
        super().__init__()
        self.conv_c = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.conv_sup = nn.Conv2d(num_in_ch * (win_size - 1), num_feat, 3, 1, 1)
        self.blocks = nn.ModuleList([ResidualBlock(num_feat, 3, use_osconv=i > 0) for i in range(num_block)])
        self.merge = nn.Conv2d(3 * num_feat, num_feat, 3, 1, 1)

    def forward(self, frames: Sequence[torch.Tensor], h_past: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        centre = len(frames) // 2
        support = torch.cat([f for i, f in enumerate(frames) if i != centre], 1)
        feats = [_lrelu(self.conv_c(frames[centre])), _lrelu(self.conv_sup(support)), h_past]
        for block in self.blocks:
            feats = block(feats, inv_scale)
        return self.merge(torch.cat(feats, 1))


class WindowFusion(nn.Module):
    """Fuses ``win_size`` paired states in sub-windows of ``slid_win`` (the original ``WindowUnit_l2``).

    ``forward(feats, inv_scale)``: ``win_size`` tensors (N, 2C, h, w) -> ``win_size - slid_win + 1``
    tensors (N, 2C, h, w).
    """

    def __init__(self, num_feat: int, win_size: int, slid_win: int, num_block: int) -> None:
        super().__init__()
        self.slid_win = slid_win
        self.conv_h = nn.Sequential(*[nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1) for _ in range(win_size)])
        self.blocks = nn.ModuleList([ResidualBlock(num_feat, slid_win, use_osconv=True) for _ in range(num_block)])
        self.merge = nn.Conv2d(slid_win * num_feat, num_feat * 2, 3, 1, 1)

    def forward(self, feats: Sequence[torch.Tensor], inv_scale: torch.Tensor) -> list[torch.Tensor]:
        h = [_lrelu(conv(x)) for conv, x in zip(self.conv_h, feats)]
        out = list(h) if len(h) == 1 else []  # the original passes a lone input through, ahead of its outputs
        for i in range(len(h) - self.slid_win + 1):
            group = h[i : i + self.slid_win]
            for block in self.blocks:
                group = block(group, inv_scale)
            out.append(self.merge(torch.cat(group, 1)))
        return out


class ChannelAttention(nn.Module):
    """RCAN's squeeze-and-excitation: (N, C, h, w) -> the same, reweighted per channel."""

    def __init__(self, num_feat: int, squeeze_factor: int = 16) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
            nn.ReLU(True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel-attention block: (N, C, h, w) -> the same."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.rcab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            nn.ReLU(True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            ChannelAttention(num_feat),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rcab(x) + x


class ResidualGroup(nn.Module):
    """``num_block`` RCABs, a 3x3 convolution and a skip: (N, C, h, w) -> the same."""

    def __init__(self, num_feat: int, num_block: int) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(*[RCAB(num_feat) for _ in range(num_block)])
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.residual_group(x)) + x


class OSAdapt(nn.Module):
    """``x + OSConv(x) * mask(x)``; the mask halves and doubles the size, so h and w must be even.

    ``forward(x, inv_scale)``: (N, C, h, w), (1, 2, 1, 1) -> (N, C, h, w).
    """

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        mid = channels // ratio
        self.mask = nn.Sequential(
            nn.Conv2d(channels, mid, 3, 1, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(True),
            nn.AvgPool2d(2),
            nn.Conv2d(mid, mid, 3, 1, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(True),
            nn.Conv2d(mid, mid, 3, 1, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(mid, 1, 3, 1, 1),
            nn.BatchNorm2d(1),
            nn.Sigmoid(),
        )
        self.adapt = OSConv2d(channels, channels, 3)

    def forward(self, x: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        return x + self.adapt(x, inv_scale) * self.mask(x)


class STAUpsample(nn.Module):
    """Spatio-temporal adaptive arbitrary-scale upsampling.

    ``forward(x, st_feat, grid, phase)``: features (N, C, h, w), alignment features (N, C, h, w),
    the sampling grid (1, 2, H, W) and phase map (1, 4, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, num_experts: int = 4, st_ksize: int = 5) -> None:
        super().__init__()
        self.st_ksize = st_ksize
        self.kernel_conv = nn.Sequential(nn.Conv2d(channels, channels * st_ksize**2, 1), nn.LeakyReLU(0.1, True))
        self.weight_compress = nn.Parameter(torch.empty(num_experts, channels // 8, channels, 1, 1))
        self.weight_expand = nn.Parameter(torch.empty(num_experts, channels, channels // 8, 1, 1))
        for i in range(num_experts):
            nn.init.kaiming_uniform_(self.weight_compress[i], a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.weight_expand[i], a=math.sqrt(5))
        self.body = nn.Sequential(nn.Conv2d(4, 64, 1), nn.ReLU(True), nn.Conv2d(64, 64, 1), nn.ReLU(True))
        self.routing = nn.Sequential(nn.Conv2d(64, num_experts, 1), nn.Sigmoid())
        self.offset = nn.Conv2d(64, 2, 1)
        self.st_offset = nn.Conv2d(64, 2, 1)
        self.fusion = nn.Conv2d(2 * channels, channels, 1)

    @staticmethod
    def sample(feat: torch.Tensor, grid: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of (N, C, h, w) at ``grid`` plus ``offset`` (1, 2, H, W, LR pixels)."""
        h, w = feat.shape[-2:]
        offset = offset.float()
        shift = torch.cat([offset[:, 0:1] * 2 / (w - 1), offset[:, 1:2] * 2 / (h - 1)], 1)
        where = (grid + shift).permute(0, 2, 3, 1).expand(feat.shape[0], -1, -1, -1)
        # coordinates and sampling stay FP32 whatever the features' dtype (as the FP16 graphs do)
        out = F.grid_sample(feat.float(), where, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.to(feat.dtype)

    def spatially_varying_filter(self, x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """Depthwise k x k filtering with a kernel per LR pixel and channel (replicate padding).

        (N, C, h, w) and (N, C * k * k, h, w), tap (i, j) of channel c at ``c * k * k + i * k + j``
        -> (N, C, h, w). The k * k shifted copies of each channel come from one depthwise
        convolution with one-hot kernels (exact copies), laid out as ``kernels``.
        """
        n, c, h, w = x.shape
        k = self.st_ksize
        one_hot = torch.eye(k * k, dtype=x.dtype, device=x.device).view(k * k, 1, k, k).repeat(c, 1, 1, 1)
        taps = F.conv2d(F.pad(x, (k // 2,) * 4, mode="replicate"), one_hot, groups=c)
        return (taps * kernels).view(n, c, k * k, h, w).sum(2)

    def experts(self, feat: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        """Each HR pixel's bottleneck ``E(r) @ C(r) @ f`` with ``C(r) = sum_n r_n C_n`` (and E alike),
        computed as ``sum_n r_n (C_n @ f)``: (N, C, H, W), routing (1, E, H, W) -> (N, C, H, W)."""
        compressed = sum(routing[:, i : i + 1] * F.conv2d(feat, w) for i, w in enumerate(self.weight_compress))
        return sum(routing[:, i : i + 1] * F.conv2d(compressed, w) for i, w in enumerate(self.weight_expand))

    def forward(self, x: torch.Tensor, st_feat: torch.Tensor, grid: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        st = self.spatially_varying_filter(x, self.kernel_conv(st_feat))
        embedding = self.body(phase)
        fea0 = self.sample(x, grid, self.offset(embedding))
        fea = self.experts(fea0, self.routing(embedding)) + fea0
        st = self.sample(st, grid, self.st_offset(embedding))
        return self.fusion(torch.cat([st, fea], 1))


class _Pad(nn.Module):
    """Reflect padding at the bottom and right to even sizes: (1, 3, h, w) -> (1, 3, hp, wp)."""

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        return F.pad(lr, [0, w % 2, 0, h % 2], mode="reflect")


class _WindowStep(nn.Module):
    """A window unit as a stage: ``(*frames, h, inv_scale) -> h'``."""

    def __init__(self, unit: WindowUnit) -> None:
        super().__init__()
        self.unit = unit

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *frames, h, inv_scale = inputs
        return self.unit(frames, h, inv_scale)


class _Fuse(nn.Module):
    """``(*f2p states, *p2f states, inv_scale) -> align``: the paired states through ``h_win``."""

    def __init__(self, net: SAVSR) -> None:
        super().__init__()
        self.h_win, self.h_win_conv_h = net.h_win, net.h_win_conv_h

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *states, inv_scale = inputs
        half = len(states) // 2
        feats = [torch.cat([b, f], 1) for b, f in zip(states[:half], states[half:])]
        for level in self.h_win:
            feats = level(feats, inv_scale)
        return _lrelu(self.h_win_conv_h(feats[0]))


class _Reconstruct(nn.Module):
    """``(align, inv_scale) -> feat``: residual groups, OSAdapt and the gamma skip after each."""

    def __init__(self, net: SAVSR) -> None:
        super().__init__()
        self.RG, self.adapt, self.conv_last, self.gamma = net.RG, net.adapt, net.conv_last, net.gamma

    def forward(self, align: torch.Tensor, inv_scale: torch.Tensor) -> torch.Tensor:
        h = align
        for group, adapt in zip(self.RG, self.adapt):
            h = adapt(group(h), inv_scale) + self.gamma * align
        return self.conv_last(h) + align


class _Upsample(nn.Module):
    """``(lr, feat, align, grid, phase) -> hr``: crop to the LR size, upsample, tail, bilinear skip."""

    def __init__(self, net: SAVSR) -> None:
        super().__init__()
        self.upsample, self.tail = net.upsample, net.tail

    def forward(
        self, lr: torch.Tensor, feat: torch.Tensor, align: torch.Tensor, grid: torch.Tensor, phase: torch.Tensor
    ) -> torch.Tensor:
        h, w = lr.shape[-2:]
        sr = self.tail(self.upsample(feat[:, :, :h, :w], align[:, :, :h, :w], grid, phase))
        return sr + F.interpolate(lr, size=grid.shape[-2:], mode="bilinear", align_corners=False)


_RELEASE = "https://github.com/Weepingchestnut/SAVSR/releases/download/v0.1.1/savsr_best.pth"
_SOURCE = "README of the official repository (retrained release)"


@register_network(
    summary="SAVSR (AAAI 2024), any scale from x1 to x4, asymmetric too (--scale 2.5x3.5), 7-frame window",
    quick=QuickCheck(
        {"num_feat": 16, "w1_num_block": 2, "w2_num_block": 1, "n_resgroups": 1, "n_resblocks": 1},
        size=(13, 17),
        frames=5,
    ),
    checkpoint_keys=791,
    weights=(
        Weights(
            "savsr",
            "savsr",
            "savsr_best.pth",
            _RELEASE,
            "unspecified (the official repository has no licence file)",
            "Vimeo-90K",
            "BI at any scale (torchvision bicubic with antialiasing)",
            metrics=(
                Metric("Vid4 x4", "PSNR", 27.17, "Y", _SOURCE),
                Metric("Vid4 x2.5", "PSNR", 32.31, "Y", _SOURCE),
                Metric("Vid4 x1.5/x3.5", "PSNR", 31.61, "Y", _SOURCE),
                Metric("UDM10 x4", "PSNR", 38.88, "Y", _SOURCE),
            ),
        ),
    ),
)
class SAVSR(VSRNetwork):
    """SAVSR, any scale from 1 to 4 on each axis.

    Args (names as in the official constructor; defaults are the released configuration):
        num_in_ch: input channels (3).
        num_feat: feature channels (64).
        num_frame: window length (7), odd.
        slid_win: frames per recurrent step (3).
        fusion_win: paired states per fusion sub-window (5).
        interval: frame sampling interval (0, the only one released; others are refused).
        w1_num_block: residual blocks of each recurrent window unit (4).
        w2_num_block: residual blocks of each fusion level (2).
        n_resgroups: reconstruction residual groups (4).
        n_resblocks: RCABs per group (8).
        downsample_scale: unused by the original's forward (2); kept for its configurations.
        center_frame_idx: the output frame's index in the window (``None``: the centre).

    ``forward(lr, scale)``: lr (N, num_frame, 3, h, w) in [0, 1], h and w >= 2, and
    ``scale = (s_h, s_w)`` -> the centre frame (N, 3, round(h * s_h), round(w * s_w)).
    """

    name = "savsr"
    scale = 4
    scale_range = (1.0, 4.0)
    constraints = SizeConstraints(min_h=2, min_w=2)
    #: Scales (height, width) the shared contract test runs this network at: integer, asymmetric
    #: fractional, symmetric fractional. The contract calls ``forward_clip(lr, scale)`` as the
    #: reference and ``run_plan(..., scale=scale)`` / ``upscale_clip(..., scale=scale)``.
    check_scales: tuple[Scale, ...] = ((4.0, 4.0), (2.5, 3.5), (1.6, 1.6))

    def __init__(
        self,
        num_in_ch: int = 3,
        num_feat: int = 64,
        num_frame: int = 7,
        slid_win: int = 3,
        fusion_win: int = 5,
        interval: int = 0,
        w1_num_block: int = 4,
        w2_num_block: int = 2,
        n_resgroups: int = 4,
        n_resblocks: int = 8,
        downsample_scale: int = 2,
        center_frame_idx: int | None = None,
    ) -> None:
        super().__init__()
        if interval != 0:
            raise ValueError(f"SAVSR with interval={interval} is not implemented; the released model uses 0")
        if num_frame % 2 == 0 or center_frame_idx not in (None, num_frame // 2):
            raise ValueError("SAVSR here takes an odd window and outputs its centre frame (center_frame_idx=None)")
        self.num_feat, self.num_frame, self.slid_win = num_feat, num_frame, slid_win
        self.positions = num_frame - slid_win + 1  # recurrent steps per direction
        # implicit alignment
        self.f2p_win = WindowUnit(num_in_ch, num_feat, slid_win, w1_num_block)
        self.p2f_win = WindowUnit(num_in_ch, num_feat, slid_win, w1_num_block)
        self.h_win = nn.Sequential(
            *[
                WindowFusion(num_feat, self.positions - 2 * i, fusion_win, w2_num_block)
                for i in range((num_frame - fusion_win + 1) // 2)
            ]
        )
        self.h_win_conv_h = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        # reconstruction
        self.RG = nn.ModuleList([ResidualGroup(num_feat, n_resblocks) for _ in range(n_resgroups)])
        self.adapt = nn.ModuleList([OSAdapt(num_feat) for _ in range(n_resgroups)])
        self.gamma = nn.Parameter(torch.ones(1))
        self.conv_last = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        # arbitrary-scale upsampling
        self.upsample = STAUpsample(num_feat)
        self.tail = nn.Conv2d(num_feat, num_in_ch, 3, 1, 1)
        self.share_layers(
            pad=_Pad(),
            f2p=_WindowStep(self.f2p_win),
            p2f=_WindowStep(self.p2f_win),
            fuse=_Fuse(self),
            reconstruct=_Reconstruct(self),
            upsample=_Upsample(self),
        )

    def check_scale(self, scale: Scale | float) -> Scale:
        """``scale`` as (s_h, s_w) floats, or a :class:`ScaleError` outside ``scale_range``."""
        pair = (float(scale), float(scale)) if isinstance(scale, (int, float)) else (float(scale[0]), float(scale[1]))
        lo, hi = self.scale_range
        if not all(lo <= s <= hi for s in pair):
            raise ScaleError(f"SAVSR upscales by x{lo:g} to x{hi:g} on each axis (it was trained so), not {pair}")
        return pair

    @staticmethod
    def scale_tensors(
        h: int, w: int, scale: Scale, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The scale vector (1, 2, 1, 1), sampling grid and phase map (1, ., H, W), as the runtime feeds them."""
        inv, grid, phase = (torch.from_numpy(f(h, w, scale)) for f in (inverse_scale, sampling_grid, phase_map))
        return inv.to(like), grid.to(like.device), phase.to(like)

    def forward(self, lr: torch.Tensor, scale: Scale | float = (4.0, 4.0)) -> torch.Tensor:
        """(N, num_frame, 3, h, w) -> the centre frame (N, 3, round(h * s_h), round(w * s_w))."""
        self.check_input(lr)
        n, t, c, h, w = lr.shape
        if t != self.num_frame:
            raise ValueError(f"SAVSR takes windows of {self.num_frame} frames, got {t}; use forward_clip for clips")
        scale = self.check_scale(scale)
        inv, grid, phase = self.scale_tensors(h, w, scale, lr)
        x = self.part("pad")(lr.reshape(n * t, c, h, w))
        x = x.view(n, t, c, *x.shape[-2:])
        # sub-window j = 1 .. positions holds window frames j-1 .. j-2+slid_win
        b_states: list[torch.Tensor] = []
        state = x.new_zeros(n, self.num_feat, *x.shape[-2:])
        for j in range(self.positions, 0, -1):  # from the future to the past
            state = self.f2p_win([x[:, j - 1 + i] for i in range(self.slid_win)], state, inv)
            b_states.insert(0, state)
        f_states: list[torch.Tensor] = []
        state = torch.zeros_like(state)
        for j in range(1, self.positions + 1):
            state = self.p2f_win([x[:, j - 1 + i] for i in range(self.slid_win)], state, inv)
            f_states.append(state)
        align = self.part("fuse")(*b_states, *f_states, inv)
        feat = self.part("reconstruct")(align, inv)
        return self.part("upsample")(lr[:, t // 2], feat, align, grid, phase)

    def forward_clip(self, lr: torch.Tensor, scale: Scale | float = (4.0, 4.0)) -> torch.Tensor:
        """Every frame of a clip from its window, ends reflected as the plan reads them:
        (N, T, 3, h, w) -> (N, T, 3, round(h * s_h), round(w * s_w))."""
        num = lr.shape[1]
        r = self.num_frame // 2
        reads = [[Read("lr", d, reflect=True).index(t, num) for d in range(-r, r + 1)] for t in range(num)]
        return torch.stack([self(lr[:, idx], scale) for idx in reads], 1)

    def stages(self) -> dict[str, Stage]:
        step_inputs = [*(f"x{i}" for i in range(self.slid_win)), "h", "inv_scale"]
        states = [f"f2p_{k}" for k in range(1, self.positions + 1)] + [f"p2f_{k}" for k in range(1, self.positions + 1)]
        return {
            "pad": Stage(self.part("pad"), ["lr"], ["lrp"]),
            "f2p": Stage(self.part("f2p"), step_inputs, ["h_next"]),
            "p2f": Stage(self.part("p2f"), step_inputs, ["h_next"]),
            "fuse": Stage(self.part("fuse"), [*states, "inv_scale"], ["align"]),
            "reconstruct": Stage(self.part("reconstruct"), ["align", "inv_scale"], ["feat"]),
            "upsample": Stage(self.part("upsample"), ["lr", "feat", "align", "grid", "phase"], ["hr"], fp32=["grid"]),
        }

    def plan(self) -> Plan:
        f, p, r = self.num_feat, self.positions, self.num_frame // 2
        state = TensorSpec(f, multiple=2)
        inv = Read("inv_scale", stride=0)

        def unit(stage: str, j: int, previous: str) -> Step:
            # sub-window j holds window frames j-1 .. j-2+slid_win; window frame q is clip frame t - r + q
            frames = {f"x{i}": Read("lrp", j - 1 + i - r, reflect=True) for i in range(self.slid_win)}
            inputs = {**frames, "h": Read(previous, 0, "zeros"), "inv_scale": inv}
            return Step(stage, inputs, {"h_next": f"{stage}_{j}"})

        states = [f"f2p_{k}" for k in range(1, p + 1)] + [f"p2f_{k}" for k in range(1, p + 1)]
        return Plan(
            tensors={
                "lr": TensorSpec(3),
                "lrp": TensorSpec(3, multiple=2),
                "zeros": state,
                **dict.fromkeys(states, state),
                "align": state,
                "feat": state,
                "inv_scale": TensorSpec(2, size="one"),
                "grid": TensorSpec(2, size="output"),
                "phase": TensorSpec(4, size="output"),
                "hr": TensorSpec(3, size="output"),
            },
            steps=[
                Step("pad", {"lr": Read("lr")}, {"lrp": "lrp"}),
                *(unit("f2p", j, f"f2p_{j + 1}" if j < p else "zeros") for j in range(p, 0, -1)),
                *(unit("p2f", j, f"p2f_{j - 1}" if j > 1 else "zeros") for j in range(1, p + 1)),
                Step("fuse", {**{name: Read(name) for name in states}, "inv_scale": inv}, {"align": "align"}),
                Step("reconstruct", {"align": Read("align"), "inv_scale": inv}, {"feat": "feat"}),
                Step(
                    "upsample",
                    {
                        "lr": Read("lr"),
                        "feat": Read("feat"),
                        "align": Read("align"),
                        "grid": Read("grid", stride=0),
                        "phase": Read("phase", stride=0),
                    },
                    {"hr": "hr"},
                ),
            ],
            output="hr",
            given={"inv_scale": "inverse_scale", "grid": "sampling_grid", "phase": "phase_map"},
            window=r,
        )
