"""vsr-export: write a model package (manifest + one ONNX graph per stage)."""
from __future__ import annotations

from pathlib import Path

import click

from vsr_models import ARCHITECTURES, WEIGHTS, create_model, load_checkpoint, pretrained
from vsr_models.checkpoint import CheckpointError

from .package import PackageError, export_package


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(path_type=Path),
              help="Official weight file(s) to load (repeat for networks with several files). "
                   "Without it, a zoo name uses its installed weights.")
@click.option("--key", default=None, help="Entry of a BasicSR checkpoint to load: params (default) or params_ema.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Package folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace the package folder if it exists.")
@click.option("--random-weights", is_flag=True,
              help="Export with random weights (for testing the toolchain on a network whose weights "
                   "are not installed).")
def main(model: str, checkpoints: tuple[Path, ...], key: str | None, output: Path, overwrite: bool,
         random_weights: bool) -> None:
    """Export MODEL (a zoo name: an architecture or installed weights) to a package at -o.

    \b
    Architectures: {archs}
    Installed weights: {weights}

    Each stage becomes one ONNX graph (opset 19, dynamic height and width, checked by the ONNX
    checker, constants folded); manifest.json records the plan, the stages' inputs and outputs,
    size constraints and the checkpoints' sha256.
    """
    try:
        if output.exists() and not overwrite:
            raise PackageError(f"{output} exists; pass --overwrite to replace it")
        weights = None
        if checkpoints:
            arch = WEIGHTS[model].arch if model in WEIGHTS else model
            net = create_model(arch)
            for path in checkpoints:
                load_checkpoint(net, path, key=key)
        elif model in WEIGHTS:
            net, weights = pretrained(model), model
            checkpoints = (WEIGHTS[model].path(),)
        elif model in ARCHITECTURES:
            if not random_weights:
                raise click.UsageError(f"{model} has no installed weights: pass --checkpoint FILE "
                                       "(or --random-weights to test the toolchain)")
            net = create_model(model)
        else:
            known = ", ".join(sorted(set(ARCHITECTURES) | set(WEIGHTS)))
            raise click.UsageError(f"unknown model {model!r}; known: {known}")
        click.echo(f"exporting {model} ({len(net.stages())} stages) to {output} ...", err=True)
        package = export_package(net, output, weights=weights, checkpoints=list(checkpoints),
                                 overwrite=overwrite)
    except (PackageError, CheckpointError, FileNotFoundError, KeyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    stages = ", ".join(package.stage_names())
    click.echo(f"wrote {output}: stages {stages}; opset {package.manifest['opset']}")


main.help = (main.help or "").format(archs=", ".join(sorted(ARCHITECTURES)), weights=", ".join(sorted(WEIGHTS)))
