"""Imports run one way, with no cycles, and running a package needs neither onnx nor the exporter.

Layers, lowest first (a module may import its own layer and the ones below, never above):

0. the networks: ``vsr_models``;
1. export and engine building: ``export``, ``engines``;
2. the runtime core: ``runtime`` (executor, backends, pipeline, video, segments, live runs, options,
   package resolution), everything but ``runtime.cli``;
3. training: ``training``;
4. the tools: ``runtime.cli``, one module per console script and the flag groups they share.

Imports inside functions count too: a cycle hidden in a function is still a cycle. Besides modules,
the packages (the tools counted as one of their own) form no cycle either.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from export.format import Package

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vsr_models", "export", "engines", "runtime", "training")
LAYERS = {"vsr_models": 0, "export": 1, "engines": 1, "runtime": 2, "training": 3, "runtime.cli": 4}


def package(module: str) -> str:
    """The package ``module`` belongs to (the tools, ``runtime.cli``, apart from the runtime core)."""
    parts = module.split(".")
    return "runtime.cli" if parts[:2] == ["runtime", "cli"] else parts[0]


def layer(module: str) -> int:
    return LAYERS[package(module)]


def modules() -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported by ``name`` (relative imports resolved, ``from pkg import mod`` counted as mod)."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            if node.level == 0:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_layers_import_one_way() -> None:
    wrong = sorted(
        f"{module} (layer {layer(module)}) imports {dep} (layer {layer(dep)})"
        for module, deps in graph().items()
        for dep in deps
        if layer(dep) > layer(module)
    )
    assert not wrong, "\n".join(wrong)


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk of ``edges`` meets, as ``a -> b -> a``."""
    state: dict[str, int] = {}
    found: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                found.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles() -> None:
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph().items()}
    found = cycles(edges)
    assert not found, "\n".join(found)


def test_no_cycles_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for module, deps in graph().items():
        edges.setdefault(package(module), set()).update(package(d) for d in deps if package(d) != package(module))
    found = cycles(edges)
    assert not found, "\n".join(found)


def test_running_a_package_needs_neither_onnx_nor_the_exporter(basicvsr_package: Package) -> None:
    """The executor, the package reader and its plan load without onnx, torch or export.package."""
    code = (
        "import sys; import runtime.executor; from export.format import Package; "
        f"p = Package.open({str(basicvsr_package.root)!r}); p.plan; p.constraints; "
        "print(sorted(m for m in ('onnx', 'torch', 'export.package', 'vsr_models.registry') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
