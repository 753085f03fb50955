"""Plan pieces shared by the bidirectional networks: the flow pair and second-order sweeps.

Naming: ``flow_bwd[t]`` warps frame t+1 onto frame t (the backward sweep's alignment),
``flow_fwd[t]`` warps frame t-1 onto frame t; ``flow2_bwd[t]`` / ``flow2_fwd[t]`` are the
second-order flows to t+2 / t-2, composed from two first-order ones. A name may carry a suffix
(``tag``) so that one plan can run a network several times (DAVSR runs BasicVSR++ three times).

Plain Python: this module only writes :class:`~vsr_models.plan.Step`\\ s.
"""

from __future__ import annotations

from typing import Literal

from .plan import Read, Step

Direction = Literal["forward", "backward"]


def back_offset(direction: Direction) -> int:
    """Frame offset of "one step back" in a sweep: +1 for a backward sweep, -1 for a forward one."""
    return 1 if direction == "backward" else -1


def flow_pair_steps(source: str, tag: str = "", rate: int = 1) -> list[Step]:
    """``flow_bwd[t] = flow(src[t], src[t+1])`` and ``flow_fwd[t] = flow(src[t], src[t-1])``."""
    return [
        Step("flow", {"a": Read(source), "b": Read(source, 1)}, {"flow": f"flow_bwd{tag}"}, last=-1, rate=rate),
        Step("flow", {"a": Read(source), "b": Read(source, -1)}, {"flow": f"flow_fwd{tag}"}, first=1, rate=rate),
    ]


def second_order_flow_steps(tag: str = "", rate: int = 1) -> list[Step]:
    """``flow2_bwd[t] = compose(flow_bwd[t], flow_bwd[t+1])`` and the forward twin (t-1, t-2)."""
    return [
        Step(
            "compose",
            {"flow1": Read(f"flow_bwd{tag}"), "flow_next": Read(f"flow_bwd{tag}", 1)},
            {"flow2": f"flow2_bwd{tag}"},
            last=-2,
            rate=rate,
        ),
        Step(
            "compose",
            {"flow1": Read(f"flow_fwd{tag}"), "flow_next": Read(f"flow_fwd{tag}", -1)},
            {"flow2": f"flow2_fwd{tag}"},
            first=2,
            rate=rate,
        ),
    ]


def second_order_reads(
    state: str, direction: Direction, valid: str, tag: str = "", has2: bool = True
) -> dict[str, Read]:
    """What a second-order sweep step reads: its own two previous outputs in sweep order
    (``prev1``, ``prev2``), the flows to them (``flow1``, ``flow2``) and whether they exist
    (``has1``, ``has2``: the ``valid`` ones-map of those frames, zeros past the clip's ends)."""
    back = back_offset(direction)
    suffix = "bwd" if direction == "backward" else "fwd"
    reads = {
        "prev1": Read(state, back, "zeros"),
        "prev2": Read(state, 2 * back, "zeros"),
        "flow1": Read(f"flow_{suffix}{tag}", 0, "zeros"),
        "flow2": Read(f"flow2_{suffix}{tag}", 0, "zeros"),
        "has1": Read(valid, back, "zeros"),
    }
    if has2:
        reads["has2"] = Read(valid, 2 * back, "zeros")
    return reads
