"""Cross-view retrieval pieces after LPN (square-ring part pooling) and the University-1652 protocol.

Used by :mod:`.relocalization` (descriptor index over the tile cache, relocalization without
GNSS) and :mod:`.retrieval_training` (training on the synthetic world).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def square_ring_pool(features: Tensor, rings: int = 4) -> Tensor:
    """Average features ``(B, C, H, W)`` over ``rings`` concentric square rings: ``(B, C, rings)``.

    Ring 0 is the central square; ring ``i`` the band between the squares of half-size
    ``i / rings`` and ``(i + 1) / rings`` of the half-extent (Chebyshev distance from the centre),
    so the parts are rotation-robust for overhead views, as LPN argues.
    """
    b, c, h, w = features.shape
    ys = (torch.arange(h, device=features.device, dtype=features.dtype) - (h - 1) / 2) / (h / 2)
    xs = (torch.arange(w, device=features.device, dtype=features.dtype) - (w - 1) / 2) / (w / 2)
    radius = torch.maximum(ys.abs()[:, None], xs.abs()[None, :])  # Chebyshev distance in [0, 1)
    ring = torch.clamp((radius * rings).long(), max=rings - 1)
    one_hot = F.one_hot(ring, rings).to(features.dtype)  # (H, W, R)
    counts = one_hot.sum((0, 1)).clamp(min=1)
    return torch.einsum("bchw,hwr->bcr", features, one_hot) / counts


class LPNEmbedder(nn.Module):
    """Overhead image ``(B, C, H, W)`` -> L2-normalised descriptor ``(B, rings * dim)``.

    One network for both views (the ground view enters as its bird's-eye projection, so both are
    overhead images): ``len(widths)`` stride-2 stages, then square-ring part pooling and one
    linear head per ring, as LPN does.
    """

    def __init__(self, dim: int = 64, rings: int = 4, width: int = 32, in_channels: int = 3,
                 stages: int = 4) -> None:
        super().__init__()
        self.rings = rings
        layers, cin = [], in_channels
        for i in range(stages):
            cout = width * min(2**i, 4)
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True)]
            cin = cout
        layers += [nn.Conv2d(cin, cin, 3, 1, 1, bias=False), nn.GroupNorm(8, cin), nn.ReLU(inplace=True)]
        self.backbone = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(cin, dim) for _ in range(rings))

    def forward(self, image: Tensor) -> Tensor:
        parts = square_ring_pool(self.backbone(image), self.rings)  # (B, C, R)
        embedded = [F.normalize(head(parts[..., i]), dim=1) for i, head in enumerate(self.heads)]
        return F.normalize(torch.cat(embedded, 1), dim=1)


def recall_at_k(similarity: NDArray, positives: NDArray[np.bool_], ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Share of queries with a true match among their top ``k`` gallery items, in %."""
    order = np.argsort(-similarity, axis=1)
    ranked = np.take_along_axis(positives, order, axis=1)
    return {k: 100.0 * float(ranked[:, :k].any(1).mean()) for k in ks}


def average_precision(similarity: NDArray, positives: NDArray[np.bool_]) -> float:
    """Mean over queries of the average precision of the ranked gallery, in % (University-1652 AP)."""
    order = np.argsort(-similarity, axis=1)
    ranked = np.take_along_axis(positives, order, axis=1).astype(np.float64)
    hits = np.cumsum(ranked, axis=1)
    precision = hits / np.arange(1, ranked.shape[1] + 1)
    per_query = (precision * ranked).sum(1) / np.maximum(ranked.sum(1), 1)
    return 100.0 * float(per_query.mean())


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str


def read_university1652(root: str | Path, folder: str) -> list[LabelledImage]:
    """Images of one University-1652 folder, e.g. ``test/query_drone`` or ``train/satellite``.

    Layout: ``<root>/<folder>/<building id>/<image>``; the building id is the label.
    """
    base = Path(root) / folder
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a University-1652 folder")
    items = [LabelledImage(p, d.name) for d in sorted(base.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise FileNotFoundError(f"{base} holds no images in <building id>/ folders")
    return items
