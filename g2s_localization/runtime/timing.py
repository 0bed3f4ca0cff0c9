"""Where the node's time goes: end-to-end latency and per-stage costs over the last frames.

Kept apart from the node so the figures (diagnostics, ``benchmarks/node_throughput.py``) come from
one place and are testable without ROS.
"""
from __future__ import annotations

from collections import deque

import numpy as np

STAGES = ("decode", "wait", "crop", "bev", "features", "search", "publish")


class FrameTimings:
    """Latency (image arrival to pose publication) and stage times of the last ``window`` frames, seconds."""

    def __init__(self, window: int = 200) -> None:
        self.latencies: deque[float] = deque(maxlen=window)
        self.stages: deque[dict[str, float]] = deque(maxlen=window)

    def add(self, latency_s: float, stages: dict[str, float]) -> None:
        self.latencies.append(latency_s)
        self.stages.append(stages)

    def summary(self) -> dict[str, float]:
        """``latency_p50_ms``, ``latency_p95_ms`` and ``<stage>_ms`` (mean over the frames that had
        the stage); empty before the first frame."""
        if not self.latencies:
            return {}
        latencies = np.array(self.latencies) * 1000.0
        out = {"latency_p50_ms": float(np.percentile(latencies, 50)),
               "latency_p95_ms": float(np.percentile(latencies, 95))}
        for stage in STAGES:
            values = [s[stage] for s in self.stages if stage in s]
            if values:
                out[f"{stage}_ms"] = 1000.0 * float(np.mean(values))
        return out
