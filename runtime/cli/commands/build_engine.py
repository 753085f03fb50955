"""vsr-build-engine: build TensorRT engines for a model package on the GPU it runs on."""

from __future__ import annotations

import click

from engines.cache import EngineCache, Profile, package_hash
from engines.tensorrt import build_engines
from export.format import PackageError

from ...devices import Device
from ...resolve import resolve_package
from ..common import say

#: Default LR range: 180x320 (-> 720x1280) is the optimum, up to 540x960 (-> 2160x3840).
DEFAULT_OPT = (180, 320)
DEFAULT_MAX = (540, 960)


def resolve_profile(
    constraints, min_shape: tuple[int, int] | None, opt_shape: tuple[int, int] | None, max_shape: tuple[int, int] | None
) -> Profile:
    """The LR profile from the flags: min defaults to the network's minimum, max to 540x960 (or the
    given opt), opt to 180x320 clamped into [min, max]. Every size is padded as the runtime pads."""
    lo = constraints.padded(*(min_shape or (constraints.min_h, constraints.min_w)))
    hi = constraints.padded(*(max_shape or (opt_shape or (max(DEFAULT_MAX[0], lo[0]), max(DEFAULT_MAX[1], lo[1])))))
    if opt_shape is not None:
        mid = constraints.padded(*opt_shape)
    else:
        mid = (min(max(DEFAULT_OPT[0], lo[0]), hi[0]), min(max(DEFAULT_OPT[1], lo[1]), hi[1]))
        mid = constraints.padded(*mid)
    try:
        return Profile(lo, mid, hi)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (sizes are LR frame sizes, padded to the network's constraints)") from exc


def execute(
    package_path: str,
    precision: str,
    min_shape: tuple[int, int] | None,
    opt_shape: tuple[int, int] | None,
    max_shape: tuple[int, int] | None,
    workspace: float,
    device: Device,
    list_only: bool,
) -> None:
    """The work of ``vsr-build-engine`` (:func:`runtime.cli.build_engine.main`), with its parsed flags."""
    package = resolve_package(package_path, log=say)
    if list_only:
        digest = package_hash(package.root)
        sets = [s for s in EngineCache().entries() if s.key.package_hash == digest]
        for s in sets:
            click.echo(
                f"{s.key.precision} LR {s.key.profile} on {s.key.gpu.name} "
                f"(sm{s.key.gpu.capability[0]}{s.key.gpu.capability[1]}), TensorRT {s.key.tensorrt}: {s.path}"
            )
        if not sets:
            click.echo(f"no engines cached for {package.root}")
        return
    profile = resolve_profile(package.constraints, min_shape, opt_shape, max_shape)
    if precision not in package.precisions:
        raise PackageError(
            f"{package.root} has no {precision} graphs (it has {package.precisions}); run "
            f"vsr-export {package.manifest['model']} --precision {precision} -o ..."
        )
    built = build_engines(package, precision, profile, device=str(device), workspace_gb=workspace, log=say)
    click.echo(f"wrote {len(built.stages)} engines to {built.path}")
