"""The OpenVINO backend on real frames: FP32 parity with PyTorch, one compiled model per stage and size in
OpenVINO's model cache under ours, outputs never overwritten by later calls, ONNX DeformConv through our
conversion, the keep-FP32 marks on exactly the nodes of the FP16 policy, BF16 refused (with the reason)
where the CPU has none and checked where it has, and the errors for a missing install, a custom op and
a GPU that is not there. Every network's package is checked on OpenVINO by tests/test_contract_packages.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from export.format import CacheError, Package, PackageError
from export.fp16 import fp32_nodes
from runtime.backends import make_backend, resolve_auto
from runtime.backends.ov import (
    KEEP_ATTRIBUTE,
    OpenVinoBackend,
    OpenVinoOptions,
    OpenVinoUnavailable,
    capabilities,
    deform_conv,
    import_openvino,
    keep_fp32,
    keep_fp32_names,
    lower_to_bf16,
    marked_names,
)
from runtime.backends.torch_eager import PrecisionUnavailable
from runtime.cli.bench import main as bench_main
from runtime.cli.parity import main as parity_main
from runtime.devices import Device, DeviceError, cpu_name
from runtime.pipeline import upscale_clip
from runtime.samples import psnr
from tests.conftest import lr_clip

ov = pytest.importorskip("openvino", reason="the OpenVINO backend needs pip install 'vsr[openvino]'")
CPU_CAPS = capabilities(ov.Core(), "CPU")
HAS_BF16 = "BF16" in CPU_CAPS
needs_bf16 = pytest.mark.skipif(
    not HAS_BF16,
    reason=f"this CPU ({cpu_name()}) has no AVX-512 BF16 or AMX-BF16 (OpenVINO's CPU plugin lists {CPU_CAPS})",
)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """(4, 3, 36, 44) LR frames: a real crop of bikes.mp4 downscaled x4 (above BasicVSR's minimum, 33x33)."""
    return lr_clip(4, 36, 44)[0]


@pytest.fixture(scope="module")
def reference(tiny_package: Package, frames: np.ndarray) -> np.ndarray:
    return upscale_clip(make_backend("torch", tiny_package), tiny_package, frames, (4, 4))


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ------------------------------------------------------------------ FP32
def test_fp32_equals_pytorch_on_real_frames(tiny_package, frames, reference, cache_root):
    backend = make_backend("openvino", tiny_package)
    assert isinstance(backend, OpenVinoBackend)
    out = upscale_clip(backend, tiny_package, frames, (4, 4))
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() <= 1e-4


def test_one_compiled_model_per_stage_and_size_in_the_model_cache(tiny_package, frames, cache_root):
    """Two frame sizes: two compiled models per stage, their blobs in $VSR_CACHE_DIR/openvino; a second
    backend loads them from there (no new blob) and computes the same."""
    first = OpenVinoBackend(tiny_package)
    small = upscale_clip(first, tiny_package, frames[:2], (4, 4))
    upscale_clip(first, tiny_package, np.ascontiguousarray(frames[:2, :, :34, :40]), (4, 4))
    stages = set(tiny_package.stage_names())
    assert sorted(k[0] for k in first.compiled) == sorted([*stages, *stages])
    blobs = sorted((cache_root / "openvino").glob("*.blob"))
    assert len(blobs) == 2 * len(stages)
    again = upscale_clip(OpenVinoBackend(tiny_package), tiny_package, frames[:2], (4, 4))
    assert sorted((cache_root / "openvino").glob("*.blob")) == blobs
    assert np.array_equal(again, small)
    without = OpenVinoBackend(tiny_package, OpenVinoOptions(model_cache=False))
    assert "CACHE_DIR" not in {str(k) for k in without.config}


def test_the_model_cache_folder_is_private_and_a_damaged_blob_is_compiled_afresh(tiny_package, frames, cache_root):
    """OpenVINO's blobs live in a cache folder made private to the user; a blob cut short (a run killed while
    OpenVINO wrote it: OpenVINO 2026.4 writes in place) or overwritten with zeros is not loaded: OpenVINO
    compiles the stage again and the output is the same."""
    expected = upscale_clip(OpenVinoBackend(tiny_package), tiny_package, frames[:2], (4, 4))
    folder = cache_root / "openvino"
    assert folder.stat().st_mode & 0o777 == 0o700
    blobs = sorted(folder.glob("*.blob"))
    assert blobs
    for damage in (lambda data: data[: len(data) // 2], lambda data: bytes(len(data))):
        for blob in blobs:
            blob.write_bytes(damage(blob.read_bytes()))
        again = upscale_clip(OpenVinoBackend(tiny_package), tiny_package, frames[:2], (4, 4))
        assert np.array_equal(again, expected)


def test_a_cache_folder_that_cannot_be_made_is_one_line(tiny_package, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(CacheError, match=r"cannot be used .*set VSR_CACHE_DIR to a folder you can write") as info:
        OpenVinoBackend(tiny_package)
    assert "\n" not in str(info.value)
    OpenVinoBackend(tiny_package, OpenVinoOptions(model_cache=False))  # no cache, no folder needed


def test_outputs_are_not_overwritten_by_later_calls(tiny_package, frames, cache_root):
    """The executor keeps step outputs (states) across later calls of the same compiled model."""
    backend = OpenVinoBackend(tiny_package)
    a, b = (backend.upload(frames[i : i + 1]) for i in range(2))
    first = backend.run("flow", {"a": a, "b": b})["flow"]
    kept = backend.download(first).copy()
    second = backend.run("flow", {"a": b, "b": a})["flow"]
    assert not np.array_equal(backend.download(second), kept)
    assert np.array_equal(backend.download(first), kept)


def test_deform_conv_runs_as_onnx_runs_it(tmp_path, cache_root):
    """ONNX DeformConv (BasicVSR++'s alignment) through our conversion to OpenVINO's DeformableConvolution,
    against ONNX Runtime on one graph, with offsets of several pixels (reaching outside the frame)."""
    import onnxruntime as ort

    from vsr_models.ops.deform_conv import deform_conv2d

    class Align(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(8, 8, 3, 3) * 0.1)
            self.bias = torch.nn.Parameter(torch.randn(8))

        def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask)

    torch.manual_seed(0)
    x, mask = torch.randn(1, 8, 12, 14), torch.rand(1, 2 * 9, 12, 14)
    offset = 4 * torch.randn(1, 2 * 2 * 9, 12, 14)
    path = tmp_path / "align.onnx"
    torch.onnx.export(
        Align(), (x, offset, mask), str(path), dynamo=True, opset_version=19, input_names=["x", "offset", "mask"]
    )
    assert any(n.op_type == "DeformConv" for n in onnx.load(str(path)).graph.node)
    feeds = {"x": x.numpy(), "offset": offset.numpy(), "mask": mask.numpy()}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    core = ov.Core()
    core.add_extension(ov.frontend.onnx.ConversionExtension("DeformConv", deform_conv))
    got = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(feeds)[0]
    assert np.abs(got - expected).max() <= 1e-4


# ------------------------------------------------------------------ low precision: what stays FP32
def _kept(core, package: Package, stage: str):
    """(OpenVINO model of the stage, its ONNX graph, the ops of the FP16 policy's kept nodes)."""
    path = package.stage_file(stage)
    graph, model = onnx.load(str(path)), core.read_model(str(path))
    return model, graph, keep_fp32_names(model, graph, package.manifest["stages"][stage]["fp32"])


def test_kept_ops_are_the_nodes_of_the_fp16_policy(tiny_package):
    """The ops found for the FP16 policy's kept nodes: every kept ONNX node that OpenVINO keeps as an op,
    plus the ops OpenVINO made on the way to one (named after no ONNX node); warps in, convolutions out."""
    core = ov.Core()
    for stage in tiny_package.stage_names():
        model, graph, kept = _kept(core, tiny_package, stage)
        kept_nodes = {b.node for b in fp32_nodes(graph, tiny_package.manifest["stages"][stage]["fp32"])}
        ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
        assert kept_nodes & set(ops) and kept_nodes & set(ops) <= kept, stage
        onnx_names = {n.name for n in graph.graph.node}
        assert all(name in kept_nodes or name not in onnx_names for name in kept), stage
        types = {ops[name].get_type_name() for name in kept}
        assert "GridSample" in types and "Convolution" not in types, (stage, types)


def test_bf16_types_every_op_but_the_kept_ones_in_bf16(tiny_package, frames, reference):
    """:func:`lower_to_bf16`: convolutions and the rest of the data path in BF16; the kept ops (grids, warps),
    shape arithmetic, graph inputs and outputs in FP32, with Converts between. On this CPU the plugin turns
    BF16 types into FP32 (no BF16 arithmetic), so the typed graph runs here as FP32 arithmetic on BF16-rounded
    weights: it must still compute the network (within 50 dB of FP32)."""
    core = ov.Core()
    f32, bf16 = ov.Type.f32, ov.Type.bf16
    for stage in tiny_package.stage_names():
        model, _, kept = _kept(core, tiny_package, stage)
        lowered = lower_to_bf16(model, kept)
        assert lowered and not lowered & kept, stage
        for op in model.get_ordered_ops():
            kind, name, out = op.get_type_name(), op.get_friendly_name(), op.get_output_element_type(0)
            if kind == "Convolution" or name in lowered:
                assert out == bf16 or not out.is_real(), (stage, name, kind, out)
            elif name in kept or kind in ("Parameter", "Result"):
                assert out in (f32, ov.Type.i64, ov.Type.i32, ov.Type.boolean), (stage, name, kind, out)
            elif kind == "ShapeOf":
                assert not out.is_real()
            elif out == bf16:
                assert kind == "Convert", (stage, name, kind)
    backend = OpenVinoBackend(tiny_package)
    backend.models = {}
    for stage in tiny_package.stage_names():
        model, _, kept = _kept(core, tiny_package, stage)
        lower_to_bf16(model, kept)
        backend.models[stage] = model
    out = upscale_clip(backend, tiny_package, frames, (4, 4))
    assert psnr(np.clip(out, 0, 1), np.clip(reference, 0, 1)) > 50


def test_fp16_marks_the_kept_ops(tiny_package):
    """For FP16 the kept ops carry OpenVINO's keep-precision mark, read back from IR exactly on them."""
    core = ov.Core()
    key = "_".join(KEEP_ATTRIBUTE)
    for stage in tiny_package.stage_names():
        model, _, kept = _kept(core, tiny_package, stage)
        marked, _ = keep_fp32(core, model, kept)
        assert marked_names(marked) == kept, stage
        grids = [op for op in marked.get_ordered_ops() if op.get_type_name() == "GridSample"]
        assert grids and all(key in op.get_rt_info() for op in grids)
        assert all(
            key not in op.get_rt_info() for op in marked.get_ordered_ops() if op.get_type_name() == "Convolution"
        )


def test_bf16_is_refused_where_the_cpu_has_none(tiny_package, cache_root):
    """Asked for BF16 on a CPU without it, OpenVINO silently computes FP32: refused, naming the CPU and
    the missing feature. (On a CPU with BF16, the test below runs instead.)"""
    if HAS_BF16:
        pytest.skip(f"this CPU ({cpu_name()}) has BF16: the refusal does not apply")
    with pytest.raises(OpenVinoUnavailable) as info:
        make_backend("openvino", tiny_package, precision="bf16")
    message = str(info.value)
    assert f"this CPU ({cpu_name()}) has no AVX-512 BF16 or AMX-BF16 (lscpu flag avx512_bf16 or amx_bf16)" in message
    assert "silently computes FP32" in message and "--precision fp32" in message and "\n" not in message
    with pytest.raises(PrecisionUnavailable) as info:
        make_backend("torch", tiny_package, precision="bf16")
    message = str(info.value)
    assert f"this CPU ({cpu_name()}; PyTorch sees" in message and "avx512_bf16 or amx_bf16" in message
    assert "use fp32" in message and "\n" not in message
    with pytest.raises(OpenVinoUnavailable, match="avx512_bf16 or amx_bf16"):
        make_backend("auto", tiny_package, precision="bf16")  # auto picks OpenVINO for BF16, which refuses


@pytest.mark.skipif(HAS_BF16, reason=f"this CPU ({cpu_name()}) computes BF16: the plugin keeps the BF16 types")
def test_without_bf16_a_bf16_typed_graph_rounds_only_its_weights():
    """Why OpenVINO's BF16 cannot be measured on a CPU without BF16 (so vsr-parity refuses it there, and
    measures PyTorch's emulated BF16 instead): OpenVINO's CPU plugin maps the BF16 types to FP32. Its constant
    folding rounds the weights to BF16 first, but the activations are never rounded: a value that BF16 would
    round (1 + 2^-10 -> 1) passes a BF16 Convert unchanged, and a BF16 convolution multiplies it in FP32."""
    core = ov.Core()
    opset = ov.opset13
    x = np.full((1, 4, 8, 8), 1 + 2**-10, dtype=np.float32)
    weight = np.full((4, 4, 1, 1), 1 + 2**-12, dtype=np.float32)  # BF16 rounds it to 1

    def compiled(build):
        p = opset.parameter([1, 4, 8, 8], ov.Type.f32)
        return core.compile_model(ov.Model([build(p)], [p]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]

    def bf16(value):
        return opset.convert(value, ov.Type.bf16)

    through = compiled(lambda p: opset.convert(bf16(p), ov.Type.f32))
    assert np.array_equal(through, x)  # BF16 would give exactly 1
    conv = compiled(
        lambda p: opset.convert(
            opset.convolution(bf16(p), bf16(opset.constant(weight)), [1, 1], [0, 0], [0, 0], [1, 1]), ov.Type.f32
        )
    )
    assert np.allclose(conv, 4 * (1 + 2**-10), rtol=1e-6)  # input as it was, weights rounded to 1


RUN_REFUSALS = [] if HAS_BF16 else [["--backend", "openvino", "--precision", "bf16"], ["--precision", "bf16"]]
if not any(d.startswith("GPU") for d in ov.Core().available_devices):
    RUN_REFUSALS.append(["--device", "gpu"])


@pytest.mark.parametrize("args", RUN_REFUSALS, ids=[" ".join(a) for a in RUN_REFUSALS])
def test_vsr_run_refuses_bf16_and_a_missing_gpu_before_any_work(tiny_package, tmp_path, args):
    """vsr-run in its own process (tests/test_bad_input.py's in-process runs leave OpenVINO out: a SIGHUP sent
    to that process later crashed it at times once OpenVINO had been loaded by a run there): exit 1, one line
    naming the CPU feature (or the devices OpenVINO sees) and the fix, nothing written."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(lr_clip(2, 36, 44)[0]):
        Image.fromarray((frame.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{i:04d}.png")
    before = sorted(tmp_path.rglob("*"))
    command = [sys.executable, "-c", "from runtime.cli.run import main; main()", str(folder), "-o"]
    command += [str(tmp_path / "out.mp4"), "--model", str(tiny_package.root), "--threads", "1", *args]
    env = {**os.environ, "VSR_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if "bf16" in args:
        assert "--precision bf16 with OpenVINO: this CPU" in done.stderr and "avx512_bf16 or amx_bf16" in done.stderr
        assert "Use --precision fp32" in done.stderr
    else:
        assert "OpenVINO sees no such device here (it sees CPU" in done.stderr and "use --device cpu" in done.stderr
    assert sorted(p for p in tmp_path.rglob("*") if "cache" not in p.parts) == before


@needs_bf16
def test_bf16_on_a_bf16_cpu(tiny_package, frames, reference, cache_root):
    """On a CPU with BF16: the plugin runs the convolutions in BF16 and every node made only of kept ops
    (grids, warps) in FP32, and the output stays above 50 dB of PyTorch FP32."""
    backend = OpenVinoBackend(tiny_package, OpenVinoOptions(precision="bf16"))
    out = upscale_clip(backend, tiny_package, frames, (4, 4))
    core = ov.Core()
    for stage in tiny_package.stage_names():
        kept = _kept(core, tiny_package, stage)[2]
        nodes = backend.runtime_precisions(stage)
        assert "bf16" in {p for kind, _, p in nodes if kind == "Convolution"}, stage
        for kind, names, precision in nodes:
            if names and set(names) <= kept and kind not in ("Reorder", "Input", "Output", "Const"):
                assert precision == "f32", (stage, kind, names, precision)
    assert psnr(np.clip(out, 0, 1), np.clip(reference, 0, 1)) > 50


# ------------------------------------------------------------------ errors
def test_missing_openvino_names_the_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def without_openvino(name: str, *args: object) -> object:
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_openvino)
    with pytest.raises(OpenVinoUnavailable, match=r"--backend openvino needs OpenVINO: pip install 'vsr\[openvino\]'"):
        import_openvino()


def test_a_custom_op_is_named_with_the_fix(tiny_package, tmp_path, cache_root):
    root = tmp_path / "custom"
    shutil.copytree(tiny_package.root, root)
    path = root / "fp32" / "flow.onnx"
    graph = onnx.load(str(path))
    node = next(n for n in graph.graph.node if n.op_type == "GridSample")
    node.domain, node.op_type = "vsr", "ImplicitWarp"
    graph.opset_import.append(onnx.helper.make_opsetid("vsr", 1))
    onnx.save(graph, str(path))
    with pytest.raises(PackageError, match=r"custom op\(s\) vsr::ImplicitWarp, for which OpenVINO has no kernel"):
        OpenVinoBackend(Package.open(root))


def test_devices(tiny_package, cache_root):
    """``gpu[:N]`` is OpenVINO's GPU: auto picks OpenVINO for it, the other backends refuse it, and where
    OpenVINO sees no GPU the error says which devices it sees. CUDA is not OpenVINO's."""
    assert Device.parse("gpu:1") == Device("gpu", 1) and str(Device.parse("GPU")) == "gpu:0"
    assert resolve_auto(tiny_package, Device("gpu"), "fp32")[0] == "openvino"
    with pytest.raises(DeviceError, match="an Intel GPU, which only OpenVINO runs here"):
        make_backend("onnxruntime", tiny_package, "gpu")
    with pytest.raises(DeviceError, match="not on CUDA"):
        make_backend("openvino", tiny_package, "cuda")
    if not any(d.startswith("GPU") for d in ov.Core().available_devices):
        with pytest.raises(DeviceError, match=r"OpenVINO sees no such device here \(it sees CPU"):
            make_backend("auto", tiny_package, "gpu")


def test_auto_picks_openvino_for_bf16_and_onnxruntime_for_fp32(tiny_package):
    assert resolve_auto(tiny_package, Device(), "bf16")[0] == "openvino"
    assert resolve_auto(tiny_package, Device(), "fp32")[0] == "onnxruntime"


# ------------------------------------------------------------------ the command lines
def test_parity_and_bench_run_openvino(tiny_package, cache_root):
    parity = CliRunner().invoke(
        parity_main, [str(tiny_package.root), "--backend", "openvino", "--frames", "3", "--crop", "36x44"]
    )
    text = " ".join(parity.output.split())  # the table's title wraps
    assert parity.exit_code == 0 and "openvino fp32 vs PyTorch whole-clip FP32" in text, parity.output
    assert "parity OK" in parity.output
    bench = CliRunner().invoke(
        bench_main,
        [
            *("--model", str(tiny_package.root), "--size", "16x16", "--frames", "2", "--peak-side", "128"),
            *("--contenders", "onnxruntime:fp32,openvino:fp32,openvino:bf16,torch:bf16+channels_last"),
        ],
    )
    assert bench.exit_code == 0, bench.output
    text = " ".join(bench.output.split())
    assert "openvino:fp32" in text and f"openvino {ov.__version__.split('-')[0]}" in text
    if not HAS_BF16:
        assert "openvino:bf16: not run: --precision bf16 with OpenVINO: this CPU" in text
        assert "torch:bf16+channels_last: not run: --precision bf16: this CPU" in text


def test_parity_measures_torch_bf16_by_emulation_and_refuses_openvino_bf16(tiny_package, cache_root):
    """vsr-parity --backend torch --precision bf16 runs on any CPU (emulated, with a warning) and reports the
    PSNR against FP32; OpenVINO BF16 cannot be emulated, so it is refused where the CPU has no BF16."""
    args = [str(tiny_package.root), "--frames", "3", "--crop", "36x44", "--precision", "bf16"]
    torch_bf16 = CliRunner().invoke(parity_main, [*args, "--backend", "torch"])
    assert torch_bf16.exit_code == 0, torch_bf16.output
    text = " ".join(torch_bf16.output.split())  # the table's title wraps
    assert "torch bf16 vs PyTorch whole-clip FP32" in text and "parity OK" in text
    if HAS_BF16:
        return
    assert "warning: this CPU" in torch_bf16.output and "PyTorch emulates BF16" in torch_bf16.output
    refused = CliRunner().invoke(parity_main, [*args, "--backend", "openvino"])
    assert refused.exit_code == 1 and "has no AVX-512 BF16 or AMX-BF16" in refused.output, refused.output
