"""What a run writes: weights in the official layouts, and a resumable training state.

Weights (``OUT/weights/iter_NNNNNNN.pth`` and ``latest.pth``) are read by
:func:`vsr_models.load_checkpoint`, ``vsr-export --checkpoint`` and the originals' own loaders:

* ``basicsr``: ``{"params": ..., "params_ema": ...}`` (``params_ema`` when EMA is on);
* ``mmcv``: ``{"meta": ..., "state_dict": {"generator." + name: ...}}``; the EMA weights, if
  any, go to ``*_ema.pth`` in the same layout;
* ``davsr``: DAVSR's mmcv file (its ``generator.*`` keys) plus, once, the Super SloMo file
  ``superslomo.ckpt`` (``state_dictFC`` / ``state_dictAT``), the two files of the release.

Every file also holds ``meta``: the network's name and constructor arguments (so a smaller
variant can be rebuilt by ``vsr-export``), the iteration, and the recipe. The training state
(``OUT/state/latest.pt``) has the weights, optimiser, EMA, loss scaler, iteration and the RNG
states of every process; data positions follow from the iteration (see :mod:`training.data`).
Files are written to a temporary name and renamed, so a kill never leaves half a file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from export.atomic import StagedPath
from vsr_models.checkpoint import read_checkpoint
from vsr_models.errors import VSRError

STATE = Path("state") / "latest.pt"
WEIGHTS = Path("weights")


class StateError(VSRError, ValueError):
    """A training state that cannot be resumed."""


def save_atomic(obj: Any, target: Path) -> Path:
    staged = StagedPath(target, suffix=target.suffix)
    try:
        torch.save(obj, staged.path)
    except BaseException:
        staged.discard()
        raise
    return staged.commit()


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def official_files(
    layout: str, state: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None, meta: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The files of one save, by name suffix ('' for the main file)."""
    state = _cpu(state)
    if layout == "basicsr":
        obj: dict[str, Any] = {"params": state, "meta": meta}
        if ema is not None:
            obj["params_ema"] = _cpu(ema)
        return {"": obj}
    if layout == "mmcv":
        files = {"": {"meta": meta, "state_dict": {f"generator.{k}": v for k, v in state.items()}}}
        if ema is not None:
            files["_ema"] = {"meta": meta, "state_dict": {f"generator.{k}": v for k, v in _cpu(ema).items()}}
        return files
    if layout == "davsr":
        files = {"": {"meta": meta, "state_dict": {k: v for k, v in state.items() if k.startswith("generator.")}}}
        if ema is not None:
            files["_ema"] = {
                "meta": meta,
                "state_dict": {k: v for k, v in _cpu(ema).items() if k.startswith("generator.")},
            }
        return files
    raise ValueError(f"unknown layout {layout!r}")


def superslomo_file(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """DAVSR's frozen Super SloMo in its release layout (flow net ``state_dictFC``, interpolation ``state_dictAT``)."""
    state = _cpu(state)
    return {
        "state_dictFC": {k[len("slomo.flow.") :]: v for k, v in state.items() if k.startswith("slomo.flow.")},
        "state_dictAT": {k[len("slomo.interp.") :]: v for k, v in state.items() if k.startswith("slomo.interp.")},
    }


def write_weights(
    out: Path,
    iteration: int,
    layout: str,
    state: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None,
    meta: dict[str, Any],
) -> Path:
    """Write ``weights/iter_N.pth`` (and ``_ema``) and refresh ``latest``; returns the main file."""
    folder = out / WEIGHTS
    main = folder / f"iter_{iteration:07d}.pth"
    for suffix, obj in official_files(layout, state, ema, meta).items():
        path = save_atomic(obj, folder / f"iter_{iteration:07d}{suffix}.pth")
        latest = folder / f"latest{suffix}.pth"
        staged = StagedPath(latest, suffix=".pth")
        shutil.copyfile(path, staged.path)
        staged.commit()
    if layout == "davsr" and not (folder / "superslomo.ckpt").is_file():
        save_atomic(superslomo_file(state), folder / "superslomo.ckpt")
    return main


def load_state(out: Path) -> dict[str, Any]:
    path = out / STATE
    if not path.is_file():
        raise StateError(f"{out} has no training state ({STATE}) to resume; start without --resume")
    obj = read_checkpoint(path)
    for key in ("iteration", "model", "optimizer", "rng", "recipe"):
        if key not in obj:
            raise StateError(f"{path} is not a vsr-train state (no {key!r}); start a new run with --overwrite")
    return obj
