"""The model package format: reading ``manifest.json`` and finding the graphs, without torch or onnx.

Layout::

    PKG/
      manifest.json      model, scale (and the scale range of an arbitrary-scale network), size
                         constraints, the step workspace, stages (I/O names, dtypes, shapes),
                         the plan, provenance (checkpoint sha256, opset, versions)
      fp32/<stage>.onnx  one graph per stage
      fp16/<stage>.onnx  optional, written by ``vsr-export --precision fp16``
      torch/weights.safetensors
                         optional: the weights, for a package no released file backs

The writer is :mod:`export.package`; everything that runs a package (the runtime, the engine
builder) reads it through :class:`Package`, which checks the manifest and every file it lists
when it opens it (each graph and the weights walked to their end, without decoding them), so a
damaged package is reported by name with what to do before any work, instead of failing deep
inside a backend. The manifest is read with limits (:func:`load_json`: size, nesting, digits)
and every value bounded (a scale of 10**6 or a minimum size of 10**9 is a damaged package, not
a run that fails late); a symbolic link inside the package is refused, never followed. The
manifest records the sha256 and size of every file it lists (``files``); :meth:`Package.open`
checks them when asked (``verify``), as the zoo cache does before it uses an export.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import math
import operator
import os
import re
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from vsr_models.errors import VSRError
from vsr_models.plan import Plan, SizeConstraints

FORMAT = "vsr-package"
FORMAT_VERSION = 1
OPSET = 19

#: Bounds of manifest values: far beyond any real network, small enough that nothing downstream
#: (a size computation, an allocation, a loop over steps) can be made to explode by a manifest.
MAX_SCALE = 16
MAX_MIN_SIZE = 8192  # the largest LR side the graphs are exported for
MAX_MULTIPLE = 1024
MAX_CHANNELS = 65536
MAX_RATE = 64
MAX_CLIP_FRAMES = 4096
MAX_STAGES = 256
MAX_STEPS = 4096
MAX_REACH = 4096  # frame offsets and strides of reads, first/last of steps, a window's reach
MAX_MANIFEST_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 18
MAX_EXPRESSION = 512  # characters of a size expression (the step workspace)
_SHA256 = re.compile(r"[0-9a-f]{64}")

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


class CacheWarning(UserWarning):
    """The cache folder can be changed by other users (what this tool runs could be swapped)."""


def cache_dir() -> Path:
    """Where exported packages and engines are cached: ``$VSR_CACHE_DIR`` or ``~/.cache/vsr``.

    An empty ``VSR_CACHE_DIR`` (or ``XDG_CACHE_HOME``) counts as unset: it never means the current folder.
    """
    chosen = os.environ.get("VSR_CACHE_DIR", "").strip()
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "vsr"


class CacheError(VSRError, OSError):
    """The cache folder cannot be created or written."""


_warned_cache: set[Path] = set()


def cache_folder(*parts: str) -> Path:
    """``cache_dir() / parts...``, created (private to this user) and checked: a folder that cannot be
    written is a one-line :class:`~export.atomic.WriteError`; one that other users can write draws a
    :class:`CacheWarning` (once per folder and process)."""
    from .atomic import shared_folder_warning

    root = cache_dir()
    folder = root.joinpath(*parts)
    try:
        for place in [root, *[root.joinpath(*parts[: i + 1]) for i in range(len(parts))]]:
            place.mkdir(parents=True, exist_ok=True, mode=0o700)  # new folders private to this user
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            reason = "a part of its path is a file, not a folder"
        raise CacheError(
            f"the cache folder {folder} cannot be used ({reason}); set VSR_CACHE_DIR to a "
            "folder you can write, or fix its permissions"
        ) from exc
    for place in [root, *[root.joinpath(*parts[: i + 1]) for i in range(len(parts))]]:
        warning = shared_folder_warning(place, "the cache folder")
        if warning and place not in _warned_cache:
            _warned_cache.add(place)
            warnings.warn(warning, CacheWarning, stacklevel=2)
    return folder


class JsonLimitError(ValueError):
    """JSON text that exceeds what this tool reads (size, nesting, digits), or that is not JSON."""


def _refuse_constant(name: str) -> Any:
    raise JsonLimitError(f"holds {name}, which is not a number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonLimitError(f"holds a {len(text.lstrip('-'))}-digit number")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError(f"holds the number {text[:20]}, which overflows")
    return value


def load_json(data: str | bytes, *, limit: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse JSON with limits: at most ``limit`` bytes, :data:`MAX_JSON_DEPTH` levels of nesting,
    integers of at most :data:`MAX_INT_DIGITS` digits, finite numbers only. Raises
    :class:`JsonLimitError` (a ``ValueError``) whose message completes "the file ..." ("nests more
    than 64 levels deep")."""
    if len(data) > limit:
        raise JsonLimitError(f"is {len(data)} bytes, more than the {limit} this tool reads")
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    depth = 0
    for bracket in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        token = bracket.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise JsonLimitError(f"nests more than {MAX_JSON_DEPTH} levels deep")
        elif token == "]" or token == "}":
            depth -= 1
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_refuse_constant)
    except JsonLimitError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise JsonLimitError(f"is not valid JSON ({exc})") from None


def read_json(path: Path, *, limit: int = MAX_MANIFEST_BYTES) -> Any:
    """:func:`load_json` of the file ``path``, which must be a plain file (not a symbolic link)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise JsonLimitError("is not a plain file")
        data = f.read(limit + 1)
    try:
        return load_json(data, limit=limit)
    except UnicodeDecodeError as exc:
        raise JsonLimitError(f"is not UTF-8 text ({exc.reason})") from None


_OPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
}


def dim_value(expression: str, sizes: dict[str, int]) -> int | None:
    """The value of a graph dimension written as an expression of ``h``, ``w`` (LR) and ``H``, ``W``
    (output) at ``sizes``: ``"4*h"``, ``"32*(((h + 31)//32))"``; ``None`` for anything else."""
    try:
        tree = ast.parse(expression, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None

    def value(node: ast.AST) -> int | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name):
            return sizes.get(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            if left is None or right is None or (isinstance(node.op, ast.FloorDiv) and right == 0):
                return None
            return _OPS[type(node.op)](left, right)
        return None

    return value(tree)


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
    if not 1 <= manifest["scale"] <= MAX_SCALE:
        raise _damaged(root, f"its scale is {manifest['scale']}, not 1 to {MAX_SCALE}")
    _check_constraints(root, manifest["constraints"])
    try:
        plan = Plan.from_json(manifest["plan"])
        SizeConstraints(**manifest["constraints"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(root, f"its plan or size constraints do not parse ({type(exc).__name__}: {exc})") from exc
    _check_plan(root, plan)
    scale_range = manifest.get("scale_range")
    if scale_range is not None and not (
        isinstance(scale_range, list)
        and len(scale_range) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale_range)
        and 0 < scale_range[0] <= scale_range[1] <= MAX_SCALE
    ):
        raise _damaged(root, f"its scale_range {scale_range!r} is not [lowest, highest] within (0, {MAX_SCALE}]")
    clip = manifest.get("clip_frames")
    if clip is not None and not (_whole(clip) and 1 <= clip <= MAX_CLIP_FRAMES):
        raise _damaged(root, f"its clip_frames is {clip!r}, not 1 to {MAX_CLIP_FRAMES}")
    config = manifest.get("config", {})
    if config is not None and not (isinstance(config, dict) and all(_setting(v) for v in config.values())):
        raise _damaged(root, "its network config is not a mapping of numbers, flags and lists of them")
    workspace = manifest.get("step_workspace")
    if workspace is not None and not (
        isinstance(workspace, str)
        and len(workspace) <= MAX_EXPRESSION
        and dim_value(workspace, {"h": 64, "w": 64}) is not None
    ):
        raise _damaged(root, f"its step_workspace {str(workspace)[:80]!r} is not an expression of h and w")
    if plan.given and scale_range is None:
        raise _damaged(root, "its plan takes a scale but the manifest gives no scale_range")
    stages = manifest["stages"]
    if not 1 <= len(stages) <= MAX_STAGES:
        raise _damaged(root, f"it describes {len(stages)} stages, not 1 to {MAX_STAGES}")
    for step in plan.steps:
        if step.stage not in stages:
            raise _damaged(root, f"its plan runs stage {step.stage!r}, which the manifest does not describe")
    for name, entry in stages.items():
        if not isinstance(entry, dict) or not all(k in entry for k in ("file", "inputs", "outputs")):
            raise _damaged(root, f"stage {name!r} lacks its file, inputs or outputs")
        for side in ("inputs", "outputs"):
            specs = entry[side]
            if not isinstance(specs, list) or len(specs) > MAX_STAGES or not all(_is_tensor_entry(s) for s in specs):
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
    _check_file_records(root, manifest)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _setting(value: Any, depth: int = 0) -> bool:
    """A network setting a manifest may record: a flag, a finite number, None, or a short list of them."""
    if value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, list) and depth == 0 and len(value) <= 64 and all(_setting(v, 1) for v in value)


def _check_constraints(root: Path, constraints: dict[str, Any]) -> None:
    bounds = {"min_h": MAX_MIN_SIZE, "min_w": MAX_MIN_SIZE, "multiple": MAX_MULTIPLE}
    for key, high in bounds.items():
        value = constraints.get(key, 1)
        if not _whole(value) or not 1 <= value <= high:
            raise _damaged(root, f"its size constraint {key} is {value!r}, not a whole number from 1 to {high}")
    if constraints.get("pad", "edge") not in ("edge", "zeros"):
        raise _damaged(root, f"its size constraint pad is {constraints['pad']!r}, not 'edge' or 'zeros'")


def _check_plan(root: Path, plan: Plan) -> None:
    """Every number of a parsed plan within the bounds (channels, scales, rates, frame offsets)."""
    if not 1 <= len(plan.steps) <= MAX_STEPS:
        raise _damaged(root, f"its plan has {len(plan.steps)} steps, not 1 to {MAX_STEPS}")
    for name, spec in plan.tensors.items():
        numbers = {"channels": (spec.channels, MAX_CHANNELS), "scale": (spec.scale, MAX_SCALE)}
        numbers |= {"rate": (spec.rate, MAX_RATE), "multiple": (spec.multiple, MAX_MULTIPLE)}
        for what, (value, high) in numbers.items():
            if not _whole(value) or not 1 <= value <= high:
                raise _damaged(root, f"its plan's tensor {name!r} has {what} {value!r}, not 1 to {high}")
        if spec.dtype not in ("float32", "float16", "int64", "int32", "bool"):
            raise _damaged(root, f"its plan's tensor {name!r} has dtype {spec.dtype!r}")
    if plan.window is not None and not (_whole(plan.window) and 0 <= plan.window <= MAX_REACH):
        raise _damaged(root, f"its plan's window is {plan.window!r}, not 0 to {MAX_REACH}")
    for step in plan.steps:
        numbers = [step.first, step.last, step.rate]
        for read in step.inputs.values():
            r: Any = read
            while hasattr(r, "seq"):
                numbers += [r.offset, r.stride]
                r = r.default
        numbers += [n for at in step.write_at.values() for n in (at.offset, at.stride)]
        if not all(_whole(n) and abs(n) <= MAX_REACH for n in numbers) or not 1 <= step.rate <= MAX_RATE:
            raise _damaged(root, f"its plan's step {step.stage!r} reaches frames out of bounds ({numbers[:6]})")


def _check_file_records(root: Path, manifest: dict[str, Any]) -> None:
    """``files``, where present: a sha256 and a size per file name (which files :func:`check_files` asks for)."""
    records = manifest.get("files")
    if records is None:
        return
    if not isinstance(records, dict) or len(records) > 4 * MAX_STAGES:
        raise _damaged(root, "its record of files is not a mapping of file names to {sha256, bytes}")
    for rel, record in records.items():
        if not (
            isinstance(record, dict)
            and isinstance(record.get("sha256"), str)
            and _SHA256.fullmatch(record["sha256"])
            and _whole(record.get("bytes"))
            and record["bytes"] >= 0
        ):
            raise _damaged(root, f"its record of {rel} is not {{sha256, bytes}}")


def _listed_files(manifest: dict[str, Any]) -> list[str]:
    """Every file a checked manifest lists (graphs of every precision, the torch weights)."""
    files = {file for graphs in manifest["precisions"].values() for file in graphs.values()}
    if manifest.get("torch_weights"):
        files.add(manifest["torch_weights"])
    return sorted(files)


def file_records(root: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    """The ``files`` entry of a manifest: sha256 and size of each of ``files`` (relative to ``root``)."""
    return {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size} for rel in files}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read without following a symbolic link."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _inside(file: Any) -> bool:
    """Whether a manifest's file entry is a relative path that stays inside the package."""
    return (
        isinstance(file, str)
        and 0 < len(file) <= 1024
        and "\0" not in file
        and not Path(file).is_absolute()
        and ".." not in Path(file).parts
    )


def _is_tensor_entry(spec: Any) -> bool:
    return (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and isinstance(spec.get("dtype"), str)
        and isinstance(spec.get("shape"), list)
        and len(spec["shape"]) <= 8
        and all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in spec["shape"])
    )


def check_files(root: Path, manifest: dict[str, Any], *, verify: bool = False) -> None:
    """Raise :class:`PackageError` naming the first graph or weights file of a checked manifest that is
    missing, a symbolic link (or inside one), empty, truncated or not of its format; with ``verify``,
    also one whose size or sha256 differs from the manifest's record (a file changed since it was
    written; a package meant to be edited by hand is opened without it), and a manifest without
    records."""
    records = manifest.get("files")
    if verify and records is None:
        raise PackageError(f"{root} records no digests of its files, so it cannot be verified; export it again")
    for rel in _listed_files(manifest):
        path = root / rel
        link = _link_inside(root, rel)
        if link is not None:
            raise PackageError(
                f"{link} is a symbolic link inside the package {root}; a package holds its own files: "
                "export it again (or copy the files in)"
            )
        weights = rel == manifest.get("torch_weights")
        problem = _missing(path) or (_safetensors_problem(path) if weights else _onnx_problem(path))
        if problem:
            raise PackageError(f"{path} {problem}; export the package again with vsr-export")
        if not verify:
            continue
        if rel not in records:
            raise PackageError(f"{root} records no digest of {rel}, so it cannot be verified; export it again")
        size = path.stat().st_size
        if size != records[rel]["bytes"]:
            raise PackageError(
                f"{path} has {size} bytes, but the package recorded {records[rel]['bytes']} when it was written "
                "(changed or damaged since); export the package again"
            )
        if sha256_file(path) != records[rel]["sha256"]:
            raise PackageError(
                f"{path} is not the file the package recorded when it was written (its sha256 differs: changed "
                "or damaged since); export the package again"
            )


def _link_inside(root: Path, rel: str) -> Path | None:
    """The first symbolic link on the way from ``root`` (exclusive) to ``root / rel``, or ``None``."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            return path
    return None


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
        if header_size > MAX_MANIFEST_BYTES:
            return f"is not a safetensors file this tool reads (a header of {header_size} bytes)"
        try:
            header = load_json(f.read(header_size), limit=header_size)
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
    def open(cls, root: str | os.PathLike[str], *, verify: bool = False) -> Package:
        """Open and check the package at ``root``; ``verify`` also checks every file's sha256 against
        the manifest's records (what a cache does before it trusts an entry)."""
        root = Path(root)
        path = root / "manifest.json"
        if path.is_symlink():
            raise PackageError(f"{path} is a symbolic link; a package holds its own manifest: export it again")
        if not path.is_file():
            raise PackageError(f"{root} is not a model package (no manifest.json); make one with vsr-export")
        try:
            manifest = read_json(path)
        except JsonLimitError as exc:
            raise _damaged(root, f"manifest.json {exc}") from None
        except OSError as exc:
            raise PackageError(f"cannot read {path}: {exc.strerror or exc}; check its permissions") from exc
        check_manifest(root, manifest)
        check_files(root, manifest, verify=verify)
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
    def step_workspace(self) -> str | None:
        """Working memory of one step beyond the plan's tensors, as the network declared it
        (:meth:`vsr_models.base.VSRNetwork.step_workspace`: bytes as an expression of the LR tile's
        ``h`` and ``w``), or ``None`` for a network with none worth a memory budget."""
        return self.manifest.get("step_workspace")

    def step_workspace_bytes(self, h: int, w: int) -> int:
        """:attr:`step_workspace` for an LR tile of h x w (0 without one)."""
        if self.step_workspace is None:
            return 0
        value = dim_value(self.step_workspace, {"h": h, "w": w})
        if value is None:
            raise _damaged(self.root, f"its step_workspace {self.step_workspace!r} has no value at {h}x{w}")
        return max(value, 0)

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
