"""Frames cut into overlapping tiles, and padded to a network's size constraints."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from vsr_models.plan import SizeConstraints


@dataclass(frozen=True)
class Tile:
    """A tile: the region run through the network (``y0:y1, x0:x1``, LR) and the core kept."""

    y0: int
    y1: int
    x0: int
    x1: int
    core_y0: int
    core_y1: int
    core_x0: int
    core_x1: int


def plan_tiles(h: int, w: int, tile: int | None, overlap: int) -> list[Tile]:
    """Cover an h x w frame with tiles of at most ``tile`` core pixels and ``overlap`` context."""
    if not tile or (h <= tile and w <= tile):
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    if tile <= 0 or overlap < 0:
        raise ValueError("tile must be positive and tile overlap non-negative")

    def spans(n: int) -> list[tuple[int, int]]:
        count = -(-n // tile)
        edges = [round(i * n / count) for i in range(count + 1)]
        return list(itertools.pairwise(edges))

    tiles = []
    for cy0, cy1 in spans(h):
        for cx0, cx1 in spans(w):
            tiles.append(
                Tile(
                    max(cy0 - overlap, 0),
                    min(cy1 + overlap, h),
                    max(cx0 - overlap, 0),
                    min(cx1 + overlap, w),
                    cy0,
                    cy1,
                    cx0,
                    cx1,
                )
            )
    return tiles


def pad_to(frames: np.ndarray, constraints: SizeConstraints) -> np.ndarray:
    """Pad (T, 3, h, w) frames at the bottom and right to fit ``constraints`` (edge replication or
    zeros, as ``constraints.pad`` says)."""
    h, w = frames.shape[-2:]
    ph, pw = constraints.padded(h, w)
    if (ph, pw) == (h, w):
        return frames
    mode = "constant" if constraints.pad == "zeros" else "edge"
    return np.pad(frames, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode=mode)
