"""Registration metrics with the KITTI cross-view protocol plus covariance calibration.

Errors are split in the *true* vehicle heading frame: longitudinal (along the heading) and
lateral (across it), as the cross-view KITTI papers report them. Calibration: the normalised
estimation error squared (NEES, 3-DoF; a calibrated filter averages 3) and the fraction of
truths inside the 95 % ellipse/ellipsoid (3-DoF chi-square 95 % = 7.815).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from g2s_localization.registration.reliability import CHI2_99_2DOF

CHI2_95_3DOF = 7.814727903251178
CONFIDENTLY_WRONG_M = 3.0  # published and farther off than this: confidently wrong
THRESHOLDS_M = (1.0, 3.0, 5.0)
THRESHOLDS_DEG = (1.0, 3.0, 5.0)


@dataclass
class FrameErrors:
    """Per-frame errors, arrays of shape (N,) except ``nees``."""

    longitudinal_m: NDArray[np.float64]
    lateral_m: NDArray[np.float64]
    yaw_deg: NDArray[np.float64]
    nees: NDArray[np.float64]
    position_nees: NDArray[np.float64]  # east/north only, 2-DoF

    @property
    def position_m(self) -> NDArray[np.float64]:
        return np.hypot(self.longitudinal_m, self.lateral_m)


def frame_errors(true_en: NDArray, true_yaw: NDArray, est_en: NDArray, est_yaw: NDArray,
                 covariance: NDArray) -> FrameErrors:
    """``true_en``/``est_en`` (N, 2) east/north metres, yaws (N,) rad, covariance (N, 3, 3)."""
    delta = np.asarray(est_en, np.float64) - np.asarray(true_en, np.float64)
    c, s = np.cos(true_yaw), np.sin(true_yaw)
    longitudinal = delta[:, 0] * c + delta[:, 1] * s
    lateral = -delta[:, 0] * s + delta[:, 1] * c
    dyaw = np.angle(np.exp(1j * (np.asarray(est_yaw) - np.asarray(true_yaw))))
    residual = np.stack([delta[:, 0], delta[:, 1], dyaw], -1)
    nees = np.einsum("ni,nij,nj->n", residual, np.linalg.inv(covariance), residual)
    position_nees = np.einsum("ni,nij,nj->n", delta, np.linalg.inv(np.asarray(covariance)[:, :2, :2]), delta)
    return FrameErrors(longitudinal, lateral, np.degrees(dyaw), nees, position_nees)


def summarize(errors: FrameErrors) -> dict[str, float]:
    """The paper's table (recalls in %, errors in m / deg) plus calibration figures."""
    out: dict[str, float] = {"frames": float(len(errors.nees))}
    lon, lat, yaw, pos = (np.abs(errors.longitudinal_m), np.abs(errors.lateral_m), np.abs(errors.yaw_deg),
                          errors.position_m)
    for t in THRESHOLDS_M:
        out[f"lateral_within_{t:g}m_%"] = 100.0 * float((lat <= t).mean())
        out[f"longitudinal_within_{t:g}m_%"] = 100.0 * float((lon <= t).mean())
        out[f"position_within_{t:g}m_%"] = 100.0 * float((pos <= t).mean())
    for t in THRESHOLDS_DEG:
        out[f"yaw_within_{t:g}deg_%"] = 100.0 * float((yaw <= t).mean())
    for name, values in (("position_m", pos), ("lateral_m", lat), ("longitudinal_m", lon), ("yaw_deg", yaw)):
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_median"] = float(np.median(values))
    out["nees_mean"] = float(errors.nees.mean())
    out["inside_95_ellipse_%"] = 100.0 * float((errors.nees <= CHI2_95_3DOF).mean())
    return out


def publication_summary(errors: FrameErrors, published: NDArray[np.bool_]) -> dict[str, float]:
    """What a vehicle receives: the share of frames published, the share published yet more than
    3 m off or outside their own 99 % ellipse (confidently wrong), and the table over the
    published frames alone (``published_`` prefix)."""
    published = np.asarray(published, dtype=bool)
    wrong = published & ((errors.position_m > CONFIDENTLY_WRONG_M) | (errors.position_nees > CHI2_99_2DOF))
    out = {"availability_%": 100.0 * float(published.mean()), "confidently_wrong_%": 100.0 * float(wrong.mean())}
    if published.any():
        kept = FrameErrors(*(getattr(errors, f)[published] for f in
                             ("longitudinal_m", "lateral_m", "yaw_deg", "nees", "position_nees")))
        out.update({f"published_{k}": v for k, v in summarize(kept).items()})
    return out


def format_table(rows: dict[str, dict[str, float]], keys: list[str] | None = None) -> str:
    """Markdown table: one row per method, one column per metric."""
    keys = keys or ["position_m_median", "lateral_within_1m_%", "longitudinal_within_1m_%", "position_within_1m_%",
                    "yaw_deg_median", "yaw_within_1deg_%", "inside_95_ellipse_%", "nees_mean"]
    header = "| method | " + " | ".join(keys) + " |"
    rule = "|" + "---|" * (len(keys) + 1)
    lines = [header, rule]
    for name, metrics in rows.items():
        cells = [f"{metrics.get(k, math.nan):.2f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
