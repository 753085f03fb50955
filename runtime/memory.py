"""Memory: what this machine can give a run, and what decoding a frame takes.

A small file can describe frames far larger than any memory (a 184 KB MP4 of one 8000 x 8000
frame, a PNG whose header says 30000 x 30000): the work such an input asks for is compared with
the memory available *before* anything is allocated, and refused with the cause and the size that
would fit, instead of being found out by the kernel's out-of-memory killer after minutes of work.
The run's own estimate (windows, tiles, the network's activations) is in :mod:`runtime.budget`.

``psutil`` is not a dependency: the figure comes from ``/proc/meminfo`` (``MemAvailable``) and the
memory cgroup's limit less its usage (v2 ``memory.max`` / ``memory.current``, v1
``memory.limit_in_bytes`` / ``memory.usage_in_bytes``), whichever is smaller; ``os.sysconf``
elsewhere. Plain Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Bytes per pixel that decoding one frame takes here: the decoder's picture (up to 16-bit 4:4:4,
#: 6 B), the RGB float32 frame (12 B) and one conversion copy (12 B), rounded up.
DECODE_BYTES_PER_PIXEL = 32


@dataclass(frozen=True)
class Available:
    """Bytes of memory this process can still use, and where the figure comes from."""

    bytes: int
    source: str

    def __str__(self) -> str:
        return f"{gib(self.bytes)} ({self.source})"


def gib(n: float) -> str:
    """Bytes as GiB for messages (``3.2 GiB``; ``0.01 GiB`` at least)."""
    return f"{max(n / 2**30, 0.01):.2f} GiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) is not a number


def _meminfo() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """The memory cgroup's limit less its usage, if a limit is set (the smallest found)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            folders = [Path("/sys/fs/cgroup") / path.lstrip("/"), Path("/sys/fs/cgroup")]
            files = ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):  # v1
            base = Path("/sys/fs/cgroup/memory")
            folders = [base / path.lstrip("/"), base]
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        for folder in folders:
            limit, usage = _read_int(folder / files[0]), _read_int(folder / files[1])
            if limit is not None and usage is not None and limit < 1 << 60:  # v1 writes "no limit" as ~2**63
                rooms.append(max(limit - usage, 0))
                break
    return min(rooms) if rooms else None


def available_memory() -> Available | None:
    """The memory this process can still use, or ``None`` where the system does not say."""
    found = []
    meminfo = _meminfo()
    if meminfo is not None:
        found.append(Available(meminfo, "MemAvailable in /proc/meminfo"))
    room = _cgroup_room()
    if room is not None:
        found.append(Available(room, "the memory cgroup's limit less its usage"))
    if not found:
        try:
            found.append(Available(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found, key=lambda a: a.bytes)


def ffmpeg_decodes(width: int, height: int) -> bool:
    """Whether FFmpeg accepts a picture of ``width`` x ``height`` at all (its ``av_image_check_size``:
    ``(w + 128) * (h + 128)`` under 2**31 / 8), which is about 16000 x 16000."""
    return width > 0 and height > 0 and (width + 128) * (height + 128) < (2**31 - 1) // 8


def frame_size_problem(width: int, height: int) -> str | None:
    """Why frames of ``width`` x ``height`` cannot be decoded here, or ``None``: beyond what FFmpeg
    decodes, or one frame needs more memory than is available."""
    if not ffmpeg_decodes(width, height):
        return (
            f"its frames are {height}x{width} pixels, more than FFmpeg decodes (about 16000x16000); "
            "such a header is broken or made to exhaust memory"
        )
    need = width * height * DECODE_BYTES_PER_PIXEL
    room = available_memory()
    if room is not None and need > room.bytes:
        return (
            f"its frames are {height}x{width} pixels: decoding one takes about {gib(need)}, more than the "
            f"{room} available; downscale it first"
        )
    return None
