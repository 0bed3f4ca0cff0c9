"""Conversions between ROS 2 messages and the package's plain types (ROS edge, no node logic).

Quaternions are ROS order (x, y, z, w). The published pose covariance is the ROS 6x6 row-major
(x, y, z, roll, pitch, yaw); z, roll and pitch are not estimated and carry a large variance so
that a robot_localization EKF in two_d_mode (or not) ignores them.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from g2s_localization.geo.geodesy import yaw_to_quaternion_xyzw
from g2s_localization.runtime.message_decoding import (  # noqa: F401  (the node's decoders, re-exported)
    SUPPORTED_ENCODINGS,
    attitude_from_imu,
    camera_from_info,
    fix_from_navsatfix,
    image_to_rgb,
    stamp_to_nanoseconds,
    stamp_to_seconds,
    transform_chain,
)

UNOBSERVED_VARIANCE = 1e6


def rgb_to_image(msg_cls, header, rgb: NDArray[np.uint8]):
    h, w = rgb.shape[:2]
    return msg_cls(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                   data=np.ascontiguousarray(rgb).tobytes())


def pose_covariance_6x6(covariance_enu_yaw: NDArray[np.float64]) -> list[float]:
    """3x3 (east, north, yaw) -> ROS 6x6 row-major (x, y, z, roll, pitch, yaw)."""
    full = np.diag([0.0, 0.0, UNOBSERVED_VARIANCE, UNOBSERVED_VARIANCE, UNOBSERVED_VARIANCE, 0.0])
    index = [0, 1, 5]
    for a, i in enumerate(index):
        for b, j in enumerate(index):
            full[i, j] = covariance_enu_yaw[a, b]
    return [float(v) for v in full.ravel()]


def fill_pose(pose_msg, east: float, north: float, yaw: float) -> None:
    """Set a ``geometry_msgs/Pose`` from planar ENU coordinates."""
    pose_msg.position.x, pose_msg.position.y, pose_msg.position.z = float(east), float(north), 0.0
    x, y, z, w = yaw_to_quaternion_xyzw(yaw)
    pose_msg.orientation.x, pose_msg.orientation.y, pose_msg.orientation.z, pose_msg.orientation.w = x, y, z, w


def compose_planar(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    """``T_a * T_b`` for planar transforms (x, y, yaw)."""
    c, s = math.cos(a[2]), math.sin(a[2])
    return a[0] + c * b[0] - s * b[1], a[1] + s * b[0] + c * b[1], math.atan2(math.sin(a[2] + b[2]), math.cos(a[2] + b[2]))


def invert_planar(t: tuple[float, float, float]) -> tuple[float, float, float]:
    c, s = math.cos(t[2]), math.sin(t[2])
    return -c * t[0] - s * t[1], s * t[0] - c * t[1], -t[2]
