"""Engines: the cache (key, lookup), the CLI and backend selection without TensorRT, and, where
TensorRT and a GPU exist, the build and the TensorRT backend against ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engines.cache import EngineCache, EngineKey, EngineNotFound, GpuInfo, Profile, package_hash
from engines.cli import main as build_main
from engines.cli import resolve_profile
from engines.tensorrt import INSTALL_HINT, TensorRTUnavailable, stage_profiles, tensorrt_available
from export.format import Package
from vsr_models.plan import SizeConstraints

H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))
PROFILE = Profile((33, 33), (180, 320), (540, 960))


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


needs_tensorrt = pytest.mark.skipif(not tensorrt_available(), reason="needs TensorRT and a CUDA GPU; " + INSTALL_HINT)


def _fake_package(root: Path, graph_bytes: bytes = b"graph") -> Path:
    """A package-shaped folder (manifest + graph files) for hashing; not runnable."""
    (root / "fp32").mkdir(parents=True)
    (root / "fp32" / "a.onnx").write_bytes(graph_bytes)
    (root / "fp32" / "b.onnx").write_bytes(b"other")
    manifest = {
        "format": "vsr-package",
        "format_version": 1,
        "model": "toy",
        "precisions": {"fp32": {"a": "fp32/a.onnx", "b": "fp32/b.onnx"}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _key(**change) -> EngineKey:
    fields = {"gpu": H100, "tensorrt": "10.13.0.35", "package_hash": "ab" * 32, "precision": "fp16", "profile": PROFILE}
    fields.update(change)
    return EngineKey(**fields)


# ------------------------------------------------------------------ cache key
def test_key_is_stable():
    assert _key().digest() == _key().digest()
    # Fixed value: the key format must not change silently (old caches would be orphaned).
    assert (
        _key().digest()
        == EngineKey(
            GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)),
            "10.13.0.35",
            "ab" * 32,
            "fp16",
            Profile((33, 33), (180, 320), (540, 960)),
        ).digest()
    )
    assert len(_key().digest()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"gpu": GpuInfo("NVIDIA A100-SXM4-80GB", (9, 0))},
        {"gpu": GpuInfo("NVIDIA H100 80GB HBM3", (8, 9))},
        {"tensorrt": "11.1.0.106"},
        {"package_hash": "cd" * 32},
        {"precision": "fp32"},
        {"profile": Profile((33, 33), (180, 320), (540, 961))},
        {"profile": Profile((34, 33), (180, 320), (540, 960))},
        {"profile": Profile((33, 33), (181, 320), (540, 960))},
    ],
)
def test_any_change_changes_the_key(change: dict):
    assert _key(**change).digest() != _key().digest()


def test_package_hash_covers_manifest_and_graphs(tmp_path: Path):
    root = _fake_package(tmp_path / "p")
    first = package_hash(root)
    assert package_hash(root) == first
    (root / "fp32" / "a.onnx").write_bytes(b"graph!")
    second = package_hash(root)
    assert second != first
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["model"] = "toy2"
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert package_hash(root) not in (first, second)


def test_profile_validation_and_cover():
    assert PROFILE.covers(33, 33) and PROFILE.covers(540, 960) and PROFILE.covers(100, 500)
    assert not PROFILE.covers(32, 100) and not PROFILE.covers(100, 961)
    with pytest.raises(ValueError):
        Profile((64, 64), (32, 64), (128, 128))
    assert PROFILE.shapes(64, 4) == ((1, 64, 132, 132), (1, 64, 720, 1280), (1, 64, 2160, 3840))
    assert Profile.from_json(PROFILE.to_json()) == PROFILE


# ------------------------------------------------------------------ cache lookup
def _write(cache: EngineCache, key: EngineKey, stages=("flow", "step")):
    return cache.write(key, "toy", {s: f"engine {s} {key.digest()}".encode() for s in stages})


def test_write_then_find(tmp_path: Path):
    cache = EngineCache(tmp_path)
    wide = _write(cache, _key())
    small = _write(cache, _key(profile=Profile((33, 33), (64, 64), (128, 160))))
    _write(cache, _key(precision="fp32"))
    _write(cache, _key(tensorrt="11.1.0.106"))
    _write(cache, _key(gpu=GpuInfo("NVIDIA GeForce RTX 4090", (8, 9))))
    assert len(cache.entries()) == 5
    find = lambda size: cache.find("ab" * 32, H100, "10.13.0.35", "fp16", size, stages=["flow", "step"])  # noqa: E731
    assert find((100, 150)).path == small.path  # the tightest covering profile
    assert find((180, 320)).path == wide.path
    assert find((100, 150)).engine_file("flow").read_bytes().startswith(b"engine flow")
    assert cache.timing_cache_path(H100, "10.13.0.35").parent == wide.path.parent


def test_not_found_says_what_to_run(tmp_path: Path):
    cache = EngineCache(tmp_path)
    _write(cache, _key(profile=Profile((33, 33), (64, 64), (128, 160))))
    with pytest.raises(EngineNotFound, match=r"vsr-build-engine pkgdir --precision fp16 --max-shape 600x800") as err:
        cache.find("ab" * 32, H100, "10.13.0.35", "fp16", (600, 800), package="pkgdir")
    assert "33x33 to 128x160" in str(err.value)
    with pytest.raises(EngineNotFound, match="no engine built"):
        cache.find("ab" * 32, H100, "10.13.0.35", "fp32", (64, 64))
    with pytest.raises(EngineNotFound):  # a set lacking a stage does not count
        cache.find("ab" * 32, H100, "10.13.0.35", "fp16", (64, 64), stages=["flow", "step", "upsample"])


def test_broken_entries_are_ignored(tmp_path: Path):
    cache = EngineCache(tmp_path)
    good = _write(cache, _key())
    bad = _write(cache, _key(precision="fp32"))
    (bad.path / "flow.engine").unlink()
    tampered = _write(cache, _key(tensorrt="10.0.0"))
    meta = json.loads((tampered.path / "engine.json").read_text())
    meta["precision"] = "fp32"  # no longer matches its key digest
    (tampered.path / "engine.json").write_text(json.dumps(meta))
    assert [e.path for e in cache.entries()] == [good.path]


def test_rewrite_replaces(tmp_path: Path):
    cache = EngineCache(tmp_path)
    first = _write(cache, _key())
    second = cache.write(_key(), "toy", {"flow": b"new", "step": b"new"})
    assert first.path == second.path and second.engine_file("flow").read_bytes() == b"new"
    assert len(cache.entries()) == 1


# ------------------------------------------------------------------ profiles from flags and manifest
def test_resolve_profile_defaults_and_padding():
    basic = SizeConstraints(min_h=33, min_w=33, multiple=1)
    assert resolve_profile(basic, None, None, None) == Profile((33, 33), (180, 320), (540, 960))
    assert resolve_profile(basic, None, None, (64, 96)) == Profile((33, 33), (64, 96), (64, 96))
    windowed = SizeConstraints(min_h=64, min_w=64, multiple=8)
    assert resolve_profile(windowed, (70, 70), (100, 100), (200, 201)) == Profile((72, 72), (104, 104), (200, 208))
    with pytest.raises(Exception, match="min <= opt <= max"):
        resolve_profile(basic, (100, 100), (50, 50), (200, 200))


def test_stage_profiles_scale_each_input():
    manifest = {
        "stages": {
            "up": {
                "inputs": [
                    {"name": "feat", "dtype": "float32", "shape": [1, 64, "h", "w"]},
                    {"name": "skip", "dtype": "float32", "shape": [1, 3, "4*h", "4*w"]},
                ]
            }
        }
    }
    shapes = stage_profiles(Package(Path("."), manifest), "up", Profile((33, 33), (64, 96), (128, 160)))
    assert shapes["feat"] == ((1, 64, 33, 33), (1, 64, 64, 96), (1, 64, 128, 160))
    assert shapes["skip"] == ((1, 3, 132, 132), (1, 3, 256, 384), (1, 3, 512, 640))


# ------------------------------------------------------------------ without TensorRT
@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed: the missing-TensorRT messages do not apply")
def test_build_engine_without_tensorrt_exits_with_the_hint(basicvsr_package: Package):
    root = basicvsr_package.root
    result = CliRunner().invoke(build_main, [str(root), "--precision", "fp32"])
    assert result.exit_code != 0
    assert "TensorRT is not installed: pip install tensorrt" in result.output
    assert "--backend onnxruntime" in result.output


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed: the missing-TensorRT messages do not apply")
def test_tensorrt_backend_without_tensorrt_raises_the_hint(basicvsr_fp16_package: Package):
    from runtime.backends import make_backend

    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        make_backend("tensorrt", basicvsr_fp16_package, "cuda", "fp16")


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed: the missing-TensorRT messages do not apply")
def test_vsr_run_backend_tensorrt_without_tensorrt_exits(basicvsr_fp16_package: Package, tmp_path: Path):
    from runtime.cli.run import main as run_main
    from runtime.samples import sample_clip

    result = CliRunner().invoke(
        run_main,
        [
            str(sample_clip()),
            "-o",
            str(tmp_path / "out.mp4"),
            "--model",
            str(basicvsr_fp16_package.root),
            "--backend",
            "tensorrt",
            "--frames",
            "2",
        ],
    )
    assert result.exit_code != 0
    assert "TensorRT is not installed" in result.output


def test_auto_backend_falls_back_to_onnxruntime(basicvsr_fp16_package: Package):
    """Without TensorRT engines (none built here), auto is ONNX Runtime: CUDA provider when asked
    for cuda and present, else the CPU."""
    import onnxruntime as ort

    from runtime.backends import make_backend

    backend = make_backend("auto", basicvsr_fp16_package, "cpu", "fp16")
    assert backend.name == "onnxruntime" and backend.device_type == "cpu"
    backend = make_backend("auto", basicvsr_fp16_package, "cuda", "fp32")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert backend.name == "onnxruntime" and backend.device_type == ("cuda" if has_cuda else "cpu")


# ------------------------------------------------------------------ with TensorRT and a GPU
def _real_frames(n: int, crop: tuple[int, int]) -> np.ndarray:
    from runtime.samples import load_lr as _load_lr

    return _load_lr(None, n, crop, None)


@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run_against_onnxruntime(basicvsr_fp16_package: Package, tmp_path: Path, precision: str):
    """Build engines for a small LR range, run 4 real frames, compare with ONNX Runtime FP32."""
    from engines.tensorrt import build_engines
    from runtime.backends import OrtBackend, OrtOptions, TensorRTBackend, TensorRTOptions
    from runtime.pipeline import upscale_clip as run_backend
    from runtime.samples import psnr

    cache = EngineCache(tmp_path / "engines")
    built = build_engines(
        basicvsr_fp16_package, precision, Profile((33, 33), (48, 64), (64, 96)), cache=cache, workspace_gb=2
    )
    assert set(built.stages) == set(basicvsr_fp16_package.stage_names())
    assert cache.timing_cache_path(built.key.gpu, built.key.tensorrt).stat().st_size > 0
    lr = _real_frames(4, (48, 64))
    ref = run_backend(OrtBackend(basicvsr_fp16_package, OrtOptions(precision="fp32")), basicvsr_fp16_package, lr)
    out = run_backend(
        TensorRTBackend(basicvsr_fp16_package, TensorRTOptions(precision=precision, cache=cache)),
        basicvsr_fp16_package,
        lr,
    )
    if precision == "fp32":
        assert np.abs(out - ref).max() < 1e-3  # FP32 engines are built without TF32
    else:
        assert min(psnr(out[i], ref[i]) for i in range(len(lr))) >= 50.0
    with pytest.raises(EngineNotFound, match="vsr-build-engine"):
        run_backend(
            TensorRTBackend(basicvsr_fp16_package, TensorRTOptions(precision=precision, cache=cache)),
            basicvsr_fp16_package,
            _real_frames(2, (120, 160)),
        )


@pytest.mark.tensorrt
@needs_tensorrt
def test_auto_prefers_tensorrt_once_built(
    basicvsr_fp16_package: Package, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from engines.tensorrt import build_engines
    from runtime.backends import make_backend

    monkeypatch.setenv("VSR_CACHE_DIR", str(tmp_path))
    assert make_backend("auto", basicvsr_fp16_package, "cuda", "fp16").name != "tensorrt"
    build_engines(basicvsr_fp16_package, "fp16", Profile((33, 33), (48, 64), (64, 96)), workspace_gb=2)
    assert make_backend("auto", basicvsr_fp16_package, "cuda", "fp16").name == "tensorrt"
