"""PyTorch networks for video super-resolution, with stages and plans for deployment.

>>> from vsr_models import create_model, load_checkpoint
>>> model = create_model("basicvsr")
>>> load_checkpoint(model, "BasicVSR_REDS4.pth")
>>> hr = model(lr)   # (N, T, 3, h, w) in [0, 1] -> (N, T, 3, 4h, 4w)

The names below are loaded on first use (PEP 562), so that the plain-Python modules of this
package (:mod:`.plan`, :mod:`.errors`) can be imported without importing PyTorch: the runtime
reads a package's plan that way.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VSRNetwork": "base",
    "Stage": "base",
    "CheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "VSRError": "errors",
    "NotInstalled": "errors",
    "At": "plan",
    "Plan": "plan",
    "Read": "plan",
    "SizeConstraints": "plan",
    "Step": "plan",
    "TensorSpec": "plan",
    "Metric": "registry",
    "NetworkEntry": "registry",
    "QuickCheck": "registry",
    "UnknownModel": "registry",
    "Weights": "registry",
    "all_weights": "registry",
    "create_model": "registry",
    "get_weights": "registry",
    "network": "registry",
    "networks": "registry",
    "pretrained": "registry",
    "register_network": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
