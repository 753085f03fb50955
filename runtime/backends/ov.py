"""The OpenVINO backend: a package's ONNX stage graphs read by OpenVINO, on its CPU or (Intel) GPU plugin.

``pip install 'vsr[openvino]'``. OpenVINO reads the FP32 graphs of the package directly (ONNX ``DeformConv``,
which its ONNX reader lacks, through :func:`deform_conv`); each stage is compiled once per input size
(OpenVINO's CPU plugin runs static shapes best), with OpenVINO's model cache under ``$VSR_CACHE_DIR/openvino``,
so a later run with the same graph, size, device and precision loads the compiled blob instead of compiling.
The folder is made private to the user and checked as every cache folder is (:func:`export.format.cache_folder`);
the blobs in it are OpenVINO's own (named by a hash of the model, shapes, device and settings). OpenVINO 2026.4
writes them in place, not atomically, but a blob it cannot load (cut short by a killed run, damaged) is compiled
afresh instead (tests/test_openvino.py), so a bad entry costs time, never a wrong result. OpenVINO loads any valid
blob of the expected name, so :class:`BlobLedger` records the sha256 of each blob OpenVINO writes and removes,
before a backend compiles anything, every blob that is not the one recorded (a note says so; the stage is compiled
again). The graphs OpenVINO reads are the package's, which the caller opened (and, for a cached export, verified
against its digests) before.

Values are ``openvino.Tensor``\\ s. Inputs are bound to the infer request as they are (no copy), and each
call binds fresh output tensors that the plugin writes into, so the outputs the executor keeps (states,
features of an earlier sweep) are never overwritten by a later call. On a GPU the outputs are remote
tensors in the GPU's memory, so states stay on the GPU between steps (not run here: no Intel GPU).

Low precision keeps what the package's FP16 policy keeps in FP32 (:func:`export.fp16.fp32_nodes`: coordinate
math, warps, reductions; :func:`keep_fp32_names` finds their ops), each the way the plugin honours it:

* ``bf16`` (CPUs with AVX-512 BF16 or AMX-BF16): the model is typed in BF16 but for those ops, with Converts
  between (:func:`lower_to_bf16`), and compiled with FP32 as the inference precision, so the plugin runs the
  types as written. Asked for BF16 instead, the CPU plugin lowers every node but the graph's tail late, after
  its own graph rewrites have replaced some of the ops (a warp's grid normalisation became new Multiply and
  Add nodes here) and dropped any mark that asked to keep them.
* ``fp16`` (GPUs; CPUs with AVX-512 FP16 or AMX-FP16): the kept ops carry OpenVINO's keep-precision mark
  (:func:`keep_fp32`), which the plugins' own FP16 conversion reads before any rewrite.

Asked for a precision the device lacks, OpenVINO silently computes FP32, so that is refused here with the reason.
A BF16-typed graph on a CPU without BF16 (OpenVINO 2026.4, AVX2) runs as FP32 arithmetic on BF16-rounded weights:
the activations are not rounded, so it emulates neither BF16's speed nor its error (tests/test_openvino.py).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import stat
import tempfile
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from export.atomic import FileLock, remove_path, write_text_atomic
from export.format import CacheWarning, JsonLimitError, Package, PackageError, cache_folder, read_json, sha256_file
from export.fp16 import fp32_nodes
from vsr_models.errors import VSRError

from ..devices import BF16_CPU, FP16_CPU, Device, DeviceError, cpu_name

INSTALL_HINT = "pip install 'vsr[openvino]' (or pip install openvino)"
#: Our precisions -> OpenVINO's inference precision hint, and the capability the device must list.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}
#: The runtime attribute that keeps a node in its original precision (OpenVINO's ``DisablePrecisionConversion``,
#: version 0), with its value: conversions from any type to BF16 or FP16 are disabled.
KEEP_ATTRIBUTE = ("DisablePrecisionConversion", "0")
KEEP_VALUE = "dynamic:bf16,f16"
#: Op types that carry no computation of their own (the mark is not set on them).
_NOT_COMPUTED = frozenset({"Parameter", "Constant", "Result"})


class OpenVinoUnavailable(VSRError, RuntimeError):
    """OpenVINO is not installed, or not the device or precision asked for; the message says what to do."""


def import_openvino() -> ModuleType:
    """The ``openvino`` module, or :class:`OpenVinoUnavailable` with the install hint."""
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:
        raise OpenVinoUnavailable(f"--backend openvino needs OpenVINO: {INSTALL_HINT} ({exc})") from exc


def openvino_available() -> bool:
    try:
        import_openvino()
    except OpenVinoUnavailable:
        return False
    return True


def device_name(device: Device) -> str:
    """OpenVINO's name of ``device``: ``CPU``, or ``GPU.N`` for ``gpu:N``."""
    if device.kind == "cpu":
        return "CPU"
    if device.kind == "gpu":
        return f"GPU.{device.index}"
    raise DeviceError(
        f"--device {device}: OpenVINO runs on the CPU or an Intel GPU (--device cpu, gpu or gpu:N), not on CUDA; "
        "for an NVIDIA GPU use --backend onnxruntime or tensorrt"
    )


def capabilities(core: Any, name: str) -> list[str]:
    """The device's ``OPTIMIZATION_CAPABILITIES`` (``FP32``, ``BF16``, ``FP16``, ``INT8``, ...)."""
    return [str(c) for c in core.get_property(name, "OPTIMIZATION_CAPABILITIES")]


def check_device(core: Any, device: Device, precision: str) -> str:
    """OpenVINO's device name for ``device``, after checking that OpenVINO sees it and that it computes
    ``precision`` natively (asked for one it lacks, OpenVINO silently computes FP32 instead)."""
    name = device_name(device)
    seen = list(core.available_devices)
    if name not in seen and not (name == "GPU.0" and "GPU" in seen):
        raise DeviceError(
            f"--device {device}: OpenVINO sees no such device here (it sees {', '.join(seen)}); use --device cpu, "
            "or --device cuda with --backend onnxruntime or tensorrt for an NVIDIA GPU"
        )
    if name == "GPU.0" and name not in seen:
        name = "GPU"
    if precision not in HINTS:
        raise OpenVinoUnavailable(f"--precision {precision}: OpenVINO runs {', '.join(HINTS)}")
    caps = capabilities(core, name)
    if CAPABILITY[precision] in caps:
        return name
    if name == "CPU":
        where = f"this CPU ({cpu_name()}) has no {BF16_CPU if precision == 'bf16' else FP16_CPU}"
    else:
        where = f"this GPU ({core.get_property(name, 'FULL_DEVICE_NAME')}) has no {precision.upper()} arithmetic"
    raise OpenVinoUnavailable(
        f"--precision {precision} with OpenVINO: {where} (OpenVINO's {name} plugin lists {', '.join(caps)}); there "
        f"it silently computes FP32 instead (of a {precision.upper()} graph, only the weights are rounded), neither "
        f"{precision.upper()}'s speed nor its numbers. Use --precision fp32"
        + (
            "; vsr-parity --backend torch --precision bf16 measures BF16's accuracy by emulation"
            if precision == "bf16"
            else ""
        )
    )


def deform_conv(node: Any) -> list[Any]:
    """ONNX ``DeformConv`` (opset 19), which OpenVINO's ONNX reader does not convert (2026.4), as OpenVINO's
    ``DeformableConvolution`` (opset 8) plus the bias. Inputs X, W, offset, B, mask (as our exports write
    them, all present); ``bilinear_interpolation_pad`` makes a neighbour outside the frame count as zero, as
    ONNX, torchvision and :mod:`vsr_models.ops.deform_conv` do (without it, positions within one pixel
    outside the frame read nothing: 0.64 off on random offsets)."""
    if node.get_input_size() != 5:
        raise PackageError(f"DeformConv with {node.get_input_size()} inputs: OpenVINO runs it with bias and mask")
    opset8 = importlib.import_module("openvino.opset8")
    opset13 = importlib.import_module("openvino.opset13")
    x, weight, offset, bias, mask = (node.get_input(i) for i in range(5))
    pads = list(node.get_attribute("pads"))
    out = opset8.deformable_convolution(
        x,
        offset,
        weight,
        list(node.get_attribute("strides")),
        pads[: len(pads) // 2],
        pads[len(pads) // 2 :],
        list(node.get_attribute("dilations")),
        mask,
        "explicit",
        int(node.get_attribute("group")),
        int(node.get_attribute("offset_group")),
        True,
    )
    bias = opset13.reshape(bias, opset13.constant(np.array([1, -1, 1, 1], dtype=np.int64)), False)
    return [opset13.add(out, bias).output(0)]


def keep_fp32_names(model: Any, graph: onnx.ModelProto, fp32_io: list[str]) -> set[str]:
    """Friendly names of the ops of OpenVINO ``model`` (read from ONNX ``graph``) that compute what the FP16
    policy keeps FP32 (:func:`export.fp16.fp32_nodes`).

    OpenVINO's ONNX reader names the last op made from an ONNX node after the node; ops it adds on the way
    (a convolution's bias, a Resize's size arithmetic) get names of their own. So an op is kept if its name is
    that of a kept node, or if it is made on the way to one (reached from a kept op through such unnamed ops).
    Only ops with a float (f32) input or output are kept: integer shape arithmetic has no precision to keep.
    """
    kept_nodes = {b.node for b in fp32_nodes(graph, fp32_io)}
    onnx_names = {n.name for n in graph.graph.node}
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in _NOT_COMPUTED]
    stack = [op for op in ops if op.get_friendly_name() in kept_nodes]
    kept: dict[str, Any] = {}
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in kept:
            continue
        kept[op.get_friendly_name()] = op
        for value in op.input_values():
            up = value.get_node()
            if up.get_type_name() not in _NOT_COMPUTED and up.get_friendly_name() not in onnx_names:
                stack.append(up)
    f32 = import_openvino().Type.f32
    return {
        name
        for name, op in kept.items()
        if any(v.get_element_type() == f32 for v in [*op.input_values(), *op.outputs()])
    }


def marked_names(model: Any) -> set[str]:
    """Friendly names of the ops of ``model`` that carry the keep-precision mark."""
    key = "_".join(KEEP_ATTRIBUTE)
    return {op.get_friendly_name() for op in model.get_ordered_ops() if key in op.get_rt_info()}


def keep_fp32(core: Any, model: Any, names: set[str]) -> tuple[Any, Any]:
    """A copy of ``model`` in which the ops named ``names`` carry the keep-precision mark: (model, weights).

    OpenVINO's Python API sets only string and integer runtime attributes, which its plugins do not read
    as the mark; its IR reader builds the real attribute from the IR's ``<rt_info>``. So the model is saved
    as IR, the mark written into the kept layers, and the IR read back (``weights`` holds the constants'
    memory: keep it alive with the model). Duplicate friendly names are made unique first; the marks
    found on the result are checked against ``names``.
    """
    ov = import_openvino()
    seen: dict[str, int] = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in seen:
            op.set_friendly_name(f"{name}#{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    with tempfile.TemporaryDirectory(prefix="vsr-openvino-") as folder:
        xml_path = Path(folder) / "stage.xml"
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
        tree = ET.parse(xml_path)
        weights = np.fromfile(xml_path.with_suffix(".bin"), dtype=np.uint8)
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") in names:
            info = layer.find("rt_info")
            if info is None:
                info = ET.SubElement(layer, "rt_info")
            ET.SubElement(info, "attribute", name=KEEP_ATTRIBUTE[0], version=KEEP_ATTRIBUTE[1], value=KEEP_VALUE)
    tensor = ov.Tensor(weights) if weights.size else ov.Tensor(np.zeros(1, dtype=np.uint8))
    marked = core.read_model(ET.tostring(tree.getroot()), tensor)
    found = marked_names(marked)
    if found != names:
        raise PackageError(
            f"OpenVINO {ov.__version__} kept the FP32 mark on {len(found)} ops, not the {len(names)} marked "
            f"(missing: {sorted(names - found)[:5]}); run --precision fp32 and report this"
        )
    return marked, tensor


def lower_to_bf16(model: Any, kept: set[str]) -> set[str]:
    """Type the ops of ``model`` in BF16 except those named in ``kept`` (in place); returns the names lowered.

    An op is lowered if it is not kept and reads a value on the data path: computed from a graph input
    through float tensors. Shape arithmetic (which starts at ShapeOf, an integer) never is, nor are the
    constants. Converts go where a lowered op reads a value that is not lowered (to BF16: kept results,
    graph inputs, weights, biases) and where a kept op or a graph output reads a lowered one (to FP32); the
    types of the lowered ops then follow from their inputs. This is what OpenVINO's ConvertPrecision pass
    does with precision-sensitive nodes for FP16, which its Python API does not expose.
    """
    ov = import_openvino()
    opset = importlib.import_module("openvino.opset13")
    f32, bf16 = ov.Type.f32, ov.Type.bf16
    ops = model.get_ordered_ops()
    data: set[tuple[int, int]] = set()  # (op id, output index) of the f32 values on the data path
    lowered: dict[int, str] = {}
    for op in ops:
        kind = op.get_type_name()
        if kind in ("Constant", "Result"):
            continue
        reads_data = kind == "Parameter" or any(
            (v.get_node().get_instance_id(), v.get_index()) in data for v in op.input_values()
        )
        if not reads_data:
            continue
        data.update((op.get_instance_id(), o.get_index()) for o in op.outputs() if o.get_element_type() == f32)
        if kind != "Parameter" and op.get_friendly_name() not in kept:
            lowered[op.get_instance_id()] = op.get_friendly_name()
    converts: dict[tuple[int, int, str], Any] = {}

    def cast(value: Any, to: Any) -> Any:
        key = (value.get_node().get_instance_id(), value.get_index(), str(to))
        if key not in converts:
            converts[key] = opset.convert(value, to).output(0)
        return converts[key]

    for op in ops:
        if op.get_type_name() in ("Constant", "Parameter"):
            continue
        low = op.get_instance_id() in lowered
        for port in op.inputs():
            value = port.get_source_output()
            if value.get_element_type() != f32:
                continue
            from_low = value.get_node().get_instance_id() in lowered
            if low and not from_low:
                port.replace_source_output(cast(value, bf16))
            elif from_low and not low:
                port.replace_source_output(cast(value, f32))
    model.validate_nodes_and_infer_types()
    return set(lowered.values())


def _reason(exc: Exception) -> str:
    """The informative line of an OpenVINO error (its first lines name only OpenVINO's source files)."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    summary = [line for line in lines if not line.startswith(("Exception from", "Check ", "At:", "/"))]
    return (summary[-1] if summary else lines[-1] if lines else type(exc).__name__)[:300]


@dataclass(frozen=True, kw_only=True)
class OpenVinoOptions:
    """Options of :class:`OpenVinoBackend`.

    Attributes:
        device: ``cpu``, or ``gpu`` / ``gpu:N`` (an Intel GPU, as OpenVINO numbers them).
        precision: OpenVINO's inference precision: ``fp32``; ``bf16`` or ``fp16`` where the device computes it.
        threads: CPU inference threads (0: OpenVINO's default, all cores).
        keep_fp32: in BF16 and FP16, keep the nodes of the FP16 policy (coordinate math, warps, reductions)
            in FP32; ``no_keep_fp32`` leaves the precision of every node to OpenVINO's hint (to measure what
            keeping them costs and gains).
        model_cache: OpenVINO's model cache under ``$VSR_CACHE_DIR/openvino`` (compiled models reused between runs).
    """

    device: Device = field(default_factory=Device)
    precision: str = "fp32"
    threads: int = 0
    keep_fp32: bool = True
    model_cache: bool = True


class BlobLedger:
    """The sha256 and size of each compiled blob in OpenVINO's model cache folder, recorded when OpenVINO
    wrote it (``blobs.json`` beside them).

    :meth:`prune` removes every blob that is not recorded or not the one recorded (before anything is
    compiled, so OpenVINO compiles that stage again); :meth:`record` records the blobs a compile wrote.
    A blob is hashed once, when recorded, and again only when its inode, size or change time differ from
    those recorded: any write or replacement changes its change time (ctime), which a user cannot set,
    so the digest is checked whenever the file may have changed without reading every blob on each run.
    Processes sharing the folder (``--workers``) take :meth:`lock` around a prune and around a compile
    with its record, so that none removes a blob another has just written and not yet recorded, and no
    record is lost.
    """

    NAME = "blobs.json"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def lock(self) -> FileLock:
        """The folder's lock (a context manager)."""
        return FileLock(self.folder / "blobs.lock")

    @staticmethod
    def _stamp(info: os.stat_result) -> str:
        """inode, size and change time (a string: a time in nanoseconds has more digits than JSON is read with)."""
        return f"{info.st_ino}:{info.st_size}:{info.st_ctime_ns}"

    def _records(self) -> dict[str, Any]:
        try:
            found = read_json(self.folder / self.NAME)
        except (OSError, JsonLimitError):  # none yet, or unreadable: nothing is trusted
            return {}
        return found if isinstance(found, dict) else {}

    def _blobs(self) -> dict[str, str | None]:
        """Each blob's stamp (``None``: not a plain file)."""
        found: dict[str, str | None] = {}
        for blob in self.folder.glob("*.blob"):
            info = os.lstat(blob)
            found[blob.name] = self._stamp(info) if stat.S_ISREG(info.st_mode) else None
        return found

    def _save(self, records: dict[str, Any]) -> None:
        write_text_atomic(self.folder / self.NAME, json.dumps(records, indent=1, sort_keys=True) + "\n")

    def prune(self) -> int:
        """Remove each blob that is not the one recorded; the number removed."""
        records, kept, removed = self._records(), {}, 0
        for name, stamp in sorted(self._blobs().items()):
            record = records.get(name)
            path = self.folder / name
            if stamp is not None and isinstance(record, dict):
                if record.get("stamp") == stamp:
                    kept[name] = record
                    continue
                if record.get("bytes") == path.stat().st_size and sha256_file(path) == record.get("sha256"):
                    kept[name] = {**record, "stamp": stamp}
                    continue
            remove_path(path)
            removed += 1
        if kept != records:
            self._save(kept)
        return removed

    def snapshot(self) -> dict[str, str | None]:
        """The blobs as they are, to pass to :meth:`record` after a compile."""
        return self._blobs()

    def record(self, before: dict[str, str | None]) -> None:
        """Record the blobs written or rewritten since ``before`` (a :meth:`snapshot`)."""
        written = {
            name: stamp for name, stamp in self._blobs().items() if stamp is not None and before.get(name) != stamp
        }
        if written:
            records = self._records()
            for name, stamp in written.items():
                size = (self.folder / name).stat().st_size
                records[name] = {"sha256": sha256_file(self.folder / name), "bytes": size, "stamp": stamp}
            self._save(records)


@dataclass
class _Compiled:
    """One stage compiled for one set of input shapes, with its infer request and its ports."""

    request: Any
    inputs: dict[str, int]
    outputs: list[tuple[str, int, tuple[int, ...]]]


class OpenVinoBackend:
    """Runs a package's stage graphs with OpenVINO; values stay ``openvino.Tensor``\\ s (remote ones on a GPU)."""

    name = "openvino"

    def __init__(self, package: Package, options: OpenVinoOptions | None = None) -> None:
        self.ov = import_openvino()
        self.options = options or OpenVinoOptions()
        self.device = self.options.device
        self.core = self.ov.Core()
        self.device_name = check_device(self.core, self.device, self.options.precision)
        onnx_frontend = importlib.import_module("openvino.frontend.onnx")
        self.core.add_extension(onnx_frontend.ConversionExtension("DeformConv", deform_conv))
        self.package = package
        self.models: dict[str, Any] = {}
        self.weights: list[Any] = []  # the constants' memory of models read back from IR
        self.compiled: dict[tuple[Any, ...], _Compiled] = {}
        self.ledger: BlobLedger | None = None
        self.config = self._config()
        self.context = self.core.get_default_context(self.device_name) if self.device.kind == "gpu" else None
        for stage in package.stage_names():
            self.models[stage] = self._read(stage)

    def _config(self) -> dict[str, Any]:
        props = importlib.import_module("openvino.properties")
        hint = importlib.import_module("openvino.properties.hint")
        typed = self.options.precision == "bf16" and self.options.keep_fp32  # the types say it (lower_to_bf16)
        config: dict[str, Any] = {
            hint.inference_precision: getattr(self.ov.Type, "f32" if typed else HINTS[self.options.precision]),
            hint.performance_mode: hint.PerformanceMode.LATENCY,
        }
        if self.options.threads and self.device.kind == "cpu":
            config[props.inference_num_threads] = self.options.threads
        if self.options.model_cache:
            folder = cache_folder("openvino")
            self.ledger = BlobLedger(folder)
            with self.ledger.lock():
                removed = self.ledger.prune()
            if removed:
                warnings.warn(
                    f"{removed} compiled model(s) in OpenVINO's model cache {folder} were not recorded, or not the "
                    "ones recorded, when OpenVINO wrote them (changed since, or older): removed, to compile again",
                    CacheWarning,
                    stacklevel=2,
                )
            config[props.cache_dir] = str(folder)
        return config

    def _read(self, stage: str) -> Any:
        path = self.package.stage_file(stage, "fp32")
        graph = onnx.load(str(path))
        custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.graph.node if n.domain not in ("", "ai.onnx")})
        if custom:
            raise PackageError(
                f"OpenVINO cannot run stage {stage!r} of {self.package.root}: it has the custom op(s) "
                f"{', '.join(custom)}, for which OpenVINO has no kernel; export the package with the standard-op form "
                "(vsr-export's default) or use --backend onnxruntime"
            )
        try:
            model = self.core.read_model(str(path))
        except RuntimeError as exc:
            raise PackageError(
                f"OpenVINO {self.ov.__version__} cannot read {path}: {_reason(exc)}; use --backend onnxruntime"
            ) from exc
        if self.options.precision == "fp32" or not self.options.keep_fp32:
            return model
        kept = keep_fp32_names(model, graph, self.package.manifest["stages"][stage].get("fp32", []))
        if self.options.precision == "bf16":
            lower_to_bf16(model, kept)
            return model
        marked, weights = keep_fp32(self.core, model, kept)
        self.weights.append(weights)
        return marked

    def _compile(self, stage: str, shapes: dict[str, tuple[int, ...]]) -> _Compiled:
        key = (stage, *sorted(shapes.items()))
        entry = self.compiled.get(key)
        if entry is not None:
            return entry
        model = self.models[stage].clone()
        model.reshape({name: self.ov.PartialShape(list(shape)) for name, shape in shapes.items()})
        try:
            with self.ledger.lock() if self.ledger is not None else contextlib.nullcontext():
                before = self.ledger.snapshot() if self.ledger is not None else {}
                compiled = self.core.compile_model(model, self.device_name, self.config)
                if self.ledger is not None:
                    self.ledger.record(before)
        except RuntimeError as exc:
            raise PackageError(
                f"OpenVINO {self.ov.__version__} cannot compile stage {stage!r} at {shapes} on {self.device_name}: "
                f"{_reason(exc)}; use --backend onnxruntime"
            ) from exc
        inputs = {name: i for i, port in enumerate(compiled.inputs) for name in port.get_names()}
        outputs = []
        for spec in self.package.manifest["stages"][stage]["outputs"]:
            index = next(i for i, port in enumerate(compiled.outputs) if spec["name"] in port.get_names())
            shape = tuple(int(d) for d in compiled.outputs[index].get_shape())
            outputs.append((spec["name"], index, shape))
        entry = self.compiled[key] = _Compiled(compiled.create_infer_request(), inputs, outputs)
        return entry

    def upload(self, array: np.ndarray) -> Any:
        return self.ov.Tensor(np.ascontiguousarray(array, dtype=np.float32))

    def download(self, handle: Any) -> np.ndarray:
        if isinstance(handle, self.ov.RemoteTensor):
            host = self.ov.Tensor(self.ov.Type.f32, handle.get_shape())
            handle.copy_to(host)
            handle = host
        return np.array(handle.data, dtype=np.float32, copy=True)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.upload(np.zeros(shape, dtype=np.float32))

    def shape(self, handle: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in handle.get_shape())

    def run(self, stage: str, inputs: dict[str, Any]) -> dict[str, Any]:
        entry = self._compile(stage, {name: self.shape(value) for name, value in inputs.items()})
        for name, value in inputs.items():
            entry.request.set_input_tensor(entry.inputs[name], value)
        outputs = {}
        for name, index, shape in entry.outputs:
            outputs[name] = (
                self.context.create_tensor(self.ov.Type.f32, self.ov.Shape(list(shape)), {})
                if self.context is not None
                else self.ov.Tensor(self.ov.Type.f32, list(shape))
            )
            entry.request.set_output_tensor(index, outputs[name])
        entry.request.infer()
        return outputs

    def runtime_precisions(self, stage: str) -> list[tuple[str, list[str], str]]:
        """What the plugin runs for ``stage`` as compiled (at the first input size it ran): one (node type,
        the names of the ops it was made from, the precision it runs in) per node of the compiled graph."""
        entry = next(k for k in self.compiled if k[0] == stage)
        model = self.compiled[entry].request.get_compiled_model().get_runtime_model()
        result = []
        for op in model.get_ordered_ops():
            info = op.get_rt_info()
            names = info["originalLayersNames"].astype(str)
            result.append(
                (info["layerType"].astype(str), names.split(",") if names else [], info["runtimePrecision"].astype(str))
            )
        return result
