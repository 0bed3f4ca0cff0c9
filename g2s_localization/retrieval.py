"""The University-1652 retrieval protocol: Recall@k and AP, and its folder layout.

The LPN part pooling itself lives in :mod:`.place_index`; the relocalization benchmark scores
its single-frame retrieval with these metrics, and the reader opens real University-1652 data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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
