"""Where a sensor sits on the vehicle, as the planar localization needs it.

Registration finds the *camera's* ground point and heading; a GNSS fix is the *antenna's*
position. On a car both are a metre or two from ``base_link``: more than the accuracy budget, so
poses are carried between the frames here. A mount is the sensor's ground projection in
``base_link`` (x forward, y left; REP-103) and the heading of its forward axis (for a camera: the
optical axis, ``z`` of the ``*_optical`` frame); ENU poses are ``(east, north, yaw)`` tuples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from g2s_localization.geo.geodesy import EnuFrame, heading_frame_to_enu

Pose2 = tuple[float, float, float]  # east (m), north (m), ENU yaw (rad)


@dataclass(frozen=True)
class PlanarMount:
    forward_m: float = 0.0
    left_m: float = 0.0
    yaw_rad: float = 0.0  # the sensor's forward axis relative to base_link's x, counter-clockwise
    pitch_rad: float = 0.0  # camera: optical axis below the horizontal (down positive, REP-103 pitch)

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.forward_m, self.left_m, self.yaw_rad, self.pitch_rad)):
            raise ValueError(f"mount values must be finite, got {self}")

    @classmethod
    def from_transform(cls, translation_xyz: tuple[float, float, float],
                       rotation_xyzw: tuple[float, float, float, float], optical: bool) -> "PlanarMount":
        """From ``T_base_sensor`` (translation, quaternion x, y, z, w). For an optical frame the forward
        axis is its ``z``, else its ``x``."""
        R = Rotation.from_quat(rotation_xyzw).as_matrix()
        forward = R[:, 2] if optical else R[:, 0]
        return cls(float(translation_xyz[0]), float(translation_xyz[1]), math.atan2(forward[1], forward[0]),
                   math.asin(max(-1.0, min(1.0, -forward[2]))))

    def _offset(self, yaw: float) -> tuple[float, float]:
        return heading_frame_to_enu(self.forward_m, self.left_m, yaw)

    def sensor_pose(self, base: Pose2) -> Pose2:
        """``T_map_sensor`` for ``T_map_base``."""
        de, dn = self._offset(base[2])
        return base[0] + de, base[1] + dn, _wrap(base[2] + self.yaw_rad)

    def base_pose(self, sensor: Pose2) -> Pose2:
        """``T_map_base`` for ``T_map_sensor``."""
        yaw = _wrap(sensor[2] - self.yaw_rad)
        de, dn = self._offset(yaw)
        return sensor[0] - de, sensor[1] - dn, yaw

    def sensor_geodetic(self, lat: float, lon: float, yaw: float) -> tuple[float, float, float]:
        """:meth:`sensor_pose` in WGS84: the sensor's (lat, lon, ENU yaw) for base_link's."""
        east, north, sensor_yaw = self.sensor_pose((0.0, 0.0, yaw))
        sensor_lat, sensor_lon, _ = EnuFrame(lat, lon).to_geodetic(np.array([east, north, 0.0]))
        return float(sensor_lat), float(sensor_lon), float(sensor_yaw)

    def base_geodetic(self, lat: float, lon: float, yaw: float) -> tuple[float, float, float]:
        """:meth:`base_pose` in WGS84: base_link's (lat, lon, ENU yaw) for the sensor's."""
        east, north, base_yaw = self.base_pose((0.0, 0.0, yaw))
        base_lat, base_lon, _ = EnuFrame(lat, lon).to_geodetic(np.array([east, north, 0.0]))
        return float(base_lat), float(base_lon), float(base_yaw)

    def base_covariance(self, sensor_covariance: NDArray[np.float64], base_yaw: float) -> NDArray[np.float64]:
        """The covariance of :meth:`base_pose` (east, north, yaw) from the sensor's: the lever arm turns
        heading uncertainty into position uncertainty."""
        de, dn = self._offset(base_yaw)
        J = np.array([[1.0, 0.0, dn], [0.0, 1.0, -de], [0.0, 0.0, 1.0]])
        return J @ np.asarray(sensor_covariance, dtype=np.float64) @ J.T


def _wrap(angle: float) -> float:
    return math.atan2(math.sin(angle), math.cos(angle))
