"""SAVSR: the released layout, the original's conventions (rounding, reflected windows, phase and
grid arithmetic), the regrouped sums against the original's formulation, the window plan and its
chunking, and the runtime at any scale (``--scale``, ``--size``) from one package.

The shared contract test (tests/test_contract.py) adds, at x4, x2.5 by x3.5 and x1.6 on real
frames: executor on PyTorch equals ``forward_clip``, and one exported package on ONNX Runtime
equals it to 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from export.format import Package
from runtime.backends import TorchBackend
from runtime.cli.common import SCALE
from runtime.pipeline import Upscaler, resolve_scale, upscaler_for
from runtime.samples import load_lr
from vsr_models import CheckpointError, create_model, load_checkpoint, networks
from vsr_models.plan import Plan, Read, Step, TensorSpec, reflect_index
from vsr_models.savsr import OSConv2d
from vsr_models.scales import ScaleError, output_size, phase_map, sampling_grid, scale_for_size

SCALES = ((4.0, 4.0), (2.5, 3.5), (1.6, 1.6))


def small(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("savsr", **networks()["savsr"].quick.config)


def real_lr(frames: int, h: int, w: int) -> np.ndarray:
    """(T, 3, h, w): the centre of bikes.mp4 downscaled x4 (bicubic, antialiased)."""
    return load_lr(None, frames, crop=(h, w), downscale_by=4)


def test_released_configuration_has_the_official_layout() -> None:
    model = create_model("savsr")
    state = model.state_dict()
    assert len(state) == 791
    assert sum(p.numel() for p in model.parameters()) == 18_890_044
    shapes = {
        "f2p_win.conv_c.weight": (64, 3, 3, 3),
        "f2p_win.blocks.0.conv1.weight": (64, 192, 1, 1),
        "f2p_win.blocks.1.osconv.weight": (8, 64, 192, 3, 3),
        "f2p_win.blocks.1.osconv.scale_routing.0.weight": (384, 194),
        "p2f_win.merge.weight": (64, 192, 3, 3),
        "h_win.0.blocks.0.osconv.weight": (8, 64, 320, 3, 3),
        "h_win_conv_h.weight": (64, 128, 3, 3),
        "RG.0.residual_group.0.rcab.3.attention.1.weight": (4, 64, 1, 1),
        "adapt.0.adapt.weight": (8, 64, 64, 3, 3),
        "adapt.3.mask.12.running_var": (1,),
        "gamma": (1,),
        "upsample.weight_compress": (4, 8, 64, 1, 1),
        "upsample.weight_expand": (4, 64, 8, 1, 1),
        "upsample.kernel_conv.0.weight": (1600, 64, 1, 1),
        "upsample.body.0.weight": (64, 4, 1, 1),
        "tail.weight": (3, 64, 3, 3),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    # 3 OSConvs per window unit (x2), 2 in the fusion, 1 per OSAdapt (x4): 36 calls per output frame
    assert sum(isinstance(m, OSConv2d) for m in model.modules()) == 12


def test_params_and_params_ema_load_strictly(tmp_path: Path) -> None:
    a, b = small(0).state_dict(), small(1).state_dict()
    torch.save({"params": a, "params_ema": b}, tmp_path / "both.pth")
    torch.save({"params_ema": b}, tmp_path / "ema.pth")
    for path, key, expected in [("both.pth", None, a), ("both.pth", "params_ema", b), ("ema.pth", None, b)]:
        model = load_checkpoint(small(2), tmp_path / path, key=key)
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    torch.save({"params": {k: v for k, v in a.items() if k != "upsample.weight_expand"}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing key.*upsample\.weight_expand"):
        load_checkpoint(small(), tmp_path / "bad.pth")


def test_output_size_rounds_half_to_even_and_sizes_are_exact() -> None:
    assert output_size(13, 17, (2.5, 3.5)) == (32, 60)  # 32.5 -> 32, 59.5 -> 60
    assert output_size(3, 5, (2.5, 2.5)) == (8, 12)  # 7.5 -> 8, 12.5 -> 12
    assert output_size(7, 9, (4.0, 1.6)) == (28, 14)
    for h in range(2, 200, 7):
        for target in range(h, 4 * h + 1, 3):
            assert output_size(h, h + 1, scale_for_size(h, h + 1, (target, target + 1))) == (target, target + 1)


def _original_phase_and_grid(h: int, w: int, scale: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The phase map and base grid as the original computes them: float32 torch ops on Python scalars."""
    out_h, out_w = round(h * scale[0]), round(w * scale[1])
    ys, xs = torch.arange(out_h).float(), torch.arange(out_w).float()
    ry = (ys + 0.5) / scale[0] - torch.floor((ys + 0.5) / scale[0] + 1e-3) - 0.5
    rx = (xs + 0.5) / scale[1] - torch.floor((xs + 0.5) / scale[1] + 1e-3) - 0.5
    ones = torch.ones(out_h, out_w)
    phase = torch.stack([ones / scale[1], ones / scale[0], ry[:, None] * ones, rx[None, :] * ones])[None]
    gx = ((xs + 0.5) / scale[1] - 0.5) * 2 / (w - 1) - 1
    gy = ((ys + 0.5) / scale[0] - 0.5) * 2 / (h - 1) - 1
    grid = torch.stack([gx[None, :] * ones, gy[:, None] * ones])[None]
    return phase, grid


@pytest.mark.parametrize("scale", [*SCALES, (1.0, 1.0), (3.7, 1.3), (1080 / 271, 1920 / 481)])
def test_scale_inputs_are_the_originals_float32_arithmetic(scale: tuple[float, float]) -> None:
    phase, grid = _original_phase_and_grid(23, 31, scale)
    assert np.array_equal(phase_map(23, 31, scale), phase.numpy())
    assert np.array_equal(sampling_grid(23, 31, scale), grid.numpy())


def test_phase_and_grid_values() -> None:
    assert np.allclose(phase_map(4, 4, (2.0, 4.0))[0, 3, 0, :4], [-0.375, -0.125, 0.125, 0.375])
    assert np.allclose(phase_map(4, 4, (2.0, 4.0))[0, 2, :4, 0], [-0.25, 0.25, -0.25, 0.25])
    assert not phase_map(5, 6, (1.0, 1.0))[0, 2:].any()
    grid = sampling_grid(5, 6, (1.0, 1.0))  # x1: the LR pixel centres, -1 .. 1 with align_corners=True
    assert np.allclose(grid[0, 0, 0], np.linspace(-1, 1, 6)) and np.allclose(grid[0, 1, :, 0], np.linspace(-1, 1, 5))


def test_reflected_reads_are_basicsrs_window_indices() -> None:
    def basicsr(t: int, length: int) -> list[int]:  # generate_frame_indices(padding='reflection'), 7 frames
        return [-i if i < 0 else 2 * (length - 1) - i if i > length - 1 else i for i in range(t - 3, t + 4)]

    assert [Read("lr", d, reflect=True).index(0, 10) for d in range(-3, 4)] == [3, 2, 1, 0, 1, 2, 3]
    for length in range(4, 13):
        for t in range(length):
            assert [Read("lr", d, reflect=True).index(t, length) for d in range(-3, 4)] == basicsr(t, length)
    for length in (1, 2, 3):  # shorter than the reach: mirrored again, always inside the clip
        assert all(0 <= reflect_index(i, length) < length for i in range(-7, 10))


def test_forward_output_size_skip_and_refusals() -> None:
    model = small()
    lr = torch.from_numpy(real_lr(7, 13, 17))[None]
    with torch.no_grad():
        model.tail.weight.zero_()
        model.tail.bias.zero_()
        out = model(lr, (2.5, 3.5))
    assert out.shape == (1, 3, 32, 60)
    assert torch.equal(out, F.interpolate(lr[:, 3], size=(32, 60), mode="bilinear", align_corners=False))
    with pytest.raises(ValueError, match="windows of 7 frames"):
        model(lr[:, :5])
    for bad in [(4.5, 2.0), (0.5, 0.5)]:
        with pytest.raises(ScaleError, match="x1 to x4"):
            model(lr, bad)


def test_forward_depends_on_every_window_frame_and_the_scale() -> None:
    model = small()
    lr = torch.from_numpy(real_lr(7, 12, 16))[None]
    with torch.no_grad():
        base = model(lr, (2.0, 2.0))
        for i in range(7):
            moved = lr.clone()
            moved[:, i] = moved[:, i].flip(-1)
            assert (model(moved, (2.0, 2.0)) - base).abs().max() > 1e-4, f"window frame {i} is ignored"
        # the same output size from another scale: only the scale inputs differ
        assert (model(lr, (2.01, 2.01)) - base).abs().max() > 1e-5


def test_a_batch_runs_each_window_alone() -> None:
    model = small()
    lr = torch.from_numpy(np.stack([real_lr(7, 12, 14), real_lr(7, 12, 14)[::-1].copy()]))
    with torch.no_grad():
        batch = model(lr, (1.6, 2.5))
        one = torch.cat([model(lr[i : i + 1], (1.6, 2.5)) for i in range(2)])
    assert torch.allclose(batch, one, atol=1e-6)


def test_regrouped_sums_equal_the_originals_formulation() -> None:
    up = small().upsample
    gen = torch.Generator().manual_seed(0)
    x, kernels = torch.rand(1, 16, 9, 11, generator=gen), torch.randn(1, 16 * 25, 9, 11, generator=gen)
    # the original: 5x5 patches of the replicate-padded features (unfold), times the kernels, summed
    patches = F.pad(x, (2, 2, 2, 2), mode="replicate").unfold(2, 5, 1).unfold(3, 5, 1)  # (1, C, h, w, 5, 5)
    reference = (patches * kernels.view(1, 16, 5, 5, 9, 11).permute(0, 1, 4, 5, 2, 3)).sum((-1, -2))
    assert torch.allclose(up.spatially_varying_filter(x, kernels), reference, atol=1e-5)
    # the original: per-pixel matrices C(r) = sum_n r_n C_n and E(r) alike, applied as matmuls
    feat, routing = torch.randn(1, 16, 5, 7, generator=gen), torch.rand(1, 4, 5, 7, generator=gen)
    compress = torch.einsum("nhw,nkc->hwkc", routing[0], up.weight_compress[..., 0, 0])
    expand = torch.einsum("nhw,nck->hwck", routing[0], up.weight_expand[..., 0, 0])
    pixels = feat[0].permute(1, 2, 0)[..., None]  # (H, W, C, 1)
    reference = (expand @ (compress @ pixels))[..., 0].permute(2, 0, 1)[None]
    assert torch.allclose(up.experts(feat, routing), reference, atol=1e-5)


def test_forward_clip_reads_the_reflected_window() -> None:
    model = small()
    lr = torch.from_numpy(real_lr(5, 10, 12))[None]
    with torch.no_grad():
        clip = model.forward_clip(lr, (1.6, 2.5))
        assert clip.shape == (1, 5, 3, 16, 30)
        assert torch.equal(clip[:, 0], model(lr[:, [3, 2, 1, 0, 1, 2, 3]], (1.6, 2.5)))
        assert torch.equal(clip[:, 4], model(lr[:, [1, 2, 3, 4, 3, 2, 1]], (1.6, 2.5)))


def test_chunked_windows_equal_the_whole_clip_exactly() -> None:
    model = small()
    plan, lr = model.plan(), real_lr(9, 10, 12)
    backend = TorchBackend(model)
    whole = np.stack(list(Upscaler(backend, plan, (2.5, 3.5), model.constraints, chunk=None).stream(iter(lr))))
    chunked = Upscaler(backend, plan, (2.5, 3.5), model.constraints, chunk=2, overlap=plan.window)
    assert np.array_equal(np.stack(list(chunked.stream(iter(lr)))), whole)
    assert whole.shape == (9, 3, 25, 42)
    with pytest.raises(ScaleError, match="tiles need an integer scale"):
        Upscaler(backend, plan, (2.5, 3.5), model.constraints, tile=16, tile_overlap=2)


def _package(manifest: dict) -> Package:
    return Package(Path("pkg"), {"plan": {"steps": [], "tensors": {}, "output": "lr"}, **manifest})


def test_window_chunking_defaults_and_refusals() -> None:
    model = small()
    package = _package({"model": "savsr", "scale": 4, "scale_range": [1, 4], "plan": model.plan().to_json()})
    package.manifest["constraints"] = {"min_h": 2, "min_w": 2, "multiple": 1, "pad": "edge"}
    upscaler = upscaler_for(package, TorchBackend(model))
    assert (upscaler.chunk, upscaler.overlap, upscaler.scale) == (4, 3, (4.0, 4.0))
    with pytest.raises(ScaleError, match="overlap by exactly 3"):
        upscaler_for(package, TorchBackend(model), overlap=2)


def test_resolve_scale() -> None:
    fixed = _package({"model": "basicvsr", "scale": 4})
    anyscale = _package({"model": "savsr", "scale": 4, "scale_range": [1.0, 4.0]})
    assert resolve_scale(fixed, 10, 20) == (4.0, 4.0) == resolve_scale(fixed, 10, 20, size=(40, 80))
    for kwargs in [{"scale": (2.5, 3.5)}, {"scale": (3.0, 3.0)}, {"size": (30, 80)}]:
        with pytest.raises(ScaleError, match=r"exactly x4.*arbitrary-scale"):
            resolve_scale(fixed, 10, 20, **kwargs)
    assert resolve_scale(anyscale, 10, 20) == (4.0, 4.0)
    assert resolve_scale(anyscale, 10, 20, (2.5, 3.5)) == (2.5, 3.5)
    h, w = 271, 481
    assert output_size(h, w, resolve_scale(anyscale, h, w, size=(1080, 1920))) == (1080, 1920)
    with pytest.raises(ScaleError, match="x1 to x4"):
        resolve_scale(anyscale, 100, 100, size=(500, 200))
    with pytest.raises(ScaleError, match="not both"):
        resolve_scale(anyscale, 10, 20, (2.0, 2.0), (20, 40))


def test_scale_flag_parses_height_by_width() -> None:
    assert SCALE.convert("2.5x3.5", None, None) == (2.5, 3.5)
    assert SCALE.convert("3", None, None) == (3.0, 3.0)
    for bad in ["0x2", "ax2", "1x2x3", "-2", "inf"]:
        with pytest.raises(click.BadParameter, match="SHxSW"):
            SCALE.convert(bad, None, None)


def test_window_plans_are_data_and_checked() -> None:
    plan = small().plan()
    again = Plan.from_json(plan.to_json())
    assert again == plan and again.window == 3 and again.given["grid"] == "sampling_grid"
    assert "size" not in TensorSpec(3).to_json() and "window" not in Plan([], {"lr": TensorSpec(3)}, "lr").to_json()
    spec = {"lr": TensorSpec(3), "a": TensorSpec(3)}
    with pytest.raises(ValueError, match="beyond its window 1"):
        Plan([Step("s", {"x": Read("lr", 2, reflect=True)}, {"y": "a"})], spec, "a", window=1)
    with pytest.raises(ValueError, match="reads its own output"):
        Plan([Step("s", {"x": Read("lr"), "h": Read("a", -1, "zeros")}, {"y": "a"})], spec, "a", window=1)
    with pytest.raises(ValueError, match="reflected at the clip's ends"):
        Plan([Step("s", {"x": Read("lr", 1)}, {"y": "a"})], spec, "a", window=1)


def test_a_fixed_scale_network_refuses_scale(basicvsr_package: Package, tmp_path: Path, sample_video: Path) -> None:
    """vsr-run stops before any work: BasicVSR upscales by x4 only, so --scale 2.5x3.5 and
    --size 100x100 are errors naming the fix, and nothing is written."""
    from runtime.cli.run import main

    out = tmp_path / "out.mp4"
    for flags in (["--scale", "2.5x3.5"], ["--size", "100x100"]):
        args = [str(sample_video), "-o", str(out), "--model", str(basicvsr_package.root), *flags]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "upscales by exactly x4" in result.output and "arbitrary-scale" in result.output
        assert not out.exists()


def test_export_without_weights_says_where_they_are(tmp_path: Path) -> None:
    from runtime.cli.export import main as export_main

    result = CliRunner().invoke(export_main, ["savsr", "-o", str(tmp_path / "pkg")])
    assert result.exit_code == 1 and "--checkpoint" in result.output
    assert "github.com/Weepingchestnut/SAVSR/releases/download/v0.1.1/savsr_best.pth" in result.output
    assert not (tmp_path / "pkg").exists()


# ---- slow: exported packages, the command-line tools end to end ----------------------------------


@pytest.fixture(scope="module")
def small_package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    """The quick-check configuration (random weights) exported once: one package for every scale."""
    from export.package import export_package

    return export_package(small(), tmp_path_factory.mktemp("savsr") / "pkg")


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory: pytest.TempPathFactory, sample_video: Path) -> Path:
    """8 real frames of bikes.mp4 (40x48 crop), re-encoded losslessly with the source's time base."""
    import av

    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(sample_video)) as inp, av.open(str(out), "w") as container:
        source = inp.streams.video[0]
        stream = container.add_stream("libx264", rate=source.average_rate, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt, stream.time_base = 48, 40, "yuv420p", source.time_base
        for i, frame in enumerate(inp.decode(source)):
            if i == 8:
                break
            rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24")[60:100, 200:248])
            new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            new.pts, new.time_base = frame.pts, frame.time_base
            for packet in stream.encode(new):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def _run(*args: str) -> str:
    from runtime.cli.run import main

    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.slow
def test_vsr_run_any_scale_keeps_frames_and_timestamps(small_package: Package, real_clip: Path, tmp_path: Path) -> None:
    from runtime.backends import OrtBackend
    from runtime.pipeline import upscale_clip
    from runtime.video import probe, read_frames

    src = list(read_frames(real_clip))
    pkg = str(small_package.root)
    for flags, size in [
        (["--scale", "2.5x3.5"], (100, 168)),
        (["--scale", "3"], (120, 144)),
        (["--size", "90x120"], (90, 120)),
    ]:
        out = tmp_path / f"{'-'.join(flags)}.mp4"
        _run(str(real_clip), "-o", str(out), "--model", pkg, "--backend", "onnxruntime", *flags)
        info = probe(out)
        assert (info.height, info.width) == size
        frames = list(read_frames(out))
        assert len(frames) == len(src) == 8 and [f.pts for f in frames] == [f.pts for f in src]
        assert info.fps == probe(real_clip).fps
    # an odd size, exactly, into PNG frames; the frames are those of a whole-clip run (4-frame windows
    # with 3 frames of context change nothing)
    folder = tmp_path / "frames"
    _run(str(real_clip), "-o", str(folder), "--model", pkg, "--size", "61x97")
    written = np.stack([f.rgb for f in read_frames(folder)])
    assert written.shape == (8, 61, 97, 3)
    lr = np.stack([f.rgb.transpose(2, 0, 1) for f in src])
    whole = upscale_clip(OrtBackend(small_package), small_package, lr, scale_for_size(40, 48, (61, 97)))
    assert np.abs(written - np.clip(whole, 0, 1).transpose(0, 2, 3, 1)).max() <= 1 / 255 + 1e-6


@pytest.mark.slow
def test_parity_and_bench_take_a_scale(small_package: Package) -> None:
    from runtime.cli.bench import main as bench_main
    from runtime.cli.parity import main as parity_main

    result = CliRunner().invoke(
        parity_main, [str(small_package.root), "--frames", "5", "--crop", "13x17", "--scale", "2.5x3.5"]
    )
    assert result.exit_code == 0 and "parity OK" in result.output and "17x13 -> 60x32" in result.output, result.output
    result = CliRunner().invoke(
        bench_main, ["--model", str(small_package.root), "--size", "12x16", "--frames", "2", "--scale", "1.6"]
    )
    assert result.exit_code == 0 and "12x16 -> 19x26" in result.output, result.output
    result = CliRunner().invoke(parity_main, [str(small_package.root), "--scale", "5"])
    assert result.exit_code == 1 and "x1 to x4" in result.output


#: Measured (README's SAVSR table, released configuration, 5 real frames at 13x17): ONNX Runtime vs
#: PyTorch 2.4e-7 to 3.0e-7 max abs, bound 10x the largest; FP16 vs FP32 worst frame 95.3 to 95.4 dB,
#: bound the worst less 3.3 dB.
SAVSR_ORT_MAX_ABS = 3e-6
SAVSR_FP16_MIN_PSNR = 92.0


@pytest.mark.slow
def test_released_configuration_one_package_every_scale_fp16_and_tensorrt_check(tmp_path: Path) -> None:
    """The released configuration (random weights), exported once: ONNX Runtime equals PyTorch to SAVSR_ORT_MAX_ABS
    at x4, x2.5 by x3.5 and x1.6 on real frames of an odd LR size; FP16 graphs within SAVSR_FP16_MIN_PSNR of FP32;
    every graph passes the static TensorRT check."""
    from export.fp16 import add_fp16
    from export.package import export_package
    from export.trt_check import check_package
    from runtime.backends import OrtBackend, OrtOptions
    from runtime.pipeline import upscale_clip
    from runtime.samples import psnr

    torch.manual_seed(0)
    model = create_model("savsr")
    package = add_fp16(export_package(model, tmp_path / "savsr").root)
    reports = check_package(package.root)
    assert len(reports) == 12 and all(r.ok for r in reports), "\n".join(r.format() for r in reports if not r.ok)
    lr = real_lr(5, 13, 17)
    fp32, fp16 = OrtBackend(package), OrtBackend(package, OrtOptions(precision="fp16"))
    for scale in SCALES:
        with torch.inference_mode():
            ref = model.forward_clip(torch.from_numpy(lr)[None], scale)[0].numpy()
        out = upscale_clip(fp32, package, lr, scale)
        assert out.shape == ref.shape == (5, 3, *output_size(13, 17, scale))
        print(f"SAVSR ONNX Runtime vs PyTorch at {scale}: max abs {np.abs(out - ref).max():.1e}")
        assert np.abs(out - ref).max() <= SAVSR_ORT_MAX_ABS, scale
        half = upscale_clip(fp16, package, lr, scale)
        worst = min(psnr(half[i], out[i]) for i in range(len(lr)))
        print(f"SAVSR FP16 vs FP32 at {scale}: clip {psnr(half, out):.1f} dB, worst frame {worst:.1f} dB")
        assert worst >= SAVSR_FP16_MIN_PSNR, scale
