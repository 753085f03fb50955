"""Video and frame-folder input/output for the runtime, on PyAV.

Frames cross this package's boundary as float32 RGB arrays of shape (H, W, 3) in [0, 1]:

* :func:`probe` describes an input (a video file or a folder of PNG/JPEG frames),
* :func:`read_frames` yields its frames as :class:`Frame` objects,
* :class:`VideoWriter` encodes frames into a video file (with the source's audio copied in) or
  into a folder of PNGs, staged under a hidden temporary name and put in place only when
  everything succeeded, so a failed run never leaves a partial output behind.

Networks take frames as (3, H, W): :func:`chw` turns one around, :func:`hwc` turns an output back.

Modules: :mod:`.types` (errors, :class:`VideoInfo`, :class:`Colour`, :class:`Frame`, :func:`chw`,
:func:`hwc`), :mod:`.colour` (YUV/RGB conversion, colour descriptions), :mod:`.reading`, :mod:`.writing`
and :mod:`.audio`.
"""

from .reading import is_frame_folder, natural_key, probe, read_frames
from .types import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    Colour,
    Frame,
    InputError,
    OutputError,
    VideoInfo,
    VideoWarning,
    chw,
    hwc,
)
from .writing import VideoWriter, check_codec, check_output, output_kind

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Colour",
    "Frame",
    "InputError",
    "OutputError",
    "VideoInfo",
    "VideoWarning",
    "VideoWriter",
    "check_codec",
    "check_output",
    "chw",
    "hwc",
    "is_frame_folder",
    "natural_key",
    "output_kind",
    "probe",
    "read_frames",
]
