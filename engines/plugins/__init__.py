"""Registry of our TensorRT plugins: which custom ONNX nodes (domain ``vsr``) TensorRT can run.

Plugins: ``vsr::ImplicitWarp`` (:mod:`.implicit_warp`, an AOT Triton QDP; untested on a GPU). The mechanism:

* A plugin module in this package describes itself with a :class:`PluginSpec` and calls
  :func:`register` at import; the module is listed in :data:`MODULES` so that
  :func:`load_all` imports it.
* The static check (:mod:`export.trt_check`) accepts a ``vsr::Op`` node only if
  :func:`lookup` finds it, and ``vsr-build-engine`` calls :func:`load_all` before parsing, which
  runs every spec's ``load`` (e.g. importing a ``tensorrt.plugin`` definition with an
  ahead-of-time Triton kernel, or ``ctypes.CDLL(path, RTLD_GLOBAL)`` on a plugin library), so the
  plugin is in TensorRT's registry when the parser meets the node.
* TensorRT's ONNX parser finds a plugin for a node it has no importer for by the node's
  ``op_type`` (the plugin name), the string attribute ``plugin_version`` (default "1") and the
  namespace (the ``plugin_namespace`` attribute, or the node's domain from TensorRT 10.10 on);
  see notes/deploy.md section 2.3. A spec records those so export and registration agree.

``vsr::ImplicitWarp`` (IART) is exported as a custom node; :mod:`.implicit_warp` registers its plugin
(written against the documented ``tensorrt.plugin`` API, never run: prefer the decomposed export until
it has been tested on a GPU with TensorRT).

Nothing here imports TensorRT at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Plugin modules of this package that :func:`load_all` imports (each calls :func:`register`).
MODULES: tuple[str, ...] = ("implicit_warp",)


@dataclass(frozen=True)
class PluginSpec:
    """A custom ONNX op that one of our TensorRT plugins implements."""

    domain: str  # ONNX domain of the node, "vsr"
    op_type: str  # ONNX op type = TensorRT plugin name
    version: str  # plugin_version
    namespace: str  # plugin namespace
    load: Callable[[], None]  # puts the plugin into TensorRT's registry (imports tensorrt lazily)
    description: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}::{self.op_type} v{self.version}"


_REGISTRY: dict[tuple[str, str], PluginSpec] = {}


def register(spec: PluginSpec) -> None:
    """Add a plugin to the registry (called by plugin modules at import)."""
    _REGISTRY[(spec.domain, spec.op_type)] = spec


def lookup(domain: str, op_type: str) -> PluginSpec | None:
    """The plugin for a custom node, or None if we have none."""
    _import_modules()
    return _REGISTRY.get((domain, op_type))


def registered() -> list[PluginSpec]:
    _import_modules()
    return list(_REGISTRY.values())


def load_all() -> list[PluginSpec]:
    """Register every plugin with TensorRT (needs TensorRT); returns what was loaded."""
    specs = registered()
    for spec in specs:
        spec.load()
    return specs


def _import_modules() -> None:
    import importlib

    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
