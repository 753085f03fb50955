"""Modulated deformable convolution: our reference against ONNX Runtime's and ONNX's DeformConv, and its export."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from torch.nn import functional as F

from vsr_models.basicvsrpp import SecondOrderDeformableAlignment
from vsr_models.ops.deform_conv import deform_conv2d_reference


def _deform_conv_model(kernel, stride, pads, dilation, group, offset_group, bias, mask) -> onnx.ModelProto:
    """A one-node opset-19 model: DeformConv(X, W, offset[, B][, mask])."""
    names = ["X", "W", "offset", "B" if bias else "", "mask" if mask else ""]
    while not names[-1]:
        names.pop()
    node = helper.make_node(
        "DeformConv",
        names,
        ["Y"],
        kernel_shape=list(kernel),
        strides=list(stride),
        pads=[pads[0], pads[1], pads[0], pads[1]],
        dilations=list(dilation),
        group=group,
        offset_group=offset_group,
    )
    graph = helper.make_graph(
        [node],
        "deform_conv",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _case(rng, c, oc, h, w, kernel, stride, pads, dilation, group, offset_group, spread, n=2):
    kh, kw = kernel
    oh = (h + 2 * pads[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pads[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return {
        "X": rng.standard_normal((n, c, h, w)).astype(np.float32),
        "W": rng.standard_normal((oc, c // group, kh, kw)).astype(np.float32),
        "offset": (spread * rng.standard_normal((n, offset_group * kh * kw * 2, oh, ow))).astype(np.float32),
        "B": rng.standard_normal(oc).astype(np.float32),
        "mask": rng.random((n, offset_group * kh * kw, oh, ow)).astype(np.float32),
    }


def _reference(feeds, stride, pads, dilation, group, bias=True, mask=True) -> np.ndarray:
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    return deform_conv2d_reference(
        t["X"],
        t["offset"],
        t["W"],
        t["B"] if bias else None,
        mask=t["mask"] if mask else None,
        stride=stride,
        padding=pads,
        dilation=dilation,
        groups=group,
    ).numpy()


# (C, oC, H, W, kernel, stride, pads, dilation, group, offset_group, offset spread in px, bias, mask)
CASES = {
    "basicvsrpp-like": (32, 16, 9, 11, (3, 3), (1, 1), (1, 1), (1, 1), 1, 16, 10.0, True, True),
    "offsets-leave-the-frame": (4, 3, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 2, 6.0, True, True),
    "strided-dilated-grouped": (8, 4, 7, 9, (3, 3), (2, 1), (1, 2), (1, 2), 2, 4, 2.0, False, True),
    "no-mask-rect-kernel": (6, 6, 6, 5, (2, 3), (1, 1), (0, 1), (1, 1), 3, 1, 0.7, True, False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_equals_onnxruntime_deformconv(name):
    c, oc, h, w, kernel, stride, pads, dilation, group, og, spread, bias, mask = CASES[name]
    feeds = _case(np.random.default_rng(7), c, oc, h, w, kernel, stride, pads, dilation, group, og, spread)
    model = _deform_conv_model(kernel, stride, pads, dilation, group, og, bias, mask)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name: feeds[i.name] for i in session.get_inputs()}
    ours = _reference(feeds, stride, pads, dilation, group, bias, mask)
    theirs = session.run(None, inputs)[0]
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5


def test_border_positions_read_zero_outside_and_interpolate_inside():
    """Offsets on and around the frame edge: exact integer positions, half-pixel overhangs, and
    positions more than one pixel outside (which must read exactly zero)."""
    rng = np.random.default_rng(3)
    h, w = 4, 5
    x = rng.standard_normal((1, 2, h, w)).astype(np.float32)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    edges = np.array([-2.0, -1.0, -0.5, -0.25, 0.0, 0.5, 1.0, 1.5, 4.0, 5.0, 4.5, -1.01], np.float32)
    offset = rng.choice(edges, size=(1, 18, h, w)).astype(np.float32)
    mask = rng.random((1, 9, h, w)).astype(np.float32)
    feeds = {"X": x, "W": weight, "offset": offset, "mask": mask}
    session = ort.InferenceSession(
        _deform_conv_model((3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False, True).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    ours = deform_conv2d_reference(
        torch.from_numpy(x), torch.from_numpy(offset), torch.from_numpy(weight), mask=torch.from_numpy(mask), padding=1
    ).numpy()
    assert np.abs(ours - session.run(None, feeds)[0]).max() <= 1e-5
    # Far outside: every tap reads zero, so only the bias is left.
    far = np.full_like(offset, 40.0)
    out = deform_conv2d_reference(
        torch.from_numpy(x),
        torch.from_numpy(far),
        torch.from_numpy(weight),
        torch.ones(3),
        mask=torch.from_numpy(mask),
        padding=1,
    )
    assert torch.equal(out, torch.ones_like(out))


def test_reference_equals_the_onnx_specification_evaluator():
    """ONNX's own (pure numpy) DeformConv, independent of ONNX Runtime's kernel."""
    feeds = _case(np.random.default_rng(11), 4, 2, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 2, 4.0, n=1)
    model = _deform_conv_model((3, 3), (1, 1), (1, 1), (1, 1), 1, 2, True, True)
    theirs = ReferenceEvaluator(model).run(None, feeds)[0]
    assert np.abs(_reference(feeds, (1, 1), (1, 1), (1, 1), 1) - theirs).max() <= 1e-5


def test_integer_offsets_are_a_shifted_convolution():
    """Offsets (dy, dx) = (1, -2) everywhere and mask 1 equal an ordinary convolution of the frame
    shifted by (1, -2) with zeros entering: this pins the (dy, dx) order of the offset channels."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(1, 8, 10, 12), torch.randn(4, 8, 3, 3), torch.randn(4)
    offset = torch.tensor([1.0, -2.0]).repeat(2 * 9).view(1, 36, 1, 1).expand(1, 36, 10, 12)
    out = deform_conv2d_reference(x, offset, weight, bias, mask=torch.ones(1, 18, 10, 12), padding=1)
    wide = F.conv2d(F.pad(x, (3, 3, 3, 3)), weight, bias)  # wide[a, b] reads x[a - 3 + ky, b - 3 + kx]
    assert (out - wide[:, :, 3:13, 0:12]).abs().max().item() <= 1e-5


def test_alignment_offsets_are_the_flow_plus_a_bounded_residual():
    """With the released initialisation (last offset conv zero) the offsets are the flow and the
    mask 0.5: aligning by an integer flow (dx=2, dy=-1) is a convolution of the shifted states."""
    torch.manual_seed(0)
    align = SecondOrderDeformableAlignment(32, 16, 3, padding=1, deform_groups=16).eval()
    x, cond = torch.randn(1, 32, 9, 10), torch.randn(1, 48, 9, 10)
    flow = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 9, 10)
    with torch.no_grad():
        out = align(x, cond, flow, flow)
    wide = F.conv2d(F.pad(x, (3, 3, 3, 3)), align.weight)  # wide[a, b] reads x[a - 3 + ky, b - 3 + kx]
    expect = 0.5 * wide[:, :, 1:10, 4:14] + align.bias.view(1, -1, 1, 1)
    assert (out - expect).abs().max().item() <= 1e-5
    with torch.no_grad():
        align.conv_offset[-1].bias.fill_(100.0)  # saturates tanh: residual +10 px
        big = align(x, cond, torch.zeros_like(flow), torch.zeros_like(flow))
        ten = align.max_residue_magnitude * torch.ones(1, 288, 9, 10)
        direct = deform_conv2d_reference(
            x, ten, align.weight, align.bias, mask=torch.sigmoid(torch.full((1, 144, 9, 10), 100.0)), padding=1
        )
    assert (big - direct).abs().max().item() <= 1e-5


def test_export_is_one_deformconv_node_that_onnxruntime_runs(tmp_path):
    """The alignment block exports with dynamic size to opset 19 with a standard DeformConv node."""
    torch.manual_seed(1)
    align = SecondOrderDeformableAlignment(32, 16, 3, padding=1, deform_groups=16).eval()
    with torch.no_grad():
        align.conv_offset[-1].weight.normal_(0, 0.1)
        align.conv_offset[-1].bias.normal_(0, 1.0)
        align.bias.normal_()
    args = (
        torch.randn(1, 32, 12, 14),
        torch.randn(1, 48, 12, 14),
        3 * torch.randn(1, 2, 12, 14),
        3 * torch.randn(1, 2, 12, 14),
    )
    h, w = torch.export.Dim("h", min=4, max=512), torch.export.Dim("w", min=4, max=512)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            align,
            args,
            input_names=["x", "cond", "flow1", "flow2"],
            opset_version=19,
            dynamo=True,
            dynamic_shapes=({2: h, 3: w},) * 4,
            optimize=True,
            verbose=False,
        )
    program.save(str(tmp_path / "align.onnx"))
    model = onnx.load(str(tmp_path / "align.onnx"))
    onnx.checker.check_model(model, full_check=True)
    nodes = [(n.domain, n.op_type) for n in model.graph.node]
    assert nodes.count(("", "DeformConv")) == 1, nodes
    assert {o.domain: o.version for o in model.opset_import}[""] == 19
    deform = next(n for n in model.graph.node if n.op_type == "DeformConv")
    attrs = {a.name: helper.get_attribute_value(a) for a in deform.attribute}
    assert attrs["offset_group"] == 16 and list(attrs["pads"]) == [1, 1, 1, 1]
    session = ort.InferenceSession(str(tmp_path / "align.onnx"), providers=["CPUExecutionProvider"])
    x = (torch.randn(1, 32, 7, 9), torch.randn(1, 48, 7, 9), 4 * torch.randn(1, 2, 7, 9), 4 * torch.randn(1, 2, 7, 9))
    with torch.no_grad():
        ours = align(*x).numpy()
    theirs = session.run(None, dict(zip(["x", "cond", "flow1", "flow2"], (t.numpy() for t in x))))[0]
    assert np.abs(ours - theirs).max() <= 1e-5
