"""The University-1652 retrieval metrics: Recall@k and AP.

The LPN part pooling itself lives in :mod:`g2s_localization.relocalization.place_head`; the
relocalization benchmark scores its single-frame retrieval with these metrics. The folder reader
is :mod:`g2s_localization.data.university1652`.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


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


