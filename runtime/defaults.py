"""The names and defaults that the runtime and the tools' flags share, in a module that imports nothing
heavy: the command lines declare their flags (and answer ``--help`` and flag errors) from these without
loading PyTorch, ONNX Runtime or PyAV."""

from __future__ import annotations

#: The zoo name ``vsr-run`` uses when none is given.
DEFAULT_MODEL = "basicvsr"
#: What ``--backend`` takes.
BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
#: The precision a backend runs when none is named (the same for every tool: vsr-build-engine builds it).
DEFAULT_PRECISION = "fp32"
#: Default chunk and overlap, chosen from the chunked-vs-whole-clip measurement in the README.
DEFAULT_CHUNK = 30
DEFAULT_OVERLAP = 6
#: Default input frames per segment (rounded up to whole windows).
DEFAULT_SEGMENT = 300
#: Containers written to a pipe (FFmpeg muxer names).
PIPE_FORMATS = ("nut", "mpegts")
