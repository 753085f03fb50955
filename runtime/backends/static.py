"""Stage calls captured once per input signature and replayed from buffers the backend owns (CUDA graphs).

A captured graph reads and writes fixed addresses, so each (stage, input shapes and dtypes) gets
its own static inputs and outputs: a call copies its inputs into the static inputs, replays, and
hands back copies of the static outputs (the executor keeps step outputs alive across later
replays, which would overwrite the static ones). Frames of one size plus a few tile sizes give a
handful of graphs per stage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: ``capture(stage, static_inputs) -> (replay, static_outputs)``: record the stage reading the static
#: inputs; ``replay()`` runs it again, writing the static outputs.
Capture = Callable[[str, dict[str, torch.Tensor]], tuple[Callable[[], None], dict[str, torch.Tensor]]]


class StaticCalls:
    """Per-(stage, signature) static buffers around a ``capture`` function."""

    def __init__(self, capture: Capture) -> None:
        self.capture = capture
        self.entries: dict[tuple[Any, ...], tuple[dict[str, torch.Tensor], Callable[[], None], dict[str, Any]]] = {}

    @staticmethod
    def signature(stage: str, inputs: dict[str, torch.Tensor]) -> tuple[Any, ...]:
        return (stage, *sorted((name, tuple(t.shape), t.dtype) for name, t in inputs.items()))

    def run(self, stage: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = self.signature(stage, inputs)
        entry = self.entries.get(key)
        if entry is None:
            static_inputs = {name: t.clone() for name, t in inputs.items()}
            replay, static_outputs = self.capture(stage, static_inputs)
            entry = self.entries[key] = (static_inputs, replay, static_outputs)
        else:
            for name, t in inputs.items():
                entry[0][name].copy_(t)
        entry[1]()
        return {name: t.clone() for name, t in entry[2].items()}


def cuda_graph_capture(call: Callable[[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Capture:
    """A :data:`Capture` recording ``call(stage, inputs)`` as a ``torch.cuda.CUDAGraph`` on the current device.

    Two warm-up calls on a side stream first (cuDNN picks its algorithms, the allocator settles),
    as PyTorch's CUDA-graph notes prescribe; each graph keeps its own memory pool.
    """

    def capture(stage: str, static_inputs: dict[str, torch.Tensor]) -> tuple[Callable[[], None], dict[str, Any]]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                call(stage, static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = call(stage, static_inputs)
        return graph.replay, static_outputs

    return capture
