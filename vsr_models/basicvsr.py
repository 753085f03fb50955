"""BasicVSR (Chan et al., CVPR 2021): bidirectional recurrent propagation with SpyNet alignment.

Constructor arguments and parameter names follow BasicSR's ``BasicVSR`` so that the official
checkpoints (``BasicVSR_REDS4.pth``, ``BasicVSR_Vimeo90K_BIx4.pth``, ``..._BDx4.pth``) load
strictly.

Stages (h, w: LR size):

* ``flow(a, b)``: (1, 3, h, w) x2 -> flow (1, 2, h, w), warps frame ``b`` onto frame ``a``.
* ``backward_step(x, flow, h_next)``: frame (1, 3, h, w), flow to the next frame, next state
  (1, C, h, w) -> state ``h`` (1, C, h, w).
* ``forward_step(x, flow, h_prev, hb)``: frame, flow to the previous frame, previous forward
  state, backward state of this frame -> (forward state ``h`` (1, C, h, w), ``hr`` (1, 3, 4h, 4w)).

Plan: ``flow_bwd[t] = flow(lr[t], lr[t+1])``, ``flow_fwd[t] = flow(lr[t], lr[t-1])``;
t = T-1..0: ``hb[t] = backward_step(lr[t], flow_bwd[t], hb[t+1])``;
t = 0..T-1: ``hf[t], hr[t] = forward_step(lr[t], flow_fwd[t], hf[t-1], hb[t])``.
A missing neighbour (clip ends) reads zeros for both state and flow; warping a zero state by a
zero flow gives zeros, which is exactly the original's "no warp at the ends".
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import VSRNetwork
from .blocks import ConvResidualBlocks, flow_warp
from .plan import Plan, Read, SizeConstraints, Stage, Step, TensorSpec
from .spynet import SpyNet


class _Propagate(nn.Module):
    """Warp the neighbour's state to this frame, then refine with this frame's pixels."""

    def __init__(self, trunk: ConvResidualBlocks) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor, flow: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = flow_warp(h, flow.permute(0, 2, 3, 1))
        return self.trunk(torch.cat([x, h], dim=1))


class _Reconstruct(nn.Module):
    """Fuse both directions and upsample x4 with two pixel shuffles, plus a bilinear skip.

    Shares its layers with the :class:`BasicVSR` that owns them.
    """

    def __init__(self, net: "BasicVSR") -> None:
        super().__init__()
        self.fusion, self.upconv1, self.upconv2 = net.fusion, net.upconv1, net.upconv2
        self.conv_hr, self.conv_last = net.conv_hr, net.conv_last
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def forward(self, x: torch.Tensor, hb: torch.Tensor, hf: torch.Tensor) -> torch.Tensor:
        out = self.lrelu(self.fusion(torch.cat([hb, hf], dim=1)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.lrelu(self.conv_hr(out))
        out = self.conv_last(out)
        return out + F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


class _ForwardStep(nn.Module):
    def __init__(self, propagate: _Propagate, reconstruct: _Reconstruct) -> None:
        super().__init__()
        self.propagate = propagate
        self.reconstruct = reconstruct

    def forward(self, x: torch.Tensor, flow: torch.Tensor, h: torch.Tensor,
                hb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hf = self.propagate(x, flow, h)
        return hf, self.reconstruct(x, hb, hf)


class BasicVSR(VSRNetwork):
    """BasicVSR, x4.

    Args:
        num_feat: feature channels (official: 64).
        num_block: residual blocks per propagation branch (official: 30).

    ``forward``: (N, T, 3, h, w) in [0, 1], h and w >= 33 (SpyNet's coarsest level must have at
    least two pixels, as in the original) -> (N, T, 3, 4h, 4w), every frame.
    """

    name = "basicvsr"
    scale = 4
    constraints = SizeConstraints(min_h=33, min_w=33, multiple=1)

    def __init__(self, num_feat: int = 64, num_block: int = 30) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.spynet = SpyNet()
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0, bias=True)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1, bias=True)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        # Stage modules share the layers above; a plain dict keeps them out of the state dict.
        reconstruct = _Reconstruct(self)
        self._parts = {
            "reconstruct": reconstruct,
            "backward_step": _Propagate(self.backward_trunk),
            "forward_step": _ForwardStep(_Propagate(self.forward_trunk), reconstruct),
        }

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.check_input(lr)
        n, t, c, h, w = lr.shape
        if t < 2:
            raise ValueError("BasicVSR needs at least 2 frames (its flow is between neighbours)")
        first, second = lr[:, :-1].reshape(-1, c, h, w), lr[:, 1:].reshape(-1, c, h, w)
        flows_bwd = self.spynet(first, second).view(n, t - 1, 2, h, w)
        flows_fwd = self.spynet(second, first).view(n, t - 1, 2, h, w)

        hb = [lr.new_zeros(0)] * t
        state = lr.new_zeros(n, self.num_feat, h, w)
        for i in range(t - 1, -1, -1):
            if i < t - 1:
                state = flow_warp(state, flows_bwd[:, i].permute(0, 2, 3, 1))
            state = self.backward_trunk(torch.cat([lr[:, i], state], dim=1))
            hb[i] = state

        out = []
        state = torch.zeros_like(state)
        for i in range(t):
            if i > 0:
                state = flow_warp(state, flows_fwd[:, i - 1].permute(0, 2, 3, 1))
            state = self.forward_trunk(torch.cat([lr[:, i], state], dim=1))
            out.append(self._parts["reconstruct"](lr[:, i], hb[i], state))
        return torch.stack(out, dim=1)

    def stages(self) -> dict[str, Stage]:
        return {
            "flow": Stage(self.spynet, ["a", "b"], ["flow"], fp32=["flow"]),
            "backward_step": Stage(self._parts["backward_step"], ["x", "flow", "h_next"], ["h"], fp32=["flow"]),
            "forward_step": Stage(self._parts["forward_step"], ["x", "flow", "h_prev", "hb"], ["h", "hr"],
                                  fp32=["flow"]),
        }

    def plan(self) -> Plan:
        f = self.num_feat
        return Plan(
            tensors={"lr": TensorSpec(3), "flow_bwd": TensorSpec(2), "flow_fwd": TensorSpec(2),
                     "hb": TensorSpec(f), "hf": TensorSpec(f), "hr": TensorSpec(3, self.scale)},
            steps=[
                Step("flow", {"a": Read("lr"), "b": Read("lr", 1)}, {"flow": "flow_bwd"}, last=-1),
                Step("flow", {"a": Read("lr"), "b": Read("lr", -1)}, {"flow": "flow_fwd"}, first=1),
                Step("backward_step",
                     {"x": Read("lr"), "flow": Read("flow_bwd", 0, "zeros"), "h_next": Read("hb", 1, "zeros")},
                     {"h": "hb"}, order="backward"),
                Step("forward_step",
                     {"x": Read("lr"), "flow": Read("flow_fwd", 0, "zeros"), "h_prev": Read("hf", -1, "zeros"),
                      "hb": Read("hb")},
                     {"h": "hf", "hr": "hr"}),
            ],
            output="hr",
        )
