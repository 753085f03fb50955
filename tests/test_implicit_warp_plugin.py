"""The ``vsr::ImplicitWarp`` TensorRT plugin (engines/plugins/implicit_warp.py).

* Default run: the plugin functions carry real classes as annotations, in the schema
  ``tensorrt.plugin`` checks; the exported node carries what TensorRT's parser reads; the version
  gate; plugins load only for graphs that have their node, and again after a failure; the kernel's
  fingerprint; the tiled kernel's arithmetic in Triton's CPU interpreter (needs Triton).
* ``-m slow``: the kernel compiles to PTX for sm_90, sm_89 and sm_86 within 48 KiB of shared memory,
  needing no scratch buffer.
* ``-m gpu``: the kernel, launched from torch, matches the reference to 1e-5 in FP32.
* ``-m tensorrt``: TensorRT registers the plugin; a one-node engine builds and matches the reference.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
import types
import typing
import warnings
from pathlib import Path

import onnx
import pytest
import torch

from engines import plugins
from engines.plugins import implicit_warp as plugin
from export.trt_check import check_model
from vsr_models.ops import set_implicit_warp_export
from vsr_models.ops.implicit_warp import ImplicitWarp, implicit_warp, key_position_encoding, pe_divisors


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
    reason="needs TensorRT (>= 10.9, tensorrt.plugin with AOT plugins), Triton and a CUDA GPU",
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


# ------------------------------------------------------------------ what tensorrt.plugin inspects
class _Desc:
    """Stand-ins for the classes of ``tensorrt.plugin``: only their identity matters here."""


class _AutoTune:
    pass


class _LaunchParams:
    pass


class _SymExprs:
    pass


class _SymIntExprs(_SymExprs):
    pass


_TRTP = types.SimpleNamespace(
    TensorDesc=_Desc,
    AutoTuneCombination=_AutoTune,
    KernelLaunchParams=_LaunchParams,
    SymExprs=_SymExprs,
    SymIntExprs=_SymIntExprs,
)


def _signature(fn) -> inspect.Signature:
    return inspect.signature(fn)  # what tensorrt.plugin reads (_validate.py), not get_type_hints


def test_register_function_annotations_are_the_classes_passed_in():
    """tensorrt.plugin calls issubclass(annotation, TensorDesc) on every parameter and on the return, so the
    annotations must be the very classes of the module handed in (not strings or copies). Checked with a
    stand-in for ``tensorrt.plugin`` (no TensorRT here); the real module is exercised by the GPU tests."""
    desc, _, _ = plugin.plugin_functions(types.SimpleNamespace(float32="f32"), _TRTP)
    sig = _signature(desc)
    params = list(sig.parameters.values())
    tensors = [p for p in params if p.annotation is _Desc]
    attrs = [p for p in params if p.annotation is not _Desc]
    assert [p.name for p in tensors] == list(plugin.INPUTS) and params[: len(tensors)] == tensors
    assert {p.name: p.annotation for p in attrs} == plugin.ATTRIBUTES  # int and float: serializable types
    assert all(inspect.isclass(p.annotation) and p.default is inspect.Parameter.empty for p in params)
    assert sig.return_annotation is _Desc


def test_aot_impl_has_the_schema_and_return_annotation_tensorrt_wants():
    """_validate_aot_impl: (tensors..., attributes..., outputs, tactic), and a return annotation
    tuple[str | bytes, str | bytes, KernelLaunchParams, SymExprs] that it refuses to do without."""
    _, _, aot = plugin.plugin_functions(types.SimpleNamespace(float32="f32"), _TRTP)
    sig = _signature(aot)
    assert list(sig.parameters) == [*plugin.INPUTS, *plugin.ATTRIBUTES, "outputs", "tactic"]
    for name in plugin.INPUTS:
        assert sig.parameters[name].annotation is _Desc
    for name, kind in plugin.ATTRIBUTES.items():
        assert sig.parameters[name].annotation is kind
    assert typing.get_origin(sig.parameters["outputs"].annotation) is tuple
    assert typing.get_args(sig.parameters["outputs"].annotation) == (_Desc,)
    assert sig.parameters["tactic"].annotation is int
    ret = sig.return_annotation
    assert ret is not inspect.Parameter.empty and typing.get_origin(ret) is tuple
    name, ptx, launch, extra = typing.get_args(ret)
    for union in (name, ptx):
        assert isinstance(union, types.UnionType) and set(typing.get_args(union)) == {str, bytes}
    assert launch is _LaunchParams and issubclass(extra, _SymExprs)


def test_autotune_schema():
    _, autotune, _ = plugin.plugin_functions(types.SimpleNamespace(float32="f32"), _TRTP)
    sig = _signature(autotune)
    assert list(sig.parameters) == [*plugin.INPUTS, "outputs"]
    assert typing.get_origin(sig.return_annotation) is list
    assert typing.get_args(sig.return_annotation) == (_AutoTune,)


# ------------------------------------------------------------------ the exported node
def _warp(c: int = 32, heads: int = 4) -> ImplicitWarp:
    torch.manual_seed(0)
    return ImplicitWarp(dim=c, pe_dim=c, num_heads=heads, pe_temp=0.01).eval()


def _export_custom(tmp_path: Path, warp: ImplicitWarp) -> onnx.ModelProto:
    c = warp.q.weight.shape[0]
    args = (torch.randn(1, c, 16, 16), torch.randn(1, c, 16, 16), torch.randn(1, 2, 16, 16))
    path = tmp_path / "iw.onnx"
    set_implicit_warp_export("custom")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                warp, args, input_names=["source", "target", "flow"], opset_version=19, dynamo=True, verbose=False
            )
    finally:
        set_implicit_warp_export("decomposed")
    program.save(str(path))
    return onnx.load(str(path))


def test_exported_node_carries_what_the_parser_reads(tmp_path: Path):
    """The parser finds the plugin by op_type, plugin_version and plugin_namespace (the domain only from
    10.10), passes the attributes the creator declares, and takes aot=1 as 'the AOT implementation'."""
    model = _export_custom(tmp_path, _warp())
    (node,) = [n for n in model.graph.node if n.domain == plugin.SPEC.domain]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.op_type == plugin.SPEC.op_type
    assert attrs["plugin_namespace"].decode() == plugin.SPEC.namespace
    assert attrs["plugin_version"].decode() == plugin.SPEC.version
    assert attrs["aot"] == 1
    desc, _, _ = plugin.plugin_functions(types.SimpleNamespace(float32="f32"), _TRTP)
    declared = {p.name: p.annotation for p in _signature(desc).parameters.values() if p.annotation is not _Desc}
    kinds = {onnx.AttributeProto.INT: int, onnx.AttributeProto.FLOAT: float}
    assert {a.name: kinds[a.type] for a in node.attribute if a.name in declared} == declared
    assert len(node.input) == sum(p.annotation is _Desc for p in _signature(desc).parameters.values())
    report = check_model(model, plugins=plugins.lookup)
    assert report.ok and report.min_tensorrt == plugin.MIN_TENSORRT, report.format()


# ------------------------------------------------------------------ version gate and loading
def test_gate_names_the_release_or_library_that_is_missing():
    with_aot = types.SimpleNamespace(aot_impl=object())
    without_aot = types.SimpleNamespace()
    assert "no tensorrt.plugin" in plugin.plugin_gate("10.5.0.18", None, True)
    assert ">= 10.9" in plugin.plugin_gate("10.8.0.43", with_aot, True)
    assert "TensorRT 10.6.0" in plugin.plugin_gate("10.6.0", without_aot, True)
    assert "no aot_impl" in plugin.plugin_gate("10.9.0.34", without_aot, True)
    assert "does not import" in plugin.plugin_gate("10.9.0.34", None, True)
    assert "Triton" in plugin.plugin_gate("11.1.0.106", with_aot, False)
    assert plugin.plugin_gate("10.9.0.34", with_aot, True) is None
    assert plugin.plugin_gate("11.1.0.106", with_aot, True) is None


def test_old_tensorrt_fails_with_the_reason_only_for_graphs_with_the_node():
    old = types.SimpleNamespace(__version__="10.6.0.26")
    assert plugins.load_for(set(), old) == []
    with pytest.raises(plugins.PluginUnavailable, match=r"vsr::ImplicitWarp node.*TensorRT >= 10\.9.*10\.6\.0"):
        plugins.load_for({("vsr", "ImplicitWarp")}, old)
    with pytest.raises(plugins.UnknownCustomOp, match="acme::Warp"):
        plugins.required({("acme", "Warp")})


def test_a_standard_op_package_needs_no_plugin(basicvsr_package):
    """Its graphs have no custom node; importing the plugins (and finding that) needs neither TensorRT nor Triton."""
    from engines.tensorrt import package_plugins

    code = (
        "import sys; import engines.plugins as p; from engines.tensorrt import package_plugins; "
        "from export.format import Package; assert p.registered(); "
        f"assert package_plugins(Package.open({str(basicvsr_package.root)!r}), 'fp32') == []; "
        "assert not {'tensorrt', 'tensorrt.plugin', 'triton'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert package_plugins(basicvsr_package, "fp32") == []


def test_a_failed_load_is_retried(monkeypatch: pytest.MonkeyPatch):
    """A registration that failed once is attempted again by the next build in the same process."""
    calls = []

    def load(trt):
        calls.append(trt.__version__)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    spec = plugins.PluginSpec(
        "vsr", "Flaky", "1", "vsr", (10, 1), lambda trt: None, load, lambda: "k", lambda view: [], "test"
    )
    monkeypatch.setitem(plugins._REGISTRY, ("vsr", "Flaky"), spec)
    trt = types.SimpleNamespace(__version__="10.9.0")
    with pytest.raises(RuntimeError):
        plugins.load_for({("vsr", "Flaky")}, trt)
    assert plugins.load_for({("vsr", "Flaky")}, trt) == [spec]
    assert len(calls) == 2


def test_registry_has_the_plugin():
    spec = plugins.lookup("vsr", "ImplicitWarp")
    assert spec is plugin.SPEC
    assert (spec.namespace, spec.op_type, spec.version, spec.min_tensorrt) == ("vsr", "ImplicitWarp", "1", (10, 9))


# ------------------------------------------------------------------ the kernel
def test_fingerprint_follows_the_kernel(monkeypatch: pytest.MonkeyPatch):
    """The AOT kernel is baked into the engine: its source, constants and the Triton version are in the key."""
    source = plugin.kernel_sources()
    base = plugin.kernel_fingerprint(source, "3.9.0")
    assert plugin.kernel_fingerprint(source, "3.9.0") == base
    assert plugin.kernel_fingerprint(source.replace(b"BLOCK_P", b"BLOCK_Q", 1), "3.9.0") != base
    assert plugin.kernel_fingerprint(source, "3.10.0") != base
    monkeypatch.setattr(plugin, "BLOCK_K", 32)
    assert plugin.kernel_fingerprint(source, "3.9.0") != base
    assert b"implicit_warp_kernel" in source and b"def launch" in source


def test_kernel_configuration():
    consts = plugin.kernel_constants(120, 6, 20**-0.5)
    assert (consts["C_PAD"], consts["H_PAD"], consts["BLOCK_N"], consts["BLOCK_K"]) == (128, 16, 32, 16)
    assert plugin.kernel_constants(8, 2, 1.0)["BLOCK_N"] == 16  # tiles never wider than the padded channels
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


def test_shared_memory_check():
    plugin.check_shared_memory(plugin.SHARED_MEMORY_LIMIT, "fits")
    with pytest.raises(plugins.PluginUnavailable, match="213504 bytes"):
        plugin.check_shared_memory(213504, "fp32, C=120")  # what the untiled kernel needed on sm_90


def test_scratch_check_refuses_any_scratch_buffer():
    """Triton's metadata: both sizes 0 pass; either one set is refused; releases without the fields (or with
    None for an unset size) pass."""
    meta = types.SimpleNamespace
    plugin.check_scratch(meta(global_scratch_size=0, profile_scratch_size=0), "none")
    plugin.check_scratch(meta(global_scratch_size=None), "older Triton")
    with pytest.raises(plugins.PluginUnavailable, match="384 bytes of global scratch"):
        plugin.check_scratch(meta(global_scratch_size=384, profile_scratch_size=0), "tma")
    with pytest.raises(plugins.PluginUnavailable, match="64 bytes of profile scratch"):
        plugin.check_scratch(meta(global_scratch_size=0, profile_scratch_size=64), "profiled")


_INTERPRETED = """
import json, sys, types
import torch, triton.language as tl
sys.path.insert(0, "tests")
from test_implicit_warp_plugin import _case
from engines.plugins import implicit_warp as plugin, implicit_warp_kernel as kernel_module
from vsr_models.ops.implicit_warp import implicit_warp
# The interpreter has no libdevice: tl.math's sin, cos and exp stand in, which Triton 3.9's interpreter
# evaluates with numpy's np.sin, np.cos, np.exp (triton/runtime/interpreter.py); the rest runs as written.
kernel_module.libdevice = types.SimpleNamespace(
    sin=lambda x: tl.math.sin(x), cos=lambda x: tl.math.cos(x), exp=lambda x: tl.math.exp(x)
)
errors = {}
for c, heads, dtype in [(24, 3, torch.float32), (32, 4, torch.float16)]:
    args, heads = _case(n=2, c=c, h=7, w=9, heads=heads)
    expected = implicit_warp(*args.values(), num_heads=heads)
    cast = {k: v if k in ("flow", "key_pe", "divisors") else v.to(dtype) for k, v in args.items()}
    got = plugin.launch(*cast.values(), num_heads=heads)
    errors[f"{c} {dtype}"] = [(got.float() - expected).abs().max().item(), str(got.dtype)]
print(json.dumps(errors))
"""


@needs_triton
def test_tiled_kernel_matches_the_reference_in_the_interpreter():
    """The kernel as written (tiles, masks, two passes, corner clamping, softmax) on the CPU, through
    Triton's interpreter, against the PyTorch reference: 1e-5 in FP32 (C=24: padded channels, 3 heads)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert errors["24 torch.float32"][0] <= 1e-5, errors
    assert errors["32 torch.float16"][1] == "torch.float16" and errors["32 torch.float16"][0] <= 2e-2, errors


#: The README's figures: shared memory per block of IART's kernel (C=120, 6 heads), the same for every target.
_IART_SHARED_BYTES = {"fp32": 31360, "fp16": 12288}
#: Largest dynamic shared memory per block with an opt-in (CUDA programming guide, compute capabilities).
_OPT_IN_LIMIT = {90: 227 * 1024, 89: 99 * 1024, 86: 99 * 1024}


@pytest.mark.slow
@needs_triton
@pytest.mark.parametrize("capability", [90, 89, 86])
@pytest.mark.parametrize("feature_type", ["fp32", "fp16"])
def test_iart_kernel_fits_shared_memory(feature_type: str, capability: int):
    """IART's configuration (C=120, 6 heads) compiles, for the named target, within 48 KiB of shared memory
    for H100-class (sm_90) and Ada/Ampere-class (sm_89, sm_86: 99 KiB at most even with an opt-in) GPUs,
    and needs no scratch buffer (the pointer parameters Triton appends stay unread)."""
    name, ptx, meta = plugin.compile_ptx(feature_type, 120, 6, 20**-0.5, plugin.cuda_target(divmod(capability, 10)))
    assert name == "implicit_warp_kernel"
    assert ".entry implicit_warp_kernel" in ptx and f".target sm_{capability}" in ptx
    assert meta.target.arch == capability and meta.num_warps == plugin.NUM_WARPS
    assert 0 < meta.shared <= plugin.SHARED_MEMORY_LIMIT < _OPT_IN_LIMIT[capability]
    assert meta.shared == _IART_SHARED_BYTES[feature_type]  # exactly the README's bytes
    assert meta.global_scratch_size == 0 and meta.profile_scratch_size == 0


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


# ------------------------------------------------------------------ with TensorRT
@pytest.mark.tensorrt
@needs_tensorrt
def test_tensorrt_accepts_the_plugin_definition():
    """Only TensorRT's own validators can show the definition is accepted: register, autotune, aot_impl."""
    import tensorrt as trt
    import tensorrt.plugin as trtp

    assert plugins.load_for({("vsr", "ImplicitWarp")}, trt) == [plugin.SPEC]
    assert hasattr(trtp.op.vsr, "ImplicitWarp")
    assert trt.get_plugin_registry().get_creator("ImplicitWarp", "1", "vsr") is not None


@pytest.mark.tensorrt
@needs_tensorrt
def test_one_node_engine_builds_and_matches(tmp_path: Path):
    import tensorrt as trt

    from engines.tensorrt import build_stage
    from runtime.backends.trt import CudaPlace, EngineSetRunner

    c, heads = 32, 4
    warp = _warp(c, heads)
    model = _export_custom(tmp_path, warp)
    path = tmp_path / "iw_node.onnx"
    onnx.save(model, str(path))
    plugins.load_for(plugins.custom_ops([path]), trt)
    shapes = {n: ((1, k, 16, 16),) * 3 for n, k in (("source", c), ("target", c), ("flow", 2))}
    blob = build_stage(path, shapes, workspace_gb=1, timing_cache=tmp_path / "timing.cache")
    place = CudaPlace(0)
    with place.active():
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(blob)
    runner = EngineSetRunner(trt, {"iw": engine}, place)
    torch.manual_seed(0)
    feeds = {
        "source": torch.randn(1, c, 16, 16),
        "target": torch.randn(1, c, 16, 16),
        "flow": torch.randn(1, 2, 16, 16),
    }
    (out,) = runner.run("iw", {k: v.cuda() for k, v in feeds.items()}).values()
    torch.cuda.synchronize()
    with torch.no_grad():
        expected = warp(feeds["source"], feeds["target"], feeds["flow"])
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=1e-5)
