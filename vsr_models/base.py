"""What every network of the zoo offers the tools: stages, a plan, a whole-clip forward."""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .plan import Plan, SizeConstraints


@dataclass
class Stage:
    """A stage: a module and the names of its inputs and outputs, in call order.

    ``module(*inputs)`` returns one tensor or a tuple in ``outputs`` order. ``fp32`` lists the
    inputs and outputs that must stay FP32 in an FP16 graph (flows, coordinates).
    """

    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    fp32: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        shared = set(self.inputs) & set(self.outputs)
        if shared:
            raise ValueError(f"stage input and output names must differ (ONNX graphs need it): {sorted(shared)}")

    def __call__(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.module(*(tensors[name] for name in self.inputs))
        if isinstance(out, torch.Tensor):
            out = (out,)
        return dict(zip(self.outputs, out))


class VSRNetwork(nn.Module, ABC):
    """Base class of the zoo's networks.

    Subclasses set ``name``, ``scale`` and ``constraints``, register themselves with
    :func:`vsr_models.registry.register_network`, and implement :meth:`forward` (whole clip, equal
    to the official implementation), :meth:`stages` and :meth:`plan`.
    """

    name: str = ""
    scale: int = 4
    constraints: SizeConstraints = SizeConstraints()
    #: A clip-level network (solved as a whole over a clip, e.g. DAVSR) sets the clip length it
    #: was made for; the runtime then cuts videos into non-overlapping clips of this many frames.
    #: ``None``: a recurrent network, run in overlapping windows.
    clip_frames: int | None = None
    #: An arbitrary-scale network (SAVSR) sets the (lowest, highest) factor it takes on each axis;
    #: its ``forward`` then takes ``scale=(s_h, s_w)``, ``forward_clip(lr, scale)`` upscales every
    #: frame of a clip (the reference its plan is held to), and ``scale`` is only the default factor.
    #: ``None``: the network upscales by ``scale`` and nothing else.
    scale_range: tuple[float, float] | None = None
    #: How the official release stores the weights: ``"basicsr"`` (``{"params": state}``),
    #: ``"mmcv"`` (``{"state_dict": {"generator." + key: ...}}``) or ``"plain"`` (the state dict
    #: itself); see :meth:`release_files`. ``vsr-train`` writes its weights in this layout (EMA
    #: weights beside them as ``params_ema``, or in a file of their own for mmcv), a plain one,
    #: which has no room for its ``meta`` or EMA weights, as BasicSR's.
    checkpoint_layout: str = "basicsr"
    #: The constructor arguments the network was built with (those given explicitly, as JSON
    #: values), recorded by every subclass's ``__init__``: a package's manifest keeps them so
    #: that the same configuration can be built again (``create_model(name, **init_args)``).
    init_args: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: VSRNetwork, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self) is cls:
                bound = signature.bind(self, *args, **kw)
                self.init_args = {k: _json_value(v) for k, v in list(bound.arguments.items())[1:]}

        cls.__init__ = recording_init  # type: ignore[method-assign]

    @abstractmethod
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """(N, T, 3, h, w) in [0, 1] -> (N, T_out, 3, h * scale, w * scale)."""

    @abstractmethod
    def stages(self) -> dict[str, Stage]:
        """The per-step modules the plan drives, keyed by stage name."""

    @abstractmethod
    def plan(self) -> Plan:
        """How the stages are driven across a clip."""

    def step_workspace(self) -> str | None:
        """Working memory of one step beyond the tensors of the plan, where it grows faster than the
        frame (FTVSR's attention): bytes as an expression of the LR tile's ``h`` and ``w`` (whole
        numbers, ``+ - * //``), written into a package's manifest so that the runtime picks tiles that
        fit a memory budget. ``None``: nothing worth a budget."""
        return None

    def release_files(self, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, dict[str, Any]]:
        """Weights (``state``, by default this network's own) in the layout of its official release:
        one object to ``torch.save`` per released file, by a short name, the network's own file
        first. :func:`~vsr_models.checkpoint.load_checkpoint` reads each back; ``vsr-train`` writes
        the first at every save and the others (parts its recipe keeps frozen) once, as
        ``<name>.ckpt``. A network made of several released files overrides this."""
        source = self.state_dict() if state is None else state
        state = {k: v.detach().cpu().clone() for k, v in source.items()}
        if self.checkpoint_layout == "mmcv":
            return {self.name: {"state_dict": {f"generator.{k}": v for k, v in state.items()}}}
        if self.checkpoint_layout == "plain":
            return {self.name: state}
        return {self.name: {"params": state}}

    def share_layers(self, **parts: nn.Module) -> None:
        """Keep stage modules built from this network's own layers, for :meth:`part`.

        They are held in a plain dict, not as submodules, so the state dict keeps the official key
        names (each layer appears once, where the original has it) and ``.to()``/``.half()``
        still reach every parameter through the network itself.
        """
        self._parts = dict(parts)

    def part(self, name: str) -> nn.Module:
        """A stage module given to :meth:`share_layers`."""
        return self._parts[name]

    def check_input(self, lr: torch.Tensor) -> None:
        if lr.ndim != 5 or lr.shape[2] != 3:
            raise ValueError(f"{self.name} takes (N, T, 3, h, w) RGB clips, got shape {tuple(lr.shape)}")
        self.constraints.check(lr.shape[3], lr.shape[4])


def _json_value(value: Any) -> Any:
    """A constructor argument as JSON holds it (tuples as lists, paths as strings)."""
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
