"""What every network of the zoo offers the tools: stages, a plan, a whole-clip forward."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from .plan import Plan, SizeConstraints, Stage


class VSRNetwork(nn.Module, ABC):
    """Base class of the zoo's networks.

    Subclasses set ``name``, ``scale`` and ``constraints`` and implement :meth:`forward`
    (whole clip, equal to the official implementation), :meth:`stages` and :meth:`plan`.
    """

    name: str = ""
    scale: int = 4
    constraints: SizeConstraints = SizeConstraints()
    #: A clip-level network (solved as a whole over a clip, e.g. DAVSR) sets the clip length it
    #: was made for; the runtime then cuts videos into non-overlapping clips of this many frames.
    #: ``None``: a recurrent network, run in overlapping windows.
    clip_frames: int | None = None

    @abstractmethod
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """(N, T, 3, h, w) in [0, 1] -> (N, T_out, 3, h * scale, w * scale)."""

    @abstractmethod
    def stages(self) -> dict[str, Stage]:
        """The per-step modules the plan drives, keyed by stage name."""

    @abstractmethod
    def plan(self) -> Plan:
        """How the stages are driven across a clip."""

    def check_input(self, lr: torch.Tensor) -> None:
        if lr.ndim != 5 or lr.shape[2] != 3:
            raise ValueError(f"{self.name} takes (N, T, 3, h, w) RGB clips, got shape {tuple(lr.shape)}")
        self.constraints.check(lr.shape[3], lr.shape[4])
