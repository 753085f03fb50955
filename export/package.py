"""Writing model packages (the format is :mod:`export.format`).

Every graph is exported with ``torch.onnx.export(dynamo=True)`` at opset 19 with dynamic height
and width, optimised (constants folded) by the exporter, and validated by the ONNX checker.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import inspect
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx
import torch

from vsr_models.base import Stage, VSRNetwork
from vsr_models.checkpoint import sha256sum
from vsr_models.plan import Plan, SizeConstraints, TensorSpec

from .atomic import staged_directory, write_text_atomic
from .format import FORMAT, FORMAT_VERSION, OPSET, Package, PackageError, file_records, tool_version

#: ONNX GridSample mode names TensorRT's parser reads correctly (opset 20 renamed them).
GRID_SAMPLE_MODES = {b"bilinear", b"nearest", b"bicubic"}


def stage_io_specs(plan: Plan, stage_name: str, stage: Stage) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    """The TensorSpec of every input and output of a stage, read off the plan's steps."""
    ins: dict[str, TensorSpec] = {}
    outs: dict[str, TensorSpec] = {}
    for step in plan.steps:
        if step.stage != stage_name:
            continue
        for name, read in step.inputs.items():
            ins.setdefault(name, plan.tensors[read.seq])
        for name, seq in step.outputs.items():
            outs.setdefault(name, plan.tensors[seq])
    missing = [n for n in stage.inputs if n not in ins] + [n for n in stage.outputs if n not in outs]
    if missing:
        raise ValueError(f"stage {stage_name!r}: the plan never feeds or writes {missing}")
    return {n: ins[n] for n in stage.inputs}, {n: outs[n] for n in stage.outputs}


def example_size(constraints: SizeConstraints) -> tuple[int, int]:
    """A non-square LR size to trace with, clear of 0/1 specialisation and of the minimum."""
    return constraints.padded(max(constraints.min_h, 64), max(constraints.min_w, 64) + 32)


#: The output size traced for output-sized inputs (arbitrary-scale networks): any size, unrelated to the LR one.
EXAMPLE_OUTPUT = (157, 333)


def _dim_expr(spec: TensorSpec, axis: str) -> str | int:
    """A manifest dimension: ``"h"``, ``"4*h"``, ``"2*ceil(h/2)"`` (padded), ``"H"`` (output size) or 1."""
    if spec.size == "one":
        return 1
    if spec.size == "output":
        return axis.upper()
    size = axis if spec.multiple == 1 else f"{spec.multiple}*ceil({axis}/{spec.multiple})"
    return size if spec.scale == 1 else f"{spec.scale}*{size}"


def _dynamic_dims(specs: list[TensorSpec], constraints: SizeConstraints) -> list[dict[int, Any]]:
    """torch.export dimensions of each input: LR-sized inputs share h and w per padding multiple
    (a multiple m gives ``m * Dim``), output-sized inputs share H and W, 1 x 1 inputs are static."""
    dims: dict[tuple[str, int], Any] = {}

    def dim(axis: str, spec: TensorSpec) -> Any:
        if spec.size == "output":
            key = (axis.upper(), 1)
            if key not in dims:
                dims[key] = torch.export.Dim(axis.upper(), min=1, max=32768)
            return dims[key]
        m = spec.multiple
        if (axis, m) not in dims:
            low = constraints.min_h if axis == "h" else constraints.min_w
            dims[(axis, m)] = torch.export.Dim(axis if m == 1 else f"{axis}_{m}", min=-(-low // m), max=8192 // m)
        d = dims[(axis, m)] * m if m != 1 else dims[(axis, m)]
        return d * spec.scale if spec.scale != 1 else d

    return [{} if spec.size == "one" else {2: dim("h", spec), 3: dim("w", spec)} for spec in specs]


def export_stage(
    stage: Stage, ins: dict[str, TensorSpec], outs: dict[str, TensorSpec], constraints: SizeConstraints, path: Path
) -> dict[str, Any]:
    """Export one stage to ``path`` (opset 19, dynamic h and w); returns its manifest entry."""
    h0, w0 = example_size(constraints)
    args = tuple(torch.rand(spec.shape(h0, w0, EXAMPLE_OUTPUT)) for spec in ins.values())
    dynamic: tuple[Any, ...] = tuple(_dynamic_dims(list(ins.values()), constraints))
    parameters = inspect.signature(stage.module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        dynamic = (dynamic,)  # torch.export nests the dimensions of *args
    with warnings.catch_warnings(), torch.no_grad(), _quiet_torch_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            stage.module.eval(),
            args,
            input_names=list(ins),
            output_names=list(outs),
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=dynamic,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))
    model = onnx.load(str(path))
    validate_graph(model, str(path))

    def entry(name: str, spec: TensorSpec) -> dict[str, Any]:
        return {
            "name": name,
            "dtype": spec.dtype,
            "shape": [1, spec.channels, _dim_expr(spec, "h"), _dim_expr(spec, "w")],
        }

    return {
        "file": str(path.relative_to(path.parent.parent)),
        "inputs": [entry(n, s) for n, s in ins.items()],
        "outputs": [entry(n, s) for n, s in outs.items()],
        "fp32": list(stage.fp32),
    }


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Silence the exporter's chatter (torchvision not installed, sympy retries) during export."""
    names = ["torch.onnx", "torch.utils._sympy", "torch.fx.experimental.symbolic_shapes", "torch.export"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def validate_graph(model: onnx.ModelProto, what: str) -> None:
    """ONNX checker, opset 19 in the default domain, and GridSample modes TensorRT reads right."""
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        raise PackageError(f"{what}: default-domain opset is {opsets}, expected {OPSET}")
    for node in model.graph.node:
        if node.op_type == "GridSample":
            mode = next((a.s for a in node.attribute if a.name == "mode"), b"bilinear")
            if mode not in GRID_SAMPLE_MODES:
                raise PackageError(
                    f"{what}: GridSample {node.name} has mode {mode!r}, which TensorRT would "
                    "silently read as nearest; export at opset 19"
                )


def export_package(
    model: VSRNetwork,
    out_dir: str | Path,
    *,
    weights: str | None = None,
    checkpoints: list[Path] | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Package:
    """Export every stage of ``model`` and write the manifest into ``out_dir``; ``log`` hears of each
    stage as its export starts (a stage takes seconds to minutes on a CPU).

    The package is written into a temporary directory beside ``out_dir`` and renamed at the end
    (:func:`staged_directory`), so an interrupted export leaves nothing behind. ``weights`` (a zoo
    name) and ``checkpoints`` (files loaded into the model) are recorded with their sha256, and
    every file written with its sha256 and size (``files``, which :meth:`Package.open` verifies
    when asked).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise PackageError(f"{out_dir} exists; choose another -o or pass --overwrite")
    plan = model.plan()
    stages = model.stages()
    with staged_directory(out_dir) as tmp:
        (tmp / "fp32").mkdir()
        entries = {}
        for number, (name, stage) in enumerate(stages.items(), 1):
            if log is not None:
                log(f"  stage {number} of {len(stages)}: {name} (trace, ONNX export, checks, constant folding)")
            ins, outs = stage_io_specs(plan, name, stage)
            entries[name] = export_stage(stage, ins, outs, model.constraints, tmp / "fp32" / f"{name}.onnx")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model.name,
            "weights": weights,
            "config": model.init_args,
            "scale": model.scale,
            "scale_range": None if model.scale_range is None else list(model.scale_range),
            "constraints": asdict(model.constraints),
            "clip_frames": model.clip_frames,
            "step_workspace": model.step_workspace(),
            "opset": OPSET,
            "precisions": {"fp32": {n: e["file"] for n, e in entries.items()}},
            "stages": entries,
            "plan": plan.to_json(),
            "provenance": {
                "checkpoints": [
                    {"file": Path(c).name, "path": str(Path(c).resolve()), "sha256": sha256sum(c)}
                    for c in (checkpoints or [])
                ],
                "vsr": tool_version(),
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "exporter": "torch.onnx.export(dynamo=True, optimize=True)",
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        }
        if not checkpoints and weights is None:
            # No released file backs these weights (random, or set in Python): keep them, so the
            # PyTorch reference (vsr-parity, --backend torch) can be rebuilt from the package.
            from safetensors.torch import save_file

            (tmp / "torch").mkdir()
            save_file(
                {k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "torch" / "weights.safetensors")
            )
            manifest["torch_weights"] = "torch/weights.safetensors"
        listed = sorted({*manifest["precisions"]["fp32"].values(), *filter(None, [manifest.get("torch_weights")])})
        manifest["files"] = file_records(tmp, listed)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Package.open(out_dir)


def add_precision(
    root: str | Path, precision: str, graphs: dict[str, onnx.ModelProto], note: dict[str, Any] | None = None
) -> Package:
    """Write ``<precision>/<stage>.onnx`` for every stage into an existing package and list them in
    ``manifest["precisions"][precision]`` (replacing graphs of that precision if present).

    ``graphs`` must cover every stage. The graphs' inputs and outputs must be those of the FP32
    graphs (names and dtypes), since the manifest describes one I/O per stage. ``note`` (e.g. the
    FP16 policy's blocked nodes) is recorded under ``manifest["precision_notes"][precision]``.
    The manifest is replaced atomically after all graphs are written.
    """
    package = Package.open(root)
    if precision == "fp32":
        raise PackageError("fp32 graphs are written by export_package; add other precisions here")
    missing = set(package.stage_names()) - set(graphs)
    if missing:
        raise PackageError(f"add_precision({precision!r}) lacks graphs for stages {sorted(missing)}")
    folder = package.root / precision
    folder.mkdir(exist_ok=True)
    files = {}
    for name in package.stage_names():
        graph = graphs[name]
        reference = onnx.load(str(package.stage_file(name, "fp32")), load_external_data=False)
        io = [(v.name, v.type.tensor_type.elem_type) for v in [*graph.graph.input, *graph.graph.output]]
        ref_io = [(v.name, v.type.tensor_type.elem_type) for v in [*reference.graph.input, *reference.graph.output]]
        if io != ref_io:
            raise PackageError(f"{precision} graph of {name!r} has inputs/outputs {io}, the fp32 graph {ref_io}")
        path = folder / f"{name}.onnx"
        onnx.save(graph, str(path))
        files[name] = str(path.relative_to(package.root))
    manifest = dict(package.manifest)
    manifest["precisions"] = {**manifest["precisions"], precision: files}
    if "files" in manifest:  # record the new graphs (and forget replaced ones)
        kept = {f for graphs in manifest["precisions"].values() for f in graphs.values()}
        kept |= {manifest["torch_weights"]} if manifest.get("torch_weights") else set()
        others = {rel: record for rel, record in manifest["files"].items() if rel in kept and rel not in files.values()}
        manifest["files"] = {**others, **file_records(package.root, sorted(files.values()))}
    if note is not None:
        manifest["precision_notes"] = {**manifest.get("precision_notes", {}), precision: note}
    write_text_atomic(package.root / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return Package.open(package.root)
