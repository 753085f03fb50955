"""DAVSR and its parts: the Fourier data step, BasicVSR++, the plan, both checkpoints, ONNX Runtime.

The official weights are not available, so networks run with random weights (offset convolutions
randomised too, so that the deformable convolutions sample off the flow) on real frames, and
checkpoints are files built in the official layouts.
"""

from __future__ import annotations

import datetime
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from runtime.backends import TorchBackend
from runtime.executor import run_plan
from vsr_models import CheckpointError, create_model, load_checkpoint
from vsr_models.basicvsrpp import BRANCHES, BasicVSRPlusPlus, bicubic_quarter
from vsr_models.davsr import DAVSR
from vsr_models.fourier import data_step_block, data_step_fft, degradation_kernel, otf
from vsr_models.plan import At, Plan, Read

from .conftest import clip_frames, lr_clip

# ---------------------------------------------------------------------- helpers


def _randomise_alignment(net: BasicVSRPlusPlus, seed: int = 0) -> None:
    """Random offset residuals and masks (the released init starts them at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for branch, _ in BRANCHES:
            last = net.deform_align[branch].conv_offset[-1]
            last.weight.copy_(0.05 * torch.randn(last.weight.shape, generator=gen))
            last.bias.copy_(0.5 * torch.randn(last.bias.shape, generator=gen))
            net.deform_align[branch].bias.copy_(0.1 * torch.randn(net.deform_align[branch].bias.shape, generator=gen))


def _run_plan(model, frames: np.ndarray, backend=None) -> np.ndarray:
    backend = backend or TorchBackend(model)
    out = run_plan(model.plan(), backend, [backend.upload(f[None]) for f in frames])
    return np.concatenate([backend.download(o) for o in out])


def _otf64(n: int, shape: tuple[int, int, int]) -> torch.Tensor:
    kernel = degradation_kernel().double().repeat(n, 1, 5, 1, 1) / 5
    return otf(kernel, shape)


def _degrade(x: torch.Tensor) -> torch.Tensor:
    """S(k * x) in FP64 for an (N, C, 5T, H, W) clip."""
    fb = _otf64(x.shape[0], tuple(x.shape[2:]))
    return torch.real(torch.fft.ifftn(fb * torch.fft.fftn(x, dim=(2, 3, 4)), dim=(2, 3, 4)))[:, :, ::5, ::4, ::4]


def _gradient(x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Gradient of ||S(k * x) - y||^2 + alpha ||x - z||^2 at x, FP64."""
    x, z, y = x.double(), z.double(), y.double()
    fb = _otf64(x.shape[0], tuple(x.shape[2:]))
    residual = torch.zeros_like(x)
    residual[:, :, ::5, ::4, ::4] = _degrade(x) - y
    data = torch.real(torch.fft.ifftn(torch.conj(fb) * torch.fft.fftn(residual, dim=(2, 3, 4)), dim=(2, 3, 4)))
    return 2 * data + 2 * alpha * (x - z)


def _blockwise(z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """The deployed data step, block by block over an (N, C, 5T, H, W) clip."""
    t_lr = y.shape[2]
    out = torch.empty_like(z)
    for t in range(t_lr):
        idx = [(5 * t + d) % (5 * t_lr) for d in range(-2, 3)]
        out[:, :, idx] = data_step_block(z[:, :, idx].transpose(1, 2), y[:, :, t], alpha).transpose(1, 2).to(z.dtype)
    return out


@pytest.fixture(scope="module")
def fourier_clip():
    """A real HR clip of 10 frames (64 x 96), its DAVSR degradation (2 LR frames) and a prior."""
    hr = torch.from_numpy(clip_frames("bikes.mp4", 10)[:, :, 8:72, 200:296]).permute(1, 0, 2, 3)[None].double()
    y = _degrade(hr)
    # Prior: the next LR frame upscaled (nearest) over each block of five HR frames, i.e. a start
    # that is blocky and one frame off, so that the data step has something to correct.
    z = torch.nn.functional.interpolate(y, scale_factor=(5, 4, 4), mode="nearest").roll(3, dims=2)
    return z, y


# ---------------------------------------------------------------------- the Fourier data step
@pytest.mark.parametrize("alpha", [0.7, 0.02])
def test_fourier_block_step_equals_the_complex_original(fourier_clip, alpha):
    z, y = fourier_clip
    original = data_step_fft(z.float(), y.float(), alpha)
    ours = _blockwise(z.float(), y.float(), alpha)
    assert (ours - original).abs().max().item() <= 1e-5
    exact = _blockwise(z, y, alpha)  # FP64: the block split is exact
    assert (exact - data_step_fft(z, y, alpha)).abs().max().item() <= 1e-10


@pytest.mark.parametrize("alpha", [0.7, 0.02])
def test_fourier_step_minimises_the_objective(fourier_clip, alpha):
    """The objective is quadratic with Hessian >= 2 alpha, so |gradient| / (2 alpha) bounds how far
    the output is from the true minimiser."""
    z, y = fourier_clip
    assert _gradient(z, z, y, alpha).abs().max().item() / (2 * alpha) > 1e-4  # the prior is far off
    for dtype, bound in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x = _blockwise(z.to(dtype), y.to(dtype), alpha)
        assert _gradient(x, z, y, alpha).abs().max().item() / (2 * alpha) <= bound


# ---------------------------------------------------------------------- BasicVSR++
def test_basicvsrpp_has_the_official_key_names_and_loads_mmcv_files(tmp_path):
    net = create_model("basicvsrpp")
    state = net.state_dict()
    assert state["spynet.basic_module.5.basic_module.4.conv.weight"].shape == (2, 16, 7, 7)
    assert state["feat_extract.main.0.weight"].shape == (64, 3, 3, 3)
    assert state["deform_align.forward_2.conv_offset.6.weight"].shape == (432, 64, 3, 3)
    assert state["backbone.forward_2.main.0.weight"].shape == (64, 320, 3, 3)
    assert state["upsample2.upsample_conv.weight"].shape == (256, 64, 3, 3)
    fake = {f"generator.{k}": torch.randn_like(v) for k, v in state.items()}
    torch.save({"meta": {"mmedit_version": "0.14.0"}, "state_dict": fake}, tmp_path / "bvpp.pth")
    loaded = load_checkpoint(create_model("basicvsrpp"), tmp_path / "bvpp.pth")
    assert torch.equal(loaded.deform_align["backward_1"].weight, fake["generator.deform_align.backward_1.weight"])


def test_bicubic_quarter_is_the_original_resize():
    frames = torch.from_numpy(clip_frames("bikes.mp4", 2)[:, :, :256, :384])
    for x in (frames, torch.rand(1, 3, 260, 300)):
        resized = torch.nn.functional.interpolate(x, scale_factor=0.25, mode="bicubic")
        assert (bicubic_quarter(x) - resized).abs().max().item() <= 1e-6


# ---------------------------------------------------------------------- DAVSR: layout and checkpoints
def _conv(cin: int, cout: int, k: int, bias: bool = True) -> tuple[int, int]:
    """(parameters, state-dict tensors) of a k x k convolution."""
    return cin * cout * k * k + (cout if bias else 0), 2 if bias else 1


def _sum(*parts: tuple[int, int]) -> tuple[int, int]:
    return sum(p for p, _ in parts), sum(n for _, n in parts)


def _times(n: int, part: tuple[int, int]) -> tuple[int, int]:
    return n * part[0], n * part[1]


def _res_blocks_with_input_conv(cin: int, c: int, blocks: int) -> tuple[int, int]:
    """mmediting's ResidualBlocksWithInputConv: a 3x3 input conv, then residual blocks of two 3x3 convs."""
    return _sum(_conv(cin, c, 3), _times(2 * blocks, _conv(c, c, 3)))


def _davsr_generator_size() -> tuple[int, int]:
    """(parameters, tensors) of DAVSR's generator, counted from the layer list of the released
    configuration: mmediting's BasicVSR++ (64 channels, 7 blocks per branch) on HR-size input,
    HyPaNet (3 -> 16 -> 16 -> 6, 1x1x1), and the unused ResUNet (USRNet's, 16 channels, 2 blocks, no biases)."""
    spynet = _sum(
        _times(6, _sum(*(_conv(a, b, 7) for a, b in [(8, 32), (32, 64), (64, 32), (32, 16), (16, 2)]))), (0, 2)
    )
    feat_extract = _sum(_conv(3, 64, 3), _conv(64, 64, 3), _res_blocks_with_input_conv(64, 64, 5))  # two stride-2 convs
    # second-order deformable alignment: the DCN weight (64 x 128 x 3 x 3) and bias, and its offset
    # head from 3 x 64 features + 2 flows to 27 x 16 groups (offsets and masks)
    align = _sum(_conv(128, 64, 3), _conv(3 * 64 + 4, 64, 3), _times(2, _conv(64, 64, 3)), _conv(64, 27 * 16, 3))
    backbone = _sum(*(_res_blocks_with_input_conv((2 + i) * 64, 64, 7) for i in range(4)))
    vsr = _sum(
        spynet,
        feat_extract,
        _times(4, align),
        backbone,
        _res_blocks_with_input_conv(5 * 64, 64, 5),  # reconstruction
        _times(2, _conv(64, 64 * 4, 3)),  # two PixelShufflePack x2
        _conv(64, 64, 3),  # conv_hr
        _conv(64, 3, 3),  # conv_last
    )
    hypanet = _sum(_conv(3, 16, 1), _conv(16, 16, 1), _conv(16, 6, 1))
    res_block = _times(2, _conv(16, 16, 3, bias=False))
    stage = _sum(_times(2, res_block), _conv(16, 16, 2, bias=False))  # two blocks and a 2x2 (transposed) conv
    resunet = _sum(_conv(4, 16, 3, bias=False), _times(6, stage), _times(2, res_block), _conv(16, 3, 3, bias=False))
    return _sum(vsr, hypanet, resunet)


def _superslomo_unet_size(cin: int, cout: int) -> int:
    """Parameters of Super SloMo's UNet(cin, cout): two 7x7 convs, five down blocks (two convs each;
    5x5 in the first), five up blocks (a conv, then one over the concatenated skip), a 3x3 out conv."""
    total = _conv(cin, 32, 7)[0] + _conv(32, 32, 7)[0]
    for a, b, k in [(32, 64, 5), (64, 128, 3), (128, 256, 3), (256, 512, 3), (512, 512, 3)]:
        total += _conv(a, b, k)[0] + _conv(b, b, k)[0]
    for a, b in [(512, 512), (512, 256), (256, 128), (128, 64), (64, 32)]:
        total += _conv(a, b, 3)[0] + _conv(2 * b, b, 3)[0]
    return total + _conv(32, cout, 3)[0]


def test_davsr_has_the_released_parameter_layout():
    """Parameter and tensor counts derived from the released architectures' layer lists (above); the
    figures agree with the counts of the official code's state dicts (7,468,885 parameters in 320
    tensors for DAVSR; 19,794,116 and 19,816,357 for Super SloMo's two networks)."""
    model = create_model("davsr")
    state = model.generator.state_dict()
    params, tensors = _davsr_generator_size()
    assert (params, tensors) == (7_468_885, 320)
    assert len(state) == tensors
    assert sum(p.numel() for p in model.generator.parameters()) == params
    assert sum(p.numel() for p in model.slomo.flow.parameters()) == _superslomo_unet_size(6, 4) == 19_794_116
    assert sum(p.numel() for p in model.slomo.interp.parameters()) == _superslomo_unet_size(20, 5) == 19_816_357
    shapes = {
        "h.mlp.0.weight": (16, 3, 1, 1, 1),
        "p.m_head.weight": (16, 4, 3, 3),
        "vsr.spynet.basic_module.0.basic_module.0.conv.weight": (32, 8, 7, 7),
        "vsr.feat_extract.0.weight": (64, 3, 3, 3),
        "vsr.deform_align.backward_1.weight": (64, 128, 3, 3),
        "vsr.deform_align.backward_1.conv_offset.6.weight": (432, 64, 3, 3),
        "vsr.backbone.forward_2.main.0.weight": (64, 320, 3, 3),
        "vsr.reconstruction.main.0.weight": (64, 320, 3, 3),
        "vsr.conv_last.weight": (3, 64, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "vsr.feat_extract.4.main.0.weight" in state and "vsr.spynet.mean" in state


@pytest.fixture(scope="module")
def released_files(tmp_path_factory):
    """A DAVSR file in the mmcv layout (DataParallel prefix) and a Super SloMo file with its
    training metadata, both with random values in the released shapes."""
    folder = tmp_path_factory.mktemp("davsr_ckpt")
    model = create_model("davsr")
    gen = torch.Generator().manual_seed(5)
    davsr = {
        f"module.generator.{k}": torch.randn(v.shape, generator=gen) for k, v in model.generator.state_dict().items()
    }
    davsr["module.step_counter"] = torch.tensor([300000])
    torch.save(
        {
            "meta": {"mmedit Version": "0.11.0", "epoch": 3, "iter": 300000, "time": "Thu Mar 3 2022"},
            "state_dict": davsr,
            "optimizer": {"generator": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
        },
        folder / "davsr_reds.pth",
    )
    slomo = {
        "Detail": "End to end Super SloMo.",
        "epoch": 199,
        "timestamp": datetime.datetime(2018, 11, 5, 12, 0),
        "trainBatchSz": 6,
        "validationBatchSz": 10,
        "learningRate": 1e-6,
        "loss": [[0.5, 0.25]],
        "valLoss": [[0.3]],
        "valPSNR": [[30.5]],
        "state_dictFC": {k: torch.randn(v.shape, generator=gen) for k, v in model.slomo.flow.state_dict().items()},
        "state_dictAT": {k: torch.randn(v.shape, generator=gen) for k, v in model.slomo.interp.state_dict().items()},
    }
    torch.save(slomo, folder / "SuperSloMo.ckpt")
    return folder / "davsr_reds.pth", folder / "SuperSloMo.ckpt", davsr, slomo


def test_davsr_loads_both_released_files_strictly(released_files, tmp_path):
    davsr_file, slomo_file, davsr, slomo = released_files
    model = create_model("davsr")
    load_checkpoint(model, davsr_file)
    load_checkpoint(model, slomo_file)
    assert torch.equal(model.generator.vsr.conv_last.weight, davsr["module.generator.vsr.conv_last.weight"])
    assert torch.equal(model.generator.h.mlp[4].bias, davsr["module.generator.h.mlp.4.bias"])
    assert torch.equal(model.slomo.flow.conv1.weight, slomo["state_dictFC"]["conv1.weight"])
    assert torch.equal(model.slomo.interp.up5.conv2.bias, slomo["state_dictAT"]["up5.conv2.bias"])

    broken = dict(davsr)
    del broken["module.generator.vsr.deform_align.forward_1.weight"]
    torch.save({"state_dict": broken}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): vsr\.deform_align\.forward_1\.weight"):
        load_checkpoint(create_model("davsr"), tmp_path / "missing.pth")
    torch.save({"state_dict": {**davsr, "discriminator.conv.weight": torch.zeros(1)}}, tmp_path / "stray.pth")
    with pytest.raises(CheckpointError, match="outside generator"):
        load_checkpoint(create_model("davsr"), tmp_path / "stray.pth")
    torch.save({"params": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="neither a DAVSR checkpoint"):
        load_checkpoint(create_model("davsr"), tmp_path / "other.pth")
    torch.save({"state_dictFC": slomo["state_dictFC"]}, tmp_path / "half.ckpt")
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(create_model("davsr"), tmp_path / "half.ckpt")


def test_vsr_export_loads_both_checkpoints_into_one_model(released_files, tmp_path, monkeypatch):
    import runtime.cli.commands.export
    import runtime.cli.export

    davsr_file, slomo_file, davsr, slomo = released_files
    seen = {}

    def fake_export(net, output, **kw):
        seen.update(net=net, **kw)
        raise runtime.cli.commands.export.PackageError("stop after loading")

    monkeypatch.setattr(runtime.cli.commands.export, "export_package", fake_export)
    result = CliRunner().invoke(
        runtime.cli.export.main,
        ["davsr", "--checkpoint", str(davsr_file), "--checkpoint", str(slomo_file), "-o", str(tmp_path / "pkg")],
    )
    assert "stop after loading" in result.output
    net = seen["net"]
    assert torch.equal(
        net.generator.vsr.spynet.basic_module[3].basic_module[1].conv.weight,
        davsr["module.generator.vsr.spynet.basic_module.3.basic_module.1.conv.weight"],
    )
    assert torch.equal(net.slomo.interp.conv3.weight, slomo["state_dictAT"]["conv3.weight"])
    assert [str(p) for p in seen["checkpoints"]] == [str(davsr_file), str(slomo_file)]


# ---------------------------------------------------------------------- DAVSR: the plan
class _LabelBackend:
    """Stands in for a backend: handles are labels saying where a value came from."""

    name = "labels"

    def __init__(self) -> None:
        self.blocks: dict[tuple[int, int], list] = {}

    def zeros(self, shape):
        return ("zeros",)

    def shape(self, handle):
        return (1, 3, 64, 64)

    def run(self, stage, inputs):
        if stage == "interpolate":
            return {f"f{k}": ("interp", inputs["a"][1], k) for k in range(1, 5)}
        if stage == "keyframe":
            return {"out": ("key", inputs["a"][1])}
        if stage.startswith("data_"):
            i, t = int(stage[5:]), inputs["y"][1]
            self.blocks[(i, t)] = [inputs[f"z{d}"] for d in range(5)]
            return {f"x{d}": ("x", i, t, d) for d in range(5)}
        if stage == "upsample":
            return {"out": ("out", inputs["x"])}
        return dict.fromkeys(("feat", "valid", "small", "flow", "flow2", "state"), (stage,))


def _initial_clip_labels(t_lr: int) -> list:
    """The original's initial HR-rate clip, by provenance."""
    frames = [("key", 0), ("key", 0)]
    for i in range(t_lr - 1):
        frames += [("key", i)] + [("interp", i, k) for k in range(1, 5)]
    return frames + [("key", t_lr - 1)] * 3


@pytest.mark.parametrize("t_lr", [1, 2, 10])
def test_davsr_plan_reproduces_the_original_clip_layout(t_lr):
    model = DAVSR(mid_channels=16, num_blocks=1)
    backend = _LabelBackend()
    out = run_plan(model.plan(), backend, [("lr", i) for i in range(t_lr)])
    assert model.plan().output_rate == 5 and len(out) == 5 * t_lr
    init = _initial_clip_labels(t_lr)
    for t in range(t_lr):
        block = [(5 * t + d) % (5 * t_lr) for d in range(-2, 3)]
        assert backend.blocks[(1, t)] == [init[j] for j in block], t
        for i in range(2, model.n_iter + 1):  # later iterations read the previous refinement
            assert backend.blocks[(i, t)] == [("out", ("x", i - 1, *divmod_block(j, t_lr))) for j in block]
    # output frame j is the refinement of data-step output j of the last iteration
    assert out == [("out", ("x", model.n_iter, *divmod_block(j, t_lr))) for j in range(5 * t_lr)]


def test_davsr_plan_round_trips_through_json():
    plan = DAVSR(mid_channels=16, num_blocks=1).plan()
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan and again.output_rate == 5
    data = next(s for s in again.steps if s.stage == "data_1")
    assert data.inputs["z0"] == Read("z0", -2, Read("z0", -3, stride=5, wrap=True), stride=5, wrap=True)
    assert data.write_at["x0"] == At(5, -2, wrap=True)
    assert Read.parse("z0[5t+2]", default="zeros") == Read("z0", 2, "zeros", stride=5)


def divmod_block(j: int, t_lr: int) -> tuple[int, int]:
    """(LR frame t, position d in its block) of HR frame j, blocks being 5t-2 .. 5t+2 mod 5T."""
    t = ((j + 2) // 5) % t_lr
    return t, (j - 5 * t + 2) % (5 * t_lr)


# ---------------------------------------------------------------------- DAVSR: numbers
@pytest.fixture(scope="module")
def small_davsr():
    """DAVSR with a narrow BasicVSR++ (16 channels, 1 block per branch) and random weights."""
    torch.manual_seed(0)
    model = DAVSR(mid_channels=16, num_blocks=1).eval()
    _randomise_alignment(model.vsr)
    return model


@pytest.mark.slow
def test_davsr_executor_equals_forward_on_the_test_protocol_clip(small_davsr):
    """10 LR frames in, 50 HR frames out, as the original's test protocol."""
    lr, _ = lr_clip(10, 64, 64, y0=8, x0=200)
    with torch.inference_mode():
        ref = small_davsr(torch.from_numpy(lr)[None])[0].numpy()
    out = _run_plan(small_davsr, lr)
    assert out.shape == (50, 3, 256, 256)
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.slow
def test_davsr_package_runs_deformconv_and_no_fourier_op(small_davsr, tmp_path):
    """The deployed graphs use ONNX DeformConv and real arithmetic only (no DFT/STFT, which
    TensorRT cannot run); the package's numbers are checked by the shared contract test."""
    from export.package import export_package

    package = export_package(small_davsr, tmp_path / "davsr")
    ops = set()
    for name in package.stage_names():
        ops |= {n.op_type for n in onnx.load(str(package.stage_file(name))).graph.node}
    assert "DeformConv" in ops and not ops & {"DFT", "STFT"}
