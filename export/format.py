"""The model package format: reading ``manifest.json`` and finding the graphs, without torch or onnx.

Layout::

    PKG/
      manifest.json      model, scale (and the scale range of an arbitrary-scale network), size
                         constraints, stages (I/O names, dtypes, shapes),
                         the plan, provenance (checkpoint sha256, opset, versions)
      fp32/<stage>.onnx  one graph per stage
      fp16/<stage>.onnx  optional, written by ``vsr-export --precision fp16``
      torch/weights.safetensors
                         optional: the weights, for a package no released file backs

The writer is :mod:`export.package`; everything that runs a package (the runtime, the engine
builder) reads it through :class:`Package`, which checks the manifest and every file it lists
when it opens it (each graph and the weights walked to their end, without decoding them), so a
damaged package is reported by name with what to do before any work, instead of failing deep
inside a backend.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from vsr_models.errors import VSRError
from vsr_models.plan import Plan, SizeConstraints

FORMAT = "vsr-package"
FORMAT_VERSION = 1
OPSET = 19

#: Keys every manifest has, with their JSON types.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "model": str,
    "scale": int,
    "constraints": dict,
    "opset": int,
    "precisions": dict,
    "stages": dict,
    "plan": dict,
    "provenance": dict,
}


class PackageError(VSRError, ValueError):
    """A model package that is missing, damaged or of another format version."""


def tool_version() -> str:
    """The installed version of this toolchain (recorded in manifests, part of cache keys)."""
    try:
        return metadata.version("vsr")
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_dir() -> Path:
    """Where exported packages and engines are cached: ``$VSR_CACHE_DIR`` or ``~/.cache/vsr``."""
    if "VSR_CACHE_DIR" in os.environ:
        return Path(os.environ["VSR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vsr"


def _damaged(root: Path, what: str) -> PackageError:
    return PackageError(f"{root} is a damaged model package: {what}; export it again with vsr-export")


def check_manifest(root: Path, manifest: Any) -> None:
    """Raise :class:`PackageError` naming the first problem of a manifest read from ``root``."""
    if not isinstance(manifest, dict):
        raise _damaged(root, "manifest.json does not hold a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise PackageError(
            f"{root} has format {manifest.get('format')!r} v{manifest.get('format_version')}, "
            f"this tool reads {FORMAT!r} v{FORMAT_VERSION}; export the package again"
        )
    for key, kind in _REQUIRED.items():
        if key not in manifest:
            raise _damaged(root, f"manifest.json has no {key!r}")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise _damaged(root, f"manifest.json's {key!r} is a {type(manifest[key]).__name__}")
    try:
        plan = Plan.from_json(manifest["plan"])
        SizeConstraints(**manifest["constraints"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(root, f"its plan or size constraints do not parse ({type(exc).__name__}: {exc})") from exc
    scale_range = manifest.get("scale_range")
    if scale_range is not None and not (
        isinstance(scale_range, list)
        and len(scale_range) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale_range)
        and 0 < scale_range[0] <= scale_range[1]
    ):
        raise _damaged(root, f"its scale_range {scale_range!r} is not [lowest, highest]")
    if plan.given and scale_range is None:
        raise _damaged(root, "its plan takes a scale but the manifest gives no scale_range")
    stages = manifest["stages"]
    for step in plan.steps:
        if step.stage not in stages:
            raise _damaged(root, f"its plan runs stage {step.stage!r}, which the manifest does not describe")
    for name, entry in stages.items():
        if not isinstance(entry, dict) or not all(k in entry for k in ("file", "inputs", "outputs")):
            raise _damaged(root, f"stage {name!r} lacks its file, inputs or outputs")
        for side in ("inputs", "outputs"):
            specs = entry[side]
            if not isinstance(specs, list) or not all(_is_tensor_entry(spec) for spec in specs):
                raise _damaged(root, f"stage {name!r} has {side} that are not a list of {{name, dtype, shape}}")
    if "fp32" not in manifest["precisions"]:
        raise _damaged(root, "it lists no fp32 graphs")
    for precision, files in manifest["precisions"].items():
        if not isinstance(files, dict) or set(files) != set(stages):
            raise _damaged(root, f"its {precision} graphs do not cover the stages {sorted(stages)}")
        for stage, file in files.items():
            if not _inside(file):
                raise _damaged(root, f"its {precision} graph of {stage!r} is {file!r}, not a path inside the package")
    if manifest.get("torch_weights") is not None and not _inside(manifest["torch_weights"]):
        raise _damaged(root, f"its torch_weights is {manifest['torch_weights']!r}, not a path inside the package")
    if manifest["scale"] < 1:
        raise _damaged(root, f"its scale is {manifest['scale']}")
    _check_constraints(root, manifest["constraints"])


def _check_constraints(root: Path, constraints: dict[str, Any]) -> None:
    for key in ("min_h", "min_w", "multiple"):
        value = constraints.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _damaged(root, f"its size constraint {key} is {value!r}, not a whole number of at least 1")
    if constraints.get("pad", "edge") not in ("edge", "zeros"):
        raise _damaged(root, f"its size constraint pad is {constraints['pad']!r}, not 'edge' or 'zeros'")


def _inside(file: Any) -> bool:
    """Whether a manifest's file entry is a relative path that stays inside the package."""
    return isinstance(file, str) and not Path(file).is_absolute() and ".." not in Path(file).parts


def _is_tensor_entry(spec: Any) -> bool:
    return (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and isinstance(spec.get("dtype"), str)
        and isinstance(spec.get("shape"), list)
    )


def check_files(root: Path, manifest: dict[str, Any]) -> None:
    """Raise :class:`PackageError` naming the first graph or weights file of a checked manifest that is
    missing, empty, truncated or not of its format."""
    graphs = sorted({file for files in manifest["precisions"].values() for file in files.values()})
    for file in graphs:
        path = root / file
        problem = _missing(path) or _onnx_problem(path)
        if problem:
            raise PackageError(f"{path} {problem}; export the package again with vsr-export")
    if manifest.get("torch_weights"):
        path = root / manifest["torch_weights"]
        problem = _missing(path) or _safetensors_problem(path)
        if problem:
            raise PackageError(f"{path} {problem}; export the package again with vsr-export")


def _missing(path: Path) -> str | None:
    if not path.is_file():
        return "is missing"
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, position after it) of the protobuf varint at ``data[pos:]``, ``None`` if it runs off the end."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            return None
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    return None


#: Top-level fields of an ONNX ModelProto that every exported graph has: ir_version, graph, opset_import.
_ONNX_REQUIRED = {1: "ir_version", 7: "graph", 8: "opset_import"}


def _onnx_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole ONNX model, or ``None``.

    Walks the top-level protobuf fields of the ModelProto (a tag, then a varint, a fixed-size value
    or a length and that many bytes) by seeking, without reading the graph: a file cut short has a
    field that runs past its end, and a file that is not a model has no valid fields.
    """
    size = path.stat().st_size
    seen: set[int] = set()
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(24)
            tag = _varint(head, 0)
            if tag is None or tag[0] >> 3 == 0 or tag[0] & 7 not in (0, 1, 2, 5):
                return f"is not an ONNX model (no protobuf field at byte {pos})"
            (key, at), wire = tag, tag[0] & 7
            if wire in (1, 5):  # fixed 64 or 32 bits
                end = pos + at + (8 if wire == 1 else 4)
            else:  # a varint value, or a varint length and that many bytes
                number = _varint(head, at)
                if number is None:
                    return f"is truncated: it ends inside a field at byte {pos}"
                value, after = number
                end = pos + after + (value if wire == 2 else 0)
            if end > size:
                return f"is truncated: a field at byte {pos} needs {end} bytes, but the file has {size}"
            seen.add(key >> 3)
            pos = end
    missing = [name for number, name in _ONNX_REQUIRED.items() if number not in seen]
    if missing:
        return f"is not a whole ONNX model (it has no {', '.join(missing)}; truncated?)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (an 8-byte header size, a JSON header, the data), or ``None``."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        header_size = int.from_bytes(head, "little") if len(head) == 8 else size
        if 8 + header_size > size:
            return "is truncated: it ends inside its header"
        try:
            header = json.loads(f.read(header_size))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "is not a safetensors file (its header does not parse)"
    if 8 + header_size + end > size:
        return f"is truncated: its tensors need {8 + header_size + end} bytes, but the file has {size}"
    return None


@dataclass
class Package:
    """A model package on disk, opened read-only (the manifest checked, the graphs found)."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> Package:
        root = Path(root)
        path = root / "manifest.json"
        if not path.is_file():
            raise PackageError(f"{root} is not a model package (no manifest.json); make one with vsr-export")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _damaged(root, f"manifest.json is not valid JSON ({exc})") from exc
        check_manifest(root, manifest)
        check_files(root, manifest)
        return cls(root, manifest)

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def plan(self) -> Plan:
        return Plan.from_json(self.manifest["plan"])

    @property
    def scale(self) -> int:
        return int(self.manifest["scale"])

    @property
    def scale_range(self) -> tuple[float, float] | None:
        """(lowest, highest) factor per axis of an arbitrary-scale network (``scale`` is then its
        default); ``None`` for a network that upscales by ``scale`` only."""
        found = self.manifest.get("scale_range")
        return None if found is None else (float(found[0]), float(found[1]))

    @property
    def constraints(self) -> SizeConstraints:
        return SizeConstraints(**self.manifest["constraints"])

    @property
    def clip_frames(self) -> int | None:
        """Clip length of a clip-level network (non-overlapping clips), ``None`` for recurrent ones."""
        return self.manifest.get("clip_frames")

    @property
    def output_rate(self) -> int:
        """Output frames per input frame (5 for DAVSR's space-time upscaling)."""
        return self.plan.output_rate

    @property
    def precisions(self) -> list[str]:
        return list(self.manifest["precisions"])

    def stage_file(self, stage: str, precision: str = "fp32") -> Path:
        """The graph of ``stage`` in ``precision``; a clear error if it was not exported or is gone."""
        files = self.manifest["precisions"].get(precision)
        if files is None:
            raise PackageError(
                f"{self.root} has no {precision} graphs (it has {', '.join(self.precisions)}); "
                f"run vsr-export with --precision {precision}"
            )
        path = self.root / files[stage]
        if not path.is_file() or path.stat().st_size == 0:
            raise PackageError(f"{path} is missing or empty; export the package again")
        return path

    def stage_names(self) -> list[str]:
        return list(self.manifest["stages"])
