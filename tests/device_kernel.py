"""The device check's kernel step: IART's ``vsr::ImplicitWarp`` Triton kernel against its PyTorch reference.

    python3 tests/device_kernel.py [--cpu] [--figures FILE]

On a GPU: the kernel compiled for the GPU's own target, named explicitly (:func:`cuda_target`), needing
no scratch buffer and at most 48 KiB of shared memory; launched from PyTorch on IART's configuration
(C=120, 6 heads; the clamped-corner case of tests/test_implicit_warp_plugin.py) against the reference
op (:func:`implicit_warp`): FP32 within 1e-5, FP16 within 2e-2; then its time per call against the
reference's at (1, 120, 64, 64) and (1, 120, 180, 320) features (CUDA events, the median of five
blocks of 20 calls after a warm-up; per call as launched from PyTorch, so host overhead counts where
the GPU work is small).

With --cpu: the same compile for sm_90 (PTX needs no GPU), and the kernel run in Triton's CPU interpreter
at C=24 and C=32 against the reference (its time is the interpreter's, so none is given).

Each figure is printed and, with --figures, written to FILE, one line each. Exits 1 when a bound fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.plugins import implicit_warp as plugin  # noqa: E402
from tests.test_implicit_warp_plugin import _case  # noqa: E402
from vsr_models.ops.implicit_warp import implicit_warp, key_position_encoding, pe_divisors  # noqa: E402

#: IART's implicit warp: embed_dim 120, 6 heads.
CHANNELS, HEADS = 120, 6
FP32_BOUND, FP16_BOUND = 1e-5, 2e-2


def compile_for(capability: tuple[int, int]) -> list[str]:
    """Compile FP32 and FP16 kernels for ``capability``; the checks of :func:`plugin.compile_ptx` raise."""
    figures = []
    for feature_type in ("fp32", "fp16"):
        target = plugin.cuda_target(capability)
        _, ptx, meta = plugin.compile_ptx(feature_type, CHANNELS, HEADS, (CHANNELS // HEADS) ** -0.5, target)
        version = next((line.split()[1] for line in ptx.splitlines() if line.startswith(".version")), "?")
        figures.append(
            f"compiled {feature_type} for sm_{target.arch} (PTX {version}, Triton {plugin.triton_version()}): "
            f"{meta.shared} B shared memory, global scratch {meta.global_scratch_size or 0} B, "
            f"profile scratch {getattr(meta, 'profile_scratch_size', 0) or 0} B"
        )
    return figures


def _max_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return (got.float() - expected.float()).abs().max().item()


def parity(device: str, sizes: list[tuple[int, int]]) -> tuple[list[str], dict[str, bool]]:
    """The kernel against the reference for (C, heads) cases, in FP32 and FP16: the figures, and per dtype
    whether every case held its bound."""
    figures, ok = [], {"float32": True, "float16": True}
    for c, heads in sizes:
        args, heads = _case(n=2, c=c, h=7, w=9, heads=heads, device=device)
        expected = implicit_warp(*args.values(), num_heads=heads)
        for dtype, bound in ((torch.float32, FP32_BOUND), (torch.float16, FP16_BOUND)):
            cast = {k: v if k in ("flow", "key_pe", "divisors") else v.to(dtype) for k, v in args.items()}
            got = plugin.launch(*cast.values(), num_heads=heads)
            error = _max_error(got, expected)
            held = error <= bound and got.dtype == dtype
            name = str(dtype).removeprefix("torch.")
            ok[name] &= held
            figures.append(
                f"{name} C={c} {heads} heads vs reference: max abs {error:.2e} "
                f"({'within' if held else 'BEYOND'} {bound:g})"
            )
    return figures, ok


def _features(n: int, c: int, h: int, w: int, device: str) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    r = lambda *s, k=1.0: (torch.randn(*s, generator=g) * k).to(device)  # noqa: E731
    return {
        "source": r(n, c, h, w),
        "target": r(n, c, h, w),
        "flow": r(n, 2, h, w, k=3.0),
        "q_weight": r(c, c, k=c**-0.5),
        "q_bias": r(c, k=0.1),
        "k_weight": r(c, c, k=c**-0.5),
        "k_bias": r(c, k=0.1),
        "v_weight": r(c, c, k=c**-0.5),
        "v_bias": r(c, k=0.1),
        "key_pe": key_position_encoding(c, 0.01).reshape(4, c).to(device),
        "divisors": pe_divisors(c, 0.01).to(device),
    }


def _ms_per_call(call: Any, calls: int = 20, blocks: int = 5) -> float:
    call()
    torch.cuda.synchronize()
    times = []
    for _ in range(blocks):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def timing() -> list[str]:
    figures = []
    for h, w in ((64, 64), (180, 320)):
        args = _features(1, CHANNELS, h, w, "cuda")
        with torch.inference_mode():
            ours = _ms_per_call(lambda args=args: plugin.launch(*args.values(), num_heads=HEADS))
            ref = _ms_per_call(lambda args=args: implicit_warp(*args.values(), num_heads=HEADS))
        figures.append(
            f"time (1, {CHANNELS}, {h}, {w}) fp32: kernel {ours:.3f} ms, reference op {ref:.3f} ms ({ref / ours:.2f}x)"
        )
    return figures


_INTERPRETER = """
import json, sys, types
import triton.language as tl
sys.path.insert(0, {root!r})
from engines.plugins import implicit_warp_kernel as kernel_module
from tests import device_kernel
# The interpreter has no libdevice: tl.math's sin, cos and exp stand in (the rest runs as written); looked
# up at each call, when the interpreter has patched them.
kernel_module.libdevice = types.SimpleNamespace(
    sin=lambda x: tl.math.sin(x), cos=lambda x: tl.math.cos(x), exp=lambda x: tl.math.exp(x)
)
print(json.dumps(device_kernel.parity("cpu", [(24, 3), (32, 4)])))
"""


def interpreted_parity() -> tuple[list[str], dict[str, bool]]:
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = _INTERPRETER.format(root=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the interpreter run failed:\n{done.stderr[-3000:]}")
    figures, ok = json.loads(done.stdout.strip().splitlines()[-1])
    return [f"interpreter (CPU): {f}" for f in figures], ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="no GPU: compile for sm_90, run in the interpreter")
    parser.add_argument("--figures", type=Path, help="also write the figures to this file")
    opts = parser.parse_args()
    if opts.cpu:
        figures = compile_for((9, 0))
        more, ok = interpreted_parity()
        figures += [*more, "time: none (the interpreter is not the kernel)"]
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU visible to torch: run with --cpu", file=sys.stderr)
            return 2
        figures = compile_for(torch.cuda.get_device_capability())
        more, ok = parity("cuda", [(CHANNELS, HEADS), (32, 4), (24, 3)])
        figures += more
        if ok["float32"]:  # a kernel that is wrong in FP32 is not timed
            figures += timing()
    for line in figures:
        print(line)
    if opts.figures:
        opts.figures.write_text("".join(f"{line}\n" for line in figures))
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
