"""TensorRT plugin for ``vsr::ImplicitWarp``: a Quickly Deployable Plugin with an AOT Triton kernel.

**Status: written against the documented ``tensorrt.plugin`` API (TensorRT >= 10.9, AOT QDPs) and
Triton 3.x, and untested here.** The machine this was written on has no GPU and no TensorRT: the
Triton kernel has only been compiled to PTX for a named target (``tests/test_implicit_warp_plugin.py``,
``-m slow``, when Triton is installed); it has never run, and no engine has been built with the
plugin. The GPU test (kernel vs :func:`vsr_models.ops.implicit_warp.implicit_warp`) and the TensorRT
test (a one-node engine) exist but were skipped. Treat the numbers and the build path as unverified.

What is here:

* :func:`implicit_warp_kernel` (defined by :func:`kernel`, which imports Triton): one program per
  ``BLOCK_P`` target pixels, all ``C`` channels (padded to ``C_PAD``, a power of two, with masks).
  It follows the op contract in :mod:`vsr_models.ops.implicit_warp`: FP32 positions
  ``(i + dy, j + dx)``, floor, offsets, the four corners clamped to the frame; the query code
  ``[enc(fy / (2 + 1e-6) * 2 pi), enc(fx / (2 + 1e-6) * 2 pi)]`` (y first, interleaved sin/cos,
  divisors ``pe_divisors``) in FP32; ``q = Wq (x + code) + bq``; per slot ``s = 2a + b``
  ``k_s, v_s = W (y_s + key_pe[s]) + b``; per-head logits ``scale * q . k_s`` summed with a
  ``tl.dot`` against an in-kernel one-hot channel->head matrix; softmax over the 4 slots;
  ``out = sum_s attn_s v_s``. Features (source, target, weights, biases, output) are FP32 or FP16;
  the flow, ``key_pe`` and ``pe_divisors`` are FP32; projections accumulate in FP32, FP32 matmuls
  use ``input_precision="ieee"`` (no TF32).
* :func:`launch` runs the kernel on CUDA torch tensors (for tests; the engine does not use it).
* :func:`register` puts ``vsr::ImplicitWarp`` into TensorRT's plugin registry: ``@trtp.register``
  (output ``target.like()``), ``@trtp.autotune`` and ``@trtp.aot_impl``, which compiles the kernel
  to PTX for the GPU of the build (``triton.compile`` with no target: the current device).
  TensorRT and Triton are imported inside it only; importing this module needs neither.

Rounding notes (FP32): the offsets are divided by ``2 + 1e-6`` as a multiplication by the FP32
reciprocal, which is what torch's CUDA ``tensor / python_scalar`` does (torch on the CPU divides;
the two differ by at most one ulp of the angle); the code arguments use a correctly rounded division
(``div_rn``) and libdevice ``sin``/``cos``/``exp``, as torch's CUDA kernels do.

AOT plugins do not serialise attributes, so ``num_heads`` and ``scale`` (and ``C``, read from the
build-time-constant shape of ``q_weight``) are compiled into the PTX as constants; ``N``, ``h`` and
``w`` may be dynamic: they reach the kernel as int32 shape expressions.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from . import PluginSpec
from . import register as _register_spec

NAMESPACE = "vsr"
NAME = "ImplicitWarp"
VERSION = "1"
PLUGIN_ID = f"{NAMESPACE}::{NAME}"

#: Target pixels per program, and warps per program, of the single tactic.
BLOCK_P = 32
NUM_WARPS = 4

#: Input order of the op (and of the kernel's pointer arguments), then the output.
INPUTS = (
    "source",
    "target",
    "flow",
    "q_weight",
    "q_bias",
    "k_weight",
    "k_bias",
    "v_weight",
    "v_bias",
    "key_pe",
    "pe_divisors",
)
#: Inputs that are always FP32 (coordinates and codes); the rest follow the feature dtype.
FP32_INPUTS = frozenset({"flow", "key_pe", "pe_divisors"})

#: The constants of the query code, rounded to FP32 exactly as torch rounds them.
_WINDOW = 2
_EPS = 1e-6


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


#: FP32 reciprocal of FP32(2 + 1e-6) (torch CUDA divides by a Python scalar this way).
INV_WINDOW = _f32(1.0 / _f32(_WINDOW + _EPS))
TWO_PI = _f32(2 * math.pi)


def _pow2(n: int, floor: int = 16) -> int:
    """Next power of two >= n, at least ``floor`` (``tl.dot`` needs every dimension >= 16)."""
    return max(floor, 1 << max(0, n - 1).bit_length())


def kernel_constants(channels: int, num_heads: int, scale: float, block_p: int = BLOCK_P) -> dict[str, Any]:
    """The constexpr arguments of :func:`implicit_warp_kernel` for one configuration."""
    if channels % num_heads or channels % 4:
        raise ValueError(f"implicit warp needs channels ({channels}) divisible by num_heads ({num_heads}) and by 4")
    return {
        "C": channels,
        "HEADS": num_heads,
        "SCALE": float(scale),
        "INV_WINDOW": INV_WINDOW,
        "TWO_PI": TWO_PI,
        "C_PAD": _pow2(channels),
        "H_PAD": _pow2(num_heads),
        "BLOCK_P": block_p,
    }


def kernel_signature(feature_type: str) -> dict[str, str]:
    """Triton signature of :func:`implicit_warp_kernel`: ``feature_type`` is ``"fp32"`` or ``"fp16"``."""
    if feature_type not in ("fp32", "fp16"):
        raise ValueError(f"feature type must be fp32 or fp16, got {feature_type!r}")
    sig = {name: "*fp32" if name in FP32_INPUTS else f"*{feature_type}" for name in INPUTS}
    sig.update({"n_pixels": "i32", "hw": "i32", "height": "i32", "width": "i32", "output": f"*{feature_type}"})
    sig.update(dict.fromkeys(("C", "HEADS", "SCALE", "INV_WINDOW", "TWO_PI", "C_PAD", "H_PAD", "BLOCK_P"), "constexpr"))
    return sig


_KERNEL: Any = None


def _import_triton() -> Any:
    try:
        import triton
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the vsr::ImplicitWarp kernel needs Triton (pip install triton; it is not a dependency of this project)"
        ) from exc
    return triton


def kernel() -> Any:
    """The Triton kernel ``implicit_warp_kernel`` (imports Triton on first use)."""
    global _KERNEL, tl, _corner, implicit_warp_kernel
    if _KERNEL is not None:
        return _KERNEL
    triton = _import_triton()
    import triton.language as tl
    from triton.language.extra import libdevice

    globals()["libdevice"] = libdevice

    @triton.jit
    def _corner(
        src_ptr,
        pe_ptr,
        feat_base,
        top,
        left,
        height,
        width,
        ch,
        cmask,
        pmask,
        q,
        kwt,
        kb,
        vwt,
        vb,
        onehot,
        hw,
        A: tl.constexpr,
        B: tl.constexpr,
        S: tl.constexpr,
        C: tl.constexpr,
        SCALE: tl.constexpr,
    ):
        """Logits (BLOCK_P, H_PAD) and values (BLOCK_P, C_PAD) of corner slot S = 2A + B."""
        hmax = (height - 1).to(tl.float32)
        wmax = (width - 1).to(tl.float32)
        row = tl.minimum(tl.maximum(top + A, 0.0), hmax).to(tl.int32)
        col = tl.minimum(tl.maximum(left + B, 0.0), wmax).to(tl.int32)
        m2 = pmask[:, None] & cmask[None, :]
        ptrs = src_ptr + feat_base[:, None] + ch[None, :] * hw + (row * width + col)[:, None]
        y = tl.load(ptrs, mask=m2, other=0.0)
        pe = tl.load(pe_ptr + S * C + ch, mask=cmask, other=0.0).to(y.dtype)
        kin = tl.where(m2, y + pe[None, :], 0.0).to(y.dtype)
        k = tl.dot(kin, kwt, input_precision="ieee") + kb[None, :]
        v = tl.dot(kin, vwt, input_precision="ieee") + vb[None, :]
        logits = tl.dot(q * k, onehot, input_precision="ieee") * SCALE
        return logits, v

    @triton.jit
    def implicit_warp_kernel(
        source,
        target,
        flow,
        q_weight,
        q_bias,
        k_weight,
        k_bias,
        v_weight,
        v_bias,
        key_pe,
        pe_divisors,
        n_pixels,
        hw,
        height,
        width,
        output,
        C: tl.constexpr,
        HEADS: tl.constexpr,
        SCALE: tl.constexpr,
        INV_WINDOW: tl.constexpr,
        TWO_PI: tl.constexpr,
        C_PAD: tl.constexpr,
        H_PAD: tl.constexpr,
        BLOCK_P: tl.constexpr,
    ):
        """``vsr::ImplicitWarp`` for BLOCK_P target pixels (flattened N*h*w), NCHW tensors."""
        HEAD_DIM: tl.constexpr = C // HEADS
        HALF: tl.constexpr = C // 2
        pid = tl.program_id(0)
        pix = pid * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = pix < n_pixels
        n = pix // hw
        rem = pix - n * hw
        i = rem // width
        j = rem - i * width
        ch = tl.arange(0, C_PAD)
        cmask = ch < C
        m2 = pmask[:, None] & cmask[None, :]
        feat_base = n * (C * hw)

        # Positions, corners and offsets in FP32.
        dx = tl.load(flow + n * (2 * hw) + rem, mask=pmask, other=0.0)
        dy = tl.load(flow + n * (2 * hw) + hw + rem, mask=pmask, other=0.0)
        py = i.to(tl.float32) + dy
        px = j.to(tl.float32) + dx
        top = tl.floor(py)
        left = tl.floor(px)
        angle_y = ((py - top) * INV_WINDOW) * TWO_PI
        angle_x = ((px - left) * INV_WINDOW) * TWO_PI

        # Query code: channels [0, C/2) code y, [C/2, C) code x; within each, (sin, cos) per divisor.
        within = ch % HALF
        div = tl.load(pe_divisors + within // 2, mask=cmask, other=1.0)
        angle = tl.where((ch < HALF)[None, :], angle_y[:, None], angle_x[:, None])
        arg = tl.math.div_rn(angle, div[None, :])
        code = tl.where((within % 2 == 0)[None, :], libdevice.sin(arg), libdevice.cos(arg))

        x = tl.load(target + feat_base[:, None] + ch[None, :] * hw + rem[:, None], mask=m2, other=0.0)
        xq = tl.where(m2, x + code.to(x.dtype), 0.0).to(x.dtype)

        # Transposed (in x out) weights, zero-padded to C_PAD x C_PAD; biases in FP32.
        wmask = cmask[:, None] & cmask[None, :]
        w_off = ch[None, :] * C + ch[:, None]
        qwt = tl.load(q_weight + w_off, mask=wmask, other=0.0)
        kwt = tl.load(k_weight + w_off, mask=wmask, other=0.0)
        vwt = tl.load(v_weight + w_off, mask=wmask, other=0.0)
        qb = tl.load(q_bias + ch, mask=cmask, other=0.0).to(tl.float32)
        kb = tl.load(k_bias + ch, mask=cmask, other=0.0).to(tl.float32)
        vb = tl.load(v_bias + ch, mask=cmask, other=0.0).to(tl.float32)
        q = tl.dot(xq, qwt, input_precision="ieee") + qb[None, :]

        # One-hot channel -> head (C_PAD x H_PAD) and its transpose; padding rows/columns are zero.
        hh = tl.arange(0, H_PAD)
        onehot = tl.where(((ch[:, None] // HEAD_DIM) == hh[None, :]) & cmask[:, None], 1.0, 0.0)
        onehot_t = tl.where(((ch[None, :] // HEAD_DIM) == hh[:, None]) & cmask[None, :], 1.0, 0.0)

        l0, v0 = _corner(
            source,
            key_pe,
            feat_base,
            top,
            left,
            height,
            width,
            ch,
            cmask,
            pmask,
            q,
            kwt,
            kb,
            vwt,
            vb,
            onehot,
            hw,
            0,
            0,
            0,
            C,
            SCALE,
        )
        l1, v1 = _corner(
            source,
            key_pe,
            feat_base,
            top,
            left,
            height,
            width,
            ch,
            cmask,
            pmask,
            q,
            kwt,
            kb,
            vwt,
            vb,
            onehot,
            hw,
            0,
            1,
            1,
            C,
            SCALE,
        )
        l2, v2 = _corner(
            source,
            key_pe,
            feat_base,
            top,
            left,
            height,
            width,
            ch,
            cmask,
            pmask,
            q,
            kwt,
            kb,
            vwt,
            vb,
            onehot,
            hw,
            1,
            0,
            2,
            C,
            SCALE,
        )
        l3, v3 = _corner(
            source,
            key_pe,
            feat_base,
            top,
            left,
            height,
            width,
            ch,
            cmask,
            pmask,
            q,
            kwt,
            kb,
            vwt,
            vb,
            onehot,
            hw,
            1,
            1,
            3,
            C,
            SCALE,
        )

        # Softmax over the four slots, per head.
        m = tl.maximum(tl.maximum(l0, l1), tl.maximum(l2, l3))
        e0 = libdevice.exp(l0 - m)
        e1 = libdevice.exp(l1 - m)
        e2 = libdevice.exp(l2 - m)
        e3 = libdevice.exp(l3 - m)
        den = e0 + e1 + e2 + e3
        # Head weights -> channel weights through the transposed one-hot (exact: one term per channel).
        a0 = tl.dot(e0 / den, onehot_t, input_precision="ieee")
        a1 = tl.dot(e1 / den, onehot_t, input_precision="ieee")
        a2 = tl.dot(e2 / den, onehot_t, input_precision="ieee")
        a3 = tl.dot(e3 / den, onehot_t, input_precision="ieee")
        out = a0 * v0
        out = out + a1 * v1
        out = out + a2 * v2
        out = out + a3 * v3
        tl.store(
            output + feat_base[:, None] + ch[None, :] * hw + rem[:, None], out.to(output.dtype.element_ty), mask=m2
        )

    _KERNEL = implicit_warp_kernel
    return _KERNEL


def launch(
    source: Any,
    target: Any,
    flow: Any,
    q_weight: Any,
    q_bias: Any,
    k_weight: Any,
    k_bias: Any,
    v_weight: Any,
    v_bias: Any,
    key_pe: Any,
    divisors: Any,
    *,
    num_heads: int,
    scale: float | None = None,
    block_p: int = BLOCK_P,
) -> Any:
    """Run the kernel on CUDA torch tensors (tests; same arguments as ``implicit_warp``)."""
    import torch

    run = kernel()
    n, c, h, w = target.shape
    scale = (c // num_heads) ** -0.5 if scale is None else scale
    dtype = target.dtype
    zeros = target.new_zeros(c)
    feats = [t.contiguous() for t in (source, target)]
    args = [*feats, flow.to(torch.float32).contiguous()]
    for weight, bias in ((q_weight, q_bias), (k_weight, k_bias), (v_weight, v_bias)):
        args += [weight.to(dtype).contiguous(), (zeros if bias is None else bias).to(dtype).contiguous()]
    args += [key_pe.reshape(4, c).to(torch.float32).contiguous(), divisors.to(torch.float32).contiguous()]
    out = torch.empty_like(feats[1])
    pixels = n * h * w
    grid = ((pixels + block_p - 1) // block_p,)
    run[grid](*args, pixels, h * w, h, w, out, num_warps=NUM_WARPS, **kernel_constants(c, num_heads, scale, block_p))
    return out


def compile_ptx(
    feature_type: str, channels: int, num_heads: int, scale: float, target: Any = None, block_p: int = BLOCK_P
) -> tuple[str, str, Any]:
    """Compile the kernel: ``(kernel name, PTX text, metadata)``; ``target`` a ``GPUTarget`` or None
    (the current GPU)."""
    triton = _import_triton()
    src = triton.compiler.ASTSource(
        fn=kernel(),
        signature=kernel_signature(feature_type),
        constexprs=kernel_constants(channels, num_heads, scale, block_p),
    )
    options = {"num_warps": NUM_WARPS}
    compiled = triton.compile(src, target=target, options=options)
    return compiled.metadata.name, compiled.asm["ptx"], compiled.metadata


_REGISTERED = False


def register() -> None:
    """Define ``vsr::ImplicitWarp`` in TensorRT's plugin registry (imports TensorRT and Triton)."""
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        import tensorrt as trt
        import tensorrt.plugin as trtp
    except ImportError as exc:
        raise ImportError(
            "the vsr::ImplicitWarp TensorRT plugin needs TensorRT >= 10.9 with tensorrt.plugin "
            "(ahead-of-time Quickly Deployable Plugins)"
        ) from exc
    _import_triton()

    @trtp.register(PLUGIN_ID)
    def implicit_warp_desc(
        source: trtp.TensorDesc,
        target: trtp.TensorDesc,
        flow: trtp.TensorDesc,
        q_weight: trtp.TensorDesc,
        q_bias: trtp.TensorDesc,
        k_weight: trtp.TensorDesc,
        k_bias: trtp.TensorDesc,
        v_weight: trtp.TensorDesc,
        v_bias: trtp.TensorDesc,
        key_pe: trtp.TensorDesc,
        pe_divisors: trtp.TensorDesc,
        num_heads: int,
        scale: float,
    ) -> trtp.TensorDesc:
        return target.like()

    @trtp.autotune(PLUGIN_ID)
    def implicit_warp_autotune(
        source, target, flow, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, key_pe, pe_divisors, outputs
    ):  # type: ignore[no-untyped-def]
        # Features (and the output) all FP32 or all FP16 ('|': dependent); coordinates always FP32.
        types = ["FP32" if name in FP32_INPUTS else "FP32|FP16" for name in INPUTS] + ["FP32|FP16"]
        return [trtp.AutoTuneCombination(", ".join(types))]

    @trtp.aot_impl(PLUGIN_ID)
    def implicit_warp_aot(
        source,
        target,
        flow,
        q_weight,
        q_bias,
        k_weight,
        k_bias,
        v_weight,
        v_bias,
        key_pe,
        pe_divisors,
        num_heads: int,
        scale: float,
        outputs,
        tactic: int,
    ):  # type: ignore[no-untyped-def]
        channels_expr = q_weight.shape_expr[0]
        if not channels_expr.is_constant:
            raise ValueError("vsr::ImplicitWarp needs build-time-constant weights (C is compiled into the kernel)")
        channels = int(channels_expr.constant_value())
        feature_type = "fp32" if target.dtype == trt.float32 else "fp16"
        name, ptx, meta = compile_ptx(feature_type, channels, int(num_heads), float(scale))

        shape = outputs[0].shape_expr  # (N, C, h, w), possibly dynamic
        pixels = shape[0] * shape[2] * shape[3]
        launch_params = trtp.KernelLaunchParams()
        launch_params.grid_x = trtp.cdiv(pixels, BLOCK_P)
        launch_params.block_x = meta.num_warps * 32
        launch_params.shared_mem = meta.shared
        extra_args = trtp.SymIntExprs.from_tuple(
            [trtp.SymInt32(e) for e in (pixels, shape[2] * shape[3], shape[2], shape[3])]
        )
        return name.encode(), ptx.encode(), launch_params, extra_args

    _REGISTERED = True


def _load() -> None:
    """``load`` of the spec: :func:`register`, but a missing Triton only warns, so that engines without
    this node still build where Triton is not installed (a ``vsr::ImplicitWarp`` node then fails to parse)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        import warnings

        warnings.warn(
            "Triton is not installed: the vsr::ImplicitWarp TensorRT plugin is not registered "
            "(pip install triton to build engines with that node)",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    register()


SPEC = PluginSpec(
    domain=NAMESPACE,
    op_type=NAME,
    version=VERSION,
    namespace=NAMESPACE,
    load=_load,
    description="IART implicit warp: AOT Triton QDP (tensorrt.plugin, TensorRT >= 10.9); untested",
)
_register_spec(SPEC)
