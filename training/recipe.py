"""Training recipes: each network's published settings as a YAML file shipped with the package.

``training/recipes/<network>.yaml`` holds the original's settings (data, optimiser, schedule,
freezing, EMA, validation); a user's YAML (``--config``) is merged over it key by key, and
command-line flags over both. Unknown keys are errors that list the known ones.

A recipe's sections and keys are the fields of :class:`Recipe` and its parts below.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from vsr_models.errors import VSRError

DEGRADATIONS = ("bi", "bd", "crf")


class RecipeError(VSRError, ValueError):
    """A recipe or override that cannot be used; the message names the key and the fix."""


@dataclass
class DataRecipe:
    """How samples are made.

    ``frames``: LR frames per sample. ``crop``: square GT crop (HR pixels). ``degradation``: bi, bd,
    or crf (``crf_base`` then H.264 at a CRF from ``crf`` for a share ``crf_share`` of the clips,
    or of the frames with ``crf_per: frame``). ``rate``: GT frames per LR frame (DAVSR: 5, LR
    frames are means of runs of 5). ``scales``: (h, w) scale pairs of an arbitrary-scale network,
    one drawn per batch (the LR crop is then ``crop / max scale``). ``hflip``, ``rot`` (vertical
    flip and transposition), ``reverse`` (temporal): random augmentations. ``mirror``: append the
    reversed clip this many times. ``quantize``: round LR to 8-bit levels. ``workers``: loader
    processes per training process.
    """

    frames: int = 15
    crop: int = 256
    degradation: str = "bi"
    crf_base: str = "bi"
    crf: list[int] = field(default_factory=lambda: [15, 25, 35])
    crf_share: float = 0.375
    crf_per: str = "clip"
    rate: int = 1
    scales: list[list[float]] | None = None
    hflip: bool = True
    rot: bool = True
    reverse: bool = False
    mirror: int = 0
    quantize: bool = True
    workers: int = 4

    @property
    def lq_size(self) -> int:
        """LR crop of an arbitrary-scale network: the GT crop over the largest scale."""
        top = max(max(pair) for pair in self.scales or [[4.0, 4.0]])
        return math.floor(self.crop / top)


@dataclass
class FreezeRule:
    """Parameters whose name contains one of ``modules`` get no update for the first ``iters``
    iterations (``null``: never trained); ``invert`` freezes every parameter matching none."""

    modules: list[str]
    iters: int | None = None
    invert: bool = False


@dataclass
class TrainRecipe:
    """The optimisation.

    ``batch``: clips per process and iteration. ``optimizer``: adam or adamw. ``lr_mul``: a
    learning-rate multiplier per name substring (``{spynet: 0.125}``). ``periods``,
    ``restart_weights``, ``eta_min``: cosine annealing with restarts (BasicSR's
    ``CosineAnnealingRestartLR``, mmcv's ``CosineRestart``); ``periods`` default to one period of
    ``iters`` and are stretched to ``iters`` when only ``iters`` is overridden. ``freeze``:
    :class:`FreezeRule` list. ``ema``: decay of the weights' moving average (0: off).
    ``amp``: mixed precision (CUDA only). ``target``: ``all`` frames or the ``center`` one.
    """

    iters: int = 300000
    batch: int = 4
    optimizer: str = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    lr_mul: dict[str, float] = field(default_factory=dict)
    periods: list[int] | None = None
    restart_weights: list[float] = field(default_factory=lambda: [1.0])
    eta_min: float = 1e-7
    freeze: list[FreezeRule] = field(default_factory=list)
    ema: float = 0.0
    amp: bool = False
    charbonnier_eps: float = 1e-12
    target: str = "all"
    seed: int = 0


@dataclass
class ValRecipe:
    """Validation: every ``every`` iterations (0: only at the end), PSNR and SSIM on ``channels``
    (rgb or y) after cropping ``crop_border`` pixels; ``frames`` per clip (0: all) from frame
    ``start``; ``crop``: centre GT crop (0: whole frames)."""

    every: int = 5000
    channels: str = "rgb"
    crop_border: int = 0
    frames: int = 0
    start: int = 0
    crop: int = 0


@dataclass
class LogRecipe:
    """Loss and speed logged every ``every`` iterations; weights and training state saved every
    ``save_every`` (and at the end)."""

    every: int = 100
    save_every: int = 5000


@dataclass
class Recipe:
    """A whole recipe. ``network_config``: constructor arguments over the registered default
    (``{num_feat: 16}``). ``layout``: the official checkpoint layout the weights are written in,
    which the network declares (its ``checkpoint_layout``: basicsr, ``params``/``params_ema``, or
    mmcv, ``state_dict`` with ``generator.``; a plain state dict is written as basicsr); filled in
    when a run starts, so ``recipe.yaml`` records it. A recipe need not give it; one that does
    must name the network's own."""

    network: str
    network_config: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None
    data: DataRecipe = field(default_factory=DataRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)
    val: ValRecipe = field(default_factory=ValRecipe)
    log: LogRecipe = field(default_factory=LogRecipe)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recipe_names() -> list[str]:
    """The recipes shipped with the package (file stems)."""
    folder = resources.files("training") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


#: The largest --config file read (the shipped recipes are about 2 KB).
MAX_CONFIG_BYTES = 1 << 20


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"config {path} does not exist; pass a YAML file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise RecipeError(f"config {path} is {path.stat().st_size} bytes, more than a recipe needs; pass a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"config {path} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise RecipeError(f"config {path} nests too deep to be a recipe; pass a YAML file of settings") from None
    except ValueError as exc:  # a number of thousands of digits (Python's int-string limit)
        reason = str(exc).split(";")[0]
        raise RecipeError(f"config {path} holds a value this tool does not read ({reason}); fix that value") from None
    if not isinstance(data, dict):
        raise RecipeError(f"config {path} must be a mapping of sections (data, train, val, log), not a list or value")
    return data


def shipped(name: str) -> dict[str, Any]:
    """The shipped recipe ``name`` as a plain dict."""
    if name not in recipe_names():
        raise RecipeError(f"no training recipe for {name!r}; recipes: {', '.join(recipe_names())}")
    text = (resources.files("training") / "recipes" / f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "lr_mul":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def build(cls: type, values: Any, where: str) -> Any:
    """A dataclass from a mapping, checking every key and value type."""
    if not isinstance(values, Mapping):
        raise RecipeError(f"{where} must be a mapping, got {values!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(known))}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in values.items()})


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where} must be a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecipeError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 2e-4 as a string
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, hint) and not (hint is not bool and isinstance(value, bool)):
        return value
    raise RecipeError(f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def resolve(network: str, user: Mapping[str, Any] | None = None, flags: Mapping[str, Any] | None = None) -> Recipe:
    """The shipped recipe of ``network``, the user's YAML over it, then flags (``section.key``: value)."""
    raw = shipped(network)
    stretch = True
    if user:
        if "network" in user and user["network"] != network:
            raise RecipeError(f"the config is for {user['network']!r}, not {network!r}; drop its network key")
        raw = merge(raw, user)
        stretch = "periods" not in (user.get("train") or {})
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".")
        raw = merge(raw, {section: {key: value}})
    recipe_iters = shipped(network).get("train", {}).get("iters", TrainRecipe.iters)
    recipe = build(Recipe, raw, "recipe")
    _stretch_periods(recipe, recipe_iters, stretch)
    validate(recipe)
    return recipe


def _stretch_periods(recipe: Recipe, recipe_iters: int, stretch: bool) -> None:
    """Periods summing to the recipe's length follow an overridden ``iters`` proportionally; a run
    shorter than the number of periods keeps its first ``iters`` periods, one iteration each."""
    t = recipe.train
    if t.periods is None:
        t.periods = [t.iters]
        return
    if stretch and sum(t.periods) == recipe_iters and t.iters != recipe_iters:
        if t.iters < len(t.periods):
            t.periods, t.restart_weights = [1] * t.iters, t.restart_weights[: t.iters]
            return
        scaled = [max(1, round(p * t.iters / recipe_iters)) for p in t.periods]
        scaled[-1] = max(1, t.iters - sum(scaled[:-1]))
        t.periods = scaled


def validate(recipe: Recipe) -> None:
    """Check values that types alone do not (choices, positive counts)."""
    d, t, v = recipe.data, recipe.train, recipe.val

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise RecipeError(message)

    need(d.degradation in DEGRADATIONS, f"data.degradation must be one of {', '.join(DEGRADATIONS)}")
    need(d.crf_base in ("bi", "bd"), "data.crf_base must be bi or bd")
    need(d.crf_per in ("clip", "frame"), "data.crf_per must be clip or frame")
    need(0 <= d.crf_share <= 1 and all(0 <= c <= 51 for c in d.crf), "data.crf values must be 0..51, crf_share 0..1")
    need(d.frames >= 1 and d.crop >= 1 and d.rate >= 1, "data.frames, data.crop and data.rate must be at least 1")
    need(d.mirror >= 0 and d.workers >= 0, "data.mirror and data.workers must be >= 0")
    need(d.scales is None or (len(d.scales) > 0 and all(len(p) == 2 for p in d.scales)), "data.scales: (h, w) pairs")
    need(t.iters >= 1 and t.batch >= 1, "train.iters and train.batch must be at least 1")
    need(t.optimizer in ("adam", "adamw"), "train.optimizer must be adam or adamw")
    need(t.lr > 0 and len(t.betas) == 2, "train.lr must be > 0 and train.betas two numbers")
    need(0 <= t.ema < 1, "train.ema must be in [0, 1)")
    need(t.target in ("all", "center"), "train.target must be all or center")
    periods = t.periods or []
    need(
        sum(periods) == t.iters and len(t.restart_weights) == len(periods),
        f"train.periods ({periods}) must sum to train.iters ({t.iters}) with one restart weight each "
        f"(restart_weights: {t.restart_weights})",
    )
    need(v.channels in ("rgb", "y"), "val.channels must be rgb or y")
    need(recipe.log.every >= 1 and recipe.log.save_every >= 1, "log.every and log.save_every must be at least 1")


def to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.as_dict(), sort_keys=False)
