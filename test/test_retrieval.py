"""Retrieval metrics and the University-1652 layout reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from g2s_localization.data.university1652 import read_university1652
from g2s_localization.evaluation.retrieval import average_precision, recall_at_k


def test_metrics_known_values() -> None:
    sim = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.8]])
    pos = np.array([[False, True, False], [True, False, False]])
    assert recall_at_k(sim, pos, (1, 2, 3)) == {1: 0.0, 2: 50.0, 3: 100.0}
    assert average_precision(sim, pos) == pytest.approx(100 * (0.5 + 1 / 3) / 2)


def test_university1652_reader(tmp_path: Path) -> None:
    for building, n in (("0001", 2), ("0002", 1)):
        d = tmp_path / "test" / "query_drone" / building
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"image-{i:02d}.jpeg").write_bytes(b"")
    (tmp_path / "test" / "query_drone" / "0002" / "notes.txt").write_text("ignored")
    items = read_university1652(tmp_path, "test/query_drone")
    assert [i.label for i in items] == ["0001", "0001", "0002"]
    with pytest.raises(FileNotFoundError):
        read_university1652(tmp_path, "test/gallery_satellite")
