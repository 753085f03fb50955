"""What vsr-bench measures besides the contenders: the device's peak, the FLOPs of each stage, per-op profiles."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch.utils.flop_counter import FlopCounterMode

from export.format import Package
from vsr_models.registry import checked_settings, create_model

from ..backends.ort import OrtOptions, session_options
from ..backends.ov import HINTS, check_device, import_openvino
from ..backends.ov import device_name as ov_device_name
from ..backends.torch_eager import tf32_math
from ..devices import Device, cpu_name

#: Side of the square matrices of the peak measurement: large enough for the kernels' best blocking.
PEAK_SIDE = {"cpu": 2048, "cuda": 8192, "gpu": 4096}


def device_name(device: Device) -> str:
    """The processor's or GPU's model name."""
    if device.is_cuda:
        return torch.cuda.get_device_name(device.index)
    if device.kind == "gpu":
        core = import_openvino().Core()
        return str(core.get_property(ov_device_name(device), "FULL_DEVICE_NAME"))
    return cpu_name()


def _best_seconds(run: Callable[[], Any], repeats: int, sync: Callable[[], None] | None = None) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def ort_matmul_peak(threads: int, side: int = PEAK_SIDE["cpu"], repeats: int = 3) -> float:
    """GFLOP/s of one FP32 ``side`` x ``side`` matrix product through ONNX Runtime's own kernels (MLAS)
    on the CPU with ``threads`` intra-op threads (0: all cores), best of ``repeats`` after a warm-up."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "peak",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [side, side]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [side, side])],
    )
    # IR version 9 is opset 19's: onnx's newest default (14 in onnx 1.23) is refused by older runtimes
    # (onnxruntime 1.30 reads up to 13: the GPU machine's image pairs the two).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    session = ort.InferenceSession(
        onnx.ModelProto.SerializeToString(model),
        session_options(OrtOptions(threads=threads), "peak"),
        providers=["CPUExecutionProvider"],
    )
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((side, side), dtype=np.float32) for n in "ab"}
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
    binding.bind_output("c")
    session.run_with_iobinding(binding)
    seconds = _best_seconds(lambda: session.run_with_iobinding(binding), repeats)
    return 2 * side**3 / seconds / 1e9


def torch_matmul_peak(
    device: Device, dtype: torch.dtype, side: int | None = None, repeats: int = 3, tf32: bool = False
) -> float:
    """GFLOP/s of one ``side`` x ``side`` matrix product in PyTorch in ``dtype`` (on a GPU, FP32 in TF32
    only with ``tf32``)."""
    side = side or PEAK_SIDE[device.kind]
    dev = torch.device(str(device))
    a, b = (torch.randn(side, side, device=dev).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.is_cuda else None
    with tf32_math(tf32):
        torch.matmul(a, b)
        seconds = _best_seconds(lambda: torch.matmul(a, b), repeats, sync)
    return 2 * side**3 / seconds / 1e9


def openvino_matmul_peak(device: Device, precision: str, side: int, repeats: int = 3) -> float:
    """GFLOP/s of one ``side`` x ``side`` FP32 matrix product compiled by OpenVINO for ``device`` with
    ``precision`` as its inference precision, best of ``repeats`` after a warm-up."""
    ov = import_openvino()
    opset = importlib.import_module("openvino.opset13")
    hint = importlib.import_module("openvino.properties.hint")
    core = ov.Core()
    name = check_device(core, device, precision)
    a, b = (opset.parameter([side, side], ov.Type.f32, name=n) for n in "ab")
    model = ov.Model([opset.matmul(a, b, False, False)], [a, b], "peak")
    compiled = core.compile_model(model, name, {hint.inference_precision: getattr(ov.Type, HINTS[precision])})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    for i in range(2):
        request.set_input_tensor(i, ov.Tensor(rng.standard_normal((side, side), dtype=np.float32)))
    request.infer()
    seconds = _best_seconds(request.infer, repeats)
    return 2 * side**3 / seconds / 1e9


def peak_gflops(
    device: Device, precisions: set[str], threads: int, side: int | None = None
) -> dict[str, tuple[float, str]]:
    """The measured peak for each precision: (GFLOP/s, how it was measured).

    On the CPU FP32 is ONNX Runtime's matrix product (faster here than PyTorch's), and the
    low precisions that some contender runs are PyTorch's (BF16 where the CPU has it; FP16 has no
    CPU arithmetic, so FP16 contenders are held to the FP32 peak). On a CUDA GPU each precision is a
    PyTorch matrix product of its own, FP32 with TF32 off, and ``tf32`` (the contenders with the
    ``tf32`` lever) FP32 with TF32 on; on an Intel GPU an OpenVINO one.
    """
    side = side or PEAK_SIDE[device.kind]
    if device.kind == "gpu":
        return {
            p: (openvino_matmul_peak(device, p, side), f"OpenVINO {p.upper()} MatMul {side}^3")
            for p in sorted(precisions | {"fp32"})
        }
    if not device.is_cuda:
        peaks = {"fp32": (ort_matmul_peak(threads, side), f"ONNX Runtime FP32 MatMul {side}^3")}
        if "bf16" in precisions:
            peaks["bf16"] = (torch_matmul_peak(device, torch.bfloat16, side), f"PyTorch BF16 matmul {side}^3")
        return peaks
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    return {
        p: (torch_matmul_peak(device, dtypes[p], side, tf32=p == "tf32"), f"PyTorch {p.upper()} matmul {side}^3")
        for p in sorted(precisions | {"fp32"})
        if p in dtypes
    }


def stage_flops(package: Package, shapes: dict[str, dict[str, tuple[int, ...]]]) -> dict[str, float]:
    """FLOPs of one call of each stage at the given input shapes (stage -> input -> shape).

    Counted by PyTorch's ``FlopCounterMode`` on the network built without data (the ``meta``
    device): convolutions, matrix products and attention, 2 FLOPs per multiply-add; other ops
    (warps, activations, additions) are not counted. A stage the meta device cannot run is left out.
    """
    manifest = package.manifest
    settings = checked_settings(manifest["model"], manifest.get("config") or {}, f"package {package.root}")
    model = create_model(manifest["model"], **settings).to("meta")
    stages = model.stages()
    result = {}
    for name, inputs in shapes.items():
        try:
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                stages[name](**{k: torch.zeros(s, device="meta") for k, s in inputs.items()})
        except (NotImplementedError, RuntimeError):
            continue
        result[name] = float(counter.get_total_flops())
    return result


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at /dev/null for the block: the profiler's native library writes two
    lines ("USDT: ... profiler_start/stop") there per call, with no setting to turn them off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def torch_op_profile(call: Callable[[], Any], device: Device, into: dict[str, float]) -> Any:
    """Run ``call`` under the PyTorch profiler and add each op's self time (seconds; device time on a
    GPU) to ``into``; returns what ``call`` returned."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.is_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities)
    with _native_stderr_silenced():
        prof.start()
    try:
        out = call()
        if device.is_cuda:
            torch.cuda.synchronize()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    for event in prof.key_averages():
        own = event.self_device_time_total if device.is_cuda else event.self_cpu_time_total
        if own > 0:
            into[event.key] = into.get(event.key, 0.0) + own * 1e-6
    return out


def top_ops(per_op: dict[str, float], count: int) -> list[tuple[str, float, float]]:
    """The ``count`` largest (op, seconds, share of the total), then one row for the rest."""
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])
    rows = [(op, s, s / total) for op, s in ranked[:count]]
    rest = sum(s for _, s in ranked[count:])
    if rest:
        rows.append((f"({len(ranked) - count} other ops)", rest, rest / total))
    return rows
