"""The static TensorRT check: passes on the BasicVSR package, fails by node name on unsupported ops, and
says which TensorRT release each node needs.

What is checked is our rule table (``export.trt_check``: read from onnx-tensorrt's ``docs/operators.md``
and ``onnxOpImporters.cpp`` at the 10.1 GA release, TensorRT's CHANGELOG, and the 10.15 operator table)
applied to graphs; no TensorRT parser runs here, so these tests cannot show the table matches the parser.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines import plugins
from engines.plugins import implicit_warp as iw_plugin
from export.format import Package
from export.trt_check import (
    BASELINE,
    RULES,
    TYPES,
    UNSUPPORTED,
    Needs,
    check_model,
    check_package,
    package_requirements,
)

FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset: int = 19, extra=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra], ir_version=9)


def _vi(name: str, shape, dtype: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _grid_sample(mode: str, opset: int = 19, **attrs) -> onnx.ModelProto:
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="warp_1", mode=mode, **attrs)
    return _model([node], [_vi("x", [1, 3, 8, 8]), _vi("grid", [1, 8, 8, 2])], [_vi("y", None)], opset=opset)


def test_basicvsr_package_passes_fp32_and_fp16(basicvsr_fp16_package: Package):
    reports = check_package(basicvsr_fp16_package.root, plugins=plugins.lookup)
    stages = basicvsr_fp16_package.stage_names()
    assert {r.graph for r in reports} == {f"{p}/{s}" for p in ("fp32", "fp16") for s in stages}
    for report in reports:
        assert report.ok, report.format()
        assert report.format().splitlines()[0].endswith("needs TensorRT >= 10.1: OK")
        assert report.min_tensorrt == BASELINE
    ops = {n.op_type for r in reports for n in r.nodes}
    assert {"GridSample", "Conv", "Resize", "Range", "Cast", "DepthToSpace"} <= ops


def test_dft_fails_naming_the_node():
    node = helper.make_node("DFT", ["x"], ["y"], name="spectrum_7", onesided=0)
    report = check_model(_model([node], [_vi("x", [1, 16, 2])], [_vi("y", None)]), name="dft")
    assert not report.ok
    (bad,) = report.failures
    assert bad.node == "spectrum_7" and bad.status == "unsupported"
    assert "11.2" in bad.problems[0]
    assert "spectrum_7" in report.format() and "FAILED" in report.format()


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_grid_sample_opset20_names_fail(mode: str):
    report = check_model(_grid_sample(mode, opset=20))
    (bad,) = report.failures
    assert bad.node == "warp_1"
    assert "silently" in bad.problems[0] and "nearest" in bad.problems[0]


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_grid_sample_opset19_modes_pass(mode: str):
    assert check_model(_grid_sample(mode, padding_mode="border", align_corners=1)).ok


def test_grid_sample_mixed_dtypes_fail():
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", mode="bilinear")
    model = _model(
        [node],
        [_vi("x", [1, 3, 8, 8], TensorProto.FLOAT16), _vi("grid", [1, 8, 8, 2])],
        [_vi("y", None, TensorProto.FLOAT16)],
    )
    (bad,) = check_model(model).failures
    assert "one dtype" in " ".join(bad.problems)


def test_affine_grid_fails():
    size = numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "size")
    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], name="affine")
    report = check_model(_model([node], [_vi("theta", [1, 2, 3])], [_vi("grid", None)], [size]))
    assert [f.node for f in report.failures] == ["affine"]


def test_unknown_op_and_unregistered_custom_op_fail():
    nodes = [
        helper.make_node("FancyWarp", ["x"], ["y"], name="fancy"),
        helper.make_node("UnknownWarp", ["y", "y", "flow"], ["z"], name="iw", domain="vsr"),
    ]
    model = _model(
        nodes,
        [_vi("x", [1, 4, 8, 8]), _vi("flow", [1, 2, 8, 8])],
        [_vi("z", None)],
        extra=[helper.make_opsetid("vsr", 1)],
    )
    report = check_model(model, plugins=plugins.lookup)
    statuses = {f.node: f.status for f in report.failures}
    assert statuses == {"fancy": "unknown", "iw": "unknown"}
    assert "not one of our registered TensorRT plugins" in report.failures[1].problems[0]


def _implicit_warp(feature: int = FLOAT, flow: int = FLOAT, **attrs) -> onnx.ModelProto:
    """A one-node vsr::ImplicitWarp graph as the exporter writes it (weights as initializers)."""
    c = 8
    dtype = np.float16 if feature == TensorProto.FLOAT16 else np.float32
    shapes = {"q_weight": (c, c), "q_bias": (c,), "k_weight": (c, c), "k_bias": (c,), "v_weight": (c, c)}
    shapes |= {"v_bias": (c,)}
    inits = [numpy_helper.from_array(np.zeros(shape, dtype), name) for name, shape in shapes.items()]
    inits += [
        numpy_helper.from_array(np.zeros((4, c), np.float32), "key_pe"),
        numpy_helper.from_array(np.ones(c // 4, np.float32), "pe_divisors"),
    ]
    attrs = {"num_heads": 2, "scale": 0.5, "plugin_namespace": "vsr", "plugin_version": "1", "aot": 1} | attrs
    attrs = {k: v for k, v in attrs.items() if v is not None}
    node = helper.make_node("ImplicitWarp", list(iw_plugin.INPUTS), ["out"], name="iw_1", domain="vsr", **attrs)
    inputs = [
        _vi("source", [1, c, 8, 8], feature),
        _vi("target", [1, c, 8, 8], feature),
        _vi("flow", [1, 2, 8, 8], flow),
    ]
    return _model([node], inputs, [_vi("out", [1, c, 8, 8], feature)], inits, extra=[helper.make_opsetid("vsr", 1)])


@pytest.mark.parametrize("feature", [FLOAT, TensorProto.FLOAT16])
def test_implicit_warp_node_needs_the_aot_plugin_release(feature: int):
    report = check_model(_implicit_warp(feature), plugins=plugins.lookup)
    (node,) = report.nodes
    assert report.ok and node.status == "plugin", report.format()
    assert report.min_tensorrt == (10, 9)
    assert "needs TensorRT >= 10.9" in report.format() and "iw_1" in report.format()


def test_implicit_warp_without_namespace_attribute_needs_10_10():
    """The parser looks the plugin up by the plugin_namespace attribute; by the domain only from 10.10."""
    report = check_model(_implicit_warp(plugin_namespace=None), plugins=plugins.lookup)
    assert report.ok and report.min_tensorrt == (10, 10)
    assert any("domain" in need.why for need in report.nodes[0].needs)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"flow": TensorProto.FLOAT16}, "flow must be FP32"),
        ({"plugin_namespace": "other"}, "plugin_namespace='other'"),
        ({"plugin_version": "2"}, "plugin_version='2'"),
        ({"aot": 0}, "ahead-of-time"),
        ({"num_heads": None}, "num_heads"),
    ],
)
def test_implicit_warp_node_the_plugin_cannot_take_fails(change: dict, words: str):
    report = check_model(_implicit_warp(**change), plugins=plugins.lookup)
    (bad,) = report.failures
    assert bad.status == "unsupported" and any(words in p for p in bad.problems), bad.problems


def test_mixed_feature_dtypes_fail():
    model = _implicit_warp()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16  # source FP16, target FP32
    (bad,) = check_model(model, plugins=plugins.lookup).failures
    assert "all FP32 or all FP16" in " ".join(bad.problems)


def test_custom_ops_are_unknown_without_a_plugin_lookup():
    (bad,) = check_model(_implicit_warp()).failures
    assert bad.status == "unknown"


def test_other_plugin_rules_are_used():
    class Rules:
        def check_node(self, view):
            return [Needs((11, 0), "a plugin of a later release")]

    report = check_model(_implicit_warp(), plugins=lambda domain, op: Rules())
    assert report.ok and report.nodes[0].status == "plugin" and report.min_tensorrt == (11, 0)


@pytest.mark.parametrize("pads, ok", [([1, 1, 1, 1], True), ([0, 0, 1, 1], False)])
def test_deform_conv_pads(pads: list[int], ok: bool):
    w = numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w")
    node = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn", pads=pads, kernel_shape=[3, 3])
    model = _model([node], [_vi("x", [1, 4, 8, 8]), _vi("offset", [1, 18, 8, 8])], [_vi("y", None)], [w])
    report = check_model(model)
    assert report.ok is ok
    if not ok:
        assert "pads" in report.failures[0].problems[0]


@pytest.mark.parametrize(
    "attrs, ok",
    [
        ({"mode": "linear", "coordinate_transformation_mode": "half_pixel"}, True),
        ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, True),
        ({"mode": "cubic"}, False),
        ({"mode": "linear", "antialias": 1}, False),
        ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, False),
        ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, False),
    ],
)
def test_resize_rules(attrs: dict, ok: bool):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)
    report = check_model(_model([node], [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], [scales]))
    assert report.ok is ok, report.format()


def test_fp16_range_fails_float_range_passes():
    def model(dtype: int) -> onnx.ModelProto:
        node = helper.make_node("Range", ["a", "b", "c"], ["y"], name="rng")
        return _model([node], [_vi(n, [], dtype) for n in "abc"], [_vi("y", None, dtype)])

    assert check_model(model(FLOAT)).ok
    (bad,) = check_model(model(TensorProto.FLOAT16)).failures
    assert "importer" in bad.problems[0]


def test_subgraph_nodes_are_checked():
    then = helper.make_graph([helper.make_node("DFT", ["x"], ["t"], name="inner_dft")], "then", [], [_vi("t", None)])
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"], name="inner_id")], "else", [], [_vi("e", None)]
    )
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)
    report = check_model(_model([node], [_vi("cond", [], TensorProto.BOOL), _vi("x", [4, 2])], [_vi("y", None)]))
    assert [f.node for f in report.failures] == ["branch/then_branch/inner_dft"]


def test_loop_fails_as_unverifiable():
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"], name="keep")],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("c", [], TensorProto.BOOL)],
        [_vi("c_out", [], TensorProto.BOOL)],
    )
    node = helper.make_node("Loop", ["n", "cond"], [], name="loop", body=body)
    report = check_model(_model([node], [_vi("n", [], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL)], []))
    assert [f.node for f in report.failures] == ["loop"]


def test_opset_outside_the_parsers_range_fails():
    report = check_model(_grid_sample("bilinear", opset=21))
    assert report.problems and not report.ok


def test_dtype_outside_the_op_types_fails():
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="iconv")
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int32), "w")
    report = check_model(
        _model([node], [_vi("x", [1, 1, 4, 4], TensorProto.INT32)], [_vi("y", None, TensorProto.INT32)], [w])
    )
    assert "INT32" in report.failures[0].problems[0]


@pytest.mark.parametrize("attrs, needs", [({}, BASELINE), ({"reduction": "none"}, (10, 9))])
def test_scatter_nd_reduction_attribute_needs_10_9(attrs: dict, needs: tuple[int, int]):
    """Importers before 10.9 reject a ScatterND with a reduction attribute, even 'none'."""
    idx = numpy_helper.from_array(np.zeros((1, 1), np.int64), "idx")
    node = helper.make_node("ScatterND", ["x", "idx", "u"], ["y"], name="scatter", **attrs)
    model = _model([node], [_vi("x", [4, 3]), _vi("u", [1, 3])], [_vi("y", None)], [idx])
    report = check_model(model)
    assert report.ok and report.min_tensorrt == needs


def test_scatter_nd_real_reduction_fails():
    idx = numpy_helper.from_array(np.zeros((1, 1), np.int64), "idx")
    node = helper.make_node("ScatterND", ["x", "idx", "u"], ["y"], name="scatter", reduction="add")
    (bad,) = check_model(_model([node], [_vi("x", [4, 3]), _vi("u", [1, 3])], [_vi("y", None)], [idx])).failures
    assert "reduction='add'" in bad.problems[0]


@pytest.mark.parametrize(
    "equation, shapes, needs",
    [
        ("ij,jk->ik", ([2, 3], [3, 4]), BASELINE),
        ("...ij,...jk->...ik", ([5, 2, 3], [5, 3, 4]), (10, 12)),
        ("ii->i", ([3, 3],), (10, 12)),
        ("ij,ij->ij", ([1, 4], [3, 4]), (10, 12)),
    ],
)
def test_einsum_ellipsis_diagonal_broadcast_need_10_12(equation: str, shapes: tuple, needs: tuple[int, int]):
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], name="es", equation=equation)
    report = check_model(_model([node], [_vi(n, s) for n, s in zip(names, shapes)], [_vi("y", None)]))
    assert report.ok and report.min_tensorrt == needs, report.format()


@pytest.mark.parametrize("scales_const, ok", [(True, True), (False, False)])
def test_resize_with_partial_axes(scales_const: bool, ok: bool):
    """The importer reorders scales for axes other than 0..rank-1 when they are initializers."""
    scales = numpy_helper.from_array(np.array([2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear", axes=[2, 3])
    inputs = [_vi("x", [1, 3, 8, 8])] + ([] if scales_const else [_vi("scales", [2])])
    report = check_model(_model([node], inputs, [_vi("y", None)], [scales] if scales_const else []))
    assert report.ok is ok, report.format()


def test_run_time_slice_axes_need_10_3():
    starts = numpy_helper.from_array(np.array([0], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([2], np.int64), "ends")
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="cut")
    report = check_model(
        _model([node], [_vi("x", [4, 4]), _vi("axes", [1], TensorProto.INT64)], [_vi("y", None)], [starts, ends])
    )
    assert report.ok and report.min_tensorrt == (10, 3)


def test_package_requirements_name_the_nodes():
    deform_w = numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "w")
    dcn = helper.make_node("DeformConv", ["x", "w", "offset"], ["y"], name="dcn_1", pads=[1, 1, 1, 1])
    first = check_model(
        _model([dcn], [_vi("x", [1, 4, 8, 8]), _vi("offset", [1, 18, 8, 8])], [_vi("y", None)], [deform_w]), "a"
    )
    second = check_model(_implicit_warp(), "b", plugins=plugins.lookup)
    version, lines = package_requirements([first, second])
    assert version == (10, 9)
    assert lines[0].startswith("TensorRT >= 10.9") and "b iw_1" in lines[0]
    assert lines[-1].startswith("TensorRT >= 10.1") and "a dcn_1" in lines[-1]


def test_every_rule_says_what_it_checks_and_its_source():
    assert all(rule.source and rule.checks for rule in RULES.values())
    assert set(RULES) <= set(TYPES) and not set(TYPES) & set(UNSUPPORTED)
    assert "DFT" in UNSUPPORTED and "AffineGrid" in UNSUPPORTED
    assert TYPES["GridSample"] == {"FP32", "FP16"} and "INT64" in TYPES["Gather"]
