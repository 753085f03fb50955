"""The contract every registered network meets, checked for each one with its quick-check
configuration on real frames (a new network gets all of this by registering):

* the plan round-trips through JSON, and its steps and the stages agree name for name;
* the executor running the plan on PyTorch equals the whole-clip ``forward``;
* the exported package on ONNX Runtime and on OpenVINO equals the whole-clip ``forward``
  (:mod:`tests.test_contract_packages`, a file of its own so that xdist runs it beside this one);
* the weights saved in the official release layout load back strictly, and a missing, an
  unexpected or a mis-shaped key is an error naming it;
* the registry entry is well formed (the default configuration builds, weights entries name
  their network, the official key count where the entry records one).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from export.package import stage_io_specs
from runtime.backends import TorchBackend
from runtime.pipeline import upscale_clip
from runtime.samples import load_lr, sample_clip
from vsr_models import CheckpointError, Plan, create_model, load_checkpoint, networks, pretrained
from vsr_models.base import VSRNetwork
from vsr_models.checkpoint import check_all_parts_loaded
from vsr_models.registry import NetworkEntry
from vsr_models.spynet import SpyNet

NAMES = list(networks())


def real_lr(frames: int, h: int, w: int) -> np.ndarray:
    """(T, 3, h, w) real LR frames: the centre of bikes.mp4 downscaled x4 (160x68), or of Big Buck
    Bunny downscaled x4 (320x180) when the size needs more rows."""
    clip = sample_clip("bikes.mp4") if h <= 68 and w <= 160 else sample_clip("bigbuckbunny.mp4")
    lr = load_lr(clip, frames, crop=(h, w), downscale_by=4)
    assert lr.shape == (frames, 3, h, w)
    return lr


def perturbed(model: VSRNetwork, seed: int = 0) -> VSRNetwork:
    """Move every parameter off its initial value (10 % relative noise; 0.1 absolute where the
    released init is all zeros, such as deformable offset heads), so that no branch of the math
    hides behind an identity or zero initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            scale = p.abs().mean().item()
            p.add_(torch.randn(p.shape, generator=gen) * (0.1 * scale if scale > 0 else 0.1))
    return model


def with_real_spynet(model: VSRNetwork) -> VSRNetwork:
    """Put the released SpyNet weights (inside the official BasicVSR file) into every SpyNet of
    ``model`` (both key layouts hold the same tensors in the same order)."""
    real = list(pretrained("basicvsr").spynet.state_dict().values())
    for module in model.modules():
        if isinstance(module, SpyNet):
            own = module.state_dict()
            assert [v.shape for v in own.values()] == [v.shape for v in real]
            module.load_state_dict(dict(zip(own, real)))
    return model


@functools.cache
def quick_network(name: str) -> tuple[NetworkEntry, VSRNetwork, np.ndarray]:
    """(registry entry, the quick-check network with perturbed random weights and the real SpyNet,
    real LR frames), built once per network."""
    entry = networks()[name]
    torch.manual_seed(0)
    model = with_real_spynet(perturbed(create_model(entry.name, **entry.quick.config)))
    return entry, model, real_lr(entry.quick.frames, *entry.quick.size)


@pytest.fixture(params=NAMES)
def quick(request: pytest.FixtureRequest) -> tuple[NetworkEntry, VSRNetwork, np.ndarray]:
    return quick_network(request.param)


def forward(model: VSRNetwork, lr: np.ndarray, scale: tuple[float, float] | None = None) -> np.ndarray:
    """The whole-clip reference; at ``scale`` for an arbitrary-scale network (its ``forward_clip``)."""
    clip = torch.from_numpy(lr)[None]
    with torch.inference_mode():
        return (model(clip) if scale is None else model.forward_clip(clip, scale))[0].numpy()


def scales(model: VSRNetwork) -> tuple[tuple[float, float] | None, ...]:
    """The scales the contract runs a network at: its ``check_scales`` if it takes any scale."""
    return getattr(model, "check_scales", None) or (None,)


def test_registry_entry_is_well_formed(quick: tuple[NetworkEntry, VSRNetwork, np.ndarray]) -> None:
    entry, model, _ = quick
    assert entry.cls.name == entry.name and isinstance(model, entry.cls)
    assert "default" in entry.configs and entry.summary
    for weights in entry.weights:
        assert weights.arch == entry.name and weights.config in entry.configs
        assert weights.url and weights.training_data and weights.degradation
    official = create_model(entry.name)
    if entry.checkpoint_keys is not None:
        assert len(official.state_dict()) == entry.checkpoint_keys


def test_plan_round_trips_through_json(quick: tuple[NetworkEntry, VSRNetwork, np.ndarray]) -> None:
    _, model, _ = quick
    plan = model.plan()
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_stages_match_the_plan(quick: tuple[NetworkEntry, VSRNetwork, np.ndarray]) -> None:
    _, model, _ = quick
    plan, stages = model.plan(), model.stages()
    used = {step.stage for step in plan.steps}
    assert used == set(stages), f"stages never run: {set(stages) - used}; runs unknown: {used - set(stages)}"
    for step in plan.steps:
        stage = stages[step.stage]
        assert set(step.inputs) == set(stage.inputs), step.stage
        assert set(step.outputs) == set(stage.outputs), step.stage
        assert set(stage.fp32) <= set(stage.inputs) | set(stage.outputs), step.stage
    for name, stage in stages.items():
        stage_io_specs(plan, name, stage)  # every input fed and every output written with a TensorSpec


def test_executor_on_pytorch_equals_forward(quick: tuple[NetworkEntry, VSRNetwork, np.ndarray]) -> None:
    entry, model, lr = quick
    for scale in scales(model):
        ref = forward(model, lr, scale)
        out = upscale_clip(TorchBackend(model), _PlanOnly(model), lr, scale)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-5, (entry.name, scale)


def test_release_layout_loads_strictly(quick: tuple[NetworkEntry, VSRNetwork, np.ndarray], tmp_path: Path) -> None:
    entry, model, _ = quick
    files = {}
    for name, obj in model.release_files().items():
        files[name] = tmp_path / f"{name}.pth"
        torch.save(obj, files[name])
    fresh = create_model(entry.name, **entry.quick.config)
    for path in files.values():
        load_checkpoint(fresh, path)
    check_all_parts_loaded(fresh)
    theirs = model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in fresh.state_dict().items())

    name, obj = next(iter(model.release_files().items()))
    state = _state_of(obj)
    key = sorted(state)[len(state) // 2]
    broken = {
        "missing": {k: v for k, v in state.items() if k != key},
        "unexpected": {**state, f"{key}.stray": torch.zeros(1)},
        "shape": {**state, key: torch.zeros(*state[key].shape, 2)},
    }
    for what, bad in broken.items():
        path = tmp_path / f"{name}-{what}.pth"
        torch.save(_replace_state(obj, bad), path)
        with pytest.raises(CheckpointError, match=re.escape(key.removeprefix("generator."))):
            load_checkpoint(create_model(entry.name, **entry.quick.config), path)


def _state_of(obj: dict) -> dict[str, torch.Tensor]:
    """The state dict inside a release object (BasicSR ``params``, mmcv ``state_dict``, or the
    plain state dict itself)."""
    inner = obj.get("params", obj.get("state_dict", obj))
    assert isinstance(inner, dict) and inner, f"release object with keys {sorted(obj)}"
    return {k: v for k, v in inner.items() if k != "step_counter"}


def _replace_state(obj: dict, state: dict[str, torch.Tensor]) -> dict:
    key = "params" if "params" in obj else "state_dict" if "state_dict" in obj else None
    if key is None:  # a plain state dict
        return {**state, **{k: v for k, v in obj.items() if k == "step_counter"}}
    extra = {k: v for k, v in obj[key].items() if k == "step_counter"}
    return {**obj, key: {**state, **extra}}


class _PlanOnly:
    """What :func:`upscale_clip` reads from a package, taken from an in-memory network."""

    def __init__(self, model: VSRNetwork) -> None:
        self.plan, self.scale, self.constraints = model.plan(), model.scale, model.constraints
