"""Fusion over frames: the last published pose, carried by odometry, as the next frame's prior.

A GNSS fix of a few metres leaves look-alike places inside the search window (the next block of
a straight street); a pose published a moment ago, moved by odometry, leaves a few decimetres.
Searching a small window around it removes those competitors. The danger is lock-in: one wrong
pose would steer every later search to the wrong place, and a small window would then find
"confirmations" there. So a track starts only when two registrations searched independently
around their GNSS fixes agree through odometry, and it ends after a few withheld frames in a row
or when it grows old; the publish gate still checks every pose against the GNSS fix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from g2s_localization.geo.geodesy import heading_frame_to_enu
from g2s_localization.registration.reliability import CHI2_99_2DOF
from g2s_localization.runtime.mount import Pose2

Odometry = tuple[float, float, float]  # T_odom_base as (x, y, yaw)
MAX_ODOMETRY_AGE_S = 0.2  # the odometry pose nearest an image, if no farther than this, is the image's


@dataclass(frozen=True)
class TrackedPose:
    """A published base_link pose (datum ENU, covariance over east, north, yaw) and the odometry at its time."""

    stamp_s: float
    odometry: Odometry
    pose: Pose2
    covariance: NDArray[np.float64]


def carried(last: TrackedPose, odometry: Odometry, drift_ratio: float) -> tuple[Pose2, NDArray[np.float64]]:
    """``last`` moved by the odometry since: base_link's predicted pose and its (2, 2) position covariance
    (the last pose's, its heading error turned into position over the distance moved, and drift)."""
    (x0, y0, yaw0), (x1, y1, yaw1) = last.odometry, odometry
    forward, left = heading_frame_to_enu(x1 - x0, y1 - y0, -yaw0)  # the motion in base_link
    east0, north0, map_yaw0 = last.pose
    moved = np.array(heading_frame_to_enu(forward, left, map_yaw0))
    J = np.array([[1.0, 0.0, -moved[1]], [0.0, 1.0, moved[0]]])
    covariance = J @ last.covariance @ J.T + np.eye(2) * (drift_ratio * float(np.hypot(*moved))) ** 2
    yaw = math.atan2(math.sin(map_yaw0 + yaw1 - yaw0), math.cos(map_yaw0 + yaw1 - yaw0))
    return (east0 + float(moved[0]), north0 + float(moved[1]), yaw), covariance


def inside_prediction(predicted: tuple[Pose2, NDArray[np.float64]], east_north: tuple[float, float]) -> bool:
    """Is the point inside the prediction's own 99 % ellipse?"""
    (east, north, _), predicted_cov = predicted
    d = np.array([east_north[0] - east, east_north[1] - north])
    return bool(np.linalg.det(predicted_cov) > 0 and float(d @ np.linalg.solve(predicted_cov, d)) <= CHI2_99_2DOF)


def agrees(predicted: tuple[Pose2, NDArray[np.float64]], pose: Pose2, covariance: NDArray[np.float64]) -> bool:
    """Is ``pose`` inside the 99 % ellipse of the prediction and its own covariance combined?"""
    (east, north, _), predicted_cov = predicted
    d = np.array([pose[0] - east, pose[1] - north])
    combined = predicted_cov + np.asarray(covariance, dtype=np.float64)[:2, :2]
    return bool(np.linalg.det(combined) > 0 and float(d @ np.linalg.solve(combined, d)) <= CHI2_99_2DOF)


@dataclass
class Tracker:
    """The track's state; the pipeline asks :meth:`prior` before a search and reports with :meth:`update`."""

    max_age_s: float = 2.0  # 0 = never track
    drift_ratio: float = 0.05  # odometry position error per metre travelled (1 sigma)
    max_misses: int = 3  # withheld tracked frames in a row that end the track
    track: TrackedPose | None = None  # confirmed: narrows the search
    candidate: TrackedPose | None = None  # a GNSS-window pose awaiting a second, agreeing one
    misses: int = 0

    def reset(self) -> None:
        self.track, self.candidate, self.misses = None, None, 0

    def _fresh(self, pose: TrackedPose | None, stamp_s: float, odometry: Odometry | None) -> bool:
        return pose is not None and odometry is not None and 0.0 <= stamp_s - pose.stamp_s <= self.max_age_s

    def prior(self, stamp_s: float, odometry: Odometry | None) -> tuple[Pose2, NDArray[np.float64]] | None:
        """The tracked pose carried to this frame, or None (no confirmed, recent track, or no odometry)."""
        if not self._fresh(self.track, stamp_s, odometry):
            return None
        return carried(self.track, odometry, self.drift_ratio)

    def update(self, stamp_s: float, odometry: Odometry | None, published: TrackedPose | None, tracked: bool,
               withheld_en: tuple[float, float] | None = None) -> None:
        """After a frame: ``published`` is its published pose (None when withheld), ``tracked`` whether
        its search was the track's, ``withheld_en`` a withheld registration's position (east, north).

        A withheld tracked frame whose peak still lies where the track predicts (too wide to publish,
        e.g. a featureless stretch) does not count against the track: it neither confirms nor refutes
        it, and the track still ends ``max_age_s`` after its last published pose."""
        if self.max_age_s <= 0 or odometry is None:
            return
        if published is None:
            if tracked:
                if withheld_en is not None and self._fresh(self.track, stamp_s, odometry) and inside_prediction(
                        carried(self.track, odometry, self.drift_ratio), withheld_en):
                    return
                self.misses += 1
                if self.misses >= self.max_misses:  # the track no longer explains the images
                    self.reset()
            return
        if tracked:
            self.track, self.misses = published, 0
        elif self._fresh(self.candidate, stamp_s, odometry) and agrees(
                carried(self.candidate, odometry, self.drift_ratio), published.pose, published.covariance):
            self.track, self.candidate, self.misses = published, None, 0
        else:
            self.candidate = published
