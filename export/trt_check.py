"""Static TensorRT check: would TensorRT's ONNX parser take every node of a graph, and from which release?

No TensorRT is needed: the check walks the graph (subgraphs of If/Loop/Scan included) and judges
each node by its element types (:data:`TYPES`) and by the rule of its op (:data:`RULES`). It is
conservative: an op it does not know, a custom op that is not one of the plugins it is given, or an
attribute value a rule does not know is a failure.

Every verdict also says which TensorRT release the node needs: :data:`BASELINE` (10.1, the oldest
release this project builds engines with, the first with ONNX ``DeformConv``) unless a rule or a
plugin asks for a later one (:class:`Needs`); a graph needs the latest of its nodes' releases.

Sources, cited by these short names in the rules:

* ``ops-10.1``: onnx-tensorrt ``docs/operators.md`` at the 10.1 GA release (which ops the parser
  imports, with which element types);
* ``importers-10.1``: onnx-tensorrt ``onnxOpImporters.cpp`` at 10.1 GA (what each importer asserts);
* ``changelog-X.Y``: the TensorRT ``CHANGELOG.md`` entry of release X.Y (parser changes);
* ``ops-10.15``: the operator table of TensorRT 10.15.

Where the sources are silent the check does not guess:

* INT64 passes where ``ops-10.1`` lists it (TensorRT 10 takes the exporter's INT64 shape math).
* Resize ``exclude_outside``/``cubic_coeff_a``, Scan, run-time GridSample grids and Range bounds are
  accepted as the sources describe them; none of it has been verified on a GPU here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import onnx
from onnx import TensorProto, helper, numpy_helper

from .format import Package

#: Default-domain opsets the parser reads (ops-10.1: 9 to 20; ops-10.15: 9 to 24).
OPSET_RANGE = (9, 20)

#: The oldest TensorRT release this project builds engines for (ONNX DeformConv, user-managed
#: execution-context memory with a size: both 10.1).
BASELINE = (10, 1)

#: TensorRT's names of ONNX element types. DOUBLE is cast down to FLOAT, UINT8 is taken only as a
#: network input or output, INT8/INT4/FP8 only through (de)quantization (ops-10.1).
_DTYPE_NAMES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.INT8: "INT8",
    TensorProto.DOUBLE: "DOUBLE",
    TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.INT4: "INT4",
}

FLOATS = frozenset({"FP32", "FP16", "BF16"})
NUMBERS = FLOATS | {"INT32", "INT64"}
ANY = NUMBERS | {"BOOL"}


def _ops(types: Iterable[str], names: str) -> dict[str, frozenset[str]]:
    return dict.fromkeys(names.split(), frozenset(types))


#: The ops TensorRT's ONNX parser imports, with the element types of their data tensor (ops-10.1).
TYPES: dict[str, frozenset[str]] = {
    **_ops(
        FLOATS,
        """Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos
        Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
        GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf
        LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool
        MeanVarianceNormalization ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
        RandomUniform RandomUniformLike Reciprocal Resize RNN Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax
        Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample""",
    ),
    **_ops(
        NUMBERS,
        """Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min Mod
        Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
        ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub Sum TopK""",
    ),
    **_ops(
        ANY,
        """Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop
        OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where""",
    ),
    **_ops({"FP32", "FP16"}, "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign"),
    **_ops({"BOOL"}, "And Not Or Xor"),
    **_ops(ANY | {"UINT8"}, "Cast CastLike"),
    **_ops({"INT8", "FP8", "INT4"}, "DequantizeLinear"),
    **_ops(NUMBERS | {"INT8"}, "Gelu"),
    **_ops(NUMBERS | {"FP8"}, "Mean"),
}


def _unsupported(names: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), "not supported by TensorRT's ONNX parser (ops-10.1)")


#: Ops the parser has no importer for (ops-10.1), with what later releases change where we know it.
UNSUPPORTED: dict[str, str] = {
    **_unsupported(
        """Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Compress ConcatFromSequence
        ConvInteger Det DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder MatMulInteger MaxRoiPool
        MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
        OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
        SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
        StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique""",
    ),
    "DFT": "no DFT importer through TensorRT 11.1; 11.2 adds a cuFFT plugin for it",
    "AffineGrid": "not supported (ops-10.1, ops-10.15): build the grid from Range and arithmetic",
    "Col2Im": "not supported (ops-10.1, ops-10.15)",
    "CenterCropPad": "not supported (ops-10.1, ops-10.15)",
    "STFT": "not supported at 10.1; ops-10.15 lists STFT (FP32 only)",
}


@dataclass(frozen=True, order=True)
class Needs:
    """A node needs TensorRT ``version`` or later, for the reason ``why``."""

    version: tuple[int, int]
    why: str

    def __str__(self) -> str:
        return f"TensorRT >= {version_text(self.version)}: {self.why}"


def version_text(version: tuple[int, int]) -> str:
    return ".".join(str(v) for v in version)


#: What a rule finds: a problem (text: the parser rejects the node) or a release the node needs.
Finding = str | Needs


@dataclass
class NodeView:
    """What a rule sees of a node: its attributes, and the dtype, rank and constness of its tensors."""

    node: onnx.NodeProto
    attrs: dict[str, Any]
    dtypes: dict[str, int]
    ranks: dict[str, int]
    dims: dict[str, list[int | None]]
    constants: dict[str, onnx.TensorProto]  # initializers and Constant outputs, by tensor name
    graph_io: set[str]

    def input(self, index: int) -> str:
        return self.node.input[index] if index < len(self.node.input) else ""

    def const(self, index: int) -> bool:
        return self.input(index) in self.constants

    def rank(self, index: int) -> int | None:
        return self.ranks.get(self.input(index))

    def value(self, index: int) -> Any:
        """The numpy value of a constant input."""
        return numpy_helper.to_array(self.constants[self.input(index)])


@dataclass(frozen=True)
class Rule:
    """The check of one op: ``check`` finds problems and needed releases; ``checks`` says what it
    looks at, ``source`` where that comes from."""

    check: Callable[[NodeView], list[Finding]]
    checks: str
    source: str


class PluginRules(Protocol):
    """What the check needs from a plugin of a custom op (see :mod:`engines.plugins`)."""

    def check_node(self, view: NodeView) -> list[Finding]: ...


#: ``(domain, op_type) -> the plugin's rules, or None``.
PluginLookup = Callable[[str, str], PluginRules | None]


def _one_of(name: str, allowed: Iterable[str], default: str) -> Callable[[NodeView], list[Finding]]:
    allowed = tuple(allowed)

    def rule(v: NodeView) -> list[Finding]:
        value = v.attrs.get(name, default)
        return [] if value in allowed else [f"{name}={value!r} is not supported (TensorRT takes {', '.join(allowed)})"]

    return rule


def _const_inputs(
    *indices: int, what: str, since: tuple[int, int] | None = None
) -> Callable[[NodeView], list[Finding]]:
    """Inputs that older importers need as initializers (``since``: the release that takes tensors)."""

    def rule(v: NodeView) -> list[Finding]:
        found: list[Finding] = []
        for i in indices:
            if v.input(i) and not v.const(i):
                text = f"input {i} ({v.input(i)!r}, {what}) is computed at run time"
                found.append(Needs(since, text) if since else f"{text}: it must be an initializer")
        return found

    return rule


def _pool(v: NodeView) -> list[Finding]:
    problems: list[Finding] = []
    if any(d != 1 for d in v.attrs.get("dilations", [])):
        problems.append(f"dilations={v.attrs['dilations']} (only ones)")
    if v.node.op_type != "LpPool" and v.rank(0) not in (None, 4, 5):
        problems.append(f"input rank {v.rank(0)}: 2D or 3D pooling only")
    if v.node.op_type == "MaxPool" and len(v.node.output) > 1 and v.node.output[1]:
        problems.append("the Indices output is not supported")
    return problems


def _grid_sample(v: NodeView) -> list[Finding]:
    problems: list[Finding] = []
    mode = v.attrs.get("mode", "bilinear")
    if mode in ("linear", "cubic"):
        problems.append(
            f"mode={mode!r} is the opset-20 name: TensorRT's parser does not know it and silently "
            "samples nearest; export at opset 19 ('bilinear'/'bicubic')"
        )
    elif mode not in ("bilinear", "nearest", "bicubic"):
        problems.append(f"mode={mode!r} is unknown to TensorRT (bilinear, nearest, bicubic)")
    problems += _one_of("padding_mode", ("zeros", "border", "reflection"), "zeros")(v)
    if v.attrs.get("align_corners", 0) not in (0, 1):
        problems.append(f"align_corners={v.attrs['align_corners']} (0 or 1)")
    if v.rank(0) not in (None, 4):
        problems.append(f"input rank {v.rank(0)}: 4D only before TensorRT 11.2")
    x, grid = v.dtypes.get(v.input(0)), v.dtypes.get(v.input(1))
    if x is not None and grid is not None and x != grid:
        problems.append(f"input is {_name(x)} and grid {_name(grid)}: TensorRT wants one dtype for both")
    return problems


def _deform_conv(v: NodeView) -> list[Finding]:
    found: list[Finding] = [Needs((10, 1), "ONNX DeformConv (the built-in ModulatedDeformConv2d plugin)")]
    if v.rank(0) not in (None, 3, 4):
        found.append(f"input rank {v.rank(0)}: 1D or 2D spatial dimensions only")
    pads = v.attrs.get("pads", [])
    half = len(pads) // 2
    if any(pads[i] != pads[i + half] for i in range(half)):
        found.append(f"pads={pads}: begin and end pads must be equal on each axis")
    floats = {v.dtypes.get(t) for t in v.node.input if t} - {None}
    if len(floats) > 1:
        found.append(
            f"inputs in {sorted(_name(t) for t in floats)}: "
            "the ModulatedDeformConv2d plugin needs all inputs in one dtype"
        )
    return found


def _resize(v: NodeView) -> list[Finding]:
    problems = _one_of(
        "coordinate_transformation_mode",
        ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"),
        "half_pixel",
    )(v)
    mode = v.attrs.get("mode", "nearest")
    if mode == "cubic":
        problems.append(
            "mode='cubic' is implemented by the importer but not listed as supported: verify it numerically first"
        )
    elif mode not in ("nearest", "linear"):
        problems.append(f"mode={mode!r} (nearest, linear)")
    if mode == "nearest":
        problems += _one_of(
            "nearest_mode", ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"), "round_prefer_floor"
        )(v)
    problems += _one_of("keep_aspect_ratio_policy", ("stretch",), "stretch")(v)
    if v.attrs.get("antialias", 0):
        problems.append("antialias=1 is not supported")
    axes = v.attrs.get("axes")
    rank = v.rank(0)
    if axes is not None and rank is not None:
        axes = [a % rank for a in axes]
        if len(set(axes)) != len(axes):
            problems.append(f"axes={v.attrs['axes']}: repeated axes")
        elif axes != list(range(rank)) and v.input(2) and not v.const(2):
            problems.append(f"axes={v.attrs['axes']} with run-time scales: the importer then takes only 0..rank-1")
    return problems


def _range(v: NodeView) -> list[Finding]:
    types = {v.dtypes.get(t) for t in v.node.input[:3]}
    if len(types) > 1:
        return ["start, limit and delta must have one type"]
    dtype = types.pop()
    if dtype not in (None, TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64):
        return [f"{_name(dtype)} Range: the importer takes only int32, int64 and float (FP32)"]
    return []


def _layer_norm(v: NodeView) -> list[Finding]:
    return ["only the first output Y is supported"] if any(v.node.output[1:]) else []


def _if(v: NodeView) -> list[Finding]:
    then, other = v.attrs.get("then_branch"), v.attrs.get("else_branch")
    if then is None or other is None:
        return []
    problems: list[Finding] = []
    for a, b in zip(then.output, other.output):
        if a.name == b.name:
            problems.append(f"both branches name an output {a.name!r}: they must differ")
        ra, rb = len(a.type.tensor_type.shape.dim), len(b.type.tensor_type.shape.dim)
        if a.type.tensor_type.HasField("shape") and b.type.tensor_type.HasField("shape") and ra != rb:
            problems.append(f"branch outputs {a.name!r} and {b.name!r} have ranks {ra} and {rb}: must match")
    return problems


def _topk(v: NodeView) -> list[Finding]:
    problems: list[Finding] = [] if v.attrs.get("sorted", 1) == 1 else ["sorted=0: must be 1"]
    if not v.const(1):
        problems.append("K is not a constant: cannot check K < 3840")
    elif int(v.value(1).reshape(-1)[0]) >= 3840:
        problems.append("K must be less than 3840")
    return problems


def _dropout(v: NodeView) -> list[Finding]:
    if not v.input(2):
        return []
    if not v.const(2) or bool(v.value(2)):
        return ["is_training must be an initializer that is False"]
    return []


def _constant(v: NodeView) -> list[Finding]:
    return [
        f"attribute {a} is not supported" for a in ("sparse_value", "value_string", "value_strings") if a in v.attrs
    ]


def _static_input(v: NodeView) -> list[Finding]:
    dims = v.dims.get(v.input(0))
    return [] if dims is not None and all(d is not None for d in dims) else ["input must have static dimensions"]


def _lstm(v: NodeView) -> list[Finding]:
    return [f"{a}={v.attrs[a]} must be 0" for a in ("input_forget", "layout") if v.attrs.get(a, 0) != 0]


def _scatter_nd(v: NodeView) -> list[Finding]:
    if "reduction" not in v.attrs:
        return []
    if v.attrs["reduction"] != "none":
        return [f"reduction={v.attrs['reduction']!r} is not supported"]
    return [Needs((10, 9), "ScatterND with a reduction attribute: earlier importers reject it even when it is 'none'")]


def _einsum(v: NodeView) -> list[Finding]:
    equation = str(v.attrs.get("equation", "")).replace(" ", "")
    terms = equation.split("->")[0].split(",")
    found: list[Finding] = []
    if "..." in equation:
        found.append(Needs((10, 12), f"Einsum {equation!r} has an ellipsis"))
    if any(len(set(t.replace("...", ""))) < len(t.replace("...", "")) for t in terms):
        found.append(Needs((10, 12), f"Einsum {equation!r} takes a diagonal (a subscript repeated in one operand)"))
    sizes: dict[str, set[int]] = {}
    for index, term in enumerate(terms):
        dims = v.dims.get(v.input(index))
        if "..." in term or dims is None or len(dims) != len(term):
            continue
        for label, dim in zip(term, dims):
            if dim is not None:
                sizes.setdefault(label, set()).add(dim)
    broadcast = sorted(label for label, seen in sizes.items() if 1 in seen and len(seen) > 1)
    if broadcast:
        found.append(Needs((10, 12), f"Einsum {equation!r} broadcasts subscript(s) {', '.join(broadcast)}"))
    return found


def _loop(v: NodeView) -> list[Finding]:
    return [
        "Loop: a dynamic scan-output length and carried values that change shape are rejected, and neither can be "
        "checked statically; drive the recurrence from the plan instead"
    ]


_REDUCE = Rule(
    _const_inputs(1, what="axes"),
    "the axes input is an initializer",
    "ops-10.1",
)

#: The rule of each op that has one; the others are judged by :data:`TYPES` alone.
RULES: dict[str, Rule] = {
    "GridSample": Rule(
        _grid_sample,
        "mode is an opset-16/19 name, padding mode and align_corners known, 4-D input, one dtype for input and grid",
        "importers-10.1 (unknown mode strings become nearest: NVIDIA/TensorRT#4646); ops-10.1",
    ),
    "DeformConv": Rule(
        _deform_conv,
        "needs 10.1; 1-D or 2-D spatial input, symmetric pads, all inputs of one dtype",
        "changelog-10.1; ops-10.1; importers-10.1 (ModulatedDeformConv2d plugin)",
    ),
    "Resize": Rule(
        _resize,
        "coordinate transformation, mode and nearest mode known, stretch, no antialias, axes unique and "
        "0..rank-1 when the scales are computed at run time",
        "ops-10.1; importers-10.1 (axes are reordered when scales or sizes are initializers)",
    ),
    "Range": Rule(_range, "one input type, FP32/INT32/INT64 only", "importers-10.1"),
    "LayerNormalization": Rule(_layer_norm, "only the first output is used", "ops-10.1"),
    "AveragePool": Rule(_pool, "2-D or 3-D, dilations all one", "ops-10.1"),
    "MaxPool": Rule(_pool, "2-D or 3-D, dilations all one, no Indices output", "ops-10.1"),
    "LpPool": Rule(_pool, "dilations all one", "ops-10.1"),
    "If": Rule(_if, "branch outputs of equal rank and different names", "ops-10.1"),
    "Loop": Rule(_loop, "always a failure: its restrictions cannot be checked statically", "ops-10.1"),
    "TopK": Rule(_topk, "sorted, constant K below 3840", "ops-10.1"),
    "Dropout": Rule(_dropout, "is_training absent or a False initializer", "ops-10.1"),
    "Constant": Rule(_constant, "no sparse or string values", "ops-10.1"),
    "EyeLike": Rule(_static_input, "a static input shape", "ops-10.1"),
    "Hardmax": Rule(_static_input, "a static input shape (the axis dimension must be known)", "ops-10.1"),
    "LSTM": Rule(_lstm, "input_forget and layout are 0", "ops-10.1"),
    "ScatterND": Rule(
        _scatter_nd, "no reduction other than 'none'; the attribute at all needs 10.9", "ops-10.15; changelog-10.9"
    ),
    "Einsum": Rule(_einsum, "ellipsis, diagonal or broadcasting needs 10.12", "changelog-10.12"),
    "CumSum": Rule(
        _const_inputs(1, what="axis", since=(10, 8)), "a run-time axis needs 10.8", "ops-10.1; changelog-10.8"
    ),
    "OneHot": Rule(_const_inputs(1, what="depth"), "depth is an initializer", "ops-10.1"),
    "Pad": Rule(_const_inputs(3, what="axes", since=(10, 4)), "run-time axes need 10.4", "ops-10.1; changelog-10.4"),
    "Slice": Rule(_const_inputs(3, what="axes", since=(10, 3)), "run-time axes need 10.3", "ops-10.1; changelog-10.3"),
    "Squeeze": Rule(
        _const_inputs(1, what="axes", since=(10, 7)), "run-time axes need 10.7", "ops-10.1; changelog-10.7"
    ),
    "Unsqueeze": Rule(
        _const_inputs(1, what="axes", since=(10, 7)), "run-time axes need 10.7", "ops-10.1; changelog-10.7"
    ),
    **dict.fromkeys(
        (
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
        ),
        _REDUCE,
    ),
}

#: Ops whose types are those of their first input, not of their first output (comparisons, shape queries).
_TYPED_BY_INPUT = {
    "Shape",
    "Size",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "ArgMax",
    "ArgMin",
    "NonZero",
    "IsNaN",
    "IsInf",
    "Cast",
    "CastLike",
}


def _name(dtype: int | None) -> str:
    return _DTYPE_NAMES.get(dtype, TensorProto.DataType.Name(dtype) if dtype else "unknown")


@dataclass
class NodeReport:
    """The verdict on one node: ``supported``, ``plugin`` (one of ours), ``unsupported`` or ``unknown``,
    and the TensorRT releases it needs (``needs``; :data:`BASELINE` when empty)."""

    node: str
    op_type: str
    domain: str
    attributes: dict[str, Any]
    status: str
    problems: list[str] = field(default_factory=list)
    source: str = ""
    needs: list[Needs] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("supported", "plugin")

    @property
    def op(self) -> str:
        return f"{self.domain}::{self.op_type}" if self.domain else self.op_type

    @property
    def min_tensorrt(self) -> tuple[int, int]:
        return max([BASELINE, *(n.version for n in self.needs)])

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={v}" for k, v in self.attributes.items())
        text = f"{self.status.upper():11s} {self.node} [{self.op}]" + (f" ({attrs})" if attrs else "")
        for problem in self.problems:
            text += f"\n    - {problem}"
        if self.source and not self.ok:
            text += f"\n    source: {self.source}"
        return text


@dataclass
class Report:
    """The check of one graph: one :class:`NodeReport` per node, plus graph-level problems."""

    graph: str
    nodes: list[NodeReport]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(n.ok for n in self.nodes)

    @property
    def failures(self) -> list[NodeReport]:
        return [n for n in self.nodes if not n.ok]

    @property
    def min_tensorrt(self) -> tuple[int, int]:
        """The TensorRT release this graph needs: the latest any of its nodes needs."""
        return max([BASELINE, *(n.min_tensorrt for n in self.nodes)])

    def requirements(self) -> list[tuple[Needs, list[str]]]:
        """Every distinct need of the graph's nodes, latest release first, with the nodes that have it."""
        nodes: dict[Needs, list[str]] = {}
        for n in self.nodes:
            for need in n.needs:
                nodes.setdefault(need, []).append(n.node)
        return sorted(nodes.items(), key=lambda item: (item[0].version, item[0].why), reverse=True)

    def format(self, verbose: bool = False) -> str:
        """A summary per op type, the releases needed (and by which nodes), every failing node
        (``verbose``: every node)."""
        counts: dict[tuple[str, str], int] = {}
        for n in self.nodes:
            counts[(n.op, n.status)] = counts.get((n.op, n.status), 0) + 1
        verdict = "OK" if self.ok else f"FAILED ({len(self.failures) + len(self.problems)} problems)"
        lines = [
            f"{self.graph}: {len(self.nodes)} nodes, needs TensorRT >= {version_text(self.min_tensorrt)}: {verdict}"
        ]
        lines.append(
            "  "
            + ", ".join(f"{op} x{c}" + ("" if s == "supported" else f" [{s}]") for (op, s), c in sorted(counts.items()))
        )
        for need, names in self.requirements():
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            lines.append(f"  needs {need} (node{'s' if len(names) > 1 else ''} {shown})")
        lines += [f"  graph: {p}" for p in self.problems]
        shown_nodes = self.nodes if verbose else self.failures
        lines += ["  " + str(n).replace("\n", "\n  ") for n in shown_nodes]
        return "\n".join(lines)


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode(errors="replace") for v in value]
        out[attr.name] = value
    return out


def _short(value: Any) -> Any:
    if isinstance(value, onnx.TensorProto):
        return f"tensor{list(value.dims)}:{_name(value.data_type)}"
    if isinstance(value, onnx.GraphProto):
        return f"graph({len(value.node)} nodes)"
    return value


def _tensor_info(graph: onnx.GraphProto) -> tuple[dict[str, int], dict[str, int], dict[str, list[int | None]]]:
    dtypes, ranks, dims = {}, {}, {}
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        t = vi.type.tensor_type
        dtypes[vi.name] = t.elem_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in graph.initializer:
        dtypes[init.name] = init.data_type
        ranks[init.name] = len(init.dims)
        dims[init.name] = list(init.dims)
    return dtypes, ranks, dims


def _split(findings: list[Finding]) -> tuple[list[str], list[Needs]]:
    return [f for f in findings if isinstance(f, str)], [f for f in findings if isinstance(f, Needs)]


def check_node(view: NodeView, plugins: PluginLookup | None = None) -> NodeReport:
    """Judge one node (see :func:`check_model`)."""
    node = view.node
    attrs = {k: _short(v) for k, v in view.attrs.items()}
    name = node.name or f"<unnamed {node.op_type}>"

    def report(status: str, problems: list[str], source: str, needs: list[Needs] | None = None) -> NodeReport:
        return NodeReport(name, node.op_type, node.domain, attrs, status, problems, source, needs or [])

    if node.domain not in ("", "ai.onnx"):
        spec = plugins(node.domain, node.op_type) if plugins is not None else None
        if spec is None:
            known = "our registered TensorRT plugins" if plugins is not None else "the plugins given to this check"
            return report("unknown", [f"custom op {node.domain}::{node.op_type} is not one of {known}"], "plugins")
        problems, needs = _split(spec.check_node(view))
        return report("unsupported" if problems else "plugin", problems, f"plugin {spec}", needs)
    if node.op_type in UNSUPPORTED:
        return report("unsupported", [UNSUPPORTED[node.op_type]], "ops-10.1")
    types = TYPES.get(node.op_type)
    if types is None:
        return report("unknown", [f"{node.op_type} is not an op TensorRT's ONNX parser imports"], "ops-10.1")
    rule = RULES.get(node.op_type)
    problems, needs = _split(rule.check(view)) if rule is not None else ([], [])
    problems += _dtype_problems(view, types)
    return report("unsupported" if problems else "supported", problems, rule.source if rule else "ops-10.1", needs)


def _dtype_problems(view: NodeView, types: frozenset[str]) -> list[str]:
    node = view.node
    problems = []
    typed = [node.input[0]] if node.op_type in _TYPED_BY_INPUT and node.input else []
    if node.op_type not in _TYPED_BY_INPUT or node.op_type in ("Cast", "CastLike"):
        typed += [node.output[0]] if node.output else []
    for tensor in typed:
        dtype = view.dtypes.get(tensor)
        if dtype is None or dtype == TensorProto.UNDEFINED:
            continue
        if _name(dtype) not in types:
            problems.append(f"{tensor!r} is {_name(dtype)}; TensorRT's {node.op_type} takes {', '.join(sorted(types))}")
    for tensor in [*node.input, *node.output]:
        dtype = view.dtypes.get(tensor)
        if dtype == TensorProto.DOUBLE:
            problems.append(f"{tensor!r} is DOUBLE: TensorRT casts it down to FLOAT (clamped); export float32")
        elif dtype == TensorProto.UINT8 and tensor not in view.graph_io:
            problems.append(f"{tensor!r} is UINT8: TensorRT takes UINT8 only as a network input or output")
    return problems


def check_model(
    model: onnx.ModelProto | str | Path, name: str | None = None, plugins: PluginLookup | None = None
) -> Report:
    """Check every node of ``model`` (a path or a ModelProto) against TensorRT's ONNX parser.

    Args:
        model: the graph.
        name: how the report names it (default: the file name or the graph name).
        plugins: ``(domain, op_type) -> the plugin's rules or None`` for custom ops
            (:func:`engines.plugins.lookup`); without it every custom op is unknown.
    """
    if not isinstance(model, onnx.ModelProto):
        name = name or Path(model).name
        model = onnx.load(str(model), load_external_data=False)
    name = name or model.graph.name or "graph"
    problems = []
    opsets = {o.domain: o.version for o in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(
            f"default-domain opset {opset}: TensorRT 10.0+ parses opsets {OPSET_RANGE[0]} to "
            f"{OPSET_RANGE[1]} (ops-10.1); this project exports 19"
        )
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError:
        inferred = model
    nodes: list[NodeReport] = []
    _walk(inferred.graph, plugins, nodes, prefix="", outer_constants={})
    return Report(name, nodes, problems)


def _walk(
    graph: onnx.GraphProto,
    plugins: PluginLookup | None,
    out: list[NodeReport],
    prefix: str,
    outer_constants: dict[str, onnx.TensorProto],
) -> None:
    dtypes, ranks, dims = _tensor_info(graph)
    constants = dict(outer_constants)
    constants.update({i.name: i for i in graph.initializer})
    io = {v.name for v in [*graph.input, *graph.output]}
    for node in graph.node:
        attrs = _attributes(node)
        if node.op_type == "Constant" and "value" in attrs:
            # The parser imports Constant nodes as weights, like initializers (importers-10.1).
            constants[node.output[0]] = attrs["value"]
            dtypes.setdefault(node.output[0], attrs["value"].data_type)
        report = check_node(NodeView(node, attrs, dtypes, ranks, dims, constants, io), plugins)
        report.node = prefix + report.node
        out.append(report)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _walk(sub, plugins, out, prefix=f"{prefix}{node.name}/{attr.name}/", outer_constants=constants)


def check_package(
    root: str | Path, precisions: Iterable[str] | None = None, plugins: PluginLookup | None = None
) -> list[Report]:
    """Check every graph of a model package (all precisions it has, or ``precisions``)."""
    package = Package.open(root)
    return [
        check_model(package.stage_file(stage, precision), name=f"{precision}/{stage}", plugins=plugins)
        for precision in precisions or package.precisions
        for stage in package.stage_names()
    ]


def package_requirements(reports: Iterable[Report]) -> tuple[tuple[int, int], list[str]]:
    """The release a package needs (the latest of its graphs') and, per need, the nodes that set it
    (``"TensorRT >= 10.9: <why>: fp32/step iw_1, ..."``), latest release first."""
    reports = list(reports)
    version = max([BASELINE, *(r.min_tensorrt for r in reports)])
    by_need: dict[Needs, list[str]] = {}
    for report in reports:
        for need, names in report.requirements():
            by_need.setdefault(need, []).extend(f"{report.graph} {n}" for n in names)
    lines = []
    for need, names in sorted(by_need.items(), key=lambda item: (item[0].version, item[0].why), reverse=True):
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        lines.append(f"{need}: {shown}")
    return version, lines
