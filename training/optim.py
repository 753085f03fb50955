"""Optimiser, learning-rate schedule, freezing rules and the EMA of the weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .recipe import FreezeRule, TrainRecipe


def _matches(name: str, rule: FreezeRule) -> bool:
    hit = any(m in name for m in rule.modules)
    return hit != rule.invert


def never_trained(name: str, rules: list[FreezeRule]) -> bool:
    """True for parameters a rule freezes for the whole run (``iters: null``)."""
    return any(rule.iters is None and _matches(name, rule) for rule in rules)


def trainable(model: nn.Module, rules: list[FreezeRule]) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if not never_trained(n, rules)]


def make_optimizer(model: nn.Module, train: TrainRecipe) -> torch.optim.Optimizer:
    """Adam or AdamW with one parameter group per learning-rate multiplier (``lr_mul``).

    A parameter takes the multiplier of the first ``lr_mul`` key contained in its name (as
    mmcv's ``paramwise_cfg.custom_keys`` and BasicSR's ``flow_lr_mul`` for ``spynet``).
    """
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in trainable(model, train.freeze):
        mul = next((m for key, m in train.lr_mul.items() if key in name), 1.0)
        groups.setdefault(mul, []).append(param)
    params = [{"params": p, "lr": train.lr * mul, "initial_lr": train.lr * mul} for mul, p in sorted(groups.items())]
    cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay)


def cosine_restart_factor(step: int, train: TrainRecipe, base: float) -> float:
    """Learning rate at scheduler step ``step`` (0 for the first iteration) of a group whose base
    rate is ``base``: within each period, cosine from ``base * weight`` down to ``eta_min``
    (a period's last step belongs to it, as in BasicSR's ``CosineAnnealingRestartLR``)."""
    start = 0
    for period, weight in zip(train.periods or [train.iters], train.restart_weights):
        if step <= start + period:
            progress = (step - start) / period
            return train.eta_min + weight * 0.5 * (base - train.eta_min) * (1 + math.cos(math.pi * progress))
        start += period
    return train.eta_min


def set_learning_rates(optimizer: torch.optim.Optimizer, iteration: int, train: TrainRecipe) -> float:
    """Rates for 1-based ``iteration`` (the first iteration runs at the base rate, as BasicSR's
    loop steps the scheduler from the second on); returns the main group's rate."""
    for group in optimizer.param_groups:
        group["lr"] = cosine_restart_factor(iteration - 1, train, group["initial_lr"])
    return cosine_restart_factor(iteration - 1, train, train.lr)


def apply_freezing(model: nn.Module, iteration: int, rules: list[FreezeRule]) -> None:
    """``requires_grad`` for 1-based ``iteration``: frozen while ``iteration <= rule.iters``.

    Computed from the iteration alone, so a resumed run freezes exactly as the original did.
    """
    for name, param in model.named_parameters():
        frozen = any(_matches(name, r) and (r.iters is None or iteration <= r.iters) for r in rules)
        param.requires_grad_(not frozen)


class EMA:
    """Exponential moving average of the parameters (BasicSR's ``model_ema``): after each
    optimiser step ``ema = decay * ema + (1 - decay) * weights``; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, p in self.model.named_parameters():
            p.mul_(self.decay).add_(params[name].detach(), alpha=1 - self.decay)
        buffers = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(buffers[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
