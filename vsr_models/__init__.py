"""PyTorch networks for video super-resolution, with stages and plans for deployment.

>>> from vsr_models import create_model, load_checkpoint
>>> model = create_model("basicvsr")
>>> load_checkpoint(model, "BasicVSR_REDS4.pth")
>>> hr = model(lr)   # (N, T, 3, h, w) in [0, 1] -> (N, T, 3, 4h, 4w)
"""
from .base import VSRNetwork
from .checkpoint import CheckpointError, load_checkpoint
from .plan import Plan, Read, SizeConstraints, Stage, Step, TensorSpec
from .zoo import ARCHITECTURES, DEFAULT_MODEL, WEIGHTS, Weights, create_model, pretrained

__all__ = [
    "ARCHITECTURES", "DEFAULT_MODEL", "WEIGHTS", "CheckpointError", "Plan", "Read", "SizeConstraints",
    "Stage", "Step", "TensorSpec", "VSRNetwork", "Weights", "create_model", "load_checkpoint", "pretrained",
]
