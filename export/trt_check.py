"""Static TensorRT check: would TensorRT's ONNX parser take every node of a graph, as exported?

No TensorRT is needed: the check walks the graph (subgraphs of If/Loop/Scan included) and judges
each node from a table (:data:`OPERATORS`) and attribute rules (:data:`RULES`), each rule with the
source it comes from. It is conservative: an op not in the table, a custom op that is not one of
our registered plugins, or an attribute value a rule does not know is a failure.

Target: TensorRT 10.1 and later, 10.x and 11.x (10.1 is the first with ONNX ``DeformConv``).

Sources (the short names used in every note; details in ``notes/deploy.md``):

* ``OT10.1-doc``: onnx-tensorrt ``docs/operators.md`` at the 10.1-GA release (commit 96e7811), the
  operator support matrix transcribed into :data:`OPERATORS` (types and restrictions as written).
* ``OT10.1-src``: the same release's ``onnxOpImporters.cpp`` (the importers that enforce them).
* ``OT10.15-doc``: the operator matrix of TensorRT 10.15 (opset 9 to 24), quoted in deploy.md.
* ``deploy.md``: ``notes/deploy.md`` section numbers.

Where the sources are silent the check does not guess, and says so here:

* INT64: TensorRT 10 lists INT64 among its data types and in most ops' types (OT10.1-doc), so the
  exporter's INT64 shape and index math passes as is (the 8.x "cast down to INT32" note is gone).
* Resize ``exclude_outside``/``cubic_coeff_a``, Scan (no restriction listed), GridSample grids and
  Range bounds computed at run time (the Range importer feeds float bounds to a fill layer as
  tensors, OT10.1-src): accepted as the sources describe them, not verified on a GPU here.
* Ops with no rule in :data:`RULES` are judged by the matrix row alone (supported, and the dtype
  of their data tensor among the row's types).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

#: Default-domain opsets the parser reads (TensorRT 10.0: 9 to 20; 10.15: 9 to 24). OT10.1-doc.
OPSET_RANGE = (9, 20)

#: TensorRT data types by ONNX element type (OT10.1-doc header). DOUBLE is cast down to FLOAT
#: (clamped), UINT8 is allowed only as a network input or output, INT8/INT4/FP8 only through
#: quantize/dequantize.
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

# Op | supported (Y/N) | types | restrictions, transcribed from OT10.1-doc ("INF64" read as INT64).
_TABLE = """
Abs|Y|FP32 FP16 BF16 INT32 INT64|
Acos|Y|FP32 FP16 BF16|
Acosh|Y|FP32 FP16 BF16|
Add|Y|FP32 FP16 BF16 INT32 INT64|
AffineGrid|N||
And|Y|BOOL|
ArgMax|Y|FP32 FP16 BF16 INT32 INT64|
ArgMin|Y|FP32 FP16 BF16 INT32 INT64|
Asin|Y|FP32 FP16 BF16|
Asinh|Y|FP32 FP16 BF16|
Atan|Y|FP32 FP16 BF16|
Atanh|Y|FP32 FP16 BF16|
AveragePool|Y|FP32 FP16 BF16|2D or 3D Pooling only. dilations must be empty or all ones
BatchNormalization|Y|FP32 FP16 BF16|
Bernoulli|N||
BitShift|N||
BitwiseAnd|N||
BitwiseNot|N||
BitwiseOr|N||
BitwiseXor|N||
BlackmanWindow|N||
Cast|Y|FP32 FP16 BF16 INT32 INT64 UINT8 BOOL|
CastLike|Y|FP32 FP16 BF16 INT32 INT64 UINT8 BOOL|
Ceil|Y|FP32 FP16 BF16|
Col2Im|N||
Celu|Y|FP32 FP16 BF16|
CenterCropPad|N||
Clip|Y|FP32 FP16 BF16|
Compress|N||
Concat|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
ConcatFromSequence|N||
Constant|Y|FP32 FP16 BF16 INT32 INT64 BOOL|sparse_value, value_string, and value_strings attributes are unsupported.
ConstantOfShape|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Conv|Y|FP32 FP16 BF16|
ConvInteger|N||
ConvTranspose|Y|FP32 FP16 BF16|
Cos|Y|FP32 FP16 BF16|
Cosh|Y|FP32 FP16 BF16|
CumSum|Y|FP32 FP16 BF16|axis must be an initializer
DFT|N||
DeformConv|Y|FP32 FP16|input must have 1D or 2D spatial dimensions. pads for the beginning and end along each spatial axis must be the same
DepthToSpace|Y|FP32 FP16 BF16 INT32 INT64|
DequantizeLinear|Y|INT8 FP8 INT4|x_zero_point must be zero
Det|N||
Div|Y|FP32 FP16 BF16 INT32 INT64|
Dropout|Y|FP32 FP16 BF16|is_traning must be an initializer and evaluate to False.
DynamicQuantizeLinear|N||
Einsum|Y|FP32 FP16 BF16|
Elu|Y|FP32 FP16 BF16|
Equal|Y|FP32 FP16 BF16 INT32 INT64|
Erf|Y|FP32 FP16 BF16|
Exp|Y|FP32 FP16 BF16|
Expand|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
EyeLike|Y|FP32 FP16 BF16 INT32 INT64 BOOL|input must have static dimensions
Flatten|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Floor|Y|FP32 FP16 BF16|
Gather|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
GatherElements|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
GatherND|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Gelu|Y|FP32 FP16 BF16 INT8 INT32 INT64|
Gemm|Y|FP32 FP16 BF16|
GlobalAveragePool|Y|FP32 FP16 BF16|
GlobalLpPool|Y|FP32 FP16 BF16|
GlobalMaxPool|Y|FP32 FP16 BF16|
Greater|Y|FP32 FP16 BF16 INT32 INT64|
GreaterOrEqual|Y|FP32 FP16 BF16 INT32 INT64|
GridSample|Y|FP32 FP16|Input must be 4D input.
GroupNormalization|Y|FP32 FP16 BF16|
GRU|Y|FP32 FP16 BF16|For bidirectional GRUs, activation functions must be the same for both the forward and reverse pass
HammingWindow|N||
HannWindow|N||
HardSigmoid|Y|FP32 FP16 BF16|
HardSwish|Y|FP32 FP16 BF16|
Hardmax|Y|FP32 FP16 BF16|axis dimension of input must be a build-time constant
Identity|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
If|Y|FP32 FP16 BF16 INT32 INT64 BOOL|Output tensors of the two conditional branches must have the same rank and must have different names
ImageScaler|Y|FP32 FP16 BF16|
ImageDecoder|N||
InstanceNormalization|Y|FP32 FP16 BF16|
IsInf|Y|FP32 FP16 BF16|
IsNaN|Y|FP32 FP16 BF16 INT32 INT64|
LayerNormalization|Y|FP32 FP16 BF16|Only the first output Y is supported.
LeakyRelu|Y|FP32 FP16 BF16|
Less|Y|FP32 FP16 BF16 INT32 INT64|
LessOrEqual|Y|FP32 FP16 BF16 INT32 INT64|
Log|Y|FP32 FP16 BF16|
LogSoftmax|Y|FP32 FP16 BF16|
Loop|Y|FP32 FP16 BF16 INT32 INT64 BOOL|Scan output length cannot be dynamic. The shape of Loop carried dependencies must be the same across all loop iterations.
LRN|Y|FP32 FP16 BF16|
LSTM|Y|FP32 FP16 BF16|For bidirectional LSTMs, activation functions must be the same for both the forward and reverse pass. input_forget attribute must be 0. layout attribute must be 0.
LpNormalization|Y|FP32 FP16 BF16|
LpPool|Y|FP32 FP16 BF16|dilations must be empty or all ones
MatMul|Y|FP32 FP16 BF16|
MatMulInteger|N||
Max|Y|FP32 FP16 BF16 INT32 INT64|
MaxPool|Y|FP32 FP16 BF16|2D or 3D pooling only. Indices output tensor unsupported. dilations must be empty or all ones
MaxRoiPool|N||
MaxUnpool|N||
Mean|Y|FP32 FP16 BF16 FP8 INT32 INT64|
MeanVarianceNormalization|Y|FP32 FP16 BF16|
MelWeightMatrix|N||
Min|Y|FP32 FP16 BF16 INT32 INT64|
Mish|Y|FP32 FP16|
Mod|Y|FP32 FP16 BF16 INT32 INT64|
Mul|Y|FP32 FP16 BF16 INT32 INT64|
Multinomial|N||
Neg|Y|FP32 FP16 BF16 INT32 INT64|
NegativeLogLikelihoodLoss|N||
NonMaxSuppression|Y|FP32 FP16|
NonZero|Y|FP32 FP16|
Not|Y|BOOL|
OneHot|Y|FP32 FP16 BF16 INT32 INT64 BOOL|depth must be a build-time constant
Optional|N||
OptionalGetElement|N||
OptionalHasElement|N||
Or|Y|BOOL|
Pad|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ParametricSoftplus|Y|FP32 FP16 BF16|
Pow|Y|FP32 FP16 BF16|
PRelu|Y|FP32 FP16 BF16|
QLinearConv|N||
QLinearMatMul|N||
QuantizeLinear|Y|FP32 FP16 BF16|y_zero_point must be 0
RandomNormal|Y|FP32 FP16 BF16|seed value is ignored by TensorRT
RandomNormalLike|Y|FP32 FP16 BF16|seed value is ignored by TensorRT
RandomUniform|Y|FP32 FP16 BF16|seed value is ignored by TensorRT
RandomUniformLike|Y|FP32 FP16 BF16|seed value is ignored by TensorRT
Range|Y|FP32 FP16 BF16 INT32 INT64|
Reciprocal|Y|FP32 FP16 BF16|
ReduceL1|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceL2|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceLogSum|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceLogSumExp|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMax|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMean|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceMin|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceProd|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceSum|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
ReduceSumSquare|Y|FP32 FP16 BF16 INT32 INT64|axes must be an initializer
RegexFullMatch|N||
Relu|Y|FP32 FP16 BF16 INT32 INT64|
Reshape|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Resize|Y|FP32 FP16 BF16|Supported resize transformation modes: half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, and align_corners. Supported resize modes: nearest, linear. Supported nearest modes: floor, ceil, round_prefer_floor, round_prefer_ceil. Supported aspect ratio policy: stretch. When scales is a tensor input, axes must be an iota vector of length rank(input). Antialiasing is not supported.
ReverseSequence|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
RNN|Y|FP32 FP16 BF16|For bidirectional RNNs, activation functions must be the same for both the forward and reverse pass
RoiAlign|Y|FP32 FP16|
Round|Y|FP32 FP16 BF16|
STFT|N||
ScaledTanh|Y|FP32 FP16 BF16|
Scan|Y|FP32 FP16 BF16|
Scatter|Y|FP32 FP16 BF16 INT32 INT64|
ScatterElements|Y|FP32 FP16 BF16 INT32 INT64|
ScatterND|Y|FP32 FP16 BF16 INT32 INT64|reduction is not supported
Selu|Y|FP32 FP16 BF16|
SequenceAt|N||
SequenceConstruct|N||
SequenceEmpty|N||
SequenceErase|N||
SequenceInsert|N||
SequenceLength|N||
SequenceMap|N||
Shape|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Shrink|Y|FP32 FP16 BF16 INT32 INT64|
Sigmoid|Y|FP32 FP16 BF16|
Sign|Y|FP32 FP16 BF16 INT32 INT64|
Sin|Y|FP32 FP16 BF16|
Sinh|Y|FP32 FP16 BF16|
Size|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Slice|Y|FP32 FP16 BF16 INT32 INT64 BOOL|axes must be an initializer
Softmax|Y|FP32 FP16 BF16|
SoftmaxCrossEntropyLoss|N||
Softplus|Y|FP32 FP16 BF16|
Softsign|Y|FP32 FP16 BF16|
SpaceToDepth|Y|FP32 FP16 BF16 INT32 INT64|
Split|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
SplitToSequence|N||
Sqrt|Y|FP32 FP16 BF16|
Squeeze|Y|FP32 FP16 BF16 INT32 INT64 BOOL|axes must be an initializer
StringConcat|N||
StringNormalizer|N||
StringSplit|N||
Sub|Y|FP32 FP16 BF16 INT32 INT64|
Sum|Y|FP32 FP16 BF16 INT32 INT64|
Tan|Y|FP32 FP16 BF16|
Tanh|Y|FP32 FP16 BF16|
TfIdfVectorizer|N||
ThresholdedRelu|Y|FP32 FP16 BF16|
Tile|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
TopK|Y|FP32 FP16 BF16 INT32 INT64|sorted must be 1. K input must be less than 3840.
Transpose|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Trilu|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Unique|N||
Unsqueeze|Y|FP32 FP16 BF16 INT32 INT64 BOOL|axes must be a constant tensor
Upsample|Y|FP32 FP16 BF16|
Where|Y|FP32 FP16 BF16 INT32 INT64 BOOL|
Xor|Y|BOOL|
"""


@dataclass(frozen=True)
class OpEntry:
    """One row of the operator support matrix."""

    supported: bool
    types: frozenset[str]
    restrictions: str


def _parse_table(text: str) -> dict[str, OpEntry]:
    table = {}
    for line in text.strip().splitlines():
        op, supported, types, restrictions = ([*line.split("|"), "", "", ""])[:4]
        table[op] = OpEntry(supported == "Y", frozenset(types.split()), restrictions.strip())
    return table


#: The operator support matrix of TensorRT's ONNX parser, by op type (OT10.1-doc).
OPERATORS: dict[str, OpEntry] = _parse_table(_TABLE)

#: Problems a rule finds for a node; empty when the node is fine.
Rule = Callable[["NodeView"], list[str]]


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
        name = self.input(index)
        return name in self.constants

    def rank(self, index: int) -> int | None:
        return self.ranks.get(self.input(index))

    def value(self, index: int) -> Any:
        """The numpy value of a constant input."""
        from onnx import numpy_helper

        return numpy_helper.to_array(self.constants[self.input(index)])


def _one_of(name: str, allowed: Iterable[str], default: str) -> Rule:
    allowed = tuple(allowed)

    def rule(v: NodeView) -> list[str]:
        value = v.attrs.get(name, default)
        return [] if value in allowed else [f"{name}={value!r} is not supported (TensorRT takes {', '.join(allowed)})"]

    return rule


def _const_inputs(*indices: int, what: str = "must be an initializer") -> Rule:
    def rule(v: NodeView) -> list[str]:
        return [f"input {i} ({v.input(i)!r}) {what}" for i in indices if v.input(i) and not v.const(i)]

    return rule


def _pool(v: NodeView) -> list[str]:
    problems = []
    if any(d != 1 for d in v.attrs.get("dilations", [])):
        problems.append(f"dilations={v.attrs['dilations']} (must be empty or all ones)")
    if v.node.op_type != "LpPool" and v.rank(0) not in (None, 4, 5):
        problems.append(f"input rank {v.rank(0)}: 2D or 3D pooling only")
    if v.node.op_type == "MaxPool" and len(v.node.output) > 1 and v.node.output[1]:
        problems.append("the Indices output is not supported")
    return problems


def _grid_sample(v: NodeView) -> list[str]:
    problems = []
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


def _deform_conv(v: NodeView) -> list[str]:
    problems = []
    if v.rank(0) not in (None, 3, 4):
        problems.append(f"input rank {v.rank(0)}: 1D or 2D spatial dimensions only")
    pads = v.attrs.get("pads", [])
    half = len(pads) // 2
    if any(pads[i] != pads[i + half] for i in range(half)):
        problems.append(f"pads={pads}: begin and end pads must be equal on each axis")
    floats = {v.dtypes.get(t) for t in v.node.input if t} - {None}
    if len(floats) > 1:
        problems.append(
            f"inputs in {sorted(_name(t) for t in floats)}: the ModulatedDeformConv2d plugin "
            "needs all inputs in one dtype"
        )
    return problems


def _resize(v: NodeView) -> list[str]:
    problems = _one_of(
        "coordinate_transformation_mode",
        ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"),
        "half_pixel",
    )(v)
    mode = v.attrs.get("mode", "nearest")
    if mode == "cubic":
        problems.append(
            "mode='cubic' is implemented by the importer but not in the support matrix "
            "(deploy.md section 1, UNCERTAIN): verify it numerically before allowing it"
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
    if axes is not None and v.rank(0) is not None and list(axes) != list(range(v.rank(0))):
        problems.append(f"axes={axes}: must be 0..rank-1 when given")
    return problems


def _range(v: NodeView) -> list[str]:
    types = {v.dtypes.get(t) for t in v.node.input[:3]}
    if len(types) > 1:
        return ["start, limit and delta must have one type"]
    dtype = types.pop()
    if dtype not in (None, TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64):
        return [f"{_name(dtype)} Range: the importer takes only int32, int64 and float (FP32)"]
    return []


def _layer_norm(v: NodeView) -> list[str]:
    return ["only the first output Y is supported"] if any(v.node.output[1:]) else []


def _if(v: NodeView) -> list[str]:
    then, other = v.attrs.get("then_branch"), v.attrs.get("else_branch")
    if then is None or other is None:
        return []
    problems = []
    for a, b in zip(then.output, other.output):
        if a.name == b.name:
            problems.append(f"both branches name an output {a.name!r}: they must differ")
        ra, rb = len(a.type.tensor_type.shape.dim), len(b.type.tensor_type.shape.dim)
        if a.type.tensor_type.HasField("shape") and b.type.tensor_type.HasField("shape") and ra != rb:
            problems.append(f"branch outputs {a.name!r} and {b.name!r} have ranks {ra} and {rb}: must match")
    return problems


def _topk(v: NodeView) -> list[str]:
    problems = [] if v.attrs.get("sorted", 1) == 1 else ["sorted=0: must be 1"]
    if not v.const(1):
        problems.append("K is not a constant: cannot check K < 3840")
    elif int(v.value(1).reshape(-1)[0]) >= 3840:
        problems.append("K must be less than 3840")
    return problems


def _dropout(v: NodeView) -> list[str]:
    if not v.input(2):
        return []
    if not v.const(2) or bool(v.value(2)):
        return ["is_training must be an initializer that is False"]
    return []


def _constant(v: NodeView) -> list[str]:
    bad = [a for a in ("sparse_value", "value_string", "value_strings") if a in v.attrs]
    return [f"attribute {a} is not supported" for a in bad]


def _static_input(v: NodeView) -> list[str]:
    dims = v.dims.get(v.input(0))
    return [] if dims is not None and all(d is not None for d in dims) else ["input must have static dimensions"]


def _lstm(v: NodeView) -> list[str]:
    return [f"{a}={v.attrs[a]} must be 0" for a in ("input_forget", "layout") if v.attrs.get(a, 0) != 0]


def _scatter_nd(v: NodeView) -> list[str]:
    reduction = v.attrs.get("reduction", "none")
    return [] if reduction == "none" else [f"reduction={reduction!r} is not supported"]


def _loop(v: NodeView) -> list[str]:
    return [
        "Loop: 'Scan output length cannot be dynamic' and 'carried dependencies must keep their shape' "
        "cannot be checked statically; drive the recurrence from the plan instead"
    ]


_REDUCE_AXES = _const_inputs(1, what="(axes) must be an initializer")

#: Attribute and input rules per op type: (rule, source). Ops not listed here are judged by the
#: matrix alone (their row has no restriction, or none that the exported graphs can break).
RULES: dict[str, tuple[Rule, str]] = {
    "GridSample": (
        _grid_sample,
        "OT10.1-doc 'Input must be 4D'; OT10.1-src GridSample importer (mode strings "
        "nearest/bilinear/bicubic, else kNEAREST silently; padding zeros/border/"
        "reflection; align_corners); deploy.md sections 0, 1 (opset-20 names, "
        "NVIDIA/TensorRT#4646; one dtype for input and grid; 5D from 11.2)",
    ),
    "DeformConv": (
        _deform_conv,
        "OT10.1-doc '1D or 2D spatial dimensions', 'pads for the beginning and end "
        "... must be the same'; deploy.md section 1 (built-in ModulatedDeformConv2d "
        "plugin from 10.1, needs initLibNvInferPlugins; all inputs FP32 or all FP16)",
    ),
    "Resize": (
        _resize,
        "OT10.1-doc Resize restrictions (transformation modes, nearest/linear, nearest modes, "
        "stretch, no antialias, axes iota); deploy.md section 1 (cubic undocumented)",
    ),
    "Range": (
        _range,
        "OT10.1-src Range importer ('only supports int32, int64, and float input types', one type "
        "for start/limit/delta); the matrix lists FP16 but the importer rejects it",
    ),
    "LayerNormalization": (_layer_norm, "OT10.1-doc 'Only the first output Y is supported'"),
    "AveragePool": (_pool, "OT10.1-doc '2D or 3D Pooling only. dilations must be empty or all ones'"),
    "MaxPool": (_pool, "OT10.1-doc '2D or 3D pooling only. Indices output tensor unsupported. dilations ...'"),
    "LpPool": (_pool, "OT10.1-doc 'dilations must be empty or all ones'"),
    "If": (
        _if,
        "OT10.1-doc 'Output tensors of the two conditional branches must have the same rank and must "
        "have different names'",
    ),
    "Loop": (_loop, "OT10.1-doc Loop restrictions; deploy.md section 8.3 (TRT Loop restrictions)"),
    "TopK": (_topk, "OT10.1-doc 'sorted must be 1. K input must be less than 3840'"),
    "Dropout": (_dropout, "OT10.1-doc 'is_traning must be an initializer and evaluate to False'"),
    "Constant": (_constant, "OT10.1-doc 'sparse_value, value_string, and value_strings attributes are unsupported'"),
    "EyeLike": (_static_input, "OT10.1-doc 'input must have static dimensions'"),
    "Hardmax": (
        _static_input,
        "OT10.1-doc 'axis dimension of input must be a build-time constant' (checked as: all dimensions static)",
    ),
    "LSTM": (_lstm, "OT10.1-doc 'input_forget attribute must be 0. layout attribute must be 0'"),
    "ScatterND": (_scatter_nd, "OT10.1-doc 'reduction is not supported'"),
    "CumSum": (_const_inputs(1, what="(axis) must be an initializer"), "OT10.1-doc 'axis must be an initializer'"),
    "OneHot": (_const_inputs(1, what="(depth) must be a build-time constant"), "OT10.1-doc"),
    "Pad": (_const_inputs(3, what="(axes) must be an initializer"), "OT10.1-doc 'axes must be an initializer'"),
    "Slice": (_const_inputs(3, what="(axes) must be an initializer"), "OT10.1-doc 'axes must be an initializer'"),
    "Squeeze": (_const_inputs(1, what="(axes) must be an initializer"), "OT10.1-doc 'axes must be an initializer'"),
    "Unsqueeze": (
        _const_inputs(1, what="(axes) must be a constant tensor"),
        "OT10.1-doc 'axes must be a constant tensor'",
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
        (_REDUCE_AXES, "OT10.1-doc 'axes must be an initializer'"),
    ),
}

#: Why some unsupported ops are unsupported, or when that changes (shown with the failure).
UNSUPPORTED_NOTES: dict[str, str] = {
    "DFT": "no DFT through TensorRT 11.1; 11.2 adds a cuFFT plugin for it (deploy.md section 1)",
    "AffineGrid": "not supported (OT10.15-doc, deploy.md section 1): build the grid from Range/arithmetic",
    "Col2Im": "not supported (OT10.15-doc, deploy.md section 1)",
    "CenterCropPad": "not supported (OT10.15-doc, deploy.md section 1)",
    "STFT": "not supported at 10.1; 10.15 lists STFT (FP32 only, deploy.md section 1)",
}

#: Ops whose dtype constraint is on their first input, not their first output (comparisons, shape queries).
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
    """The verdict on one node: ``supported``, ``plugin`` (one of ours), ``unsupported`` or ``unknown``."""

    node: str
    op_type: str
    domain: str
    attributes: dict[str, Any]
    status: str
    problems: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("supported", "plugin")

    def __str__(self) -> str:
        op = f"{self.domain}::{self.op_type}" if self.domain else self.op_type
        attrs = ", ".join(f"{k}={v}" for k, v in self.attributes.items())
        text = f"{self.status.upper():11s} {self.node} [{op}]" + (f" ({attrs})" if attrs else "")
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

    def format(self, verbose: bool = False) -> str:
        """A summary per op type and every failing node (``verbose``: every node)."""
        counts: dict[tuple[str, str], int] = {}
        for n in self.nodes:
            key = (f"{n.domain}::{n.op_type}" if n.domain else n.op_type, n.status)
            counts[key] = counts.get(key, 0) + 1
        verdict = "OK" if self.ok else f"FAILED ({len(self.failures) + len(self.problems)} problems)"
        lines = [f"{self.graph}: {len(self.nodes)} nodes, TensorRT >= 10.1: {verdict}"]
        lines.append(
            "  "
            + ", ".join(f"{op} x{c}" + ("" if s == "supported" else f" [{s}]") for (op, s), c in sorted(counts.items()))
        )
        lines += [f"  graph: {p}" for p in self.problems]
        shown = self.nodes if verbose else self.failures
        lines += ["  " + str(n).replace("\n", "\n  ") for n in shown]
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


def check_node(view: NodeView, plugins: Callable[[str, str], Any]) -> NodeReport:
    """Judge one node (see :func:`check_model`)."""
    node = view.node
    attrs = {k: _short(v) for k, v in view.attrs.items()}
    name = node.name or f"<unnamed {node.op_type}>"
    if node.domain not in ("", "ai.onnx"):
        spec = plugins(node.domain, node.op_type)
        if spec is not None:
            return NodeReport(name, node.op_type, node.domain, attrs, "plugin", source=f"registered plugin {spec}")
        return NodeReport(
            name,
            node.op_type,
            node.domain,
            attrs,
            "unknown",
            [f"custom op {node.domain}::{node.op_type} is not a registered TensorRT plugin (engines/plugins)"],
            "engines/plugins registry",
        )
    entry = OPERATORS.get(node.op_type)
    if entry is None:
        return NodeReport(
            name,
            node.op_type,
            node.domain,
            attrs,
            "unknown",
            [f"{node.op_type} is not in TensorRT's operator support matrix"],
            "OT10.1-doc",
        )
    if not entry.supported:
        note = UNSUPPORTED_NOTES.get(node.op_type, "not supported by TensorRT's ONNX parser")
        return NodeReport(name, node.op_type, node.domain, attrs, "unsupported", [note], "OT10.1-doc")
    problems: list[str] = []
    sources = ["OT10.1-doc"]
    rule = RULES.get(node.op_type)
    if rule is not None:
        problems += rule[0](view)
        sources = [rule[1]]
    problems += _dtype_problems(view, entry)
    return NodeReport(
        name, node.op_type, node.domain, attrs, "unsupported" if problems else "supported", problems, "; ".join(sources)
    )


def _dtype_problems(view: NodeView, entry: OpEntry) -> list[str]:
    node = view.node
    problems = []
    typed = [node.input[0]] if node.op_type in _TYPED_BY_INPUT and node.input else []
    if node.op_type not in _TYPED_BY_INPUT or node.op_type in ("Cast", "CastLike"):
        typed += [node.output[0]] if node.output else []
    for tensor in typed:
        dtype = view.dtypes.get(tensor)
        if dtype is None or dtype == TensorProto.UNDEFINED:
            continue
        if entry.types and _name(dtype) not in entry.types:
            problems.append(
                f"{tensor!r} is {_name(dtype)}; TensorRT's {node.op_type} takes {', '.join(sorted(entry.types))}"
            )
    for tensor in [*node.input, *node.output]:
        dtype = view.dtypes.get(tensor)
        if dtype == TensorProto.DOUBLE:
            problems.append(f"{tensor!r} is DOUBLE: TensorRT casts it down to FLOAT (clamped); export float32")
        elif dtype == TensorProto.UINT8 and tensor not in view.graph_io:
            problems.append(f"{tensor!r} is UINT8: TensorRT takes UINT8 only as a network input or output")
    return problems


def check_model(
    model: onnx.ModelProto | str | Path, name: str | None = None, plugins: Callable[[str, str], Any] | None = None
) -> Report:
    """Check every node of ``model`` (a path or a ModelProto) against TensorRT's ONNX parser.

    Args:
        model: the graph.
        name: how the report names it (default: the file name or the graph name).
        plugins: ``(domain, op_type) -> spec or None``; default: our registry,
            :func:`engines.plugins.lookup`.
    """
    if not isinstance(model, onnx.ModelProto):
        name = name or Path(model).name
        model = onnx.load(str(model), load_external_data=False)
    name = name or model.graph.name or "graph"
    if plugins is None:
        from engines.plugins import lookup as plugins
    problems = []
    opset = {o.domain: o.version for o in model.opset_import}.get("")
    if opset is None:
        opset = {o.domain: o.version for o in model.opset_import}.get("ai.onnx")
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(
            f"default-domain opset {opset}: TensorRT 10.0+ parses opsets {OPSET_RANGE[0]} to "
            f"{OPSET_RANGE[1]} (OT10.1-doc); this project exports 19"
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
    plugins: Callable[[str, str], Any],
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
            # The parser imports Constant nodes as weights, like initializers (OT10.1-src Constant importer).
            constants[node.output[0]] = attrs["value"]
            dtypes.setdefault(node.output[0], attrs["value"].data_type)
        view = NodeView(node, attrs, dtypes, ranks, dims, constants, io)
        report = check_node(view, plugins)
        report.node = prefix + report.node
        out.append(report)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _walk(sub, plugins, out, prefix=f"{prefix}{node.name}/{attr.name}/", outer_constants=constants)


def check_package(root: str | Path, precisions: Iterable[str] | None = None) -> list[Report]:
    """Check every graph of a model package (all precisions it has, or ``precisions``)."""
    from .package import Package

    package = Package.open(root)
    reports = []
    for precision in precisions or package.precisions:
        for stage in package.stage_names():
            reports.append(check_model(package.stage_file(stage, precision), name=f"{precision}/{stage}"))
    return reports
