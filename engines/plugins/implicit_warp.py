"""TensorRT plugin for ``vsr::ImplicitWarp``: a Quickly Deployable Plugin with an ahead-of-time Triton kernel.

**Status: written against TensorRT's ``tensorrt.plugin`` sources (10.9 to 11.1) and Triton 3.9, never
run.** No machine here has a GPU or TensorRT: the kernel has only been compiled to PTX for named
targets (sm_90, sm_89, sm_86); no engine has been built with the plugin.

This module must not use ``from __future__ import annotations``: ``tensorrt.plugin`` reads the
annotations of the plugin functions with ``inspect.signature`` and calls ``issubclass`` on them,
so they have to be the real classes (:func:`plugin_functions` builds the functions with them).

What is here:

* :func:`kernel` is ``implicit_warp_kernel`` (:mod:`.implicit_warp_kernel`, which imports Triton):
  one program per ``BLOCK_P`` target pixels. It follows the op contract of
  :mod:`vsr_models.ops.implicit_warp`: FP32 positions ``(i + dy, j + dx)``, floor, offsets, the four
  corners clamped to the frame; the query code in FP32; ``q = Wq (x + code) + bq``; per slot
  ``s = 2a + b`` ``k_s, v_s = W (y_s + key_pe[s]) + b``; per-head logits ``scale * q . k_s`` (a
  ``tl.dot`` with a one-hot channel->head matrix); softmax over the 4 slots; ``out = sum_s attn_s v_s``.
  The projections run over tiles of ``BLOCK_K`` input by ``BLOCK_N`` output channels, in two passes
  (logits, then values and the output), so no whole C x C weight is ever staged: the kernel must
  need at most :data:`SHARED_MEMORY_LIMIT` (48 KiB) of shared memory, what every CUDA GPU gives a
  block without an opt-in (TensorRT's launch of an AOT kernel is not documented to opt in).
  :func:`compile_ptx` compiles for a named target (:func:`cuda_target`; the engine's GPU in
  :func:`build_target`) and checks ``metadata.shared`` against it, and that the kernel needs no
  scratch buffer (:func:`check_scratch`).
* :func:`launch` runs the kernel on CUDA torch tensors (for tests; the engine does not use it).
* :func:`register` puts ``vsr::ImplicitWarp`` into TensorRT's plugin registry (``@trtp.register``,
  ``@trtp.autotune``, ``@trtp.aot_impl``); :func:`plugin_gate` says why it cannot where it cannot.

Rounding (FP32): the offsets are multiplied by the FP32 reciprocal of ``2 + 1e-6`` (what torch's
CUDA ``tensor / python_scalar`` does); the code arguments use a correctly rounded division and
libdevice ``sin``/``cos``/``exp``, as torch's CUDA kernels do. FMA contraction is on
(:data:`FP_FUSION`), as in nvcc-built torch kernels.

AOT plugins do not serialise attributes, so ``num_heads`` and ``scale`` (and ``C``, read from the
build-time-constant shape of ``q_weight``) are compiled into the PTX; ``N``, ``h`` and ``w`` may be
dynamic: they reach the kernel as int32 shape expressions.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

from export.trt_check import Finding, Needs, NodeView
from vsr_models.ops.implicit_warp import DOMAIN, OP_NAME, PLUGIN_ATTRIBUTES

from . import PluginSpec, PluginUnavailable, tensorrt_version
from . import register as _register_spec

NAMESPACE = str(PLUGIN_ATTRIBUTES["plugin_namespace"])
VERSION = str(PLUGIN_ATTRIBUTES["plugin_version"])
PLUGIN_ID = f"{NAMESPACE}::{OP_NAME}"

#: Target pixels per program, output and input channels per projection tile, warps per program.
BLOCK_P = 32
BLOCK_N = 32
BLOCK_K = 16
NUM_WARPS = 4
#: FMA contraction in the compiled kernel (Triton's current default, set explicitly).
FP_FUSION = True
#: Dynamic shared memory a block gets on every CUDA GPU without an opt-in.
SHARED_MEMORY_LIMIT = 48 * 1024

#: The first TensorRT release whose parser takes ahead-of-time Python plugins (changelog-10.9).
MIN_TENSORRT = (10, 9)

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
#: Attributes of the node the plugin reads, with their types.
ATTRIBUTES = {"num_heads": int, "scale": float}

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
    """The constexpr arguments of ``implicit_warp_kernel`` for one configuration."""
    if channels % num_heads or channels % 4:
        raise ValueError(f"implicit warp needs channels ({channels}) divisible by num_heads ({num_heads}) and by 4")
    c_pad = _pow2(channels)
    return {
        "C": channels,
        "HEADS": num_heads,
        "SCALE": float(scale),
        "INV_WINDOW": INV_WINDOW,
        "TWO_PI": TWO_PI,
        "C_PAD": c_pad,
        "H_PAD": _pow2(num_heads),
        "BLOCK_P": block_p,
        "BLOCK_N": min(BLOCK_N, c_pad),
        "BLOCK_K": min(BLOCK_K, c_pad),
    }


def kernel_signature(feature_type: str) -> dict[str, str]:
    """Triton signature of ``implicit_warp_kernel``: ``feature_type`` is ``"fp32"`` or ``"fp16"``."""
    if feature_type not in ("fp32", "fp16"):
        raise ValueError(f"feature type must be fp32 or fp16, got {feature_type!r}")
    sig = {name: "*fp32" if name in FP32_INPUTS else f"*{feature_type}" for name in INPUTS}
    sig.update({"n_pixels": "i32", "hw": "i32", "height": "i32", "width": "i32", "output": f"*{feature_type}"})
    constexprs = ("C", "HEADS", "SCALE", "INV_WINDOW", "TWO_PI", "C_PAD", "H_PAD", "BLOCK_P", "BLOCK_N", "BLOCK_K")
    sig.update(dict.fromkeys(constexprs, "constexpr"))
    return sig


def triton_version() -> str | None:
    """The installed Triton's version (without importing it), or None."""
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_triton() -> Any:
    try:
        import triton
    except ImportError as exc:
        raise PluginUnavailable(
            "the vsr::ImplicitWarp kernel needs Triton (pip install triton; it is not a dependency of this project)"
        ) from exc
    return triton


_KERNEL: Any = None


def kernel() -> Any:
    """The Triton kernel ``implicit_warp_kernel`` (imports Triton on first use)."""
    global _KERNEL
    if _KERNEL is None:
        _import_triton()
        from .implicit_warp_kernel import implicit_warp_kernel

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
    consts = kernel_constants(c, num_heads, scale, block_p)
    run[grid](*args, pixels, h * w, h, w, out, num_warps=NUM_WARPS, enable_fp_fusion=FP_FUSION, **consts)
    return out


def cuda_target(capability: tuple[int, int]) -> Any:
    """Triton's ``GPUTarget`` for an NVIDIA GPU of compute ``capability`` (e.g. (9, 0) for an H100)."""
    from triton.backends.compiler import GPUTarget

    _import_triton()
    return GPUTarget("cuda", 10 * capability[0] + capability[1], 32)


def compile_ptx(
    feature_type: str, channels: int, num_heads: int, scale: float, target: Any, block_p: int = BLOCK_P
) -> tuple[str, str, Any]:
    """Compile the kernel for ``target`` (a Triton ``GPUTarget``, :func:`cuda_target`): ``(kernel name,
    PTX text, metadata)``. The target is always named: left out, Triton would ask the CUDA driver of the
    machine that compiles. Raises :class:`PluginUnavailable` if the kernel needs more shared memory than
    :data:`SHARED_MEMORY_LIMIT`, or scratch memory at all (:func:`check_scratch`)."""
    triton = _import_triton()
    src = triton.compiler.ASTSource(
        fn=kernel(),
        signature=kernel_signature(feature_type),
        constexprs=kernel_constants(channels, num_heads, scale, block_p),
    )
    compiled = triton.compile(src, target=target, options={"num_warps": NUM_WARPS, "enable_fp_fusion": FP_FUSION})
    what = f"{feature_type}, C={channels}, {num_heads} heads, sm_{target.arch}"
    check_shared_memory(compiled.metadata.shared, what)
    check_scratch(compiled.metadata, what)
    return compiled.metadata.name, compiled.asm["ptx"], compiled.metadata


#: Scratch buffers a Triton kernel may ask its launcher for: Triton 3.3+ appends a global-scratch pointer
#: parameter to every kernel, 3.5+ a profile-scratch one (metadata attribute -> what uses it).
SCRATCH = {
    "global_scratch_size": "global scratch (device-side tensor descriptors, some cooperative ops)",
    "profile_scratch_size": "profile scratch (Triton's intra-kernel profiler)",
}


def check_scratch(metadata: Any, what: str) -> None:
    """Refuse a kernel that needs a scratch buffer: TensorRT launches an AOT plugin's PTX with the plugin's
    tensors and extra scalar arguments only, so nothing would back the scratch pointers Triton appends to
    the kernel's parameters (our launcher does not provide them either: the kernel must not read them)."""
    for name, use in SCRATCH.items():
        size = getattr(metadata, name, 0) or 0  # absent before the Triton release that added it; None when unset
        if size:
            raise PluginUnavailable(
                f"the vsr::ImplicitWarp kernel ({what}) needs {size} bytes of {use}; TensorRT's AOT launch passes no "
                "such buffer: change the kernel so that Triton allocates none"
            )


def check_shared_memory(nbytes: int, what: str) -> None:
    """Refuse a kernel that needs more dynamic shared memory than a block gets without an opt-in."""
    if nbytes > SHARED_MEMORY_LIMIT:
        raise PluginUnavailable(
            f"the vsr::ImplicitWarp kernel ({what}) needs {nbytes} bytes of shared memory per block, more than "
            f"the {SHARED_MEMORY_LIMIT} every GPU gives without an opt-in; lower BLOCK_P/BLOCK_N/BLOCK_K"
        )


def plugin_functions(trt: ModuleType, trtp: ModuleType) -> tuple[Any, Any, Any]:
    """The ``register``, ``autotune`` and ``aot_impl`` functions of the plugin, annotated with the real
    classes of ``trtp`` (``tensorrt.plugin``), which is what its decorators inspect."""

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

    def implicit_warp_autotune(
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
        outputs: tuple[trtp.TensorDesc],
    ) -> list[trtp.AutoTuneCombination]:
        # Features (and the output) all FP32 or all FP16 ('|': dependent); coordinates always FP32.
        types = ["FP32" if name in FP32_INPUTS else "FP32|FP16" for name in INPUTS] + ["FP32|FP16"]
        return [trtp.AutoTuneCombination(", ".join(types))]

    def implicit_warp_aot(
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
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        channels_expr = q_weight.shape_expr[0]
        if not channels_expr.is_constant:
            raise ValueError("vsr::ImplicitWarp needs build-time-constant weights (C is compiled into the kernel)")
        channels = int(channels_expr.constant_value())
        feature_type = "fp32" if target.dtype == trt.float32 else "fp16"
        name, ptx, meta = compile_ptx(feature_type, channels, int(num_heads), float(scale), build_target())

        shape = outputs[0].shape_expr  # (N, C, h, w), possibly dynamic
        pixels = shape[0] * shape[2] * shape[3]
        launch_params = trtp.KernelLaunchParams()
        launch_params.grid_x = trtp.cdiv(pixels, BLOCK_P)
        launch_params.block_x = meta.num_warps * 32
        launch_params.shared_mem = meta.shared
        extra_args = trtp.SymIntExprs.from_tuple(
            [trtp.SymInt32(e) for e in (pixels, shape[2] * shape[3], shape[2], shape[3])]
        )
        return name, ptx, launch_params, extra_args

    return implicit_warp_desc, implicit_warp_autotune, implicit_warp_aot


def build_target() -> Any:
    """The target of the engine being built: the GPU TensorRT builds on (the current CUDA device)."""
    import torch

    return cuda_target(torch.cuda.get_device_capability(torch.cuda.current_device()))


def plugin_gate(version: str, plugin_module: ModuleType | None, has_triton: bool) -> str | None:
    """Why the plugin cannot be registered with TensorRT ``version`` (its ``tensorrt.plugin`` module, or
    None where it does not import) and Triton present or not; None if it can."""
    found = f"this is TensorRT {version}"
    if tensorrt_version(version) < MIN_TENSORRT:
        return (
            f"it needs TensorRT >= {'.'.join(map(str, MIN_TENSORRT))} (tensorrt.plugin with ahead-of-time "
            f"plugins; 10.1 to 10.5 have no tensorrt.plugin, 10.6 to 10.8 no aot_impl); {found}"
        )
    if plugin_module is None:
        return f"tensorrt.plugin does not import ({found}); reinstall the tensorrt wheel"
    if not hasattr(plugin_module, "aot_impl"):
        return f"tensorrt.plugin has no aot_impl ({found})"
    if not has_triton:
        return "it compiles its kernel with Triton, which is not installed (pip install triton)"
    return None


def _unavailable(trt: ModuleType) -> str | None:
    plugin_module = None
    if tensorrt_version(trt.__version__) >= MIN_TENSORRT:
        try:
            import tensorrt.plugin as plugin_module
        except ImportError:
            plugin_module = None
    return plugin_gate(trt.__version__, plugin_module, importlib.util.find_spec("triton") is not None)


def _defined(trtp: ModuleType) -> bool:
    """Whether ``tensorrt.plugin`` already has a definition of the plugin (from this process)."""
    return hasattr(trtp.op, NAMESPACE) and hasattr(getattr(trtp.op, NAMESPACE), OP_NAME)


_REGISTERED = False


def register(trt: ModuleType) -> None:
    """Define ``vsr::ImplicitWarp`` in TensorRT's plugin registry (imports ``tensorrt.plugin``; call
    :func:`plugin_gate` first). Idempotent within a process."""
    global _REGISTERED
    if _REGISTERED:
        return
    import tensorrt.plugin as trtp

    if _defined(trtp):
        raise PluginUnavailable(
            "an earlier attempt to register vsr::ImplicitWarp in this process failed halfway; start a new process"
        )
    desc, autotune, aot = plugin_functions(trt, trtp)
    trtp.register(PLUGIN_ID)(desc)
    trtp.autotune(PLUGIN_ID)(autotune)
    trtp.aot_impl(PLUGIN_ID)(aot)
    _REGISTERED = True


def kernel_sources() -> bytes:
    """The source of the kernel (:mod:`.implicit_warp_kernel`) and of its compilation and launch (this module)."""
    here = Path(__file__).parent
    return b"\0".join((here / name).read_bytes() for name in ("implicit_warp_kernel.py", "implicit_warp.py"))


def kernel_fingerprint(source: bytes | None = None, triton: str | None = None) -> str:
    """sha256 of what the plugin bakes into an engine: the kernel's source and the code that compiles
    and launches it, the tile and launch constants, and the Triton version (``source``, ``triton``:
    default the installed ones)."""
    digest = hashlib.sha256(source if source is not None else kernel_sources())
    constants = {
        "BLOCK_P": BLOCK_P,
        "BLOCK_N": BLOCK_N,
        "BLOCK_K": BLOCK_K,
        "NUM_WARPS": NUM_WARPS,
        "FP_FUSION": FP_FUSION,
        "triton": triton if triton is not None else (triton_version() or "absent"),
    }
    digest.update(json.dumps(constants, sort_keys=True).encode())
    return digest.hexdigest()


def check_node(view: NodeView) -> list[Finding]:
    """The static check of a ``vsr::ImplicitWarp`` node: what the parser and the plugin need of it."""
    node, attrs = view.node, view.attrs
    found: list[Finding] = [Needs(MIN_TENSORRT, "vsr::ImplicitWarp is an ahead-of-time Python plugin")]
    if len(node.input) != len(INPUTS) or len(node.output) != 1:
        found.append(f"{len(node.input)} inputs and {len(node.output)} outputs; the plugin takes {len(INPUTS)} and 1")
        return found
    namespace = attrs.get("plugin_namespace")
    if namespace is None:
        found.append(
            Needs((10, 10), "no plugin_namespace attribute: the parser reads the node's domain only from 10.10")
        )
    elif namespace != NAMESPACE:
        found.append(f"plugin_namespace={namespace!r}: the plugin is registered in {NAMESPACE!r}")
    if attrs.get("plugin_version", "1") != VERSION:
        found.append(f"plugin_version={attrs['plugin_version']!r}: tensorrt.plugin registers version {VERSION!r}")
    if attrs.get("aot", 1) != 1:
        found.append("aot=0 asks for a Python (JIT) implementation, and the plugin has only the ahead-of-time one")
    for name, kind in ATTRIBUTES.items():
        if not isinstance(attrs.get(name), kind):
            found.append(f"attribute {name} ({kind.__name__}) is missing or not a {kind.__name__}")
    weight_dims = view.dims.get(view.input(INPUTS.index("q_weight")))
    if weight_dims is None or None in weight_dims:
        found.append("q_weight has no static shape: the kernel compiles the channel count in")
    found += _dtype_findings(view)
    return found


def _dtype_findings(view: NodeView) -> list[Finding]:
    """The types the autotune function declares: coordinates FP32, features and the output all FP32 or all FP16."""
    names = dict(zip(INPUTS, view.node.input))
    names["output"] = view.node.output[0]
    types = {name: view.dtypes.get(tensor) for name, tensor in names.items()}
    found: list[Finding] = []
    for name in sorted(FP32_INPUTS):
        if types[name] not in (None, 1):  # 1: FLOAT
            found.append(f"{name} must be FP32 (got ONNX element type {types[name]})")
    features = {types[n] for n in names if n not in FP32_INPUTS} - {None}
    if not features <= {1, 10} or len(features) > 1:  # FLOAT, FLOAT16
        found.append(
            f"features, weights and output must be all FP32 or all FP16 (got element types {sorted(features)})"
        )
    return found


SPEC = PluginSpec(
    domain=DOMAIN,
    op_type=OP_NAME,
    version=VERSION,
    namespace=NAMESPACE,
    min_tensorrt=MIN_TENSORRT,
    unavailable=_unavailable,
    load=register,
    fingerprint=kernel_fingerprint,
    check_node=check_node,
    description="IART implicit warp: an ahead-of-time Triton plugin for TensorRT >= 10.9, never run on a GPU here; "
    "the decomposed export (the default) needs no plugin",
)
_register_spec(SPEC)
