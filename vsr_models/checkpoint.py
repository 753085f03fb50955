"""Loading official checkpoints strictly, from the formats they were released in."""

from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import VSRError


class CheckpointError(VSRError, ValueError):
    """A checkpoint that cannot be loaded into the network it was given to."""


def strip_prefix(name: str, *prefixes: str) -> str:
    """``name`` without the leading ``prefixes``, in order (``module.`` from DataParallel,
    ``generator.`` from mmcv), each removed where present."""
    for prefix in prefixes:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, allow: tuple[type, ...] = ()) -> Any:
    """Read a ``.pth``/``.ckpt`` (pickle, with ``weights_only``) or ``.safetensors`` file.

    ``allow`` lists extra harmless types the pickle may hold (e.g. ``datetime.datetime`` in
    training metadata); no pickled code is ever executed. A file that cannot be read is a
    one-line :class:`CheckpointError` saying what the file is and what to pass instead.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a released weight file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path} is not a safetensors file this tool can read ({_first_line(exc)}); save the weights "
                "again, or pass the released .pth file"
            ) from None
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # a zip archive (torch.save) or a pickle (legacy)
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (neither the zip archive nor the pickle torch.save writes); "
            "pass a .pth or .safetensors weight file"
        )
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint this tool can read (it is damaged, cut short or of another "
            f"format: {_first_line(exc)}); download or save it again, or pass a .safetensors file"
        ) from None


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refused(path: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    """What a pickle refused by ``weights_only`` is, in one line, with what to pass instead."""
    text = str(exc)
    named = re.search(r"GLOBAL ([\w.]+)", text)
    if named is None and "Weights only load failed" not in text:
        return CheckpointError(f"{path} is not a PyTorch checkpoint this tool can read ({_first_line(exc)})")
    if named is None:  # an opcode the safe unpickler does not know: not a plain pickle of tensors
        return CheckpointError(
            f"{path} is not a checkpoint of plain tensors (its pickle uses what a weights-only load refuses, and "
            "it was not loaded); pass the released weight file, or a state dict saved as .safetensors"
        )
    return CheckpointError(
        f"{path} is a pickled checkpoint that refers to {named.group(1)}, which is code or an object outside plain "
        "tensors; loading it would run code from the file, so it was not loaded. Where the file was made, save "
        "the network's state dict alone (tensors, as .pth or .safetensors) and pass that file"
    )


def extract_state_dict(obj: Any, key: str | None = None) -> dict[str, torch.Tensor]:
    """The parameter dict inside a released file.

    Accepts BasicSR files (``{'params': ..., 'params_ema': ...}``; ``key`` picks one, default
    ``params``), mmcv files (``{'state_dict': {'generator.' + name: ...}}``) and plain state
    dicts. Leading ``module.`` (DataParallel) and ``generator.`` prefixes are removed.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}")
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"checkpoint has no {key!r} entry; it has {sorted(obj)}")
        obj = obj[key]
    elif "params" in obj or "params_ema" in obj:
        obj = obj["params"] if "params" in obj else obj["params_ema"]
    elif "state_dict" in obj:
        obj = obj["state_dict"]
    state = {
        strip_prefix(name, "module.", "generator."): value
        for name, value in obj.items()
        if isinstance(value, torch.Tensor)
    }
    if not state:
        raise CheckpointError("checkpoint holds no tensors")
    return state


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy ``state`` into ``module``; any missing, unexpected or mis-shaped key is an error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
    if problems:
        raise CheckpointError(
            f"{what} does not match {type(module).__name__}: "
            + "; ".join(problems)
            + ". Check that the file is the network's official release and the configuration "
            "matches (create_model(name, **config))."
        )
    module.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, path: str | Path, key: str | None = None) -> nn.Module:
    """Load an official checkpoint into ``model``, strictly.

    ``key`` picks an entry of a BasicSR file (``params`` by default, or ``params_ema``).
    A network made of separately released parts (e.g. DAVSR and its Super-SloMo) implements
    ``route_checkpoint(obj, key) -> (submodule_prefix, state_dict)`` to say which part a file
    fills; that part is then loaded strictly.
    """
    obj = read_checkpoint(path, getattr(model, "checkpoint_safe_types", ()))
    route = getattr(model, "route_checkpoint", None)
    if route is not None:
        prefix, state = route(obj, key)
    else:
        prefix, state = "", extract_state_dict(obj, key)
    target = model.get_submodule(prefix) if prefix else model
    load_state_dict_strict(target, state, f"checkpoint {path}")
    if route is not None:
        model.loaded_parts = getattr(model, "loaded_parts", frozenset()) | {prefix}
    return model


def check_all_parts_loaded(model: nn.Module) -> None:
    """For a network made of separately released files, fail unless every part was loaded."""
    parts = getattr(model, "checkpoint_parts", ())
    missing = sorted(set(parts) - set(getattr(model, "loaded_parts", ())))
    if missing:
        raise CheckpointError(
            f"{type(model).__name__} is made of {len(parts)} released files "
            f"({', '.join(parts)}); nothing was loaded into {', '.join(missing)}: "
            "pass every file with its own --checkpoint"
        )
