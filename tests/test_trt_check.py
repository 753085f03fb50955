"""The static TensorRT check: passes on the BasicVSR package, fails by node name on unsupported ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines import plugins
from export.format import Package
from export.trt_check import OPERATORS, RULES, check_model, check_package

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
    reports = check_package(basicvsr_fp16_package.root)
    stages = basicvsr_fp16_package.stage_names()
    assert {r.graph for r in reports} == {f"{p}/{s}" for p in ("fp32", "fp16") for s in stages}
    for report in reports:
        assert report.ok, report.format()
        assert "OK" in report.format().splitlines()[0]
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
    report = check_model(model)
    statuses = {f.node: f.status for f in report.failures}
    assert statuses == {"fancy": "unknown", "iw": "unknown"}
    assert "not a registered TensorRT plugin" in report.failures[1].problems[0]


def test_implicit_warp_is_a_registered_plugin():
    node = helper.make_node("ImplicitWarp", ["x", "x", "flow"], ["z"], name="iw", domain="vsr")
    model = _model(
        [node],
        [_vi("x", [1, 4, 8, 8]), _vi("flow", [1, 2, 8, 8])],
        [_vi("z", None)],
        extra=[helper.make_opsetid("vsr", 1)],
    )
    assert check_model(model).nodes[0].status == "plugin"


def test_registered_plugin_passes(monkeypatch: pytest.MonkeyPatch):
    spec = plugins.PluginSpec("vsr", "ImplicitWarp", "1", "vsr", load=lambda: None, description="test")
    monkeypatch.setattr(plugins, "_REGISTRY", {("vsr", "ImplicitWarp"): spec})
    node = helper.make_node("ImplicitWarp", ["x", "x", "flow"], ["z"], name="iw", domain="vsr")
    model = _model(
        [node],
        [_vi("x", [1, 4, 8, 8]), _vi("flow", [1, 2, 8, 8])],
        [_vi("z", None)],
        extra=[helper.make_opsetid("vsr", 1)],
    )
    report = check_model(model)
    assert report.ok and report.nodes[0].status == "plugin"


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


def test_every_rule_names_its_source():
    assert all(source for _, source in RULES.values())
    assert set(RULES) <= set(OPERATORS)
    assert not OPERATORS["DFT"].supported and not OPERATORS["AffineGrid"].supported
    assert OPERATORS["DeformConv"].supported and OPERATORS["GridSample"].types == {"FP32", "FP16"}
