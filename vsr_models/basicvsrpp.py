"""BasicVSR++ (Chan et al., CVPR 2022): second-order grid propagation with flow-guided deformable alignment.

Constructor arguments and parameter names follow mmediting's ``BasicVSRPlusPlus`` (and the copy
inside DAVSR, ``BasicVSRPP``), so their checkpoints load strictly: ``spynet.basic_module.*``
(mmediting's SPyNet layout, ``...basic_module.{i}.conv.weight``), ``feat_extract.*``,
``deform_align.{branch}.{weight, bias, conv_offset.*}``, ``backbone.{branch}.main.*``,
``reconstruction.main.*``, ``upsample{1,2}.upsample_conv.*``, ``conv_hr.*``, ``conv_last.*``.

Two input modes, as in the original:

* ``is_low_res_input=True`` (the released x4 models): frames (h, w) -> (4h, 4w); features,
  flows and states at (h, w); output = network + bilinear x4 of the frame.
* ``is_low_res_input=False`` (DAVSR): frames (H, W) -> (H, W); two stride-2 convolutions
  bring features to (H/4, W/4); flows are computed on a bicubic x0.25 copy of the frames;
  output = network + the frame.

Propagation runs four branches over the clip, ``backward_1``, ``forward_1``, ``backward_2``,
``forward_2``. Branch b at frame t (s = number of steps already taken in its direction):

* s = 0: no alignment; ``h_t = backbone_b([feat_t, earlier branches at t, 0])``.
* s >= 1: ``a_t = DCN_b([h_prev1, h_prev2], cond, f1, f2)`` with f1 the flow to the previous
  frame of the sweep, f2 the flow two frames back composed through it (``f1 + warp(f, f1)``),
  ``cond = [warp(h_prev1, f1), feat_t, warp(h_prev2, f2)]``; at s = 1 the second-order inputs
  (h_prev2, f2 and its condition) are zeros. Then ``h_t = a_t + backbone_b([feat_t, earlier
  branches at t, a_t])``.

Stages (h, w: feature size; x: the network's input frame):

* ``feat(x)`` -> (feature (1, C, h, w), ``valid`` ones (1, 1, h, w)); ``valid`` read one or
  two frames back with a zeros default tells a step whether that frame exists.
* ``downsample(x)`` (DAVSR mode only): bicubic x0.25 (:func:`bicubic_quarter`) -> (1, 3, h, w).
* ``flow(a, b)``: SPyNet, FP32 (1, 2, h, w), warps b onto a.
* ``compose(flow1, flow_next)``: the second-order flow, FP32.
* ``backward_1``, ``forward_1``, ``backward_2``, ``forward_2``: one step of a branch,
  ``(feat, prev1, prev2, flow1, flow2, has1, [earlier branches])`` -> state (1, C, h, w).
  One graph covers s = 0, 1 and >= 2 (``has1`` selects the s = 0 case exactly).
* ``upsample(x, feat, backward_1, forward_1, backward_2, forward_2)`` -> output frame.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import Stage, VSRNetwork
from .blocks import (
    ComposeFlow,
    ConvResidualBlocks,
    PixelShufflePack,
    UpsampleX4,
    bilinear_x4,
    compose_flow,
    flow_pair,
    flow_warp,
)
from .ops.deform_conv import ModulatedDeformConv2d, deform_conv2d
from .plan import Plan, Read, SizeConstraints, Step, TensorSpec
from .registry import QuickCheck, Weights, register_network
from .spynet import MMEditSpyNet
from .sweeps import flow_pair_steps, second_order_flow_steps, second_order_reads

#: The propagation branches, in order, with their sweep direction.
BRANCHES = (("backward_1", "backward"), ("forward_1", "forward"), ("backward_2", "backward"), ("forward_2", "forward"))


class SecondOrderDeformableAlignment(ModulatedDeformConv2d):
    """Flow-guided deformable alignment of two earlier states (BasicVSR++, Eq. 5-6).

    Args:
        in_channels: channels of the two stacked states (2C).
        out_channels: aligned channels (C).
        kernel_size, padding: of the deformable convolution (3, 1).
        deform_groups: offset groups (16); the first half aligns the t-1 state, the second the t-2 one.
        max_residue_magnitude: bound of the learned offset residual (10 px).

    ``forward(x, extra_feat, flow_1, flow_2)``: x (N, 2C, h, w) = [state t-1, state t-2];
    extra_feat (N, 3C, h, w) = [warped t-1 state, current feature, warped t-2 state]; flows
    (N, 2, h, w) in (dx, dy) -> (N, C, h, w). Offsets are
    ``max_residue_magnitude * tanh(o) + flow`` (flow as (dy, dx), repeated per tap and group),
    the mask is ``sigmoid(m)``; offsets and flows are FP32.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        deform_groups: int = 16,
        max_residue_magnitude: float = 10,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, deform_groups=deform_groups)
        self.max_residue_magnitude = max_residue_magnitude
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * out_channels + 4, out_channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Conv2d(out_channels, 3 * taps * deform_groups, 3, 1, 1),
        )
        # As the original: the last offset convolution starts at zero (offsets = flow, mask = 0.5).
        nn.init.zeros_(self.conv_offset[-1].weight)
        nn.init.zeros_(self.conv_offset[-1].bias)

    def forward(
        self, x: torch.Tensor, extra_feat: torch.Tensor, flow_1: torch.Tensor, flow_2: torch.Tensor
    ) -> torch.Tensor:
        out = self.conv_offset(torch.cat([extra_feat, flow_1.to(extra_feat.dtype), flow_2.to(extra_feat.dtype)], 1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1).float())
        offset_1, offset_2 = torch.chunk(offset, 2, dim=1)
        pairs = offset_1.shape[1] // 2
        offset_1 = offset_1 + flow_1.float().flip(1).repeat(1, pairs, 1, 1)
        offset_2 = offset_2 + flow_2.float().flip(1).repeat(1, pairs, 1, 1)
        offset = torch.cat([offset_1, offset_2], dim=1)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            mask=torch.sigmoid(mask),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )


# ---------------------------------------------------------------------- stage modules
class _Features(nn.Module):
    def __init__(self, feat_extract: nn.Module) -> None:
        super().__init__()
        self.feat_extract = feat_extract

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.feat_extract(x)
        return feat, torch.ones_like(feat[:, :1])


def bicubic_quarter(x: torch.Tensor) -> torch.Tensor:
    """The original's ``F.interpolate(x, scale_factor=0.25, mode="bicubic")`` as a stride-4 convolution.

    With half-pixel centres every output pixel sits at source position 4i + 1.5, so the cubic
    (a = -0.75) weights are always those of phase 0.5, (-3, 19, 19, -3) / 32 on source pixels
    4i .. 4i + 3, which never leave the frame when its size is a multiple of 4. The weights are
    exact in binary, so this equals the resize up to summation order (~3e-7), and it exports as
    a Conv, which TensorRT runs (its ONNX parser documents only nearest and linear Resize).

    Shapes: (N, C, 4h, 4w) -> (N, C, h, w).
    """
    taps = x.new_tensor([-3.0, 19.0, 19.0, -3.0]) / 32
    kernel = (taps.view(4, 1) * taps.view(1, 4)).expand(x.shape[1], 1, 4, 4)
    return F.conv2d(x, kernel, stride=4, groups=x.shape[1])


class _Downsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_quarter(x)


class _BranchStep(nn.Module):
    """One step of a propagation branch; every case of the recurrence in one graph."""

    def __init__(self, align: SecondOrderDeformableAlignment, backbone: ConvResidualBlocks) -> None:
        super().__init__()
        self.align = align
        self.backbone = backbone

    def forward(
        self,
        feat: torch.Tensor,
        prev1: torch.Tensor,
        prev2: torch.Tensor,
        flow1: torch.Tensor,
        flow2: torch.Tensor,
        has1: torch.Tensor,
        backward_1: torch.Tensor | None = None,
        forward_1: torch.Tensor | None = None,
        backward_2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``backward_1 ..`` are the earlier branches' states at this frame, as many as the branch has."""
        earlier = [b for b in (backward_1, forward_1, backward_2) if b is not None]
        flow1, flow2 = flow1.float(), flow2.float()
        cond_n1 = flow_warp(prev1, flow1.permute(0, 2, 3, 1))
        cond_n2 = flow_warp(prev2, flow2.permute(0, 2, 3, 1))  # zeros when prev2 and flow2 are (s = 1)
        aligned = self.align(torch.cat([prev1, prev2], dim=1), torch.cat([cond_n1, feat, cond_n2], dim=1), flow1, flow2)
        aligned = torch.where(has1 > 0.5, aligned, torch.zeros_like(aligned))  # s = 0: no alignment
        return aligned + self.backbone(torch.cat([feat, *earlier, aligned], dim=1))


class _Upsample(nn.Module):
    """Reconstruction from the five features, the x4 head, plus the skip of the input frame."""

    def __init__(self, net: BasicVSRPlusPlus) -> None:
        super().__init__()
        self.reconstruction = net.reconstruction
        self.head = UpsampleX4(net.upsample1, net.upsample2, net.conv_hr, net.conv_last)
        self.is_low_res_input = net.is_low_res_input

    def forward(
        self,
        x: torch.Tensor,
        feat: torch.Tensor,
        backward_1: torch.Tensor,
        forward_1: torch.Tensor,
        backward_2: torch.Tensor,
        forward_2: torch.Tensor,
    ) -> torch.Tensor:
        hr = self.head(self.reconstruction(torch.cat([feat, backward_1, forward_1, backward_2, forward_2], dim=1)))
        return hr + (bilinear_x4(x) if self.is_low_res_input else x)


@register_network(
    summary="BasicVSR++ (CVPR 2022), x4, second-order propagation with flow-guided deformable alignment",
    quick=QuickCheck({"mid_channels": 16, "num_blocks": 1}, size=(64, 80), frames=4),
    weights=(
        Weights(
            "basicvsrpp-reds4",
            "basicvsrpp",
            "basicvsr_plusplus_c64n7_8x1_600k_reds4_20210217-db622b2f.pth",
            "https://github.com/open-mmlab/mmagic (BasicVSR++ model zoo)",
            "Apache-2.0",
            "REDS (REDS4 held out)",
            "BI",
        ),
    ),
)
class BasicVSRPlusPlus(VSRNetwork):
    """BasicVSR++.

    Args (as the official constructor):
        mid_channels: feature channels (64).
        num_blocks: residual blocks per propagation branch (7).
        max_residue_magnitude: bound of the deformable offsets' residual to the flow (10).
        is_low_res_input: True for x4 super-resolution; False for same-size restoration of frames
            already at the output size (DAVSR's refinement network).

    ``forward``: (N, T, 3, h, w) in [0, 1] -> (N, T, 3, 4h, 4w) (or (N, T, 3, h, w) when
    ``is_low_res_input`` is False), T >= 2. The flow network needs (h, w) >= 64 at the feature
    size, as the original asserts: h, w >= 64, or >= 256 and multiples of 4 for frame-size input.

    Not reproduced: the original's ``cpu_cache`` (moves tensors to the CPU, same numbers) and its
    mirror-extension shortcut (for a clip equal to its time reversal it reuses the backward
    flows, which are then the same flows; the flag it sets is never cleared, so later clips in the
    same process would reuse flipped backward flows too).
    """

    name = "basicvsrpp"
    checkpoint_layout = "mmcv"
    scale = 4
    constraints = SizeConstraints(min_h=64, min_w=64, multiple=1)

    def __init__(
        self,
        mid_channels: int = 64,
        num_blocks: int = 7,
        max_residue_magnitude: float = 10,
        is_low_res_input: bool = True,
    ) -> None:
        super().__init__()
        self.mid_channels = mid_channels
        self.is_low_res_input = is_low_res_input
        if not is_low_res_input:
            self.scale = 1
            self.constraints = SizeConstraints(min_h=256, min_w=256, multiple=4)
        self.spynet = MMEditSpyNet()
        if is_low_res_input:
            self.feat_extract: nn.Module = ConvResidualBlocks(3, mid_channels, 5)
        else:
            self.feat_extract = nn.Sequential(
                nn.Conv2d(3, mid_channels, 3, 2, 1),
                nn.LeakyReLU(negative_slope=0.1, inplace=True),
                nn.Conv2d(mid_channels, mid_channels, 3, 2, 1),
                nn.LeakyReLU(negative_slope=0.1, inplace=True),
                ConvResidualBlocks(mid_channels, mid_channels, 5),
            )
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, (branch, _) in enumerate(BRANCHES):
            self.deform_align[branch] = SecondOrderDeformableAlignment(
                2 * mid_channels,
                mid_channels,
                3,
                padding=1,
                deform_groups=16,
                max_residue_magnitude=max_residue_magnitude,
            )
            self.backbone[branch] = ConvResidualBlocks((2 + i) * mid_channels, mid_channels, num_blocks)
        self.reconstruction = ConvResidualBlocks(5 * mid_channels, mid_channels, 5)
        self.upsample1 = PixelShufflePack(mid_channels, mid_channels, 2, upsample_kernel=3)
        self.upsample2 = PixelShufflePack(mid_channels, 64, 2, upsample_kernel=3)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.share_layers(
            feat=_Features(self.feat_extract),
            downsample=_Downsample(),
            compose=ComposeFlow(),
            upsample=_Upsample(self),
            **{branch: _BranchStep(self.deform_align[branch], self.backbone[branch]) for branch, _ in BRANCHES},
        )

    # ------------------------------------------------------------------ whole clip
    def _propagate(
        self, feats: dict[str, list[torch.Tensor]], flows: torch.Tensor, branch: str, backward: bool
    ) -> None:
        """One branch over the clip, in the original's order of operations; fills ``feats[branch]``."""
        t = flows.shape[1] + 1
        order = range(t - 1, -1, -1) if backward else range(t)
        earlier = [k for k in feats if k not in ("spatial", branch)]
        out: list[torch.Tensor] = []
        prop = flows.new_zeros(flows.shape[0], self.mid_channels, *flows.shape[-2:])
        for i, idx in enumerate(order):
            current = feats["spatial"][idx]
            if i > 0:
                flow_n1 = flows[:, idx if backward else idx - 1]
                cond_n1 = flow_warp(prop, flow_n1.permute(0, 2, 3, 1))
                feat_n2 = torch.zeros_like(prop)
                flow_n2 = torch.zeros_like(flow_n1)
                cond_n2 = torch.zeros_like(cond_n1)
                if i > 1:
                    feat_n2 = out[-2]
                    flow_n2 = compose_flow(flow_n1, flows[:, idx + 1 if backward else idx - 2])
                    cond_n2 = flow_warp(feat_n2, flow_n2.permute(0, 2, 3, 1))
                prop = self.deform_align[branch](
                    torch.cat([prop, feat_n2], dim=1), torch.cat([cond_n1, current, cond_n2], dim=1), flow_n1, flow_n2
                )
            x = torch.cat([current] + [feats[k][idx] for k in earlier] + [prop], dim=1)
            prop = prop + self.backbone[branch](x)
            out.append(prop)
        feats[branch] = out[::-1] if backward else out

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.check_input(lr)
        n, t, c, h, w = lr.shape
        if t < 2:
            raise ValueError("BasicVSR++ needs at least 2 frames (its flow is between neighbours)")
        frames = lr.reshape(n * t, c, h, w)
        small = frames if self.is_low_res_input else F.interpolate(frames, scale_factor=0.25, mode="bicubic")
        small = small.view(n, t, c, *small.shape[-2:])
        feat = self.feat_extract(frames)
        feats: dict[str, list[torch.Tensor]] = {"spatial": list(feat.view(n, t, *feat.shape[1:]).unbind(1))}
        flows_bwd, flows_fwd = flow_pair(self.spynet, small)
        for branch, direction in BRANCHES:
            backward = direction == "backward"
            self._propagate(feats, flows_bwd if backward else flows_fwd, branch, backward)
        upsample = self.part("upsample")
        out = [upsample(lr[:, i], feats["spatial"][i], *(feats[b][i] for b, _ in BRANCHES)) for i in range(t)]
        return torch.stack(out, dim=1)

    # ------------------------------------------------------------------ stages and plan
    def stages(self) -> dict[str, Stage]:
        stages = {
            "feat": Stage(self.part("feat"), ["x"], ["feat", "valid"]),
            "flow": Stage(self.spynet, ["a", "b"], ["flow"], fp32=["flow"]),
            "compose": Stage(
                self.part("compose"), ["flow1", "flow_next"], ["flow2"], fp32=["flow1", "flow_next", "flow2"]
            ),
            "upsample": Stage(self.part("upsample"), ["x", "feat", *(b for b, _ in BRANCHES)], ["out"]),
        }
        if not self.is_low_res_input:
            stages["downsample"] = Stage(self.part("downsample"), ["x"], ["small"])
        for i, (branch, _) in enumerate(BRANCHES):
            stages[branch] = Stage(
                self.part(branch),
                ["feat", "prev1", "prev2", "flow1", "flow2", "has1", *(b for b, _ in BRANCHES[:i])],
                ["state"],
                fp32=["flow1", "flow2"],
            )
        return stages

    def plan_steps(
        self, source: str, output: str, *, source_scale: int = 1, rate: int = 1, tag: str = ""
    ) -> tuple[dict[str, TensorSpec], list[Step]]:
        """The sequences and steps that run this network over sequence ``source`` into ``output``.

        ``source`` has frames at ``source_scale`` times the plan's LR size and ``rate`` frames per
        LR frame; ``tag`` suffixes every intermediate sequence name, so that a plan can run the
        network several times (DAVSR runs it three times on the same stages).
        """
        if not self.is_low_res_input and source_scale % 4:
            raise ValueError(
                f"frame-size input runs at a quarter of its size, so its source scale must be a "
                f"multiple of 4 (got {source_scale}); a plan needs the LR size as its unit"
            )
        f = self.mid_channels
        feat_scale = source_scale if self.is_low_res_input else source_scale // 4
        out_scale = source_scale * 4 if self.is_low_res_input else source_scale

        def seq(name: str) -> str:
            return f"{name}{tag}"

        def spec(channels: int, scale: int = feat_scale) -> TensorSpec:
            return TensorSpec(channels, scale, rate=rate)

        tensors = {
            source: spec(3, source_scale),
            seq("spatial"): spec(f),
            seq("valid"): spec(1),
            seq("flow_bwd"): spec(2),
            seq("flow_fwd"): spec(2),
            seq("flow2_bwd"): spec(2),
            seq("flow2_fwd"): spec(2),
            **{seq(b): spec(f) for b, _ in BRANCHES},
            output: spec(3, out_scale),
        }
        small = source
        steps = [Step("feat", {"x": Read(source)}, {"feat": seq("spatial"), "valid": seq("valid")}, rate=rate)]
        if not self.is_low_res_input:
            small = seq("small")
            tensors[small] = spec(3)
            steps.append(Step("downsample", {"x": Read(source)}, {"small": small}, rate=rate))
        steps += [*flow_pair_steps(small, tag, rate), *second_order_flow_steps(tag, rate)]
        for i, (branch, direction) in enumerate(BRANCHES):
            steps.append(
                Step(
                    branch,
                    {
                        "feat": Read(seq("spatial")),
                        **second_order_reads(seq(branch), direction, seq("valid"), tag, has2=False),
                        **{b: Read(seq(b)) for b, _ in BRANCHES[:i]},
                    },
                    {"state": seq(branch)},
                    order=direction,
                    rate=rate,
                )
            )
        steps.append(
            Step(
                "upsample",
                {"x": Read(source), "feat": Read(seq("spatial")), **{b: Read(seq(b)) for b, _ in BRANCHES}},
                {"out": output},
                rate=rate,
            )
        )
        return tensors, steps

    def plan(self) -> Plan:
        """The standalone plan (x4 input mode); DAVSR plans the frame-size mode with :meth:`plan_steps`."""
        tensors, steps = self.plan_steps("lr", "hr")
        return Plan(steps=steps, tensors=tensors, output="hr")
