"""Engines: the cache (key, lookup), the CLI and backend selection without TensorRT, the TensorRT
backend's device, stream, memory and shape handling with stand-ins for engines and the GPU (our control
flow only; nothing here builds or runs an engine), and, where TensorRT and a GPU exist, the build and
the TensorRT backend against ONNX Runtime."""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from engines.cache import FORMAT_VERSION, EngineCache, EngineKey, EngineNotFound, GpuInfo, Profile, package_hash
from engines.plugins import implicit_warp as iw_plugin
from engines.tensorrt import (
    INSTALL_HINT,
    BuildError,
    TensorRTUnavailable,
    check_inputs,
    engine_key,
    lr_side,
    package_plugins,
    stage_profiles,
    tensorrt_available,
    use_timing_cache,
)
from export.format import Package
from runtime.cli.build_engine import main as build_main
from runtime.cli.commands.build_engine import resolve_profile
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
#: Digests of fixed keys, recorded by hand for each cache format version. Engine sets are found by
#: their key's digest, so a change of these digests orphans every engine set users have cached
#: (each would be rebuilt, minutes per package and GPU, and the old ones left on disk): it must
#: come with a bump of ``engines.cache.FORMAT_VERSION`` and a new entry here, never an edit of one.
RECORDED_DIGESTS = {
    2: {
        "no plugins": "b39e0fa1b31136311aea17f08a09f007ae11198cc4a64d2567d346ceadba3ee4",
        "one plugin": "b982ccc3e84883aff255afe2d034304b491e7be35ed8f1a58586fbf5f163cd5c",
    },
    # 3: engine.json records each engine file's sha256 (sets of 2 have none and are rebuilt); the
    # key's fields, and so its digests, are those of 2.
    3: {
        "no plugins": "b39e0fa1b31136311aea17f08a09f007ae11198cc4a64d2567d346ceadba3ee4",
        "one plugin": "b982ccc3e84883aff255afe2d034304b491e7be35ed8f1a58586fbf5f163cd5c",
    },
}


def test_key_is_stable():
    """The digest of keys built from fixed fields equals the one recorded for this format version."""
    assert FORMAT_VERSION in RECORDED_DIGESTS, (
        f"engine cache format {FORMAT_VERSION} has no recorded digests: record them with the bump"
    )
    fixed = {
        "gpu": GpuInfo("NVIDIA H100 80GB HBM3", (9, 0)),
        "tensorrt": "10.13.0.35",
        "package_hash": "ab" * 32,
        "precision": "fp16",
        "profile": Profile((33, 33), (180, 320), (540, 960)),
    }
    recorded = RECORDED_DIGESTS[FORMAT_VERSION]
    assert EngineKey(**fixed).digest() == recorded["no plugins"]
    assert EngineKey(**fixed, plugins="vsr::ImplicitWarp v1=" + "0" * 64).digest() == recorded["one plugin"]


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
        {"plugins": "vsr::ImplicitWarp v1=" + "0" * 64},
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
    with pytest.raises(click.BadParameter, match="min <= opt <= max"):
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


def test_stage_profiles_of_an_any_scale_network():
    """Padded LR states, output-sized grids (lowest scale at min, highest at opt and max) and 1x1 inputs."""
    inputs = [
        {"name": "state", "dtype": "float32", "shape": [1, 16, "2*ceil(h/2)", "2*ceil(w/2)"]},
        {"name": "grid", "dtype": "float32", "shape": [1, 2, "H", "W"]},
        {"name": "inv_scale", "dtype": "float32", "shape": [1, 2, 1, 1]},
    ]
    manifest = {"scale_range": [1.0, 4.0], "stages": {"up": {"inputs": inputs}}}
    shapes = stage_profiles(Package(Path("."), manifest), "up", Profile((33, 35), (64, 97), (128, 161)))
    assert shapes["state"] == ((1, 16, 34, 36), (1, 16, 64, 98), (1, 16, 128, 162))
    assert shapes["grid"] == ((1, 2, 33, 35), (1, 2, 256, 388), (1, 2, 512, 644))
    assert shapes["inv_scale"] == ((1, 2, 1, 1),) * 3
    assert [lr_side(e, n) for e, n in (("2*ceil(h/2)", 34), ("4*w", 388), ("H", 256), (1, 1))] == [34, 97, None, None]


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


# ------------------------------------------------------------------ plugin kernels in the key
def _custom_node_package(root: Path) -> Package:
    """A package-shaped folder whose one graph has a vsr::ImplicitWarp node (for hashing and scanning)."""
    import onnx
    from onnx import helper

    node = helper.make_node("ImplicitWarp", list(iw_plugin.INPUTS), ["out"], domain="vsr", num_heads=2, scale=0.5)
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)])
    (root / "fp32").mkdir(parents=True)
    onnx.save(helper.make_model(graph), str(root / "fp32" / "iw.onnx"))
    manifest = {"model": "iw", "stages": {"iw": {"inputs": []}}, "precisions": {"fp32": {"iw": "fp32/iw.onnx"}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return Package(root, manifest)


def test_key_covers_the_plugin_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, basicvsr_package: Package):
    package = _custom_node_package(tmp_path / "iw")
    specs = package_plugins(package, "fp32")
    assert specs == [iw_plugin.SPEC]
    key = engine_key(package, "fp32", PROFILE, H100, "10.13.0.35", specs)
    assert key.plugins == f"{iw_plugin.SPEC}={iw_plugin.kernel_fingerprint()}"
    monkeypatch.setattr(iw_plugin, "kernel_sources", lambda: b"a kernel with a fix")
    assert engine_key(package, "fp32", PROFILE, H100, "10.13.0.35", specs).digest() != key.digest()
    plain = engine_key(basicvsr_package, "fp32", PROFILE, H100, "10.13.0.35", package_plugins(basicvsr_package, "fp32"))
    assert plain.plugins == ""


def test_engines_of_an_older_kernel_are_not_served(tmp_path: Path):
    cache = EngineCache(tmp_path)
    _write(cache, _key(plugins="vsr::ImplicitWarp v1=old"))
    assert cache.candidates("ab" * 32, H100, "10.13.0.35", "fp16", "vsr::ImplicitWarp v1=new") == []
    with pytest.raises(EngineNotFound, match="another version of a plugin kernel"):
        cache.find("ab" * 32, H100, "10.13.0.35", "fp16", (64, 64), plugins="vsr::ImplicitWarp v1=new")


# ------------------------------------------------------------------ precision defaults
def test_build_and_run_default_to_the_same_precision():
    """vsr-build-engine builds what vsr-run (and every backend) runs when --precision is not given."""
    import inspect

    from runtime.backends import make_backend
    from runtime.backends.trt import TensorRTOptions
    from runtime.cli.run import main as run_main

    built = next(p.default for p in build_main.params if p.name == "precision")
    ran = next(p.default for p in run_main.params if p.name == "precision")
    assert (
        built == ran == TensorRTOptions().precision == inspect.signature(make_backend).parameters["precision"].default
    )


def test_missing_engines_name_the_precision_that_has_them(tmp_path: Path):
    from runtime.backends.trt import missing_engines_message

    root = _fake_package(tmp_path / "p")
    cache = EngineCache(tmp_path / "engines")
    _write(cache, _key(package_hash=package_hash(root), precision="fp16"))
    text = missing_engines_message(cache, Package(root, {}), H100, "10.13.0.35", "fp32")
    assert "vsr-build-engine" in text and "--precision fp32" in text and "pass --precision fp16" in text


# ------------------------------------------------------------------ build helpers (stand-in config and network)
class _Config:
    """Records what the build gives a builder config; refuses caches made elsewhere."""

    def __init__(self, accepts: bool) -> None:
        self.accepts, self.set = accepts, []

    def create_timing_cache(self, blob: bytes) -> bytes:
        return blob

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        ok = self.accepts or cache == b""
        if ok:
            self.set.append(cache)
        return ok


def test_a_refused_timing_cache_is_said_and_replaced_on_a_stand_in_config():
    said = []
    config = _Config(accepts=False)
    assert use_timing_cache(config, b"cache from another GPU", said.append) is False
    assert config.set == [b""] and "timed again" in said[0]
    config = _Config(accepts=True)
    assert use_timing_cache(config, b"cache", said.append) is True and config.set == [b"cache"] and len(said) == 1


def test_parser_errors_fail_even_when_parse_returns_true():
    """The loader we build on (Polygraphy's NetworkFromOnnxPath) checks the error count after parsing."""
    from polygraphy.backend.trt import util as trt_util
    from polygraphy.exception import PolygraphyException

    parser = types.SimpleNamespace(num_errors=1, get_error=lambda i: "node 3: unsupported")
    with pytest.raises(PolygraphyException):
        trt_util.check_onnx_parser_errors(parser, True)


def test_inputs_the_manifest_does_not_describe_fail():
    tensors = [types.SimpleNamespace(name=n) for n in ("lr", "extra")]
    network = types.SimpleNamespace(num_inputs=2, get_input=lambda i: tensors[i])
    check_inputs(types.SimpleNamespace(num_inputs=1, get_input=lambda i: tensors[0]), {"lr": ()}, Path("s.onnx"))
    with pytest.raises(BuildError, match="'extra'"):
        check_inputs(network, {"lr": ()}, Path("s.onnx"))


# ------------------------------------------------------------------ the runner (stand-in engines and GPU)
# Everything below up to the GPU test drives runtime.backends.trt's EngineSetRunner and load_engines with
# stand-in objects shaped like TensorRT's (no TensorRT here): it checks our calls, not real engines.
_TRT = types.SimpleNamespace(
    ExecutionContextAllocationStrategy=types.SimpleNamespace(USER_MANAGED="user-managed", STATIC="static"),
    TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
    DataType=types.SimpleNamespace(FLOAT="f32", HALF="f16", INT32="i32", INT64="i64", BOOL="bool"),
)


class _Place:
    """A GPU index and stream handle; records which device is current (torch CPU tensors stand in)."""

    def __init__(self, index: int = 1) -> None:
        self.index, self.device, self.stream_handle, self.current = index, torch.device("cpu"), 0x7F00, None

    @contextlib.contextmanager
    def active(self):
        self.current = self.index
        try:
            yield
        finally:
            self.current = None


class _Context:
    def __init__(self, engine: _Engine, strategy: str) -> None:
        self.engine, self.strategy, self.memory, self.shapes, self.enqueued = engine, strategy, None, {}, []

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = (ptr, size)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.profile
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
            return False
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["x"]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        return ptr != 0

    def execute_async_v3(self, stream: int) -> bool:
        self.enqueued.append((stream, self.engine.place.current))
        return True


class _Engine:
    """One input ``x``, one output ``y``, FP32; its activation memory size and profile."""

    num_io_tensors = 2

    def __init__(self, place: _Place, memory: int) -> None:
        self.place, self.device_memory_size_v2, self.contexts = place, memory, []
        self.profile = ((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32))

    def create_execution_context(self, strategy: str) -> _Context:
        assert self.place.current is not None, "contexts are created with the backend's GPU current"
        self.contexts.append(_Context(self, strategy))
        return self.contexts[-1]

    def get_tensor_name(self, i: int) -> str:
        return "xy"[i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name: str) -> str:
        return "f32"

    def get_tensor_profile_shape(self, name: str, profile: int):
        return self.profile


def _runner(place: _Place, sizes=(4096, 1 << 20, 512)):
    from runtime.backends.trt import EngineSetRunner

    engines = {f"stage{i}": _Engine(place, size) for i, size in enumerate(sizes)}
    return EngineSetRunner(_TRT, engines, place), engines


def test_runner_on_stand_in_engines_loads_and_enqueues_with_the_chosen_device_current(tmp_path: Path):
    """--device cuda:1: our loader deserialises, and our runner enqueues, with device 1 current (stand-in
    engines and GPU: this checks our control flow, not TensorRT)."""
    from runtime.backends.trt import load_engines

    place = _Place(index=1)
    cache = EngineCache(tmp_path)
    found = _write(cache, _key())
    seen = []
    engines = load_engines(found, ["flow", "step"], place, lambda blob: seen.append(place.current) or _Engine(place, 1))
    assert seen == [1, 1] and set(engines) == {"flow", "step"}
    runner, stages = _runner(place)
    runner.run("stage0", {"x": torch.ones(1, 3, 16, 16)})
    assert [device for _, device in stages["stage0"].contexts[0].enqueued] == [1]


def test_runner_on_stand_in_engines_enqueues_on_the_backends_own_stream():
    """Our runner never passes the legacy default stream (handle 0; TensorRT synchronises after every
    enqueue on it) to a stand-in context."""
    place = _Place()
    runner, engines = _runner(place)
    for stage in engines:
        out = runner.run(stage, {"x": torch.ones(1, 3, 16, 16)})
        assert out["y"].shape == (1, 3, 16, 16)
    assert {s for e in engines.values() for c in e.contexts for s, _ in c.enqueued} == {place.stream_handle}
    assert place.stream_handle != 0


def test_runner_on_stand_in_engines_gives_contexts_one_user_managed_buffer():
    """Our runner creates user-managed contexts and hands each the one buffer, sized for the largest stand-in
    engine's ``device_memory_size_v2`` (whether TensorRT honours it is for the GPU tests)."""
    runner, engines = _runner(_Place(), sizes=(4096, 1 << 20, 512))
    contexts = [c for e in engines.values() for c in e.contexts]
    assert len(contexts) == 3 and {c.strategy for c in contexts} == {"user-managed"}
    assert {c.memory for c in contexts} == {(runner.memory.data_ptr(), 1 << 20)}
    assert runner.memory.numel() == 1 << 20  # the largest stage's need, once


def test_runner_on_stand_in_engines_refuses_a_shape_outside_the_profile():
    from runtime.backends.trt import ShapeOutsideProfile

    runner, _ = _runner(_Place())
    with pytest.raises(ShapeOutsideProfile, match=r"\(1, 3, 64, 64\), outside .*\(1, 3, 32, 32\).*--max-shape"):
        runner.run("stage0", {"x": torch.ones(1, 3, 64, 64)})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_place_uses_its_own_stream_and_device():
    from runtime.backends.trt import CudaPlace

    place = CudaPlace(torch.cuda.device_count() - 1)
    with place.active():
        assert torch.cuda.current_device() == place.index
        assert torch.cuda.current_stream().cuda_stream == place.stream_handle != 0
