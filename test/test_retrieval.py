"""LPN pooling, retrieval metrics and the University-1652 layout reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from g2s_localization.retrieval import (
    LPNEmbedder, average_precision, read_university1652, recall_at_k, square_ring_pool,
)


class TestSquareRingPool:
    def test_known_rings(self) -> None:
        # 8x8 map whose value is the ring index (Chebyshev distance bands of width 1 px for 4 rings)
        idx = torch.arange(8, dtype=torch.float32) - 3.5
        cheb = torch.maximum(idx.abs()[:, None], idx.abs()[None, :])  # 0.5 .. 3.5
        features = (cheb - 0.5).view(1, 1, 8, 8)
        pooled = square_ring_pool(features, 4)
        torch.testing.assert_close(pooled[0, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]))

    def test_rotation_invariance_of_rings(self) -> None:
        x = torch.rand(2, 3, 12, 12)
        torch.testing.assert_close(square_ring_pool(x), square_ring_pool(torch.rot90(x, 1, (2, 3))))

    def test_gradcheck(self) -> None:
        x = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: square_ring_pool(t, 3), (x,))


def test_embedder_shapes() -> None:
    net = LPNEmbedder(dim=16, rings=4, width=8)
    out = net(torch.rand(3, 3, 64, 64))
    assert out.shape == (3, 64)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


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
