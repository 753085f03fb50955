"""Training and validation data: frame folders (REDS, Vimeo-90K layouts) and plain videos.

``--data PATH`` may be

* a video file, or a folder of video files (read with PyAV);
* a folder of clips: each sub-folder holding PNG/JPEG frames is one clip, at any depth up to
  three (REDS: ``train_sharp/000/00000000.png``; Vimeo-90K: ``sequences/00001/0001/im1.png``,
  restricted to ``sep_trainlist.txt`` where that file sits beside ``sequences``);
* a folder with a ground-truth and a low-resolution tree side by side (``GT``/``LR``, ``GT``/``LQ``,
  ``train_sharp``/``train_sharp_bicubic/X4``, ...), the same relative paths in both.
  Without an LR tree the LR frames are made on the fly (:mod:`training.degradations`).

A training sample is a random run of frames of one clip, a random square crop (the same for every
frame; LR and GT crops aligned), random flips and transposition, optionally a temporal reversal.
Every random choice is drawn from a generator seeded by ``(seed, epoch, index)`` (and, for the
per-batch scale, ``(seed, iteration)``), never from a worker's own state: a batch is the same
whatever the number of workers, and a resumed run draws exactly what the killed one would have.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from runtime.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, InputError, chw, natural_key, probe, read_frames
from vsr_models.errors import VSRError

from . import degradations as deg
from .recipe import DataRecipe

#: Names of the ground-truth and low-resolution trees of a paired dataset, tried in order.
GT_NAMES = ("GT", "gt", "HR", "hr", "train_sharp")
LR_NAMES = ("LR", "lr", "LQ", "lq", "train_sharp_bicubic/X4", "BIx4", "BDx4", "sharp_bicubic")
#: How deep clips are looked for below the data root.
MAX_DEPTH = 3


class DataError(VSRError, ValueError):
    """Training data that cannot be used; the message names the clips and the fix."""


@dataclass(frozen=True)
class Clip:
    """One clip: a video file or a frame folder, with its LR counterpart if the data has one."""

    name: str
    gt: Path
    lr: Path | None
    frames: int
    size: tuple[int, int]  # GT (H, W)


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") for p in folder.iterdir())


def _sources(root: Path) -> list[Path]:
    """Frame folders and video files below ``root`` (``root`` itself if it holds frames)."""
    if root.is_file():
        return [root]
    if _has_images(root):
        return [root]
    vimeo_list = root / "sep_trainlist.txt"
    if (root / "sequences").is_dir():
        if vimeo_list.is_file():
            names = [line.strip() for line in vimeo_list.read_text().splitlines() if line.strip()]
            return [root / "sequences" / n for n in names if (root / "sequences" / n).is_dir()]
        root = root / "sequences"
    found: list[Path] = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if len(here.parts) - base_depth >= MAX_DEPTH:
            dirnames[:] = []
        files = [f for f in filenames if not f.startswith(".")]
        if here != root and any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            found.append(here)
            dirnames[:] = []
            continue
        found += [here / f for f in files if Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found, key=lambda p: natural_key(str(p)))


def split_pair(path: Path) -> tuple[Path, Path | None]:
    """(GT root, LR root or None) of a data path."""
    if path.is_dir():
        for name in GT_NAMES:
            if (path / name).is_dir():
                lr = next((path / n for n in LR_NAMES if (path / n).is_dir()), None)
                return path / name, lr
    return path, None


def _count_frames(path: Path, stated: int | None) -> int:
    """Frames of a video: the container's count, else the packets of its video stream."""
    if stated:
        return stated
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def _describe(path: Path) -> tuple[int, tuple[int, int]]:
    try:
        info = probe(path)
    except InputError as exc:
        raise DataError(f"cannot use {path}: {exc}") from exc
    frames = info.num_frames if info.kind == "frames" else _count_frames(path, info.num_frames)
    return frames or 0, (info.height, info.width)


def discover(path: str | os.PathLike[str], scale: int | None, rate: int = 1) -> list[Clip]:
    """Every clip of a data path; raises :class:`DataError` if there is none or pairs disagree.

    ``scale``: the network's integer scale (to check LR sizes of paired data; ``None`` for
    arbitrary-scale networks). ``rate``: GT frames per LR frame (DAVSR: 5).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"training data {path} does not exist; pass a video, a folder of videos or of frame folders")
    gt_root, lr_root = split_pair(path)
    sources = _sources(gt_root)
    if not sources:
        raise DataError(
            f"{path} holds no frames: no video files and no folders of PNG/JPEG frames were found "
            f"(up to {MAX_DEPTH} levels deep); pass a video file or a folder of clips"
        )
    clips = []
    for source in sources:
        frames, size = _describe(source)
        name = str(source.relative_to(gt_root)) if source != gt_root else source.name
        lr = None
        if lr_root is not None:
            lr = lr_root / source.relative_to(gt_root)
            if not lr.exists():
                raise DataError(f"{source} has no LR counterpart {lr}; the LR tree must mirror the GT tree")
            lr_frames, lr_size = _describe(lr)
            if scale is None:
                raise DataError(
                    "this network is trained at arbitrary scales from ground truth only; "
                    f"pass the GT tree ({gt_root}) as --data, without {lr_root}"
                )
            if lr_frames * rate != frames or (lr_size[0] * scale, lr_size[1] * scale) != size:
                raise DataError(
                    f"{lr} ({lr_frames} frames of {lr_size[0]}x{lr_size[1]}) does not match {source} "
                    f"({frames} frames of {size[0]}x{size[1]}) at x{scale}"
                    + (f" and {rate} GT frames per LR frame" if rate > 1 else "")
                )
        if frames == 0:
            raise DataError(f"{source} has no frames; remove it or pass another data path")
        clips.append(Clip(name, source, lr, frames, size))
    return clips


def check_clips(clips: Sequence[Clip], frames: int, crop: int, what: str = "training") -> None:
    """Fail with the offending clips if any is shorter than ``frames`` GT frames or smaller than ``crop``."""
    short = [c for c in clips if c.frames < frames]
    if short:
        listing = ", ".join(f"{c.name} ({c.frames})" for c in short[:5])
        longest = max(c.frames for c in clips)
        raise DataError(
            f"{len(short)} {what} clip(s) are shorter than the {frames} frames a sample needs: {listing}"
            f"{', ...' if len(short) > 5 else ''}; pass --frames {longest} or less, or remove them"
        )
    small = [c for c in clips if min(c.size) < crop]
    if small:
        listing = ", ".join(f"{c.name} ({c.size[0]}x{c.size[1]})" for c in small[:5])
        smallest = min(min(c.size) for c in clips)
        raise DataError(
            f"{len(small)} {what} clip(s) are smaller than the {crop}x{crop} crop: {listing}; "
            f"pass --crop {smallest} or less, or remove them"
        )


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_run(path: Path, start: int, count: int, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Frames ``start .. start + count - 1`` of a clip, cropped to ``box`` (y, x, h, w): (T, 3, h, w)."""
    out = []
    for frame in itertools.islice(read_frames(path, start), count):
        rgb = frame.rgb
        if box is not None:
            y, x, h, w = box
            rgb = rgb[y : y + h, x : x + w]
        out.append(torch.from_numpy(chw(rgb)))
    if len(out) != count:
        raise DataError(f"{path}: only {len(out)} frames could be read from frame {start} ({count} needed)")
    return torch.stack(out)


def _augment(clips: list[torch.Tensor], rng: np.random.Generator, data: DataRecipe) -> list[torch.Tensor]:
    """The same flips / transposition / reversal on every tensor (T, 3, H, W) of a sample."""
    hflip, vflip, transpose, reverse = rng.random(4) < 0.5
    out = []
    for x in clips:
        if data.hflip and hflip:
            x = x.flip(-1)
        if data.rot and vflip:
            x = x.flip(-2)
        if data.rot and transpose:
            x = x.transpose(-1, -2)
        if data.reverse and reverse:
            x = x.flip(0)
        out.append(x.contiguous())
    return out


def mirror(x: torch.Tensor, times: int) -> torch.Tensor:
    """Append the reversed clip ``times`` times (Vimeo-90K's 7 frames -> 14 -> 28)."""
    for _ in range(times):
        x = torch.cat([x, x.flip(0)])
    return x


def degrade(gt: torch.Tensor, data: DataRecipe, scale: int, rng: np.random.Generator | None) -> torch.Tensor:
    """LR frames of a GT run: temporal mean (rate > 1), BI or BD, then the compression mix.

    ``rng`` None: no compression (validation).
    """
    x = deg.temporal_mean(gt, data.rate) if data.rate > 1 else gt
    base = data.crf_base if data.degradation == "crf" else data.degradation
    lr = deg.bd(x, scale) if base == "bd" else deg.bi(x, scale)
    if data.quantize:
        lr = deg.quantize(lr)
    if data.degradation == "crf" and rng is not None:
        lr = _compression_mix(lr, data, rng)
    return lr


def _compression_mix(lr: torch.Tensor, data: DataRecipe, rng: np.random.Generator) -> torch.Tensor:
    """Compress a share ``crf_share`` of clips (or frames) at a CRF drawn uniformly from ``crf``."""

    def draw() -> int | None:
        return int(rng.choice(data.crf)) if rng.random() < data.crf_share else None

    if data.crf_per == "clip":
        crf = draw()
        return lr if crf is None else deg.compress(lr, crf)
    choices = [draw() for _ in range(lr.shape[0])]
    encoded = {crf: deg.compress(lr, crf) for crf in set(choices) if crf is not None}
    return torch.stack([lr[i] if c is None else encoded[c][i] for i, c in enumerate(choices)])


class ClipDataset(Dataset):
    """Random training samples of clips, keyed by ``(index, epoch, iteration)``.

    Item ``index`` is a start position ``(clip, first frame)``; a sample is a dict with ``gt``
    (T * rate, 3, crop, crop) and, unless the network is trained at arbitrary scales (LR made per
    batch in :meth:`collate`), ``lr`` (T', 3, crop / scale, crop / scale), where T' = T, or more
    after mirroring.
    """

    def __init__(self, clips: Sequence[Clip], data: DataRecipe, scale: int | None, seed: int) -> None:
        self.clips = list(clips)
        self.data = data
        self.scale = scale
        self.seed = seed
        self.need = data.frames * data.rate
        check_clips(self.clips, self.need, data.crop)
        self.items = [  # paired data at a frame rate > 1 starts on a GT frame of an LR frame
            (c, s)
            for c, clip in enumerate(self.clips)
            for s in range(0, clip.frames - self.need + 1, data.rate if clip.lr is not None else 1)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        index, epoch, _iteration = key
        rng = np.random.default_rng([self.seed, epoch, index])
        c, start = self.items[index]
        clip, crop = self.clips[c], self.data.crop
        if clip.lr is not None and self.scale is not None:
            s = self.scale
            lh, lw = clip.size[0] // s, clip.size[1] // s
            ly, lx = int(rng.integers(0, lh - crop // s + 1)), int(rng.integers(0, lw - crop // s + 1))
            lr = read_run(clip.lr, start // self.data.rate, self.data.frames, (ly, lx, crop // s, crop // s))
            gt = read_run(clip.gt, start, self.need, (ly * s, lx * s, crop, crop))
            gt, lr = _augment([gt, lr], rng, self.data)
        else:
            y, x = int(rng.integers(0, clip.size[0] - crop + 1)), int(rng.integers(0, clip.size[1] - crop + 1))
            (gt,) = _augment([read_run(clip.gt, start, self.need, (y, x, crop, crop))], rng, self.data)
            if self.scale is None:
                return {"gt": mirror(gt, self.data.mirror)}
            lr = degrade(gt, self.data, self.scale, rng)
        return {"lr": mirror(lr, self.data.mirror), "gt": mirror(gt, self.data.mirror)}

    def collate(self, batch: list[dict[str, torch.Tensor]], iteration: int) -> dict[str, Any]:
        """Stack samples; for arbitrary-scale networks, draw the batch's scale and make its LR."""
        out: dict[str, Any] = {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
        if self.scale is None:
            out.update(arbitrary_scale_batch(out["gt"], self.data, np.random.default_rng([self.seed, iteration, 1])))
        return out


def arbitrary_scale_batch(gt: torch.Tensor, data: DataRecipe, rng: np.random.Generator) -> dict[str, Any]:
    """One (scale_h, scale_w) for the batch: GT cropped to round(lq * s), LR bicubic to lq x lq.

    ``gt`` (N, T, 3, C, C) with C = ``data.crop``; lq = floor(C / max scale).
    """
    scales = data.scales or []
    sh, sw = (float(v) for v in scales[int(rng.integers(0, len(scales)))])
    lq = data.lq_size
    gh, gw = round(lq * sh), round(lq * sw)
    n, t, c, h, w = gt.shape
    y, x = int(rng.integers(0, h - gh + 1)), int(rng.integers(0, w - gw + 1))
    crop = gt[..., y : y + gh, x : x + gw].reshape(n * t, c, gh, gw)
    lr = deg.resize_bicubic(crop, (lq, lq))
    if data.quantize:
        lr = deg.quantize(lr)
    return {"gt": crop.view(n, t, c, gh, gw), "lr": lr.view(n, t, c, lq, lq), "scale": (sh, sw)}


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


class IterationSampler(Sampler[list[tuple[int, int, int]]]):
    """This process's batches for iterations ``start + 1 .. iters``, as ``(index, epoch, iteration)``.

    Epoch after epoch, the items are shuffled and split between processes by torch's
    :class:`~torch.utils.data.DistributedSampler` (seeded by ``seed + epoch``); iteration i takes
    the next ``batch`` of this process's share. With R processes the union of their batches at
    iteration i is the batch of one process with R times the batch (when the item count is a
    multiple of R; otherwise the sampler pads epochs, as torch does). Resuming at iteration
    ``start`` skips the indices already used (no data is read for them).
    """

    def __init__(self, items: int, batch: int, iters: int, start: int, rank: int, world: int, seed: int) -> None:
        self.items, self.batch, self.iters, self.start = items, batch, iters, start
        self.rank, self.world, self.seed = rank, world, seed
        self.per_epoch = math.ceil(items / world)

    def __len__(self) -> int:
        return self.iters - self.start

    def _epoch(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(
            range(self.items), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        position = self.start * self.batch
        epoch, offset = divmod(position, self.per_epoch)
        order = self._epoch(epoch)
        for iteration in range(self.start + 1, self.iters + 1):
            keys = []
            while len(keys) < self.batch:
                if offset == len(order):
                    epoch, offset = epoch + 1, 0
                    order = self._epoch(epoch)
                keys.append((order[offset], epoch, iteration))
                offset += 1
            yield keys


class BatchCollate:
    """The loader's ``collate_fn``: hands the batch's iteration to :meth:`ClipDataset.collate`."""

    def __init__(self, dataset: ClipDataset) -> None:
        self.dataset = dataset

    def __call__(self, samples: list[tuple[tuple[int, int, int], dict[str, torch.Tensor]]]) -> dict[str, Any]:
        iteration = samples[0][0][2]
        out = self.dataset.collate([s for _, s in samples], iteration)
        out["iteration"] = iteration
        return out


class KeyedDataset(Dataset):
    """Returns each sample with its key, so that the collate function knows the iteration."""

    def __init__(self, dataset: ClipDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[tuple[int, int, int], dict[str, torch.Tensor]]:
        return key, self.dataset[key]


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@dataclass
class ValClip:
    name: str
    lr: torch.Tensor  # (T, 3, h, w)
    gt: torch.Tensor  # (T * rate, 3, H, W)


def validation_clips(
    clips: Sequence[Clip], data: DataRecipe, scale: int | None, frames: int, crop: int | None, start: int = 0
) -> list[ValClip]:
    """Held-out clips: ``frames`` LR frames from ``start`` (all if 0), centre-cropped to ``crop`` GT pixels.

    LR frames are the data's own LR if it has them, else made by the training degradation
    without compression (deterministic). Arbitrary-scale networks are validated at x4.
    """
    s = scale or 4
    out = []
    for clip in clips:
        count = (clip.frames - start) // data.rate if frames <= 0 else frames
        if count < 1 or start + count * data.rate > clip.frames:
            raise DataError(
                f"validation clip {clip.name} has {clip.frames} frames; it needs {start + max(count, 1) * data.rate}"
            )
        h, w = clip.size
        ch, cw = (min(crop, h), min(crop, w)) if crop else (h, w)
        ch, cw = ch // s * s, cw // s * s
        y, x = (h - ch) // 2 // s * s, (w - cw) // 2 // s * s
        gt = read_run(clip.gt, start, count * data.rate, (y, x, ch, cw))
        if clip.lr is not None:
            lr = read_run(clip.lr, start // data.rate, count, (y // s, x // s, ch // s, cw // s))
        else:
            lr = degrade(gt, data, s, None)
        out.append(ValClip(clip.name, lr, gt))
    return out
