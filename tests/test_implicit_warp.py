"""vsr::ImplicitWarp: the reference against the original's gather formulation, its ONNX forms,
FP32 coordinates, and its peak memory."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from vsr_models.ops import ImplicitWarp, get_implicit_warp_export, set_implicit_warp_export
from vsr_models.ops.implicit_warp import implicit_warp, implicit_warp_gather

C, HEADS = 120, 6


@pytest.fixture(scope="module")
def warp() -> ImplicitWarp:
    torch.manual_seed(0)
    module = ImplicitWarp(dim=C, pe_dim=C, num_heads=HEADS, pe_temp=0.01).eval()
    with torch.no_grad():  # larger than the default init, so the attention is not near uniform
        for lin in (module.q, module.k, module.v):
            lin.weight.mul_(3.0)
            lin.bias.normal_(0, 0.5)
    return module


def _args(module: ImplicitWarp, source: torch.Tensor, target: torch.Tensor, flow: torch.Tensor) -> tuple:
    return (
        source,
        target,
        flow,
        module.q.weight,
        module.q.bias,
        module.k.weight,
        module.k.bias,
        module.v.weight,
        module.v.bias,
        module.position_bias,
        module.pe_divisors,
    )


def _flows(n: int, h: int, w: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Flows that stress the borders: small, large, leaving the frame, integer, exact edges."""
    small = torch.randn(n, 2, h, w, generator=gen) * 1.5
    large = torch.randn(n, 2, h, w, generator=gen) * 0.5 * max(h, w)
    leaving = torch.empty(n, 2, h, w)
    leaving[:, 0].uniform_(-3 * w, 3 * w, generator=gen)
    leaving[:, 1].uniform_(-3 * h, 3 * h, generator=gen)
    integer = torch.randint(-4, 5, (n, 2, h, w), generator=gen).float()
    # every pixel pushed onto / just past the last row and column, and before the first
    cols = torch.arange(w).view(1, 1, w).float()
    rows = torch.arange(h).view(1, h, 1).float()
    edges = torch.stack([(w - 1 - cols).expand(n, h, w) + 0.25, (h - 1 - rows).expand(n, h, w) - 1e-3], dim=1)
    before = torch.stack([-cols.expand(n, h, w) - 0.5, -rows.expand(n, h, w) - 1.75], dim=1)
    return {"small": small, "large": large, "leaving": leaving, "integer": integer, "edges": edges, "before": before}


@pytest.mark.parametrize("n,h,w", [(1, 16, 24), (2, 13, 7), (1, 64, 96)])
def test_reference_equals_gather_formulation(warp: ImplicitWarp, n: int, h: int, w: int) -> None:
    gen = torch.Generator().manual_seed(h * w)
    source = torch.randn(n, C, h, w, generator=gen)
    target = torch.randn(n, C, h, w, generator=gen)
    with torch.no_grad():
        for kind, flow in _flows(n, h, w, gen).items():
            ref = implicit_warp(*_args(warp, source, target, flow), num_heads=HEADS)
            cross = implicit_warp_gather(*_args(warp, source, target, flow), num_heads=HEADS)
            module = warp(source, target, flow)
            assert ref.shape == (n, C, h, w)
            assert torch.equal(ref, cross), kind  # the README's 'equal to the last bit'
            assert torch.equal(module, ref), kind


def test_gather_formulation_is_the_bilinear_support(warp: ImplicitWarp) -> None:
    """Independent of both implementations: with all keys equal the attention is uniform, so the
    result is the mean of the values at the four clamped corners of the displaced position."""
    h, w = 9, 11
    gen = torch.Generator().manual_seed(1)
    source = torch.randn(1, C, h, w, generator=gen)
    flow = torch.randn(1, 2, h, w, generator=gen) * 4
    k_zero = torch.zeros(C, C)
    args = list(_args(warp, source, torch.randn(1, C, h, w, generator=gen), flow))
    args[5], args[6] = k_zero, torch.zeros(C)
    with torch.no_grad():
        out = implicit_warp(*args, num_heads=HEADS)
        expected = torch.zeros(1, C, h, w)
        for i in range(h):
            for j in range(w):
                py, px = i + flow[0, 1, i, j].item(), j + flow[0, 0, i, j].item()
                r0, c0 = int(np.floor(py)), int(np.floor(px))
                acc = torch.zeros(C)
                for s, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
                    r, c = min(max(r0 + a, 0), h - 1), min(max(c0 + b, 0), w - 1)
                    acc += warp.v(source[0, :, r, c] + warp.position_bias[0, s])
                expected[0, :, i, j] = acc / 4
    assert (out - expected).abs().max().item() <= 1e-5


def test_gradients_match(warp: ImplicitWarp) -> None:
    gen = torch.Generator().manual_seed(5)
    h, w = 10, 12
    base = [torch.randn(1, C, h, w, generator=gen), torch.randn(1, C, h, w, generator=gen)]
    flow = torch.randn(1, 2, h, w, generator=gen) * 3
    grads = []
    for fn in (implicit_warp, implicit_warp_gather):
        source, target = (t.clone().requires_grad_(True) for t in base)
        weight = warp.k.weight.detach().clone().requires_grad_(True)
        args = list(_args(warp, source, target, flow))
        args[5] = weight
        (fn(*args, num_heads=HEADS) ** 2).sum().backward()
        grads.append([source.grad, target.grad, weight.grad])
    for a, b in zip(*grads):
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())


def test_half_features_keep_fp32_coordinates(warp: ImplicitWarp) -> None:
    """At x ~ 300 px FP16 positions have 0.25 px steps; the offset code would be far off."""
    h, w = 8, 320
    gen = torch.Generator().manual_seed(7)
    source, target = torch.randn(1, C, h, w, generator=gen), torch.randn(1, C, h, w, generator=gen)
    flow = torch.full((1, 2, h, w), 0.3)
    half = ImplicitWarp(C, C, HEADS, 0.01)
    half.load_state_dict(warp.state_dict())
    half = half.half()
    assert half.pe_divisors.dtype == torch.float32
    with torch.no_grad():
        ref = warp(source, target, flow)
        out = half(source.half(), target.half(), flow.half()).float()
    err = (out - ref).abs()[..., 256:].max().item()
    # Measured 0.0094 of the output's maximum (FP16 features, FP32 positions); bound about 2x that.
    assert err < 0.02 * ref.abs().max().item(), err


def _export(module: torch.nn.Module, h: int, w: int, path: str) -> onnx.ModelProto:
    args = (torch.randn(1, C, h, w), torch.randn(1, C, h, w), torch.randn(1, 2, h, w))
    hd, wd = torch.export.Dim("h", min=2, max=4096), torch.export.Dim("w", min=2, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            input_names=["source", "target", "flow"],
            output_names=["output"],
            opset_version=19,
            dynamo=True,
            dynamic_shapes=({2: hd, 3: wd},) * 3,
            optimize=True,
            verbose=False,
        )
    program.save(path)
    return onnx.load(path)


def test_decomposed_onnx_on_onnxruntime(warp: ImplicitWarp, tmp_path) -> None:
    import onnxruntime as ort

    assert get_implicit_warp_export() == "decomposed"
    model = _export(warp, 64, 96, str(tmp_path / "iw.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import} == {"ai.onnx": 19}
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    session = ort.InferenceSession(str(tmp_path / "iw.onnx"), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(11)
    for h, w in [(64, 96), (37, 53)]:
        source, target = torch.randn(1, C, h, w, generator=gen), torch.randn(1, C, h, w, generator=gen)
        for kind, flow in _flows(1, h, w, gen).items():
            with torch.no_grad():
                ref = implicit_warp(*_args(warp, source, target, flow), num_heads=HEADS).numpy()
            out = session.run(None, {"source": source.numpy(), "target": target.numpy(), "flow": flow.numpy()})[0]
            assert np.abs(out - ref).max() <= 1e-5, (h, w, kind)


def test_custom_node_export(warp: ImplicitWarp, tmp_path) -> None:
    with pytest.raises(ValueError, match="custom"):
        set_implicit_warp_export("plugin")  # type: ignore[arg-type]
    set_implicit_warp_export("custom")
    try:
        model = _export(warp, 64, 96, str(tmp_path / "iw_custom.onnx"))
    finally:
        set_implicit_warp_export("decomposed")
    nodes = [n for n in model.graph.node if n.op_type == "ImplicitWarp"]
    assert len(nodes) == 1 and nodes[0].domain == "vsr"
    assert {o.domain: o.version for o in model.opset_import}.get("vsr") == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["num_heads"] == HEADS and abs(attrs["scale"] - (C // HEADS) ** -0.5) < 1e-7
    assert len(nodes[0].input) == 11
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    # key codes and divisors travel as FP32 initializers with the checkpoint's exact values
    assert any(v.shape == (4, C) and np.array_equal(v, warp.position_bias[0].numpy()) for v in inits.values())
    assert any(v.shape == (C // 4,) and np.array_equal(v, warp.pe_divisors.numpy()) for v in inits.values())
    # outside export the switch changes nothing
    set_implicit_warp_export("custom")
    try:
        flow = torch.randn(1, 2, 8, 8)
        with torch.no_grad():
            x = torch.randn(1, C, 8, 8)
            assert torch.equal(warp(x, x, flow), implicit_warp(*_args(warp, x, x, flow), num_heads=HEADS))
    finally:
        set_implicit_warp_export("decomposed")


def peak_allocated_bytes(fn, *args, **kwargs) -> tuple[int, torch.Tensor]:
    """Peak of live bytes the CPU allocator handed out during ``fn`` (torch profiler memory
    events: every allocation and free, in time order), above what was live before the call."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn(*args, **kwargs)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, out


def test_reference_peak_memory_at_most_0_15x_the_gather_formulations(warp: ImplicitWarp) -> None:
    h, w = 180, 320
    gen = torch.Generator().manual_seed(13)
    source, target = torch.randn(1, C, h, w, generator=gen), torch.randn(1, C, h, w, generator=gen)
    flow = torch.randn(1, 2, h, w, generator=gen) * 3
    ref_peak, ref = peak_allocated_bytes(implicit_warp, *_args(warp, source, target, flow), num_heads=HEADS)
    gather_peak, cross = peak_allocated_bytes(implicit_warp_gather, *_args(warp, source, target, flow), num_heads=HEADS)
    feature = source.numel() * 4
    print(
        f"implicit warp peak at {h}x{w}: reference {ref_peak / 2**20:.1f} MiB "
        f"({ref_peak / feature:.1f} feature maps), gather formulation {gather_peak / 2**20:.1f} MiB "
        f"({gather_peak / feature:.1f}), ratio {ref_peak / gather_peak:.3f}"
    )
    assert (ref - cross).abs().max().item() <= 1e-5
    assert gather_peak > 8 * feature  # the measurement sees the big index and (4hw, C) tensors
    assert ref_peak <= 0.15 * gather_peak  # measured 0.11x (README)
