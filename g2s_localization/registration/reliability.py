"""Can a registration be trusted? The gate every published pose passes, and diagnostics for it.

The node (:mod:`g2s_localization.runtime.pipeline`) and the benchmarks apply the same gate
(:func:`publish_verdict`), so a benchmark's "published" is what a vehicle would receive.

The softmax confidence says how peaked the score volume is, not whether the peak is the right
place: on imagery unlike the training data the network can put a sharp peak anywhere, so a high
confidence alone is no licence to publish. What separated right from wrong best, measured on the
synthetic cross-area split and the real pairs, is the covariance's own spread (competing places
widen it) and agreement with the GNSS fix's covariance. Also measured and rejected as gates: the
peak's robust z-score within the volume and its margin over the runner-up place (both overlap
between correct synthetic frames and real failures).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

PUBLISH, NOT_FINITE, LOW_CONFIDENCE, UNRELIABLE = "publish", "not finite", "low confidence", "unreliable"
CHI2_99_2DOF = 9.210340371976182  # chi-square, 2 degrees of freedom, 99 %


def position_std_m(covariance: NDArray[np.float64]) -> float:
    """Standard deviation along the covariance's worst horizontal direction, metres."""
    return math.sqrt(max(float(np.linalg.eigvalsh(np.asarray(covariance, dtype=np.float64)[:2, :2])[-1]), 0.0))


def search_radius_m(prior_covariance_en: NDArray[np.float64] | None, max_radius_m: float,
                    min_radius_m: float = 4.0) -> float:
    """Search window radius for a prior of this ENU covariance: its 99 % ellipse's long semi-axis,
    within ``[min_radius_m, max_radius_m]``; the full window when the covariance is unknown."""
    if prior_covariance_en is None:
        return max_radius_m
    cov = np.asarray(prior_covariance_en, dtype=np.float64)[:2, :2]
    if not np.all(np.isfinite(cov)):
        return max_radius_m
    semi_axis = math.sqrt(CHI2_99_2DOF * max(float(np.linalg.eigvalsh(cov)[-1]), 0.0))
    return float(min(max(semi_axis, min_radius_m), max_radius_m))


class Verdict(NamedTuple):
    """Whether a registration may be published, and if not, what kind of failure and why."""

    kind: str  # PUBLISH, NOT_FINITE, LOW_CONFIDENCE or UNRELIABLE
    reason: str = ""

    @property
    def publish(self) -> bool:
        return self.kind == PUBLISH


def publish_verdict(yaw_rad: float, covariance: NDArray[np.float64], confidence: float, min_confidence: float,
                    max_position_std_m: float = math.inf, offset_from_prior_en: NDArray[np.float64] | None = None,
                    prior_covariance_en: NDArray[np.float64] | None = None,
                    reference_support: float = math.nan) -> Verdict:
    """May a registration be published?

    Besides a minimum confidence, the pose's own uncertainty must be that of a fine registration:
    when the score volume has competing places (a look-alike street, a featureless road, imagery
    the features do not understand) the covariance spreads over them, and such a frame is withheld
    as UNRELIABLE rather than published as a wide, probably wrong pose. With the prior's covariance
    (the GNSS fix's ``position_covariance``), the pose must also lie inside the 99 % ellipse of the
    prior and the pose combined: a sharp peak where the GNSS says the vehicle cannot be is a wrong
    peak (UNRELIABLE too). A learned registration must also be supported by the training-free
    features (``reference_support``: their own probability within 1 m and 1 deg of it, held to the
    same minimum as the confidence): learned features on imagery unlike their training data can put
    a sharp peak where the image's edges give no evidence at all.
    """
    if not (np.all(np.isfinite(covariance)) and math.isfinite(yaw_rad) and math.isfinite(confidence)):
        return Verdict(NOT_FINITE, "registration produced a non-finite result")
    if confidence < min_confidence:
        return Verdict(LOW_CONFIDENCE, f"confidence {confidence:.2f} below {min_confidence:.2f}")
    std = position_std_m(covariance)
    if std > max_position_std_m:
        return Verdict(UNRELIABLE, f"position std {std:.1f} m above {max_position_std_m:.1f} m (competing places)")
    if math.isfinite(reference_support) and reference_support < min_confidence:
        return Verdict(UNRELIABLE, f"training-free features do not support the pose (probability "
                                   f"{reference_support:.2f} within 1 m, 1 deg; below {min_confidence:.2f})")
    if offset_from_prior_en is not None and prior_covariance_en is not None:
        offset = np.asarray(offset_from_prior_en, dtype=np.float64)
        combined = np.asarray(prior_covariance_en, dtype=np.float64)[:2, :2] + np.asarray(covariance)[:2, :2]
        if np.all(np.isfinite(combined)) and np.linalg.det(combined) > 0:
            if float(offset @ np.linalg.solve(combined, offset)) > CHI2_99_2DOF:
                return Verdict(UNRELIABLE, f"registration is {float(np.hypot(*offset)):.1f} m from the GNSS fix, "
                                           f"outside its 99 % ellipse")
    return Verdict(PUBLISH)

