"""Can a registration be trusted? The gate every published pose passes, and diagnostics for it.

The node (:mod:`g2s_localization.runtime.pipeline`) and the benchmarks apply the same gate
(:func:`withheld_reason`), so a benchmark's "published" is what a vehicle would receive.

The softmax confidence says how peaked the score volume is, not whether the peak is the right
place: on imagery unlike the training data the network can put a sharp peak anywhere.
:func:`peak_significance` (how many robust deviations the best score stands above the volume's
median) is recorded by ``benchmarks/real_pairs.py`` as a candidate check; measured, it does not
yet separate right from wrong (synthetic correct frames 3.1-7.6, real failures 2.7-5.6), so it
is not part of the gate.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray

NON_FINITE = "registration produced a non-finite result"


def withheld_reason(yaw_rad: float, covariance: NDArray[np.float64], confidence: float, min_confidence: float
                    ) -> str:
    """Why a registration must not be published; '' when it may be."""
    if not (np.all(np.isfinite(covariance)) and math.isfinite(yaw_rad) and math.isfinite(confidence)):
        return NON_FINITE
    if confidence < min_confidence:
        return f"confidence {confidence:.2f} below {min_confidence:.2f}"
    return ""


def peak_significance(scores: torch.Tensor) -> torch.Tensor:
    """Score volumes ``(B, K, D, D)`` -> robust z of each one's maximum ``(B,)``:
    ``(max - median) / (1.4826 MAD)``."""
    flat = scores.flatten(1).double()
    median = flat.median(dim=1).values
    mad = (flat - median[:, None]).abs().median(dim=1).values * 1.4826
    return (flat.amax(1) - median) / mad.clamp(min=1e-12)
