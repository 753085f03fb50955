"""The ``vsr::ImplicitWarp`` TensorRT plugin (engines/plugins/implicit_warp.py).

* CPU, default run: the registry knows the plugin, importing the module needs neither TensorRT nor Triton.
* ``-m slow``: the Triton kernel compiles to PTX for sm_90 without a GPU (needs ``pip install triton``).
* ``-m gpu``: the kernel, launched from torch, matches the reference to 1e-5 in FP32.
* ``-m tensorrt``: a one-node engine builds with the AOT plugin and matches the reference.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from engines import plugins
from engines.plugins import implicit_warp as plugin
from vsr_models.ops.implicit_warp import implicit_warp, key_position_encoding, pe_divisors


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_triton = pytest.mark.skipif(
    not _has("triton"), reason="needs Triton (pip install triton; not a project dependency)"
)
needs_cuda_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() and _has("triton")), reason="needs a CUDA GPU and Triton"
)
needs_tensorrt = pytest.mark.skipif(
    not (torch.cuda.is_available() and _has("tensorrt") and _has("triton")),
    reason="needs TensorRT (>= 10.9, tensorrt.plugin AOT), Triton and a CUDA GPU",
)


def _case(n=2, c=32, h=7, w=9, heads=4, device="cpu", dtype=torch.float32, seed=0, flow_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, k=1.0: torch.randn(*s, generator=g) * k  # noqa: E731
    flow = r(n, 2, h, w, k=flow_scale)
    flow[0, :, 0, :] = 40.0  # far outside the frame: all four corners clamp
    flow[0, :, -1, :] = -40.0
    flow[1, 0, :, 0] = -0.5  # left border, half a pixel out
    flow[1, 1, 2, 3] = 0.0  # integer positions (offset 0)
    args = {
        "source": r(n, c, h, w),
        "target": r(n, c, h, w),
        "flow": flow,
        "q_weight": r(c, c, k=c**-0.5),
        "q_bias": r(c, k=0.1),
        "k_weight": r(c, c, k=c**-0.5),
        "k_bias": r(c, k=0.1),
        "v_weight": r(c, c, k=c**-0.5),
        "v_bias": r(c, k=0.1),
        "key_pe": key_position_encoding(c, 0.01).reshape(4, c),
        "divisors": pe_divisors(c, 0.01),
    }
    out = {}
    for k, v in args.items():
        v = v.to(device)
        out[k] = v if k in ("flow", "key_pe", "divisors") else v.to(dtype)
    return out, heads


def test_registry_has_the_plugin():
    spec = plugins.lookup("vsr", "ImplicitWarp")
    assert spec is plugin.SPEC
    assert (spec.namespace, spec.op_type, spec.version) == ("vsr", "ImplicitWarp", "1")


def test_import_needs_neither_tensorrt_nor_triton():
    code = (
        "import sys; import engines.plugins as p; p.registered(); "
        "assert 'tensorrt' not in sys.modules and 'triton' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kernel_configuration():
    consts = plugin.kernel_constants(120, 6, 20**-0.5)
    assert (consts["C_PAD"], consts["H_PAD"]) == (128, 16)
    sig = plugin.kernel_signature("fp16")
    assert [sig[k] for k in ("source", "flow", "key_pe", "pe_divisors", "output")] == [
        "*fp16",
        "*fp32",
        "*fp32",
        "*fp32",
        "*fp16",
    ]
    assert list(sig)[:11] == list(plugin.INPUTS)
    with pytest.raises(ValueError):
        plugin.kernel_constants(30, 4, 1.0)


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("feature_type", ["fp32", "fp16"])
def test_kernel_compiles_to_ptx_without_a_gpu(feature_type):
    from triton.backends.compiler import GPUTarget

    # Small C keeps the (slow, CPU-bound) compile short; the IART shape (120, 6) compiles too (~1 min each).
    name, ptx, meta = plugin.compile_ptx(feature_type, 32, 4, 8**-0.5, target=GPUTarget("cuda", 90, 32))
    assert name == "implicit_warp_kernel"
    assert ".entry implicit_warp_kernel" in ptx and ".target sm_90" in ptx
    assert meta.num_warps == plugin.NUM_WARPS


@pytest.mark.gpu
@needs_cuda_triton
@pytest.mark.parametrize("c,heads", [(32, 4), (120, 6), (24, 3)])
def test_kernel_matches_reference_fp32(c, heads):
    args, heads = _case(c=c, heads=heads, device="cuda")
    expected = implicit_warp(*args.values(), num_heads=heads)
    got = plugin.launch(*args.values(), num_heads=heads)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@needs_cuda_triton
def test_kernel_fp16_close_to_reference():
    args, heads = _case(c=32, heads=4, device="cuda")
    expected = implicit_warp(*args.values(), num_heads=heads)
    half = {k: (v if k in ("flow", "key_pe", "divisors") else v.half()) for k, v in args.items()}
    got = plugin.launch(*half.values(), num_heads=heads)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.tensorrt
@needs_tensorrt
def test_one_node_engine_builds_and_matches(tmp_path):
    import onnx
    import tensorrt as trt
    from onnx import helper, numpy_helper

    c, heads = 32, 4
    args, heads = _case(n=1, c=c, h=8, w=8, heads=heads)
    scale = (c // heads) ** -0.5
    names = list(plugin.INPUTS)
    inits = [numpy_helper.from_array(v.numpy(), name) for name, v in zip(names[3:], list(args.values())[3:])]
    node = helper.make_node(
        "ImplicitWarp", names, ["output"], domain="vsr", num_heads=heads, scale=scale, plugin_namespace="vsr", aot=1
    )
    vi = lambda name, shape: helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(
        [node],
        "iw",
        [vi("source", [1, c, 8, 8]), vi("target", [1, c, 8, 8]), vi("flow", [1, 2, 8, 8])],
        [vi("output", [1, c, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("vsr", 1)])

    logger = trt.Logger(trt.Logger.WARNING)
    plugins.load_all()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(model.SerializeToString()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    blob = builder.build_serialized_network(network, config)
    assert blob is not None, "engine build failed"

    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    context = engine.create_execution_context()
    feeds = {k: args[k].cuda().contiguous() for k in ("source", "target", "flow")}
    out = torch.empty(1, c, 8, 8, device="cuda")
    for name, t in feeds.items():
        context.set_tensor_address(name, t.data_ptr())
    context.set_tensor_address("output", out.data_ptr())
    assert context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    expected = implicit_warp(*args.values(), num_heads=heads, scale=scale)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=1e-5)
