"""What the user names with ``--model``: a package folder, or a zoo name exported into the cache.

This is the one place that may run the exporter on the user's behalf; the runtime's core
(executor, backends, pipeline) only ever reads packages. What comes from the cache is verified
before it is used: the export must be this user's own, with no symbolic link in it, and every file
must match the sha256 recorded when it was written; anything else is exported again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from export.atomic import check_real_folder
from export.format import Package, PackageError, cache_folder, tool_version
from export.package import export_package
from vsr_models.registry import all_weights, networks, pretrained


def resolve_package(model: str, log: Callable[[str], None] = print) -> Package:
    """A package folder as given, or the cached export of a zoo name (exported on first use).

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
        target = cache_folder("packages") / f"{model}-{digest}-vsr{tool_version()}"
        if os.path.lexists(target):
            try:
                check_real_folder(target, "the cached export")
                return Package.open(target, verify=True)
            except (PackageError, OSError) as exc:
                log(f"the cached export of {model} is damaged or was changed ({exc}); exporting it again")
        else:
            log(f"exporting {model} to {target} (first use; later runs reuse it) ...")
        return export_package(pretrained(model), target, weights=model, checkpoints=[source], overwrite=True)
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
