"""The work of vsr-bench (:mod:`runtime.cli.bench`): build the contenders, time them, report."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from export.format import Package
from vsr_models.errors import VSRError
from vsr_models.scales import Scale, output_size

from ...backends import BACKENDS, make_backend, parse_levers
from ...backends.ort import OrtBackend
from ...backends.ov import import_openvino
from ...devices import Device
from ...executor import Backend
from ...pipeline import resolve_scale, upscale_clip
from ...resolve import Unexported, resolve_model
from ...samples import load_lr, psnr
from ..common import (
    say,
)
from ..measure import device_name, peak_gflops, stage_flops, top_ops, torch_op_profile

PRECISIONS = ("fp32", "fp16", "bf16")


class ContenderError(VSRError, ValueError):
    """A contender written wrongly (unknown backend or precision)."""


class _Timed:
    """Wraps a backend and accumulates wall time per stage (synchronising CUDA if used); records the
    input shapes of each stage's first call, and, while ``ops`` is set, each op's time per stage."""

    def __init__(self, backend: Backend, device: Device) -> None:
        self.inner, self.name = backend, backend.name
        self.device = device
        self.sync = torch.cuda.synchronize if device.is_cuda and torch.cuda.is_available() else None
        self.times: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        self.ops: dict[str, dict[str, float]] | None = None

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def run(self, stage: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if stage not in self.shapes:
            self.shapes[stage] = {k: self.inner.shape(v) for k, v in inputs.items()}
        start = time.perf_counter()
        if self.ops is not None:
            out = torch_op_profile(lambda: self.inner.run(stage, inputs), self.device, self.ops.setdefault(stage, {}))
        else:
            out = self.inner.run(stage, inputs)
        if self.sync:
            self.sync()
        self.times[stage] += time.perf_counter() - start
        self.calls[stage] += 1
        return out


@dataclass
class Run:
    seconds: float
    times: dict[str, float]
    calls: dict[str, int]


@dataclass
class Contender:
    """One column of the table: what it is, its timed runs, its output and (with --profile) its op times."""

    label: str
    kind: str
    precision: str
    levers: dict[str, Any]
    backend: _Timed | None = None
    runs: list[Run] = field(default_factory=list)
    output: np.ndarray | None = None
    ops: dict[str, dict[str, float]] | None = None
    note: str | None = None
    model: str | None = None  # another model than --model
    package: Package | Unexported | None = None
    scale: Scale | None = None
    flops: dict[str, float] = field(default_factory=dict)


def parse_contenders(text: str) -> list[Contender]:
    """``"torch:fp32,onnxruntime:fp32+spinning"`` -> contenders (levers checked, not yet built)."""
    contenders = []
    for spec in (s.strip() for s in text.split(",")):
        if not spec:
            continue
        model, _, rest = spec.rpartition("@")
        head, *levers = rest.split("+")
        kind, _, precision = head.partition(":")
        precision = precision or "fp32"
        if kind not in BACKENDS or kind == "auto":
            raise ContenderError(f"contender {spec!r}: backend {kind!r}; choose from {', '.join(BACKENDS[1:])}")
        if precision not in PRECISIONS:
            raise ContenderError(f"contender {spec!r}: precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        label = (f"{model}@" if model else "") + "+".join([f"{kind}:{precision}", *levers])
        contenders.append(Contender(label, kind, precision, parse_levers(kind, levers), model=model or None))
    if not contenders:
        raise ContenderError("--contenders is empty: name at least one, e.g. torch:fp32,onnxruntime:fp32")
    return contenders


def execute(
    model: str,
    no_export: bool,
    random_weights: bool,
    quick: bool,
    size: tuple[int, int],
    scale: tuple[float, float] | None,
    frames: int,
    contenders: str,
    device: Device,
    threads: int,
    repeat: int,
    profile: bool,
    top: int,
    peak_side: int | None,
    json_path: Path | None,
) -> None:
    """The work of ``vsr-bench`` (:func:`runtime.cli.bench.main`), with its parsed flags."""
    entries = parse_contenders(contenders)
    h, w = size
    packages = {None: resolve_model(model, no_export, random_weights, quick, log=say)}
    for c in entries:
        if c.model not in packages:
            packages[c.model] = resolve_model(c.model, no_export, random_weights, quick, log=say)
        c.package = packages[c.model]
        c.scale = resolve_scale(c.package, h, w, scale)
    lr = _frames(h, w, frames)
    if threads:
        torch.set_num_threads(threads)
    _build(entries, device, threads, lr[:2])
    live = _running(entries)
    for c in live:
        assert c.backend is not None and c.package is not None
        c.flops = stage_flops(c.package, c.backend.shapes)
    precisions = {_peak_key(c) for c in live}
    peaks: dict[str, list[float]] = defaultdict(list)
    how: dict[str, str] = {}
    for _ in range(repeat):
        for precision, (gflops, text) in peak_gflops(device, precisions, threads, peak_side).items():
            peaks[precision].append(gflops)
            how[precision] = text
        for c in _running(entries):
            try:
                _timed_run(c, lr)
            except Exception as exc:
                _failed(c, "a timed run", exc)
    live = _running(entries)
    if profile:
        for c in live:
            try:
                _profile(c, device, threads, lr)
            except Exception as exc:
                c.note = f"its profiled run failed ({_reason(exc)}); its timed runs stand"
    best_peaks = {p: (max(v), min(v), how[p]) for p, v in peaks.items()}
    _report(entries, best_peaks, h, w, frames, device, threads)
    if json_path is not None:
        _write_json(json_path, entries, best_peaks, h, w, frames, device)
    if profile:
        for c in live:
            _profile_report(c, top)


def _running(entries: list[Contender]) -> list[Contender]:
    """The contenders still in the race; a clear error when none is."""
    live = [c for c in entries if c.backend is not None]
    if not live:
        reasons = "; ".join(f"{c.label}: {c.note}" for c in entries)
        raise click.ClickException(f"no contender could run here ({reasons})")
    return live


def _timed_run(c: Contender, lr: np.ndarray) -> None:
    assert c.backend is not None and c.package is not None and c.scale is not None
    c.backend.times.clear()
    c.backend.calls.clear()
    start = time.perf_counter()
    out = upscale_clip(c.backend, c.package, lr, c.scale)
    c.runs.append(Run(time.perf_counter() - start, dict(c.backend.times), dict(c.backend.calls)))
    if c.output is None:
        c.output = np.clip(out, 0, 1)


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _failed(c: Contender, when: str, exc: Exception) -> None:
    """Take ``c`` out of the race, noting why; a failure that is not a user error keeps its traceback (stderr)."""
    if not isinstance(exc, VSRError):
        say(f"{c.label} failed in {when}:\n{traceback.format_exc()}")
    c.note = f"failed in {when}: {_reason(exc)}"
    c.backend, c.runs, c.output = None, [], None


def _peak_key(c: Contender) -> str:
    """Which measured peak ``c`` is held to: its precision's, or TF32's for FP32 with the ``tf32`` lever."""
    return "tf32" if c.precision == "fp32" and c.levers.get("tf32") else c.precision


def _frames(h: int, w: int, frames: int) -> np.ndarray:
    clip = load_lr(None, frames)
    return (
        torch.nn.functional.interpolate(
            torch.from_numpy(clip), size=(h, w), mode="bicubic", antialias=True, align_corners=False
        )
        .clamp(0, 1)
        .numpy()
    )


def _build(entries: list[Contender], device: Device, threads: int, warm: np.ndarray) -> None:
    """Build and warm up (allocations, lazy initialisation, CUDA-graph capture, compilation) every
    contender; one that cannot run here, or fails in its warm-up, is kept with a note."""
    for c in entries:
        assert c.package is not None and c.scale is not None
        try:
            backend = make_backend(c.kind, c.package, device, c.precision, threads, log=say, levers=c.levers)
        except VSRError as exc:
            c.note = str(exc)
            continue
        except Exception as exc:
            _failed(c, "its set-up", exc)
            continue
        c.backend = _Timed(backend, device)
        try:
            upscale_clip(c.backend, c.package, warm, c.scale)
        except Exception as exc:
            _failed(c, "its warm-up", exc)


def _profile(c: Contender, device: Device, threads: int, lr: np.ndarray) -> None:
    """One run of ``c`` under its backend's profiler: ``c.ops`` (stage -> op -> seconds)."""
    assert c.backend is not None and c.package is not None
    package, scale = c.package, c.scale
    if c.kind == "onnxruntime":
        with tempfile.TemporaryDirectory(prefix="vsr-bench-profile-") as folder:
            levers = c.levers | {"profile": Path(folder)}
            backend = make_backend(c.kind, package, device, c.precision, threads, levers=levers)
            assert isinstance(backend, OrtBackend)
            upscale_clip(backend, package, lr, scale)
            c.ops = backend.end_profiling()
    elif c.kind == "torch":
        c.backend.ops = {}
        upscale_clip(c.backend, package, lr, scale)
        c.ops, c.backend.ops = c.backend.ops, None


def _median_range(values: list[float], fmt: str) -> str:
    text = format(statistics.median(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)}-{format(max(values), fmt)})"
    return text


def _report(
    entries: list[Contender],
    peaks: dict[str, tuple[float, float, str]],
    h: int,
    w: int,
    frames: int,
    device: Device,
    threads: int,
) -> None:
    live = [c for c in entries if c.runs]
    base = live[0]
    assert base.package is not None and base.scale is not None
    out_h, out_w = output_size(h, w, base.scale)
    repeat = len(base.runs)
    owners: dict[str | Path, Contender] = {}  # the first contender of each model, in the contenders' order
    for c in live:
        if c.package is not None:
            owners.setdefault(c.package.root, c)
    several = len(owners) > 1  # stage rows then name their model, and each contender counts its own FLOPs
    models = ", ".join(dict.fromkeys(c.package.manifest["model"] for c in owners.values() if c.package is not None))
    versions = f"torch {torch.__version__}, onnxruntime {ort.__version__}"
    if any(c.kind == "openvino" for c in live):
        versions += f", openvino {import_openvino().__version__.split('-')[0]}"
    title = (
        f"{models} {h}x{w} -> {out_h}x{out_w}, {frames} frames, {device}: {device_name(device)} "
        f"({torch.get_num_threads()} torch threads, ONNX Runtime threads {threads or 'all'}; {versions}); "
        f"{repeat} interleaved run(s) each, median (range)"
    )
    table = Table(title=title)
    table.add_column("stage: ms per call (% of peak)")
    table.add_column("GFLOP per call", justify="right")
    for c in live:
        table.add_column(c.label, justify="right")
    for owner in owners.values():
        assert owner.package is not None
        flops, model = owner.flops, owner.package.manifest["model"]
        for stage in owner.runs[0].times:
            row = [f"{model}: {stage}" if several else stage, f"{flops[stage] / 1e9:.2f}" if stage in flops else "-"]
            for c in live:
                if c.package is None or c.package.root != owner.package.root:
                    row.append("-")
                    continue
                per_call = [r.times[stage] / r.calls[stage] for r in c.runs]
                cell = _median_range([1000 * t for t in per_call], ".1f")
                if stage in flops:
                    cell += f" ({100 * flops[stage] / statistics.median(per_call) / 1e9 / _peak(peaks, c):.0f}%)"
                row.append(cell)
            table.add_row(*row)
    table.add_row("ms per frame", "", *[_median_range([1e3 * r.seconds / frames for r in c.runs], ".0f") for c in live])
    fps = [frames / statistics.median(r.seconds for r in c.runs) for c in live]
    table.add_row("frames per second", "", *[f"{f:.3f}" for f in fps])
    table.add_row(
        f"speed-up vs {base.label}",
        "",
        *[_median_range([b.seconds / r.seconds for b, r in zip(base.runs, c.runs)], ".2f") + "x" for c in live],
    )
    per_frame = {c.label: _flops_per_frame(c, frames) for c in live}
    if several:
        table.add_row("GFLOP per frame", "", *[f"{per_frame[c.label] / 1e9:.1f}" for c in live])
    table.add_row(
        "% of peak (whole run)",
        "" if several else f"{per_frame[base.label] / 1e9:.1f} per frame",
        *[
            _median_range(
                [100 * per_frame[c.label] * frames / r.seconds / 1e9 / _peak(peaks, c) for r in c.runs], ".0f"
            )
            for c in live
        ],
    )
    assert base.output is not None
    same = [c is not base and c.package is not None and c.package.root == base.package.root for c in live]
    table.add_row(
        f"PSNR vs {base.label} (dB)",
        "",
        *[f"{psnr(c.output, base.output):.2f}" if ok else "-" for c, ok in zip(live, same)],
    )
    Console().print(table)
    for precision, (best, worst, how) in sorted(peaks.items()):
        spread = f", {worst:.0f} in the slowest round" if len(live[0].runs) > 1 else ""
        print(f"peak {precision.upper()}: {best:.0f} GFLOP/s ({how}, best round{spread})")
    uncounted = sorted({s for c in live for s in c.runs[0].times if s not in c.flops})
    if uncounted:
        print(f"FLOPs not counted for: {', '.join(uncounted)} (the meta device cannot run them)")
    for c in entries:
        if c.note:
            print(f"{c.label}: {c.note}" if c.runs else f"{c.label}: not run: {c.note}")


def _flops_per_frame(c: Contender, frames: int) -> float:
    """The FLOPs ``c``'s network spends per frame (its counted stages)."""
    run = c.runs[0]
    return sum(c.flops[s] * run.calls[s] for s in run.times if s in c.flops) / frames


def _peak(peaks: dict[str, tuple[float, float, str]], c: Contender) -> float:
    return peaks.get(_peak_key(c), peaks["fp32"])[0]


def _write_json(
    path: Path,
    entries: list[Contender],
    peaks: dict[str, tuple[float, float, str]],
    h: int,
    w: int,
    frames: int,
    device: Device,
) -> None:
    """The run's figures as JSON (what ``tests/device_check.sh`` puts in its summary); a contender of
    another model carries its own model and GFLOP per frame, and no PSNR."""
    live = [c for c in entries if c.runs]
    base = live[0]
    assert base.package is not None
    contenders = []
    for c in entries:
        assert c.package is not None
        entry: dict[str, Any] = {
            "label": c.label,
            "model": c.package.manifest["model"],
            "ran": bool(c.runs),
            "note": c.note,
        }
        if c.runs:
            seconds = statistics.median(r.seconds for r in c.runs)
            per_frame = _flops_per_frame(c, frames)
            same = c.package.root == base.package.root
            assert c.output is not None and base.output is not None
            entry |= {
                "fps": frames / seconds,
                "gflop_per_frame": per_frame / 1e9,
                "peak_fraction": per_frame * frames / seconds / 1e9 / _peak(peaks, c),
                "peak": _peak_key(c) if _peak_key(c) in peaks else "fp32",
                "speedup": statistics.median(b.seconds / r.seconds for b, r in zip(base.runs, c.runs)),
                "psnr_vs_baseline": psnr(c.output, base.output) if same and c is not base else None,
            }
        contenders.append(entry)
    record = {
        "model": base.package.manifest["model"],
        "size": [h, w],
        "frames": frames,
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "rounds": len(base.runs),
        "baseline": base.label,
        "gflop_per_frame": _flops_per_frame(base, frames) / 1e9,
        "peaks_gflops": {p: best for p, (best, _, _) in peaks.items()},
        "contenders": contenders,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")  # PSNR inf (equal outputs) is written Infinity


def _profile_report(c: Contender, top: int) -> None:
    if c.ops is None:
        print(f"{c.label}: no per-op profile ({c.kind} has no profiler here)")
        return
    run = c.runs[0]
    table = Table(title=f"{c.label}: where the time goes (profiled run; op self time)")
    table.add_column("stage")
    table.add_column("op")
    table.add_column("ms per stage call", justify="right")
    table.add_column("share of stage", justify="right")
    for stage, per_op in c.ops.items():
        calls = run.calls.get(stage, 1)
        for i, (op, seconds, share) in enumerate(top_ops(per_op, top)):
            table.add_row(stage if i == 0 else "", op, f"{1000 * seconds / calls:.2f}", f"{100 * share:.0f}%")
    Console().print(table)
