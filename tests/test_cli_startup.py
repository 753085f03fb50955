"""Every console script answers ``--help`` and a wrong flag without importing its heavy libraries: the
commands declare their flags in modules that import nothing heavy and import their work when they run
(:mod:`runtime.cli.commands`). A functional check (which modules got imported), not a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("run", "export", "build_engine", "parity", "bench", "train")
#: What a --help or a flag error must not load (seconds each under load on a 2-core CPU).
HEAVY = ("torch", "onnxruntime", "onnx", "av", "openvino", "ray", "numpy", "tensorrt", "polygraphy")

_PROBE = """
import json, sys
from runtime.cli.{tool} import main
answers = []
for argv in (["--help"], ["--no-such-flag"]):
    try:
        main(argv, standalone_mode=False)
        answers.append("ok")
    except SystemExit as exc:
        answers.append(f"exit {{exc.code}}")
    except Exception as exc:  # click's UsageError for the flag
        answers.append(type(exc).__name__)
print(json.dumps({{"answers": answers, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


@pytest.mark.parametrize("tool", TOOLS)
def test_help_and_flag_errors_import_no_heavy_library(tool: str) -> None:
    code = _PROBE.format(tool=tool, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["answers"] == ["ok", "NoSuchOption"], seen
    assert seen["heavy"] == [], f"vsr-{tool} --help imported {seen['heavy']}"


def test_the_work_is_imported_when_a_command_runs() -> None:
    """The other side: running a command does load its work (so the check above is not vacuous)."""
    code = (
        "import sys\nfrom runtime.cli.export import main\n"
        "main(['--list'], standalone_mode=False)\n"
        "print('torch' in sys.modules, 'runtime.cli.commands.export' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "True True", result.stdout + result.stderr
    assert "basicvsr" in result.stdout
