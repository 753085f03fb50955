"""What the user names with ``--model``: a package folder, or a zoo name exported into the cache; or,
for the PyTorch backend alone, a network of the registry that is not exported (:class:`Unexported`).

This is the one place that may run the exporter on the user's behalf; the runtime's core
(executor, backends, pipeline) only ever reads packages. What comes from the cache is verified
before it is used: the export must be this user's own, with no symbolic link in it, every file must
match the sha256 recorded in its manifest when it was written, and the manifest itself the sha256
recorded beside the entry (``<entry>.manifest.sha256``: a manifest edited in place, its plan or sizes
changed, is caught too); anything else is exported again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.atomic import check_real_folder, write_text_atomic
from export.format import Package, PackageError, cache_dir, cache_folder, sha256_file, tool_version
from export.package import export_package
from vsr_models.base import VSRNetwork
from vsr_models.plan import Plan, SizeConstraints
from vsr_models.registry import all_weights, network, networks, pretrained


def resolve_package(model: str, log: Callable[[str], None] = print, *, export: bool = True) -> Package:
    """A package folder as given, or the cached export of a zoo name (exported on first use; with
    ``export`` False nothing is written: a zoo name not exported yet is a :class:`PackageError`).

    The cache entry is keyed by the weights' sha256 and this tool's version, so a new release
    re-exports instead of reusing stale graphs.
    """
    path = Path(model)
    if path.is_dir():
        return Package.open(path)
    weights = all_weights()
    if model in weights:
        entry = weights[model]
        source = entry.path()  # says how to get the file where it is not installed
        digest = (entry.sha256 or "unchecked")[:12]
        name = f"{model}-{digest}-vsr{tool_version()}"
        if not export:
            found = cache_dir() / "packages" / name
            if not found.is_dir():
                raise PackageError(
                    f"{model} is not exported yet, and the run would export it into {found} first (about a "
                    f"minute); run vsr-export {model} -o PKG and pass --model PKG, or run once without --dry-run"
                )
            check_real_folder(found, "the cached export")
            package = Package.open(found, verify=True)
            _check_manifest_digest(found)
            return package
        target = cache_folder("packages") / name
        if os.path.lexists(target):
            try:
                check_real_folder(target, "the cached export")
                package = Package.open(target, verify=True)
                _check_manifest_digest(target)
                return package
            except (PackageError, OSError) as exc:
                log(f"the cached export of {model} is damaged or was changed ({exc}); exporting it again")
        else:
            log(f"exporting {model} to {target} (first use; later runs reuse it) ...")
        package = export_package(
            pretrained(model), target, weights=model, checkpoints=[source], overwrite=True, log=log
        )
        record_manifest_digest(target)
        return package
    if model in networks():
        names = [w.name for w in networks()[model].weights]
        hint = f" (its released weights: {', '.join(names)})" if names else ""
        raise PackageError(
            f"--model {model} names a network, not weights{hint}: export it with "
            f"vsr-export {model} --checkpoint FILE -o PKG and pass --model PKG"
        )
    if path.exists():
        raise PackageError(f"{model} is not a model package folder; make one with vsr-export")
    raise PackageError(
        f"--model {model!r} is neither a package folder nor known weights; known: {', '.join(sorted(weights))}"
    )


def _manifest_digest_path(entry: Path) -> Path:
    """Where the sha256 of a cached export's ``manifest.json`` is kept: beside the entry, since the
    manifest cannot record its own digest."""
    return entry.with_name(entry.name + ".manifest.sha256")


def record_manifest_digest(entry: Path) -> None:
    """Record the sha256 of a cache entry's ``manifest.json`` beside it, as an export into the cache does
    once it is complete (:func:`resolve_package` trusts the entry only while the manifest still matches)."""
    write_text_atomic(_manifest_digest_path(entry), sha256_file(entry / "manifest.json") + "\n")


def _check_manifest_digest(entry: Path) -> None:
    """Raise :class:`PackageError` unless the cached export's manifest is the one recorded when it was written."""
    record = _manifest_digest_path(entry)
    try:
        if record.is_symlink():
            raise PackageError(f"{record} is a symbolic link")
        recorded = record.read_text(encoding="ascii", errors="replace")[:65].strip()
    except FileNotFoundError:
        raise PackageError(f"no digest of {entry / 'manifest.json'} was recorded when it was written") from None
    if sha256_file(entry / "manifest.json") != recorded:
        raise PackageError(f"{entry / 'manifest.json'} is not the manifest recorded when it was written")


@dataclass(frozen=True)
class Unexported:
    """A network of the registry in memory, read like a :class:`Package` by the pipeline and the PyTorch
    backend (its plan, scale, constraints; :func:`~runtime.backends.model_for_package` copies ``network``).
    It has no graphs: the backends that run exported graphs refuse it, saying so."""

    network: VSRNetwork
    weights: str | None = None  # the released weights it carries, None for random ones

    @property
    def manifest(self) -> dict[str, Any]:
        return {"model": self.network.name, "config": self.network.init_args, "weights": self.weights}

    @property
    def root(self) -> str:
        return f"{self.network.name} (built from the registry, not exported)"

    @property
    def model(self) -> str:
        return self.network.name

    @property
    def plan(self) -> Plan:
        return self.network.plan()

    @property
    def scale(self) -> int:
        return self.network.scale

    @property
    def scale_range(self) -> tuple[float, float] | None:
        return self.network.scale_range

    @property
    def constraints(self) -> SizeConstraints:
        return self.network.constraints

    @property
    def clip_frames(self) -> int | None:
        return self.network.clip_frames

    @property
    def output_rate(self) -> int:
        return self.plan.output_rate

    @property
    def precisions(self) -> list[str]:
        return []

    def stage_names(self) -> list[str]:
        return list(self.network.stages())

    def stage_file(self, stage: str, precision: str = "fp32") -> Path:
        raise PackageError(
            f"{self.root} has no graphs: only the torch backend runs it; export it with vsr-export and pass "
            "--model PKG for the others"
        )


def resolve_unexported(model: str, random_weights: bool = False, quick: bool = False, seed: int = 0) -> Unexported:
    """--model as released weights (installed; nothing is exported), or with ``random_weights`` as a network
    of the registry with random weights (seeded), in its released configuration or, with ``quick``, the
    small one its contract test uses."""
    if not random_weights:
        if quick:
            raise PackageError("--quick builds a small configuration with random weights: add --random-weights")
        if model not in all_weights():
            hint = " (a network: add --random-weights)" if model in networks() else ""
            known = ", ".join(sorted(all_weights()))
            raise PackageError(f"--model {model!r} is not known released weights{hint}; known: {known}")
        return Unexported(pretrained(model), weights=model)
    entry = network(model)
    torch.manual_seed(seed)
    built = entry.build(**entry.quick.config) if quick else entry.build()
    return Unexported(built)


def resolve_model(
    model: str, no_export: bool, random_weights: bool, quick: bool, log: Callable[[str], None] = print
) -> Package | Unexported:
    """What vsr-bench's and vsr-parity's ``--model`` with ``--no-export``, ``--random-weights`` and
    ``--quick`` name: a package (exported into the cache for a zoo name), or a network built from the registry."""
    if no_export or random_weights or quick:
        return resolve_unexported(model, random_weights, quick)
    return resolve_package(model, log=log)
