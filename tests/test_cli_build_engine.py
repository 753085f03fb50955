"""vsr-build-engine from its command line: --list, the build's way from flags to the engine cache, and
its errors, none of which may leave anything in the cache.

No TensorRT exists here. Where a build runs, these tests replace four of our own functions in
``engines.tensorrt`` (``import_tensorrt``, ``cuda_device``, ``gpu_info`` and the per-stage engine
builder ``build_stage``) with stand-ins, so they test our command-line and cache code only: the
profile from the flags, the precision check, the cache key, the cache write and ``--list``. TensorRT
never runs in them and they prove nothing about it; the real builds are the ``tensorrt`` tests of
tests/test_engines.py.
"""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

import engines.tensorrt
from engines.cache import EngineCache, EngineKey, GpuInfo, Profile, package_hash
from engines.tensorrt import BuildError
from export.atomic import PARTIAL_MARK
from export.format import Package
from runtime.cli.build_engine import main as build_main

H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
TRT_VERSION = "10.13.0.35"


def _run(*args: object) -> Result:
    return CliRunner().invoke(build_main, [str(a) for a in args])


def _cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``$VSR_CACHE_DIR``; returns its engine folder."""
    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "engines"


class _Builder:
    """Stands in for our per-stage engine builder ``build_stage`` (TensorRT is never called): records
    what it was asked to build and returns bytes naming it; ``fail_at`` makes that call (0-based)
    fail as a parser error would."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail_at = fail_at

    def __call__(self, onnx_path: Path, inputs: dict, *, workspace_gb: float, timing_cache: Path, log=print) -> bytes:
        if len(self.calls) == self.fail_at:
            raise BuildError(f"TensorRT could not build {onnx_path}: the parser stopped (stand-in)")
        self.calls.append((str(Path(onnx_path).relative_to(Path(onnx_path).parents[1])), inputs))
        return f"engine of {Path(onnx_path).name} for {sorted(inputs.items())}".encode()


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> _Builder:
    """Our TensorRT-facing functions replaced: ``import_tensorrt`` reports 10.13, the GPU is said to
    be an H100, and ``build_stage`` is a :class:`_Builder` (returned)."""
    builder = _Builder()
    monkeypatch.setattr(engines.tensorrt, "import_tensorrt", lambda: types.SimpleNamespace(__version__=TRT_VERSION))
    monkeypatch.setattr(engines.tensorrt, "cuda_device", lambda device: 0)
    monkeypatch.setattr(engines.tensorrt, "gpu_info", lambda index=0: H100)
    monkeypatch.setattr(engines.tensorrt, "build_stage", builder)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    return builder


@pytest.fixture(scope="module")
def fp32_only(tmp_path_factory: pytest.TempPathFactory, tiny_package: Package) -> Package:
    """The tiny package without its fp16 graphs."""
    root = tmp_path_factory.mktemp("fp32-only") / "pkg"
    shutil.copytree(tiny_package.root, root, ignore=shutil.ignore_patterns("fp16"))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["precisions"] = {"fp32": manifest["precisions"]["fp32"]}
    manifest.pop("precision_notes")
    (root / "manifest.json").write_text(json.dumps(manifest))
    return Package.open(root)


def test_our_cli_and_cache_with_the_engine_builder_replaced_build_then_list(
    tiny_package: Package, fp32_only: Package, cache_root: Path, stand_ins: _Builder
):
    """With our ``build_stage`` replaced (no TensorRT runs): the flags become the profile each stage
    is built for, the engine set lands in the cache under its key, and ``--list`` shows each set."""
    root = tiny_package.root
    assert _run(root, "--list").output == f"no engines cached for {root}\n"

    result = _run(root, "--precision", "fp16", "--opt-shape", "48x64", "--max-shape", "96x128", "--workspace", "1")
    assert result.exit_code == 0, result.output + repr(result.exception)
    built = dict(stand_ins.calls)
    assert sorted(built) == ["fp16/backward_step.onnx", "fp16/flow.onnx", "fp16/forward_step.onnx"]
    assert built["fp16/flow.onnx"]["a"] == ((1, 3, 33, 33), (1, 3, 48, 64), (1, 3, 96, 128))
    (entry,) = EngineCache(cache_root).entries()
    assert f"wrote 3 engines to {entry.path}" in result.output
    assert entry.key.profile == Profile((33, 33), (48, 64), (96, 128)) and entry.key.package_hash == package_hash(root)
    assert entry.engine_file("flow").read_bytes().startswith(b"engine of flow.onnx")

    assert _run(root).exit_code == 0  # fp32, the default profile
    assert _run(fp32_only.root).exit_code == 0  # another package: not listed for this one
    listed = _run(root, "--list")
    assert listed.exit_code == 0
    lines = sorted(listed.output.splitlines())
    assert len(lines) == 2, listed.output
    assert lines[0].startswith("fp16 LR 33x33_48x64_96x128 on NVIDIA H100 80GB HBM3 (sm90), TensorRT 10.13.0.35: ")
    assert lines[1].startswith("fp32 LR 33x33_180x320_540x960 on NVIDIA H100 80GB HBM3 (sm90), TensorRT 10.13.0.35: ")
    assert len(EngineCache(cache_root).entries()) == 3


def test_our_cache_with_the_engine_builder_replaced_keeps_its_state_when_a_build_fails(
    tiny_package: Package, cache_root: Path, stand_ins: _Builder
):
    """Our ``build_stage`` replaced (no TensorRT runs), failing at the second stage: no engine set
    for the first, no staged folder; an older set of the same key (built before) is kept whole."""
    assert _run(tiny_package.root, "--precision", "fp16").exit_code == 0
    before = {f: (cache_root / f).read_bytes() for f in _cache_files(cache_root)}
    stand_ins.calls.clear()
    stand_ins.fail_at = 1
    result = _run(tiny_package.root, "--precision", "fp16")
    assert result.exit_code == 1 and "Error: TensorRT could not build" in result.output, result.output
    assert len(stand_ins.calls) == 1
    assert {f: (cache_root / f).read_bytes() for f in _cache_files(cache_root)} == before
    assert not [p for p in cache_root.rglob("*") if PARTIAL_MARK in p.name]


def test_a_failed_engine_write_leaves_nothing(tmp_path: Path):
    """The write of an engine set fails half-way (the second engine cannot be written): nothing of
    it is left, and the set written before under the same key is whole."""
    cache = EngineCache(tmp_path)
    key = EngineKey(H100, TRT_VERSION, "ab" * 32, "fp16", Profile((33, 33), (48, 64), (96, 128)))
    old = cache.write(key, "toy", {"flow": b"old flow", "step": b"old step"})
    with pytest.raises(TypeError):
        cache.write(key, "toy", {"flow": b"new flow", "step": None})  # type: ignore[dict-item]
    (entry,) = cache.entries()
    assert entry.path == old.path and entry.engine_file("step").read_bytes() == b"old step"
    assert sorted(p.name for p in old.path.iterdir()) == ["engine.json", "flow.engine", "step.engine"]
    assert [p.name for p in old.path.parent.iterdir()] == [old.path.name]

    fresh = EngineKey(H100, TRT_VERSION, "cd" * 32, "fp16", Profile((33, 33), (48, 64), (96, 128)))
    with pytest.raises(TypeError):
        cache.write(fresh, "toy", {"flow": b"flow", "step": None})  # type: ignore[dict-item]
    assert [p.name for p in old.path.parent.iterdir()] == [old.path.name]


BAD_FLAGS = {
    "min_above_opt": (["--min-shape", "100x100", "--opt-shape", "50x50"], 2, ("min <= opt <= max", "LR frame sizes")),
    "size_not_hxw": (["--max-shape", "540by960"], 2, ("write sizes as HxW", "180x320")),
    "size_zero": (["--max-shape", "0x960"], 2, ("both sides must be at least 1 pixel",)),
    "workspace_too_small": (["--workspace", "0.1"], 2, ("--workspace", "0.25")),
    "device_typo": (["--device", "gpu"], 2, ("TensorRT engines are built on an NVIDIA GPU", "use cuda or cuda:N")),
    "precision_unknown": (["--precision", "int8"], 2, ("'int8' is not one of",)),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flags_are_clean_errors(case: str, tiny_package: Package, cache_root: Path):
    args, code, needles = BAD_FLAGS[case]
    result = _run(tiny_package.root, *args)
    assert result.exit_code == code and isinstance(result.exception, SystemExit), result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert _cache_files(cache_root) == []


def test_precision_the_package_lacks_names_the_export_to_run(fp32_only: Package, cache_root: Path, stand_ins):
    """Our CLI's check, before any build (the replaced builder is never called)."""
    result = _run(fp32_only.root, "--precision", "fp16")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "has no fp16 graphs" in result.output and "vsr-export basicvsr --precision fp16" in result.output
    assert stand_ins.calls == [] and _cache_files(cache_root) == []


def test_unknown_package_is_a_clean_error(tmp_path: Path, cache_root: Path):
    result = _run(tmp_path / "nosuch", "--list")
    assert result.exit_code == 1 and "is neither a package folder nor known weights" in result.output


def test_cpu_device_is_refused_with_the_fix(tiny_package: Package, cache_root: Path, monkeypatch):
    monkeypatch.setattr(engines.tensorrt, "import_tensorrt", lambda: types.SimpleNamespace(__version__=TRT_VERSION))
    result = _run(tiny_package.root, "--device", "cpu")
    assert result.exit_code == 1
    assert "TensorRT runs on a CUDA GPU; got --device cpu: pass --device cuda" in result.output
    assert _cache_files(cache_root) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this PyTorch sees a GPU: the no-GPU message does not apply")
def test_no_gpu_is_a_clean_error(tiny_package: Package, cache_root: Path, monkeypatch):
    monkeypatch.setattr(engines.tensorrt, "import_tensorrt", lambda: types.SimpleNamespace(__version__=TRT_VERSION))
    result = _run(tiny_package.root)
    assert result.exit_code == 1 and "TensorRT needs a CUDA GPU" in result.output
    assert "use --backend onnxruntime" in result.output and _cache_files(cache_root) == []
