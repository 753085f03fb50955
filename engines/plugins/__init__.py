"""Our TensorRT plugins: which custom ONNX nodes (domain ``vsr``) TensorRT can build, from which release.

Plugins: ``vsr::ImplicitWarp`` (:mod:`.implicit_warp`, an ahead-of-time Triton plugin; never run on a
GPU here). The mechanism:

* A plugin module of this package describes itself with a :class:`PluginSpec` and calls
  :func:`register` at import; :data:`MODULES` lists the modules :func:`lookup` imports.
* The static check (:mod:`export.trt_check`) judges a ``vsr::Op`` node by its spec's ``check_node``
  (attributes, dtypes, the TensorRT release it needs).
* ``vsr-build-engine`` reads which custom ops the package's graphs contain (:func:`custom_ops`) and
  calls :func:`load_for` with them only, so a package without custom nodes never imports
  ``tensorrt.plugin`` or Triton, and one whose plugin cannot load fails with the reason (the
  TensorRT release or the library that is missing) instead of taking other models down.
* Engines run without our plugins: an ahead-of-time plugin's kernel is part of the engine. Its
  identity (:func:`fingerprint`) is part of the engine cache key, so a kernel change rebuilds.

TensorRT's ONNX parser finds a plugin for a node it has no importer for by the node's ``op_type``
(the plugin name), the ``plugin_version`` attribute (default "1") and the ``plugin_namespace``
attribute (the node's domain only from TensorRT 10.10 on); the exported node carries all three.

Nothing here imports TensorRT or Triton at import time.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from export.trt_check import Finding, NodeView
from vsr_models.errors import VSRError

#: Plugin modules of this package that :func:`lookup` imports (each calls :func:`register`).
MODULES: tuple[str, ...] = ("implicit_warp",)


class PluginUnavailable(VSRError, RuntimeError):
    """A graph has a custom node whose TensorRT plugin cannot be registered here; the message says why."""


class UnknownCustomOp(VSRError, ValueError):
    """A graph has a custom node no plugin of ours implements."""


@dataclass(frozen=True)
class PluginSpec:
    """A custom ONNX op that one of our TensorRT plugins implements.

    Attributes:
        domain, op_type: the ONNX node (``op_type`` is the TensorRT plugin name).
        version, namespace: the plugin's version and namespace in TensorRT's registry.
        min_tensorrt: the oldest TensorRT release the plugin can be built with.
        unavailable: ``(tensorrt module) -> why the plugin cannot be registered there, or None``.
        load: ``(tensorrt module) -> None``, puts the plugin into TensorRT's registry (idempotent).
        fingerprint: the identity of what the plugin bakes into engines (its kernel).
        check_node: the static check of a node (problems and the releases it needs).
    """

    domain: str
    op_type: str
    version: str
    namespace: str
    min_tensorrt: tuple[int, int]
    unavailable: Callable[[Any], str | None]
    load: Callable[[Any], None]
    fingerprint: Callable[[], str]
    check_node: Callable[[NodeView], list[Finding]]
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


def _import_modules() -> None:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")


_VERSION = re.compile(r"(\d+)\.(\d+)")


def tensorrt_version(text: str) -> tuple[int, int]:
    """``"10.13.0.35"`` -> (10, 13)."""
    match = _VERSION.match(text)
    if match is None:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return int(match.group(1)), int(match.group(2))


def custom_ops(graphs: Iterable[str | Path]) -> set[tuple[str, str]]:
    """The (domain, op_type) of every node outside the default ONNX domain in ``graphs`` (subgraphs too)."""
    found: set[tuple[str, str]] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                found.add((node.domain, node.op_type))
            for attr in node.attribute:
                for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    walk(sub)

    for path in graphs:
        walk(onnx.load(str(path), load_external_data=False).graph)
    return found


def required(ops: Iterable[tuple[str, str]]) -> list[PluginSpec]:
    """The plugins of ``ops`` (from :func:`custom_ops`), in a stable order; :class:`UnknownCustomOp`
    for a custom op we have no plugin for."""
    specs = []
    for domain, op_type in sorted(set(ops)):
        spec = lookup(domain, op_type)
        if spec is None:
            known = ", ".join(str(s) for s in registered()) or "none"
            raise UnknownCustomOp(
                f"the graph has a {domain}::{op_type} node, and no TensorRT plugin of ours implements it "
                f"(ours: {known}); export the package with standard ops instead"
            )
        specs.append(spec)
    return specs


def load_for(ops: Iterable[tuple[str, str]], trt: Any) -> list[PluginSpec]:
    """Register the plugins of ``ops`` (only those) with TensorRT module ``trt``, before parsing.

    Raises :class:`PluginUnavailable` naming the node and what is missing (a TensorRT release,
    ``tensorrt.plugin``, Triton) when a plugin cannot be registered here.
    """
    specs = required(ops)
    for spec in specs:
        reason = spec.unavailable(trt)
        if reason is not None:
            raise PluginUnavailable(
                f"the graph has a {spec.domain}::{spec.op_type} node, and its TensorRT plugin cannot be registered "
                f"here: {reason}. Graphs without that node are not affected ({spec.description})"
            )
        spec.load(trt)
    return specs


def fingerprint(specs: Iterable[PluginSpec]) -> str:
    """What the engines of a package depend on beyond its graphs: the kernels of its plugins
    (empty for a package without custom nodes)."""
    return ";".join(f"{spec}={spec.fingerprint()}" for spec in specs)
