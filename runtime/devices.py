"""Devices, parsed once: ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

from dataclasses import dataclass

from vsr_models.errors import VSRError


class DeviceError(VSRError, ValueError):
    """A device name that is not ``cpu``, ``cuda`` or ``cuda:N``, or one that is not there."""


@dataclass(frozen=True)
class Device:
    """A compute device: ``kind`` ``cpu`` or ``cuda``, and the CUDA ``index``."""

    kind: str = "cpu"
    index: int = 0

    @classmethod
    def parse(cls, text: str | Device) -> Device:
        if isinstance(text, Device):
            return text
        value = str(text).strip().lower()
        if value == "cpu":
            return cls("cpu")
        if value == "cuda":
            return cls("cuda", 0)
        if value.startswith("cuda:") and value[5:].isdigit():
            return cls("cuda", int(value[5:]))
        raise DeviceError(f"unknown device {text!r}: use cpu, cuda or cuda:N (N the GPU's index)")

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"
