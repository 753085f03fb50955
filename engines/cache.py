"""The engine cache: TensorRT engines keyed by GPU, TensorRT version, package, precision and profile.

Pure Python (no TensorRT, no GPU needed): what identifies an engine set, where it lives, and
how a backend finds one that fits a frame size.

Layout under ``<cache dir>/engines`` (``$VSR_CACHE_DIR`` or ``~/.cache/vsr``)::

    <gpu>-sm<major><minor>-trt<version>/        one folder per GPU model and TensorRT version
      timing.cache                              TensorRT's timing cache, shared by builds there
      <model>-<package hash[:12]>-<precision>-<profile>-<key[:8]>/
        engine.json                             the key fields, the profile, the files, when
        <stage>.engine                          one serialized engine per stage

An engine only runs on the GPU model and TensorRT version it was built with, and only for the
exact graphs it was built from: the package hash covers the manifest and every graph file. An
engine with an ahead-of-time plugin also carries that plugin's kernel, so the key covers the
plugins' fingerprints (:func:`engines.plugins.fingerprint`: kernel source, constants, Triton version).

``engine.json`` records the sha256 and size of every engine file when the set is written; a set
whose files do not match (replaced or damaged since) is not used (:meth:`EngineSet.verify`), and
links in the cache are not followed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.atomic import staged_directory
from export.format import JsonLimitError, cache_folder, read_json, sha256_file
from vsr_models.errors import VSRError

FORMAT = "vsr-engines"
FORMAT_VERSION = 3  # 3: engine.json records each engine file's sha256 and size


class EngineNotFound(VSRError, RuntimeError):
    """No engine set in the cache fits the package, GPU, TensorRT version, precision and size."""


class EngineChanged(EngineNotFound):
    """An engine file in the cache is not the one recorded when its set was built."""


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for: its name and compute capability (major, minor)."""

    name: str
    capability: tuple[int, int]

    @property
    def slug(self) -> str:
        name = re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-").lower()
        return f"{name}-sm{self.capability[0]}{self.capability[1]}"


@dataclass(frozen=True)
class Profile:
    """An optimization profile over LR frame sizes (h, w): min <= opt <= max on both axes."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def __post_init__(self) -> None:
        for axis in (0, 1):
            if not 1 <= self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ValueError(f"profile {self} needs 1 <= min <= opt <= max on both axes")

    def covers(self, h: int, w: int) -> bool:
        return self.min[0] <= h <= self.max[0] and self.min[1] <= w <= self.max[1]

    def __str__(self) -> str:
        return "_".join(f"{h}x{w}" for h, w in (self.min, self.opt, self.max))

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Profile:
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))  # type: ignore[arg-type]

    def shapes(self, channels: int, scale: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) NCHW shapes of a tensor of ``channels`` at ``scale`` x the LR size."""
        return tuple((1, channels, h * scale, w * scale) for h, w in (self.min, self.opt, self.max))  # type: ignore


def package_hash(root: str | Path) -> str:
    """sha256 over ``manifest.json`` and every graph file the manifest lists (all precisions)."""
    root = Path(root)
    manifest_bytes = (root / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    files = sorted({f for graphs in manifest["precisions"].values() for f in graphs.values()})
    digest = hashlib.sha256()
    digest.update(b"manifest.json\0" + manifest_bytes)
    for rel in files:
        digest.update(b"\0" + rel.encode() + b"\0")
        with open(root / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine set depends on."""

    gpu: GpuInfo
    tensorrt: str
    package_hash: str
    precision: str
    profile: Profile
    plugins: str = ""  # the fingerprints of the plugins baked into the engines; "" without custom nodes

    def digest(self) -> str:
        """sha256 of the canonical JSON of the fields (stable across runs and machines)."""
        fields = {
            "gpu": {"name": self.gpu.name, "capability": list(self.gpu.capability)},
            "tensorrt": self.tensorrt,
            "package_hash": self.package_hash,
            "precision": self.precision,
            "profile": self.profile.to_json(),
            "plugins": self.plugins,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def platform_dir(self) -> str:
        return f"{self.gpu.slug}-trt{self.tensorrt}"


@dataclass
class EngineSet:
    """One built engine set in the cache (read from its ``engine.json``)."""

    path: Path
    key: EngineKey
    model: str
    stages: dict[str, str]  # stage -> engine file name
    created: str
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> {sha256, bytes}

    def engine_file(self, stage: str) -> Path:
        return self.path / self.stages[stage]

    def verify(self, stages: list[str] | None = None) -> None:
        """Raise :class:`EngineChanged` unless the engine files of ``stages`` (default: all) are the
        files this set recorded when it was written (size and sha256), plain files, not links."""
        for stage in stages if stages is not None else list(self.stages):
            path = self.engine_file(stage)
            record = self.digests.get(self.stages[stage])
            if path.is_symlink() or not path.is_file() or record is None:
                raise EngineChanged(f"{path} is missing or not a plain file; rebuild the engines with vsr-build-engine")
            if path.stat().st_size != record["bytes"] or sha256_file(path) != record["sha256"]:
                raise EngineChanged(
                    f"{path} is not the engine recorded when it was built (changed or damaged since); rebuild "
                    "the engines with vsr-build-engine"
                )


def default_root() -> Path:
    """``<cache dir>/engines``, created and checked (see :func:`export.format.cache_folder`)."""
    return cache_folder("engines")


class EngineCache:
    """Engine sets on disk under ``root`` (default :func:`default_root`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def timing_cache_path(self, gpu: GpuInfo, tensorrt: str) -> Path:
        """TensorRT timing cache for one GPU model and TensorRT version."""
        return self.root / f"{gpu.slug}-trt{tensorrt}" / "timing.cache"

    def write(self, key: EngineKey, model: str, engines: dict[str, bytes]) -> EngineSet:
        """Store serialized engines (stage -> bytes) under ``key``, atomically; replaces the same key."""
        name = f"{model}-{key.package_hash[:12]}-{key.precision}-{key.profile}-{key.digest()[:8]}"
        target = self.root / key.platform_dir / name
        with staged_directory(target) as tmp:
            stages, digests = {}, {}
            for stage, blob in engines.items():
                (tmp / f"{stage}.engine").write_bytes(blob)
                stages[stage] = f"{stage}.engine"
                digests[stages[stage]] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "model": model,
                "gpu": {"name": key.gpu.name, "capability": list(key.gpu.capability)},
                "tensorrt": key.tensorrt,
                "package_hash": key.package_hash,
                "precision": key.precision,
                "profile": key.profile.to_json(),
                "plugins": key.plugins,
                "key": key.digest(),
                "stages": stages,
                "files": digests,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            (tmp / "engine.json").write_text(json.dumps(meta, indent=2) + "\n")
        found = self._read(target)
        assert found is not None
        return found

    def entries(self) -> list[EngineSet]:
        """Every readable engine set in the cache (unreadable folders are skipped)."""
        if not self.root.is_dir():
            return []
        sets = [self._read(p.parent) for p in sorted(self.root.glob("*/*/engine.json"))]
        return [s for s in sets if s is not None]

    @staticmethod
    def _read(path: Path) -> EngineSet | None:
        try:
            if path.is_symlink():
                return None
            meta = read_json(path / "engine.json", limit=1 << 20)
            if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
                return None
            gpu = GpuInfo(meta["gpu"]["name"], tuple(meta["gpu"]["capability"]))  # type: ignore[arg-type]
            key = EngineKey(
                gpu,
                meta["tensorrt"],
                meta["package_hash"],
                meta["precision"],
                Profile.from_json(meta["profile"]),
                meta["plugins"],
            )
            if key.digest() != meta.get("key"):
                return None
            stages, digests = dict(meta["stages"]), dict(meta["files"])
            if not all(isinstance(f, str) and os.path.basename(f) == f and f in digests for f in stages.values()):
                return None
            if not all((path / f).is_file() for f in stages.values()):
                return None
            return EngineSet(path, key, meta["model"], stages, meta["created"], digests)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, JsonLimitError):
            return None

    def candidates(
        self, pkg_hash: str, gpu: GpuInfo, tensorrt: str, precision: str, plugins: str = ""
    ) -> list[EngineSet]:
        """Engine sets for this package, GPU, TensorRT version, precision and plugin kernels, any profile."""
        return [
            s
            for s in self.entries()
            if s.key.package_hash == pkg_hash
            and s.key.gpu == gpu
            and s.key.tensorrt == tensorrt
            and s.key.precision == precision
            and s.key.plugins == plugins
        ]

    def stale(self, pkg_hash: str, gpu: GpuInfo, tensorrt: str, precision: str, plugins: str) -> list[EngineSet]:
        """Engine sets that match all but the plugin kernels (built before a plugin or Triton changed)."""
        return [
            s
            for s in self.entries()
            if (s.key.package_hash, s.key.gpu, s.key.tensorrt, s.key.precision) == (pkg_hash, gpu, tensorrt, precision)
            and s.key.plugins != plugins
        ]

    def find(
        self,
        pkg_hash: str,
        gpu: GpuInfo,
        tensorrt: str,
        precision: str,
        size: tuple[int, int],
        stages: list[str] | None = None,
        package: str = "PKG",
        plugins: str = "",
    ) -> EngineSet:
        """The engine set whose profile covers the LR ``size`` (h, w) most tightly.

        Among covering sets, the smallest ``max`` area wins (less memory), then the ``opt``
        nearest to ``size``. ``stages``: the set must have an engine for each. Raises
        :class:`EngineNotFound` with the ``vsr-build-engine`` command to run, and
        :class:`EngineChanged` when the chosen set's files are not those it recorded.
        """
        h, w = size
        sets = [
            s
            for s in self.candidates(pkg_hash, gpu, tensorrt, precision, plugins)
            if stages is None or set(stages) <= set(s.stages)
        ]
        covering = [s for s in sets if s.key.profile.covers(h, w)]
        if covering:

            def rank(s: EngineSet) -> tuple[int, int]:
                p = s.key.profile
                return p.max[0] * p.max[1], abs(p.opt[0] - h) + abs(p.opt[1] - w)

            best = min(covering, key=rank)
            best.verify(stages)
            return best
        built = ", ".join(
            f"{s.key.profile.min[0]}x{s.key.profile.min[1]} to {s.key.profile.max[0]}x{s.key.profile.max[1]}"
            for s in sets
        )
        what = f"for {h}x{w} frames" + (f" (built for {built} only)" if built else "")
        if not sets and self.stale(pkg_hash, gpu, tensorrt, precision, plugins):
            what += " (the engines cached for it carry another version of a plugin kernel: rebuild them)"
        raise EngineNotFound(
            f"no engine built for {package} on {gpu.name} (sm{gpu.capability[0]}{gpu.capability[1]}, "
            f"TensorRT {tensorrt}, {precision}) {what}: run vsr-build-engine {package} --precision {precision} "
            f"--max-shape {max(h, 64)}x{max(w, 64)} (or use --backend onnxruntime)"
        )
