"""FP16 stage graphs with an explicit keep-FP32 policy.

TensorRT 11 has no weak typing: the precision of every layer is the dtype written in the ONNX
graph (networks are always strongly typed; ``BuilderFlag.FP16`` is gone). So the FP16 graphs of a
package are ours to write. The conversion itself is the converter that ships with ONNX Runtime,
``onnxruntime.transformers.float16.convert_float_to_float16``, ONNX Runtime's modified copy of
onnxconverter-common's ``float16`` (no extra dependency, and, unlike onnxconverter-common 1.16 as
tried here, it retargets ``Cast(to=FLOAT)``, keeps Resize scales FP32, and keeps FP32 graph
outputs FP32 when a kept-FP32 node writes them or another node also reads them), called with
``keep_io_types=True`` and our ``node_block_list``. This module decides
*which nodes stay FP32, and why* (:func:`fp32_nodes`), repairs what the converter still gets
wrong for FP32 islands (FP32 -> FP16 -> FP32 cast pairs between two FP32 nodes, FP16 copies of
constants read by FP32 nodes, duplicate Casts, node order), and checks the result
(:func:`check_fp16_graph`).

The policy; the first rule that matches a node names its reason:

1. **Coordinate math.** Every node whose float output flows, without passing through a learned
   layer (Conv, ConvTranspose, MatMul, Gemm), into a *coordinate sink*: the ``grid`` of
   GridSample, the ``offset`` of DeformConv, the argument of Sin/Cos (positional encodings), a
   Cast from float to an integer type (an index), the FP32 inputs of a custom op
   (:data:`CUSTOM_OP_FP32_INPUTS`; all float inputs of a custom op not listed there), the scores
   a hard selection picks an index from (ArgMax, ArgMin, TopK: FTVSR's top-1 attention), or a
   graph output the stage marks FP32 (``Stage.fp32``, e.g. flows). That covers flow
   accumulation and upsampling, ``grid = base + flow``, the Range/meshgrid base grid, the
   normalisation to [-1, 1], and DCN offset heads after their last convolution. In FP16 a
   normalised grid has 0.12 px steps at width 480 and 0.47 px at 1920.
   A learned layer that produces a coordinate (SpyNet's residual flow convolutions) runs in FP16
   and its output is cast to FP32 before the accumulation.
2. **Custom-domain ops** (``vsr::ImplicitWarp``): their dtypes are set by their plugin; FP32
   until a plugin declares FP16 inputs.
3. **Ops kept FP32 as a whole** (:data:`FP32_OPS`): GridSample (TensorRT wants input and grid in
   one dtype and the grid is FP32), DeformConv (the plugin takes all inputs in one dtype and the
   offsets are FP32), Sin/Cos (arguments reach hundreds of radians), and normalisations and
   reductions (:data:`REDUCTION_OPS`).
4. **The converter's own block list** (``float16.DEFAULT_OP_BLOCK_LIST``: Range, Min, Max,
   Upsample, TopK, ...): ops without FP16 kernels in ONNX Runtime.

Graph inputs and outputs stay FP32 (states too), with casts at the boundaries inside the graph,
so the executor and every backend exchange float32. An FP32 input that only feeds FP16 compute is
cast once; one that feeds coordinate math is never rounded (checked by :func:`check_fp16_graph`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from vsr_models.errors import VSRError

from .format import Package
from .package import add_precision

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
_INT_TYPES = {
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
    TensorProto.UINT64,
    TensorProto.BOOL,
}

#: Layers with learned weights: coordinate tracing stops at their output (they run in FP16).
LEARNED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})

#: Where coordinates are consumed: op type -> {input index: what that input is}.
COORDINATE_SINKS: dict[str, dict[int, str]] = {
    "GridSample": {1: "a GridSample grid"},
    "DeformConv": {1: "DeformConv offsets"},
    "Sin": {0: "a positional-encoding argument"},
    "Cos": {0: "a positional-encoding argument"},
    # A hard selection turns score noise into a different pick: FTVSR (random weights, 64x64) with
    # its top-1 attention scores in FP16 is 43 dB from FP32 on its worst frame, 64.6 dB with them
    # (and its keyframe memory) in FP32.
    "ArgMax": {0: "the scores of a hard selection"},
    "ArgMin": {0: "the scores of a hard selection"},
    "TopK": {0: "the scores of a hard selection"},
}

#: Custom ops: input index -> name of the inputs that are FP32 by the op's contract.
CUSTOM_OP_FP32_INPUTS: dict[tuple[str, str], dict[int, str]] = {
    # vsr_models/ops/implicit_warp.py (inputs source, target, flow, q_weight, q_bias, k_weight,
    # k_bias, v_weight, v_bias, key_pe, pe_divisors): flow, key_pe and pe_divisors are FP32 always.
    ("vsr", "ImplicitWarp"): {2: "flow", 9: "key_pe", 10: "pe_divisors"},
}

#: Normalisations and reductions kept FP32 (they accumulate over many values).
REDUCTION_OPS = frozenset(
    {
        "LayerNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
    }
)

#: Ops kept FP32 as a whole, with the reason.
FP32_OPS: dict[str, str] = {
    "GridSample": "GridSample: input and grid must share one dtype in TensorRT (strongly typed) and "
    "the grid is FP32; the sampled features are cast around it",
    "DeformConv": "DeformConv: its offsets are FP32 and TensorRT's ModulatedDeformConv2d plugin needs all "
    "inputs in one dtype",
    "Sin": "positional encoding: the argument reaches hundreds of radians (FP16 steps of 0.125 rad at 256)",
    "Cos": "positional encoding: the argument reaches hundreds of radians (FP16 steps of 0.125 rad at 256)",
    **{
        op: f"{op}: a normalisation or reduction over many values, kept FP32 (measured in the README)"
        for op in REDUCTION_OPS
    },
}


@dataclass(frozen=True)
class Blocked:
    """A node the FP16 policy keeps in FP32, and why."""

    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason}"


class FP16Error(VSRError, ValueError):
    """An FP16 graph that breaks the policy (an FP32 node fed a rounded coordinate, wrong I/O dtypes)."""


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor name (inputs, outputs, value_info, initializers, Constants)."""
    types = {i.name: i.data_type for i in model.graph.initializer}
    for vi in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None


def fp32_nodes(model: onnx.ModelProto, fp32_names: Iterable[str] = ()) -> list[Blocked]:
    """The nodes of an FP32 graph that the FP16 policy keeps in FP32, each with its reason.

    Args:
        model: an FP32 stage graph (shape-inferred inside; not modified).
        fp32_names: graph inputs/outputs the stage marks FP32 (``Stage.fp32``: flows, coordinates).

    Returns:
        One :class:`Blocked` per node, in graph order. Nodes without float inputs or outputs
        (shape arithmetic) are not listed: the converter leaves them alone.
    """
    model = onnx.shape_inference.infer_shapes(model)
    types = _elem_types(model)
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    fp32_names = set(fp32_names)

    # Rule 1: backward closure from the coordinate sinks, stopping at learned layers.
    coord: dict[str, str] = {}  # node name -> what coordinate it computes
    stack: list[tuple[str, str]] = []
    for out in model.graph.output:
        if out.name in fp32_names:
            stack.append((out.name, f"the FP32 output {out.name!r}"))
    for node in nodes:
        if _is_custom(node):
            op = f"{node.domain}::{node.op_type}"
            declared = CUSTOM_OP_FP32_INPUTS.get((node.domain, node.op_type))
            sinks = (
                {i: f"the FP32 input {name!r} of {op}" for i, name in declared.items()}
                if declared is not None
                else dict.fromkeys(range(len(node.input)), f"an input of {op} (no dtype contract declared)")
            )
        else:
            sinks = COORDINATE_SINKS.get(node.op_type, {})
        if _cast_to(node) in _INT_TYPES:
            sinks = {0: "an index (float cast to integer)"}
        for index, what in sinks.items():
            if index < len(node.input) and node.input[index]:
                stack.append((node.input[index], f"{what} ({node.name})"))
    while stack:
        tensor, what = stack.pop()
        node = producer.get(tensor)
        if node is None or node.name in coord or types.get(tensor) != FLOAT:
            continue
        if node.op_type in LEARNED_OPS and not _is_custom(node):
            continue
        coord[node.name] = what
        stack.extend((t, what) for t in node.input if t)

    default_block = _converter_default_block_list()
    blocked = []
    for node in nodes:
        floats = any(types.get(t) == FLOAT for t in [*node.input, *node.output] if t)
        if node.op_type == "Constant" or not floats:
            continue
        if node.name in coord:
            reason = f"coordinate math: computes {coord[node.name]}"
        elif _is_custom(node):
            reason = (
                f"custom op {node.domain}::{node.op_type}: its dtypes are set by its plugin; FP32 until "
                "the plugin declares FP16 inputs"
            )
        elif node.op_type in FP32_OPS:
            reason = FP32_OPS[node.op_type]
        elif node.op_type in default_block:
            reason = f"{node.op_type}: in the converter's default block list (no FP16 kernel in ONNX Runtime)"
        else:
            continue
        blocked.append(Blocked(node.name, node.op_type, reason))
    return blocked


def _is_custom(node: onnx.NodeProto) -> bool:
    return node.domain not in ("", "ai.onnx")


def _converter_default_block_list() -> frozenset[str]:
    from onnxruntime.transformers import float16

    return frozenset(float16.DEFAULT_OP_BLOCK_LIST)


def convert_to_fp16(model: onnx.ModelProto, fp32_names: Iterable[str] = ()) -> onnx.ModelProto:
    """The FP16 version of an FP32 stage graph under the policy of :func:`fp32_nodes`.

    Graph inputs and outputs stay float32; the result passes :func:`check_fp16_graph`.
    """
    from onnxruntime.transformers import float16

    fp32_names = list(fp32_names)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"node_{i}_{node.op_type}"
    blocked = fp32_nodes(model, fp32_names)
    fp16 = float16.convert_float_to_float16(
        onnx.ModelProto.FromString(model.SerializeToString()),
        keep_io_types=True,
        op_block_list=[],
        node_block_list=[b.node for b in blocked],
    )
    del fp16.graph.value_info[:]  # the converter leaves duplicate, stale entries; types are re-inferred
    _drop_duplicate_casts(fp16.graph)
    _restore_fp32_initializers(fp16, model)
    _sort_nodes(fp16.graph)
    _remove_round_trips(fp16)
    check_fp16_graph(fp16, model, blocked)
    return fp16


def _drop_duplicate_casts(graph: onnx.GraphProto) -> None:
    """The converter adds one ``<x>_cast_to_fp32`` Cast per FP32 reader of ``x``, all with the same
    output name; keep one (they are identical)."""
    seen: dict[str, bytes] = {}
    for node in list(graph.node):
        if node.op_type != "Cast":
            continue
        key = node.output[0]
        body = onnx.NodeProto(
            op_type=node.op_type, input=node.input, output=node.output, attribute=node.attribute
        ).SerializeToString()
        if key in seen:
            if seen[key] != body:
                raise FP16Error(f"the converter wrote two different Casts to {key!r}")
            graph.node.remove(node)
        else:
            seen[key] = body


def _restore_fp32_initializers(fp16: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """FP32 nodes read constants at full precision.

    The converter turns a constant (initializer or Constant node) read by FP16 nodes into FP16
    and casts it back for its FP32 readers; those read an FP32 copy of the original instead.
    """
    graph = fp16.graph
    originals = {i.name: i for i in original.graph.initializer if i.data_type == FLOAT}
    for node in original.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and value.data_type == FLOAT:
                originals[node.output[0]] = value
    halves = {i.name for i in graph.initializer if i.data_type == FLOAT16}
    for node in graph.node:
        if node.op_type == "Constant" and any(a.name == "value" and a.t.data_type == FLOAT16 for a in node.attribute):
            halves.add(node.output[0])
    rename: dict[str, str] = {}
    for node in list(graph.node):
        source = node.input[0] if _cast_to(node) == FLOAT else None
        if source in halves and source in originals:
            copy = onnx.TensorProto()
            copy.CopyFrom(originals[source])
            copy.name = f"{source}_fp32"
            if copy.name not in {i.name for i in graph.initializer}:
                graph.initializer.append(copy)
            rename[node.output[0]] = copy.name
            graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def _remove_round_trips(fp16: onnx.ModelProto) -> None:
    """Let FP32 values reach FP32 nodes unrounded: bypass every Cast(FP16) -> Cast(FP32) pair.

    The converter casts the float inputs of a blocked node to FP32 and its float outputs to FP16,
    and the FP32 graph inputs to FP16 and FP16 results to FP32 graph outputs, so an edge from a
    graph input or a blocked node to a blocked node or a graph output would pass through FP16.
    Readers of such a pair read the FP32 value instead; Casts left without readers are removed.
    Needs the nodes in topological order (for type inference).
    """
    graph = fp16.graph
    producer = {out: n for n in graph.node for out in n.output}
    types = _elem_types(onnx.shape_inference.infer_shapes(fp16))
    outputs = {o.name for o in graph.output}
    inputs = {i.name for i in graph.input}
    rename: dict[str, str] = {}
    for node in list(graph.node):
        up = producer.get(node.input[0]) if _cast_to(node) == FLOAT else None
        if up is None or _cast_to(up) != FLOAT16 or types.get(up.input[0]) != FLOAT:
            continue
        source, target = up.input[0], node.output[0]
        if target not in outputs:
            rename[target] = source
        elif source in inputs or source in outputs:
            node.op_type, node.input[0] = "Identity", source  # a graph input passed through unchanged
            del node.attribute[:]
        else:
            graph.node.remove(node)  # the FP32 producer writes the graph output itself
            writer = producer[source]
            writer.output[list(writer.output).index(source)] = target
            rename[source] = target
    for node in graph.node:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    while True:
        used = {t for n in graph.node for t in n.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Topological order (the converter appends its Casts at the end), stable otherwise."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progress = [n for n in pending if all(t in ready for t in n.input)]
        if not progress:
            raise FP16Error(f"the FP16 graph has a cycle or a dangling input near {pending[0].name}")
        taken = {id(n) for n in progress}
        for node in progress:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if id(n) not in taken]
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def check_fp16_graph(fp16: onnx.ModelProto, fp32: onnx.ModelProto, blocked: list[Blocked]) -> None:
    """Raise :class:`FP16Error` unless ``fp16`` keeps the policy.

    Checks: the ONNX checker with strict type inference; graph inputs and outputs have the FP32
    graph's dtypes; every blocked node sees and produces no FP16 tensor; and no value reaches a
    blocked node through a round trip FP32 -> FP16 -> FP32 (a coordinate rounded on the way),
    nor as an FP16 copy of a constant that is FP32 in the original graph.
    """
    try:
        onnx.checker.check_model(fp16, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(fp16, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise FP16Error(f"the FP16 graph is not valid ONNX: {exc}") from exc
    for new, old in [*zip(fp16.graph.input, fp32.graph.input), *zip(fp16.graph.output, fp32.graph.output)]:
        if new.type.tensor_type.elem_type != old.type.tensor_type.elem_type:
            raise FP16Error(f"graph I/O {new.name!r} changed dtype; inputs and outputs must stay as exported")
    types = _elem_types(inferred)
    halves = {i.name for i in inferred.graph.initializer if i.data_type == FLOAT16}
    halves |= {
        n.output[0] for n in inferred.graph.node if n.op_type == "Constant" and types.get(n.output[0]) == FLOAT16
    }
    nodes = {n.name: n for n in inferred.graph.node}
    producer = {out: n for n in inferred.graph.node for out in n.output}
    for b in blocked:
        node = nodes.get(b.node)
        if node is None:
            raise FP16Error(f"blocked node {b.node} is missing from the FP16 graph")
        for tensor in [*node.input, *node.output]:
            if tensor and types.get(tensor) == FLOAT16:
                raise FP16Error(f"{b.node} ({b.op_type}) must run in FP32 but touches FP16 tensor {tensor!r}")
        for tensor in node.input:
            up = producer.get(tensor)
            if up is None or _cast_to(up) != FLOAT:
                continue
            down = producer.get(up.input[0])
            if down is not None and _cast_to(down) == FLOAT16 and types.get(down.input[0]) == FLOAT:
                raise FP16Error(f"{b.node} ({b.op_type}) reads {down.input[0]!r} rounded to FP16 and back")
            if up.input[0] in halves:
                raise FP16Error(f"{b.node} ({b.op_type}) reads the constant {up.input[0]!r} rounded to FP16")


def add_fp16(root: str | Path) -> Package:
    """Convert every stage of the package at ``root`` to FP16 and add them as ``fp16/``.

    Each stage's FP32-marked inputs and outputs (``Stage.fp32`` in the manifest) seed the
    coordinate rule. The blocked nodes are recorded in the manifest
    (``precision_notes.fp16.fp32_nodes``: stage -> ["node (op): reason", ...]).
    """
    package = Package.open(root)
    graphs, notes = {}, {}
    for name in package.stage_names():
        model = onnx.load(str(package.stage_file(name, "fp32")))
        fp32_io = package.manifest["stages"][name].get("fp32", [])
        graphs[name] = convert_to_fp16(model, fp32_io)
        notes[name] = [str(b) for b in fp32_nodes(model, fp32_io)]
    return add_precision(
        package.root,
        "fp16",
        graphs,
        note={
            "converter": f"onnxruntime {_converter_version()} transformers.float16.convert_float_to_float16"
            "(keep_io_types=True, node_block_list=policy)",
            "policy": "export.fp16.fp32_nodes",
            "fp32_nodes": notes,
        },
    )


def _converter_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return "unknown"
