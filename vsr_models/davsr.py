"""DAVSR (Cao et al., ECCV 2022): space-time super-resolution of blurry video by deep unfolding.

A clip of T blurry LR frames (h, w) becomes 5T sharp HR frames (4h, 4w), as the released
configuration ``reds_davsr_25frames_3iter_sf544`` (``n_iter=3``, ``sf=(5, 4, 4)``):

1. **Initialisation**: Super SloMo (:mod:`.superslomo`, its own checkpoint) makes four frames
   between every pair of LR frames; the HR-rate clip is
   ``[I0, I0, I0, s(0,1)x4, I1, s(1,2)x4, ..., I_{T-1}, I_{T-1}, I_{T-1}]``
   (LR frame i at HR index 5i + 2), each frame then bilinearly upscaled x4 (``align_corners=True``).
   Frames are mean-subtracted for Super SloMo and the mean added back (also on the key frames,
   whose values are rounded through that round trip, as in the original).
2. **Weights**: ``HyPaNet`` maps the constant [noise 0, 5, 4] to alpha_1..alpha_n.
3. **n_iter alternating iterations**: the Fourier data step (:mod:`.fourier`) with alpha_i, then the
   shared BasicVSR++ (:mod:`.basicvsrpp`, frame-size input mode) over all 5T frames.

``generator`` holds the original ``DAVSRNet``'s parameters under their names (``h`` HyPaNet,
``p`` the ResUNet that the released model builds but never calls, ``vsr`` BasicVSR++), so the
mmcv checkpoint's ``generator.*`` keys load as they are; ``slomo`` holds Super SloMo.

Plan (T LR frames; HR-rate sequences have 5T frames, ``rate=5``):

* ``interpolate(lr[t], lr[t+1])`` writes ``z0[5t+3 .. 5t+6]``; ``keyframe(lr[t])`` writes ``z0[5t+2]``.
  The repeated key frames (``z0[0], z0[1], z0[5T-2], z0[5T-1]``) are not stored; the first data
  step reads them through defaults.
* For i = 1..n_iter: ``data_i(lr[t], z[5t-2 .. 5t+2 mod 5T])`` writes ``x_i`` at the same five
  frames (block t of the data step, see :func:`.fourier.data_step_block`); then BasicVSR++'s steps
  run over ``x_i`` (rate 5) into ``z_i`` (``hr`` for the last iteration).

Quirks kept: the data term ties LR frame t to HR frames 5t-2 .. 5t+2 (S keeps frame 5t and the
temporal box is centred on it), with time circular, so block 0 also holds HR frames 5T-2 and 5T-1,
while the initialisation puts LR frame t at 5t + 2, the last frame of that window.

Sizes: LR frames at least 64 x 64 (BasicVSR++'s flow network on the HR/4 copy) and multiples of
32 (Super SloMo's U-Net); the original's test protocol zero-pads to multiples of 32.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .base import Stage, VSRNetwork
from .basicvsrpp import BasicVSRPlusPlus
from .checkpoint import CheckpointError, strip_prefix
from .fourier import SCALE_FACTORS, data_step_block, data_step_fft
from .plan import At, Plan, Read, SizeConstraints, Step, TensorSpec
from .registry import QuickCheck, register_network
from .superslomo import MEAN, SuperSloMo

#: HR frames per LR frame.
RATE = SCALE_FACTORS[0]
#: HR index of LR frame t is RATE * t + KEY_OFFSET.
KEY_OFFSET = 2


class HyPaNet(nn.Module):
    """The hyper-parameter MLP: 1x1x1 convolutions, ReLU, Softplus, plus 1e-6.

    Shapes: (N, in_nc, D, H, W) -> (N, out_nc, D, H, W).
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 6, channel: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv3d(in_nc, channel, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv3d(channel, channel, 1, padding=0, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv3d(channel, out_nc, 1, padding=0, bias=True),
            nn.Softplus(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + 1e-6


class _ResBlock(nn.Module):
    """Holds ``res.{0,2}.weight`` (two bias-free 3x3 convolutions)."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(nc, nc, 3, 1, 1, bias=False), nn.ReLU(), nn.Conv2d(nc, nc, 3, 1, 1, bias=False)
        )


class ResUNet(nn.Module):
    """The parameters of DAVSR's prior network ``p``, which the released model builds and never calls.

    Only its key layout is reproduced (strided-conv downsampling, transposed-conv upsampling,
    bias-free), so that checkpoints load strictly; it has no forward.
    """

    def __init__(self, in_nc: int = 4, out_nc: int = 3, nc: tuple[int, ...] = (16, 16, 16, 16), nb: int = 2) -> None:
        super().__init__()
        self.m_head = nn.Conv2d(in_nc, nc[0], 3, 1, 1, bias=False)
        for i in range(3):
            setattr(
                self,
                f"m_down{i + 1}",
                nn.Sequential(*[_ResBlock(nc[i]) for _ in range(nb)], nn.Conv2d(nc[i], nc[i + 1], 2, 2, 0, bias=False)),
            )
        self.m_body = nn.Sequential(*[_ResBlock(nc[3]) for _ in range(nb)])
        for i in (3, 2, 1):
            setattr(
                self,
                f"m_up{i}",
                nn.Sequential(
                    nn.ConvTranspose2d(nc[i], nc[i - 1], 2, 2, 0, bias=False),
                    *[_ResBlock(nc[i - 1]) for _ in range(nb)],
                ),
            )
        self.m_tail = nn.Conv2d(nc[0], out_nc, 3, 1, 1, bias=False)


class DAVSRGenerator(nn.Module):
    """The original ``DAVSRNet``'s parameters: ``h`` (HyPaNet), ``p`` (unused ResUNet), ``vsr`` (BasicVSR++)."""

    def __init__(
        self,
        n_iter: int,
        h_nc: int,
        in_nc: int,
        out_nc: int,
        nc: tuple[int, ...],
        nb: int,
        mid_channels: int,
        num_blocks: int,
        max_residue_magnitude: float,
    ) -> None:
        super().__init__()
        self.p = ResUNet(in_nc, out_nc, nc, nb)
        self.h = HyPaNet(in_nc=3, out_nc=2 * n_iter, channel=h_nc)
        self.vsr = BasicVSRPlusPlus(mid_channels, num_blocks, max_residue_magnitude, is_low_res_input=False)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x - x.new_tensor(MEAN).view(1, 3, 1, 1)


def _denormalize(x: torch.Tensor) -> torch.Tensor:
    # The original subtracts the negated mean, which is bit-for-bit an addition.
    return x + x.new_tensor(MEAN).view(1, 3, 1, 1)


def _upscale(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x4 with ``align_corners=True``, as the original's initialisation."""
    return F.interpolate(x, scale_factor=(4, 4), mode="bilinear", align_corners=True)


class _Keyframe(nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return _upscale(_denormalize(_normalize(a)))


class _Interpolate(nn.Module):
    def __init__(self, slomo: SuperSloMo) -> None:
        super().__init__()
        self.slomo = slomo

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
        frames = self.slomo.interpolate(_normalize(a), _normalize(b), RATE)
        return tuple(_upscale(_denormalize(f)) for f in frames)


class _DataStep(nn.Module):
    """Block t of data step i: (y_t, five HR frames) -> five HR frames, FP32."""

    def __init__(self, net: DAVSR, index: int) -> None:
        super().__init__()
        self.hypanet = net.generator.h
        self.index = index

    def forward(
        self, y: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor, z4: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        alpha = hyper_parameters(self.hypanet, y)[self.index].view(1, 1, 1, 1)
        return tuple(data_step_block(torch.stack([z0, z1, z2, z3, z4], dim=1), y, alpha).unbind(1))


def hyper_parameters(hypanet: HyPaNet, like: torch.Tensor) -> torch.Tensor:
    """HyPaNet on the released constant input [noise level 0, sf_t 5, sf_s 4]: all 2 n_iter weights, FP32."""
    x = torch.tensor([0.0, float(SCALE_FACTORS[0]), float(SCALE_FACTORS[1])], device=like.device)
    weight = hypanet.mlp[0].weight
    return hypanet(x.to(weight.dtype).view(1, 3, 1, 1, 1)).reshape(-1).float()


@register_network(
    summary="DAVSR (ECCV 2022), x4 in space and x5 in time, deep unfolding with BasicVSR++ and Super SloMo "
    "(no released weights could be confirmed; pass both files with --checkpoint)",
    quick=QuickCheck({"mid_channels": 16, "num_blocks": 1}, size=(64, 64), frames=2, slow_export=True),
)
class DAVSR(VSRNetwork):
    """DAVSR, x4 in space and x5 in time. Defaults are the released configuration.

    Args (names as in the official ``DAVSRNet``):
        n_iter: alternating iterations (3).
        h_nc: HyPaNet width (16).
        in_nc, out_nc, nc, nb: shape of the unused ResUNet ``p`` (4, 3, [16] * 4, 2).
        mid_channels, num_blocks, max_residue_magnitude: of the BasicVSR++ (64, 7, 10).
        sf: (temporal, vertical, horizontal) factors; only the released (5, 4, 4) (the data step's
            kernel and its block structure are those of that configuration).

    ``forward``: (N, T, 3, h, w) in [0, 1], h and w >= 64 and multiples of 32, T >= 1
    -> (N, 5T, 3, 4h, 4w).

    Checkpoints: :func:`~vsr_models.load_checkpoint` takes both files of the release, told apart
    by their keys: the mmcv DAVSR file (``state_dict`` with ``generator.*`` keys and the trainer's
    ``step_counter``; an optional leading ``module.``) fills ``generator``; the Super SloMo file
    (``state_dictFC``, ``state_dictAT`` and training metadata, including a ``datetime``) fills
    ``slomo``. Both load strictly, with ``weights_only`` (``datetime`` allowed).
    """

    name = "davsr"
    scale = 4
    constraints = SizeConstraints(min_h=64, min_w=64, multiple=32, pad="zeros")
    clip_frames = 10
    #: The released files, by the submodule each fills (see :meth:`route_checkpoint`).
    checkpoint_parts = ("generator", "slomo")
    checkpoint_safe_types = (datetime.datetime,)
    #: Keys of the mmcv file's ``state_dict`` that belong to the trainer, not the network.
    TRAINER_KEYS = ("step_counter",)

    def __init__(
        self,
        n_iter: int = 3,
        h_nc: int = 16,
        in_nc: int = 4,
        out_nc: int = 3,
        nc: tuple[int, ...] | list[int] = (16, 16, 16, 16),
        nb: int = 2,
        mid_channels: int = 64,
        num_blocks: int = 7,
        max_residue_magnitude: float = 10,
        sf: tuple[int, int, int] | list[int] = SCALE_FACTORS,
    ) -> None:
        super().__init__()
        if tuple(sf) != SCALE_FACTORS:
            raise ValueError(f"only the released sf={SCALE_FACTORS} is implemented, got {tuple(sf)}")
        if n_iter < 1:
            raise ValueError("n_iter must be at least 1")
        self.n_iter = n_iter
        self.generator = DAVSRGenerator(
            n_iter, h_nc, in_nc, out_nc, tuple(nc), nb, mid_channels, num_blocks, max_residue_magnitude
        )
        self.slomo = SuperSloMo()
        self.share_layers(
            keyframe=_Keyframe(),
            interpolate=_Interpolate(self.slomo),
            **{f"data_{i + 1}": _DataStep(self, i) for i in range(n_iter)},
        )

    @property
    def vsr(self) -> BasicVSRPlusPlus:
        return self.generator.vsr

    # ------------------------------------------------------------------ whole clip
    def initial_clip(self, lr: torch.Tensor) -> torch.Tensor:
        """Super SloMo initialisation: (N, T, 3, h, w) -> (N, 5T, 3, 4h, 4w)."""
        n, t, c, h, w = lr.shape
        norm = _normalize(lr.reshape(n * t, c, h, w)).view(n, t, c, h, w)
        keys = _denormalize(norm.reshape(n * t, c, h, w)).view(n, t, c, h, w)
        frames = [keys[:, 0], keys[:, 0]]
        if t > 1:
            inter = self.slomo.interpolate(norm[:, :-1].reshape(-1, c, h, w), norm[:, 1:].reshape(-1, c, h, w), RATE)
            between = _denormalize(torch.stack(inter, dim=1).view(-1, c, h, w)).view(n, t - 1, RATE - 1, c, h, w)
            for i in range(t - 1):
                frames += [keys[:, i], *between[:, i].unbind(1)]
        frames += [keys[:, -1]] * 3
        clip = torch.stack(frames, dim=1)
        return _upscale(clip.view(-1, c, h, w)).view(n, RATE * t, c, 4 * h, 4 * w)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.check_input(lr)
        y = lr.permute(0, 2, 1, 3, 4)
        alphas = hyper_parameters(self.generator.h, lr)
        x = self.initial_clip(lr)
        for i in range(self.n_iter):
            x = data_step_fft(x.permute(0, 2, 1, 3, 4), y, alphas[i].view(1, 1, 1, 1, 1)).permute(0, 2, 1, 3, 4)
            x = self.vsr(x.contiguous())
        return x

    # ------------------------------------------------------------------ stages and plan
    def stages(self) -> dict[str, Stage]:
        block_in = [f"z{d}" for d in range(RATE)]
        block_out = [f"x{d}" for d in range(RATE)]
        return {
            "keyframe": Stage(self.part("keyframe"), ["a"], ["out"]),
            "interpolate": Stage(self.part("interpolate"), ["a", "b"], [f"f{k}" for k in range(1, RATE)]),
            **{
                f"data_{i + 1}": Stage(
                    self.part(f"data_{i + 1}"), ["y", *block_in], block_out, fp32=["y", *block_in, *block_out]
                )
                for i in range(self.n_iter)
            },
            **self.vsr.stages(),
        }

    def plan(self) -> Plan:
        hr_spec = TensorSpec(3, 4, rate=RATE)
        tensors: dict[str, TensorSpec] = {"lr": TensorSpec(3), "z0": hr_spec}
        steps = [
            Step(
                "interpolate",
                {"a": Read("lr"), "b": Read("lr", 1)},
                {f"f{k}": "z0" for k in range(1, RATE)},
                last=-1,
                write_at={f"f{k}": At(RATE, KEY_OFFSET + k) for k in range(1, RATE)},
            ),
            Step("keyframe", {"a": Read("lr")}, {"out": "z0"}, write_at={"out": At(RATE, KEY_OFFSET)}),
        ]
        previous = "z0"
        for i in range(1, self.n_iter + 1):
            block = {}
            for d in range(RATE):
                offset = d - KEY_OFFSET
                default: Read | None = None
                if i == 1 and offset < 0:  # z0[5T-2], z0[5T-1]: copies of the last key frame
                    default = Read("z0", -KEY_OFFSET - 1, stride=RATE, wrap=True)
                elif i == 1 and offset < KEY_OFFSET:  # z0[0], z0[1]: copies of the first key frame
                    default = Read("z0", KEY_OFFSET, stride=RATE)
                block[f"z{d}"] = Read(previous, offset, default, stride=RATE, wrap=True)
            x = f"x{i}"
            tensors[x] = hr_spec
            steps.append(
                Step(
                    f"data_{i}",
                    {"y": Read("lr"), **block},
                    {f"x{d}": x for d in range(RATE)},
                    write_at={f"x{d}": At(RATE, d - KEY_OFFSET, wrap=True) for d in range(RATE)},
                )
            )
            previous = "hr" if i == self.n_iter else f"z{i}"
            vsr_tensors, vsr_steps = self.vsr.plan_steps(x, previous, source_scale=4, rate=RATE, tag=f"_{i}")
            tensors.update(vsr_tensors)
            steps += vsr_steps
        return Plan(steps=steps, tensors=tensors, output="hr")

    # ------------------------------------------------------------------ checkpoints
    checkpoint_layout = "mmcv"

    def release_files(self, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict[str, Any]]:
        """The two released files: the mmcv DAVSR file (with the trainer's ``step_counter``) and
        the Super SloMo file (``state_dictFC``, ``state_dictAT``), of ``state`` (default: this
        network's own)."""
        source = self.state_dict() if state is None else state
        generator = {k: v.detach().cpu().clone() for k, v in source.items() if k.startswith("generator.")}
        slomo = {k[len("slomo.") :]: v.detach().cpu() for k, v in source.items() if k.startswith("slomo.")}
        return {
            "davsr": {"state_dict": {**generator, "step_counter": torch.zeros(1)}},
            "superslomo": {
                "state_dictFC": {k[len("flow.") :]: v.clone() for k, v in slomo.items() if k.startswith("flow.")},
                "state_dictAT": {k[len("interp.") :]: v.clone() for k, v in slomo.items() if k.startswith("interp.")},
            },
        }

    def route_checkpoint(self, obj: Any, key: str | None) -> tuple[str, dict[str, torch.Tensor]]:
        """Which part a released file fills: ``("generator", ...)`` or ``("slomo", ...)``."""
        if key is not None:
            raise CheckpointError(f"DAVSR's files have no entries to choose from; drop the key {key!r}")
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"expected a dict, found {type(obj).__name__}")
        if "state_dictFC" in obj or "state_dictAT" in obj:
            missing = [k for k in ("state_dictFC", "state_dictAT") if k not in obj]
            if missing:
                raise CheckpointError(f"Super SloMo checkpoint lacks {missing}")
            state = {f"flow.{k}": v for k, v in _tensors(obj["state_dictFC"], "state_dictFC").items()}
            state.update({f"interp.{k}": v for k, v in _tensors(obj["state_dictAT"], "state_dictAT").items()})
            return "slomo", state
        if "state_dict" in obj:
            state, stray = {}, []
            for name, value in _tensors(obj["state_dict"], "state_dict").items():
                if name in self.TRAINER_KEYS:
                    continue
                if name.startswith("generator."):
                    state[name[len("generator.") :]] = value
                else:
                    stray.append(name)
            if stray:
                raise CheckpointError(f"DAVSR checkpoint has keys outside generator.*: {sorted(stray)[:12]}")
            return "generator", state
        raise CheckpointError(
            f"neither a DAVSR checkpoint (mmcv 'state_dict' with generator.* keys) nor a "
            f"Super SloMo one ('state_dictFC', 'state_dictAT'); it has {sorted(obj)[:12]}"
        )


def _tensors(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, without a leading ``module.`` (DataParallel)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what} is a {type(obj).__name__}, not a dict of tensors")
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{what}[{name!r}] is a {type(value).__name__}, not a tensor")
    return {strip_prefix(name, "module."): value for name, value in obj.items()}
