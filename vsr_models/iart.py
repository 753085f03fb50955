"""IART (Xu et al., CVPR 2024): recurrent video SR with implicit-resampling alignment.

Four propagation sweeps (``backward_1``, ``forward_1``, ``backward_2``, ``forward_2``), each with
its own multi-frame Swin (:class:`~vsr_models.swin.SwinIRFM`); the earlier outputs of a sweep are
aligned to the current frame by one shared :class:`~vsr_models.ops.implicit_warp.ImplicitWarp`
along SpyNet flows (first order, and second order by flow composition). Constructor arguments
and parameter names follow the official ``IART`` so the released checkpoints
(``IART_REDS_BI_N6.pth``, ``IART_REDS_BI_N16.pth``, ``IART_Vimeo-90K_BI.pth``,
``IART_Vimeo-90K_BD.pth``; 1,162 keys with buffers) load strictly.

The math (``x[t]``: the sweep's input at frame t, ``out``: its output; s: the step count in the
sweep's order, prev1 / prev2 the frames one and two steps back in that order):

* s = 0: ``out[t] = swin(x[t], x[t], x[t])``;
* s = 1: ``out[t] = swin(IW(out[prev1], x[t], f1), x[t], 0)``;
* s >= 2: also ``f2 = f1 + flow_warp(f_prev, f1)`` (f_prev: the flow from prev1 to prev2;
  bilinear, zero padding) and ``out[t] = swin(IW(out[prev1], x[t], f1), x[t], IW(out[prev2], x[t], f2))``;

where ``f1`` is the flow from t to prev1 and ``swin(a, b, c)`` returns the refined centre frame.
The inputs are ``conv_first(lr)`` for ``backward_1`` and the previous sweep's outputs after.
``hr[t] = upsampler(forward_2[t]) + bilinear_x4(lr[t])``.

Stages (h, w: LR size; ``F`` = embed_dim):

* ``embed(x)``: frame (1, 3, h, w) -> ``feat`` (1, F, h, w), ``valid`` (1, 1, h, w) of ones.
  ``valid`` marks frames that exist: read at a neighbour outside the clip it gives zeros.
* ``flow(a, b)``: SpyNet, (1, 3, h, w) x2 -> ``flow`` (1, 2, h, w) that warps ``b`` onto ``a``.
* ``compose(flow1, flow_next)``: ``flow1 + flow_warp(flow_next, flow1)`` -> ``flow2``.
* ``backward_1``, ``forward_1``, ``backward_2``, ``forward_2`` (one weight set each, one shared
  implicit warp): ``(x, prev1, prev2, flow1, flow2, has1, has2) -> feat``. ``has1``/``has2`` are
  the ``valid`` of the two earlier frames; they select the s = 0 and s = 1 cases exactly (by
  ``where``, no arithmetic), so one graph per sweep serves every step.
* ``upsample(feat, lr)`` -> ``hr`` (1, 3, 4h, 4w).

Differences from the original, none numerical: the mirror-extension check is not reproduced
(for a mirrored clip it only skips recomputing flows that are equal; the original's flag also
sticks to the model after one mirrored clip), ``cpu_cache_length`` only moved tensors between
devices, and ``use_checkpoint`` only applies while training. Any h, w >= 64 work (the original
asserts the minimum; the Swin layers pad to window multiples internally).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .base import Stage, VSRNetwork
from .blocks import ComposeFlow, UpsampleX4, bilinear_x4, compose_flow, conv_shuffle, flow_pair
from .checkpoint import extract_state_dict, load_state_dict_strict, read_checkpoint
from .ops.implicit_warp import ImplicitWarp
from .plan import Plan, Read, SizeConstraints, Step, TensorSpec
from .registry import QuickCheck, Weights, register_network
from .spynet import SpyNet
from .sweeps import flow_pair_steps, second_order_flow_steps, second_order_reads
from .swin import SwinIRFM

#: The propagation sweeps in the order they run: (name, direction).
BRANCHES = (("backward_1", "backward"), ("forward_1", "forward"), ("backward_2", "backward"), ("forward_2", "forward"))


class _Embed(nn.Module):
    def __init__(self, conv_first: nn.Conv2d) -> None:
        super().__init__()
        self.conv_first = conv_first

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv_first(x), torch.ones_like(x[:, :1])


class _BranchStep(nn.Module):
    """One step of a sweep, every case of the recurrence in one graph (see the module docstring)."""

    def __init__(self, swin: SwinIRFM, warp: ImplicitWarp) -> None:
        super().__init__()
        self.swin = swin
        self.warp = warp

    def forward(
        self,
        x: torch.Tensor,
        prev1: torch.Tensor,
        prev2: torch.Tensor,
        flow1: torch.Tensor,
        flow2: torch.Tensor,
        has1: torch.Tensor,
        has2: torch.Tensor,
    ) -> torch.Tensor:
        first = has1 < 0.5  # s = 0: no earlier frame
        aligned1 = torch.where(first, x, self.warp(prev1, x, flow1))
        aligned2 = torch.where(has2 > 0.5, self.warp(prev2, x, flow2), torch.where(first, x, torch.zeros_like(x)))
        return self.swin(torch.stack([aligned1, x, aligned2], dim=1))


class _Upsample(nn.Module):
    """The x4 head after ``conv_before_upsample``, plus the bilinear x4 skip. Shares the IART's layers."""

    def __init__(self, net: IART) -> None:
        super().__init__()
        self.conv_before_upsample = net.conv_before_upsample
        self.head = UpsampleX4(conv_shuffle(net.upconv1), conv_shuffle(net.upconv2), net.conv_hr, net.conv_last)

    def forward(self, feat: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv_before_upsample(feat)) + bilinear_x4(lr)


_RELEASE = "https://github.com/kai422/IART (Google Drive folder linked from its README)"


def _release(name: str, filename: str, data: str, degradation: str) -> Weights:
    return Weights(name, "iart", filename, _RELEASE, "see the IART repository", data, degradation)


@register_network(
    summary="IART (CVPR 2024), x4, recurrent Swin with implicit-resampling alignment",
    # Its eight-stage export takes over two minutes here; the default suite runs the heaviest stage on
    # ONNX Runtime instead (tests/test_iart.py), the contract's package checks run in the slow suite.
    quick=QuickCheck({"embed_dim": 32, "depths": (2,), "num_heads": (2,)}, size=(64, 96), frames=3, slow_export=True),
    checkpoint_keys=1162,
    weights=(
        _release("iart-reds-n6", "IART_REDS_BI_N6.pth", "REDS (REDS4 held out), 6-frame clips", "BI"),
        _release("iart-reds-n16", "IART_REDS_BI_N16.pth", "REDS (REDS4 held out), 16-frame clips", "BI"),
        _release("iart-vimeo-bi", "IART_Vimeo-90K_BI.pth", "Vimeo-90K", "BI"),
        _release("iart-vimeo-bd", "IART_Vimeo-90K_BD.pth", "Vimeo-90K", "BD"),
    ),
)
class IART(VSRNetwork):
    """IART, x4. Defaults are the released configuration (all four checkpoints share it).

    Args (names as in the official constructor):
        in_channels: image channels (3).
        mid_channels: channels of the upsampler (64).
        embed_dim: feature channels of the Swin and the implicit warp (120).
        depths: Swin blocks per residual group, per sweep ([6, 6, 6]).
        num_heads: heads per group ([6, 6, 6]); ``num_heads[0]`` is the implicit warp's.
        window_size: (t, h, w) Swin window ([3, 8, 8]).
        num_frames: frames per Swin call (3: aligned prev1, current, aligned prev2).
        img_size, patch_size: bookkeeping in the original; ``patch_size`` must be 1.
        cpu_cache_length: accepted and ignored (it only moved features to the CPU).
        is_low_res_input: must be True (every release).
        use_checkpoint: per sweep, activation checkpointing while training.
        spynet_path: optional BasicSR SpyNet checkpoint to initialise the flow network; a full
            IART checkpoint carries its own (fine-tuned) SpyNet weights anyway.

    ``forward``: (N, T, 3, h, w) in [0, 1], h, w >= 64 -> (N, T, 3, 4h, 4w).
    """

    name = "iart"
    scale = 4
    constraints = SizeConstraints(min_h=64, min_w=64, multiple=1)

    def __init__(
        self,
        in_channels: int = 3,
        mid_channels: int = 64,
        embed_dim: int = 120,
        depths: Sequence[int] = (6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6),
        window_size: Sequence[int] = (3, 8, 8),
        num_frames: int = 3,
        img_size: int = 64,
        patch_size: int = 1,
        cpu_cache_length: int = 100,
        is_low_res_input: bool = True,
        use_checkpoint: Sequence[bool] = (False, False, False, False),
        spynet_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not is_low_res_input:
            raise NotImplementedError(
                "is_low_res_input=False (HR input, bicubic downscale) is not supported; "
                "every released IART uses LR input"
            )
        if patch_size != 1:
            raise ValueError(f"patch_size must be 1 (the original ignores other values), got {patch_size}")
        if num_frames != 3:
            raise ValueError(
                f"IART's recurrence feeds 3 frames per Swin call; num_frames={num_frames} is not supported"
            )
        if len(use_checkpoint) != len(BRANCHES):
            raise ValueError(f"use_checkpoint needs one flag per sweep ({len(BRANCHES)}), got {use_checkpoint}")
        self.mid_channels, self.embed_dim = mid_channels, embed_dim
        self.config = {
            "in_channels": in_channels,
            "mid_channels": mid_channels,
            "embed_dim": embed_dim,
            "depths": list(depths),
            "num_heads": list(num_heads),
            "window_size": list(window_size),
            "num_frames": num_frames,
        }

        self.conv_before_upsample = nn.Conv2d(embed_dim, mid_channels, 3, 1, 1)
        self.spynet = SpyNet()
        if spynet_path is not None:
            self._load_spynet(spynet_path)
        self.conv_first = nn.Conv2d(in_channels, embed_dim, 3, 1, 1)
        self.swin_backbone = nn.ModuleDict(
            {
                name: SwinIRFM(
                    in_chans=in_channels,
                    embed_dim=embed_dim,
                    depths=depths,
                    num_heads=num_heads,
                    window_size=window_size,
                    mlp_ratio=2.0,
                    qkv_bias=True,
                    qk_scale=None,
                    drop_path_rate=0.1,
                    use_checkpoint=use_checkpoint[i],
                    num_frames=num_frames,
                )
                for i, (name, _) in enumerate(BRANCHES)
            }
        )
        self.upconv1 = nn.Conv2d(mid_channels, mid_channels * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(mid_channels, 64 * 4, 3, 1, 1, bias=True)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.implicit_warp = ImplicitWarp(dim=embed_dim, pe_dim=embed_dim, num_heads=num_heads[0], pe_temp=0.01)
        self.share_layers(
            embed=_Embed(self.conv_first),
            compose=ComposeFlow(),
            upsample=_Upsample(self),
            **{name: _BranchStep(self.swin_backbone[name], self.implicit_warp) for name, _ in BRANCHES},
        )

    def _load_spynet(self, path: str | Path) -> None:
        load_state_dict_strict(self.spynet, extract_state_dict(read_checkpoint(path)), f"SpyNet checkpoint {path}")

    # ------------------------------------------------------------------ whole clip
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.check_input(lr)
        n, t, c, h, w = lr.shape
        spatial = self.conv_first(lr.reshape(-1, c, h, w)).view(n, t, -1, h, w)
        feats = [spatial[:, i] for i in range(t)]
        if t > 1:
            flows_bwd, flows_fwd = flow_pair(self.spynet, lr)
        else:
            flows_bwd = flows_fwd = lr.new_zeros(n, 0, 2, h, w)
        for name, direction in BRANCHES:
            feats = self._propagate(
                feats, flows_bwd if direction == "backward" else flows_fwd, name, direction == "backward"
            )
        upsample = self.part("upsample")
        return torch.stack([upsample(feats[i], lr[:, i]) for i in range(t)], dim=1)

    def _propagate(
        self, inputs: list[torch.Tensor], flows: torch.Tensor, name: str, backward: bool
    ) -> list[torch.Tensor]:
        """One sweep over the clip, as the original's ``propagate`` (returns frame order)."""
        t = len(inputs)
        swin = self.swin_backbone[name]
        order = range(t - 1, -1, -1) if backward else range(t)
        step = 1 if backward else -1  # frame index of "one step back in the sweep"
        outs: list[torch.Tensor] = [inputs[0]] * t
        for s, i in enumerate(order):
            x = inputs[i]
            if s == 0:
                outs[i] = swin(torch.stack([x, x, x], dim=1))
                continue
            flow1 = flows[:, i] if backward else flows[:, i - 1]
            aligned1 = self.implicit_warp(outs[i + step], x, flow1)
            if s >= 2:
                flow_prev = flows[:, i + 1] if backward else flows[:, i - 2]
                aligned2 = self.implicit_warp(outs[i + 2 * step], x, compose_flow(flow1, flow_prev))
            else:
                aligned2 = torch.zeros_like(aligned1)
            outs[i] = swin(torch.stack([aligned1, x, aligned2], dim=1))
        return outs

    # ------------------------------------------------------------------ stages and plan
    def stages(self) -> dict[str, Stage]:
        branch_inputs = ["x", "prev1", "prev2", "flow1", "flow2", "has1", "has2"]
        return {
            "embed": Stage(self.part("embed"), ["x"], ["feat", "valid"]),
            "flow": Stage(self.spynet, ["a", "b"], ["flow"], fp32=["flow"]),
            "compose": Stage(
                self.part("compose"), ["flow1", "flow_next"], ["flow2"], fp32=["flow1", "flow_next", "flow2"]
            ),
            **{name: Stage(self.part(name), branch_inputs, ["feat"], fp32=["flow1", "flow2"]) for name, _ in BRANCHES},
            "upsample": Stage(self.part("upsample"), ["feat", "lr"], ["hr"]),
        }

    def plan(self) -> Plan:
        f = self.embed_dim
        tensors = {
            "lr": TensorSpec(3),
            "spatial": TensorSpec(f),
            "valid": TensorSpec(1),
            "flow_bwd": TensorSpec(2),
            "flow_fwd": TensorSpec(2),
            "flow2_bwd": TensorSpec(2),
            "flow2_fwd": TensorSpec(2),
            **{name: TensorSpec(f) for name, _ in BRANCHES},
            "hr": TensorSpec(3, self.scale),
        }
        steps = [
            Step("embed", {"x": Read("lr")}, {"feat": "spatial", "valid": "valid"}),
            *flow_pair_steps("lr"),
            *second_order_flow_steps(),
        ]
        source = "spatial"
        for name, direction in BRANCHES:
            steps.append(
                Step(
                    name,
                    {"x": Read(source), **second_order_reads(name, direction, "valid")},
                    {"feat": name},
                    order=direction,
                )
            )
            source = name
        steps.append(Step("upsample", {"feat": Read(source), "lr": Read("lr")}, {"hr": "hr"}))
        return Plan(steps=steps, tensors=tensors, output="hr")
