"""Devices, parsed once: ``cpu``, ``cuda`` or ``cuda:N`` (NVIDIA, through CUDA), ``gpu`` or ``gpu:N`` (an Intel
GPU, through OpenVINO); and the CPU's model name."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from vsr_models.errors import VSRError


class DeviceError(VSRError, ValueError):
    """A device name that is not ``cpu``, ``cuda[:N]`` or ``gpu[:N]``, or one that is not there."""


@dataclass(frozen=True)
class Device:
    """A compute device: ``kind`` ``cpu``, ``cuda`` or ``gpu`` (OpenVINO's GPU), and the GPU's ``index``."""

    kind: str = "cpu"
    index: int = 0

    @classmethod
    def parse(cls, text: str | Device) -> Device:
        if isinstance(text, Device):
            return text
        value = str(text).strip().lower()
        if value == "cpu":
            return cls("cpu")
        for kind in ("cuda", "gpu"):
            if value == kind:
                return cls(kind, 0)
            if value.startswith(f"{kind}:") and value[len(kind) + 1 :].isdigit():
                return cls(kind, int(value[len(kind) + 1 :]))
        raise DeviceError(
            f"unknown device {text!r}: use cpu, cuda or cuda:N (an NVIDIA GPU), or gpu or gpu:N (an Intel GPU "
            "through OpenVINO); N is the GPU's index"
        )

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"{self.kind}:{self.index}"


#: The CPU features that compute BF16, as users read them in ``lscpu``'s flags.
BF16_CPU = "AVX-512 BF16 or AMX-BF16 (lscpu flag avx512_bf16 or amx_bf16)"
FP16_CPU = "AVX-512 FP16 or AMX-FP16 (lscpu flag avx512_fp16 or amx_fp16)"


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"
