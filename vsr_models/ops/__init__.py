"""Custom operations: PyTorch references and ONNX forms (a custom node, or standard ops).

* :mod:`.implicit_warp`: IART's attention resampling, ``vsr::ImplicitWarp``
  (reference: ``vsr_models.ops.implicit_warp.implicit_warp``).
"""

from .implicit_warp import ImplicitWarp, get_implicit_warp_export, implicit_warp_op, set_implicit_warp_export

__all__ = ["ImplicitWarp", "get_implicit_warp_export", "implicit_warp_op", "set_implicit_warp_export"]
