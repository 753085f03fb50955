"""What a run writes: weights in the official layouts, and a resumable training state.

Weights (``OUT/weights/iter_NNNNNNN.pth`` and ``latest.pth``) are read by
:func:`vsr_models.load_checkpoint`, ``vsr-export --checkpoint`` and the originals' own loaders:

the network's own release file (:meth:`~vsr_models.base.VSRNetwork.release_files`) in the layout
the network declares (``checkpoint_layout``):

* ``basicsr``: ``{"params": ..., "params_ema": ...}`` (``params_ema`` when EMA is on);
* ``mmcv``: ``{"meta": ..., "state_dict": {"generator." + name: ...}}``; the EMA weights, if
  any, go to ``*_ema.pth`` in the same layout;
* ``plain`` (a bare state dict, which has no room for ``meta`` or EMA weights): as ``basicsr``;

and, once, the network's further release files (parts its recipe keeps frozen: DAVSR's Super
SloMo, ``superslomo.ckpt``) as ``<name>.ckpt``.

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
from vsr_models.base import VSRNetwork
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


def written_layout(network: type[VSRNetwork]) -> str:
    """The layout ``vsr-train`` writes a network's weights in: its release's (``checkpoint_layout``),
    with a bare state dict (``plain``) written as BasicSR's ``params``."""
    return "basicsr" if network.checkpoint_layout == "plain" else network.checkpoint_layout


def _wrapped(model: VSRNetwork, release: dict[str, Any]) -> dict[str, Any]:
    return {"params": release} if model.checkpoint_layout == "plain" else release


def official_files(
    model: VSRNetwork,
    state: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None,
    meta: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The network's own files of one save, by name suffix ('' for the main file, '_ema' for the
    EMA weights of an mmcv layout), and its further release files, by file name (``<name>.ckpt``)."""
    (_, own), *others = model.release_files(state).items()
    files = {"": {"meta": meta, **_wrapped(model, own)}}
    if ema is not None:
        own_ema = _wrapped(model, next(iter(model.release_files(ema).values())))
        if written_layout(type(model)) == "basicsr":
            files[""]["params_ema"] = own_ema["params"]
        else:
            files["_ema"] = {"meta": meta, **own_ema}
    return files, {f"{name}.ckpt": obj for name, obj in others}


def write_weights(
    out: Path,
    iteration: int,
    model: VSRNetwork,
    state: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor] | None,
    meta: dict[str, Any],
) -> Path:
    """Write ``weights/iter_N.pth`` (and ``_ema``), refresh ``latest``, and write the network's
    further release files if they are not there yet; returns the main file."""
    folder = out / WEIGHTS
    main = folder / f"iter_{iteration:07d}.pth"
    own, further = official_files(model, state, ema, meta)
    for suffix, obj in own.items():
        path = save_atomic(obj, folder / f"iter_{iteration:07d}{suffix}.pth")
        latest = folder / f"latest{suffix}.pth"
        staged = StagedPath(latest, suffix=".pth")
        shutil.copyfile(path, staged.path)
        staged.commit()
    for name, obj in further.items():
        if not (folder / name).is_file():
            save_atomic(obj, folder / name)
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
