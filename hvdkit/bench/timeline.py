"""Reading Horovod's timeline (HOROVOD_TIMELINE, a Chrome-trace JSON file written by rank 0):
the share of the training span during which an allreduce was in progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_events(path: Path) -> list[dict[str, Any]]:
    """The events of a timeline file; Horovod leaves the JSON array unclosed while it writes."""
    text = path.read_text().strip().rstrip(",")
    if not text:
        return []
    if not text.endswith("]"):
        text += "]"
    return json.loads(text)


def _intervals(events: list[dict[str, Any]], name: str) -> list[tuple[float, float]]:
    """Begin/end pairs (µs) of activities called `name`, per tensor (pid)."""
    open_at: dict[Any, list[tuple[str, float]]] = {}
    out = []
    for event in events:
        phase, pid = event.get("ph"), event.get("pid")
        if phase == "B":
            open_at.setdefault(pid, []).append((event.get("name", ""), float(event["ts"])))
        elif phase == "E" and open_at.get(pid):
            began_name, began = open_at[pid].pop()
            if began_name == name:
                out.append((began, float(event["ts"])))
        elif phase == "X" and event.get("name") == name:
            out.append((float(event["ts"]), float(event["ts"]) + float(event.get("dur", 0))))
    return out


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def allreduce_share(path: Path) -> dict[str, float]:
    """Busy time of allreduce (all tensors' ALLREDUCE activities merged) over the span from
    the first to the last allreduce, and the negotiation (waiting for other ranks) share."""
    events = [e for e in load_events(path) if "ts" in e]
    busy = _intervals(events, "ALLREDUCE")
    if not busy:
        return {}
    span = max(b for _, b in busy) - min(a for a, _ in busy)
    negotiate = _intervals(events, "NEGOTIATE_ALLREDUCE")
    return {"timeline_allreduce_share": union_length(busy) / span if span else 0.0,
            "timeline_negotiate_share": union_length(negotiate) / span if span else 0.0}
