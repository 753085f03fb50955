"""vsr-build-engine: build TensorRT engines for a model package on the GPU it runs on."""

from __future__ import annotations

import click

from engines.cache import EngineCache, Profile, package_hash
from engines.tensorrt import build_engines
from export.format import PackageError

from ..devices import Device
from ..resolve import resolve_package
from .common import CONTEXT, SIZE, DeviceType, device_option, precision_option, say, user_errors

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


@click.command(context_settings=CONTEXT)
@click.argument("package_path", metavar="PKG")
# --precision as vsr-run's, naming the graphs to build (no bf16: a package has no BF16 graphs).
@precision_option.but(
    type=click.Choice(["fp32", "fp16"]),
    help="Which graphs of the package to build, as vsr-run --precision runs them (fp16 needs vsr-export "
    "--precision fp16).",
)
@click.option(
    "--min-shape",
    type=SIZE,
    default=None,
    help="Smallest LR frame HxW the engines accept (default: the network's minimum).",
)
@click.option("--opt-shape", type=SIZE, default=None, help="LR frame HxW the engines are tuned for (default: 180x320).")
@click.option(
    "--max-shape", type=SIZE, default=None, help="Largest LR frame HxW the engines accept (default: 540x960)."
)
@click.option(
    "--workspace",
    type=click.FloatRange(min=0.25),
    default=4.0,
    show_default=True,
    help="TensorRT workspace memory limit in GiB.",
)
# --device as vsr-run's, on an NVIDIA GPU by default: TensorRT builds only there.
@device_option.but(
    type=DeviceType("gpu", "an Intel GPU; TensorRT engines are built on an NVIDIA GPU: use cuda or cuda:N"),
    default="cuda",
    help="cuda or cuda:N.",
)
@click.option("--list", "list_only", is_flag=True, help="List the engine sets cached for PKG and exit.")
@user_errors
def main(
    package_path: str,
    precision: str,
    min_shape: tuple[int, int] | None,
    opt_shape: tuple[int, int] | None,
    max_shape: tuple[int, int] | None,
    workspace: float,
    device: Device,
    list_only: bool,
) -> None:
    """Build one TensorRT engine per stage of PKG (a package folder or a zoo name) for this GPU.

    Engines are cached per GPU model, compute capability, TensorRT version, package contents,
    precision and LR size range; vsr-run --backend tensorrt (and --backend auto) finds them.
    Graphs are built strongly typed: the FP16 graphs carry their precision (and their FP32
    islands for coordinates), on TensorRT 10 and 11 alike.
    """
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
