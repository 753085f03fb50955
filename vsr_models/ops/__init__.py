"""Custom operations: PyTorch references, ONNX forms (custom node or standard-op decomposition).

* :mod:`.implicit_warp`: IART's attention resampling (``vsr::ImplicitWarp``).
"""
from .implicit_warp import (ImplicitWarp, get_implicit_warp_export, implicit_warp, implicit_warp_op,
                            set_implicit_warp_export)

__all__ = ["ImplicitWarp", "get_implicit_warp_export", "implicit_warp", "implicit_warp_op",
           "set_implicit_warp_export"]
