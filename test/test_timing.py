"""The node's latency and stage figures (runtime/timing.py)."""
from __future__ import annotations

import pytest

from g2s_localization.runtime.timing import FrameTimings


def test_percentiles_and_stage_means() -> None:
    timings = FrameTimings(window=100)
    assert timings.summary() == {}
    for k in range(1, 101):  # 1..100 ms
        stages = {"decode": 0.002, "search": 0.010 * (k % 2)}
        if k > 50:
            stages["features"] = 0.030
        timings.add(k / 1000.0, stages)
    summary = timings.summary()
    assert summary["latency_p50_ms"] == pytest.approx(50.5)
    assert summary["latency_p95_ms"] == pytest.approx(95.05)
    assert summary["decode_ms"] == pytest.approx(2.0) and summary["search_ms"] == pytest.approx(5.0)
    assert summary["features_ms"] == pytest.approx(30.0)  # over the frames that had the stage
    assert "crop_ms" not in summary


def test_only_the_last_frames_count() -> None:
    timings = FrameTimings(window=3)
    for latency in (1.0, 1.0, 0.01, 0.02, 0.03):
        timings.add(latency, {})
    assert timings.summary()["latency_p95_ms"] < 31.0
