"""ROS message fields to the package's plain types, with no ROS import.

Duck-typed: the same functions read rclpy messages in the node and ``rosbags``' dataclasses in
the offline bag readers, so training sees a frame decoded exactly as the vehicle decodes it.
Quaternions are ROS order (x, y, z, w).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from g2s_localization.cameras.distortion import DistortedCamera
from g2s_localization.cameras.pinhole import PinholeCamera
from g2s_localization.geo.geodesy import quaternion_xyzw_to_yaw
from g2s_localization.runtime.mount import PlanarMount
from g2s_localization.runtime.pipeline import Attitude, GnssFix

SUPPORTED_ENCODINGS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)),
                       "bgra8": (4, (2, 1, 0))}


def stamp_to_nanoseconds(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def stamp_to_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def image_to_rgb(msg) -> NDArray[np.uint8]:
    """``sensor_msgs/Image`` to an RGB array; honours ``step`` (padded rows). Raises ValueError."""
    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; expected one of {sorted(SUPPORTED_ENCODINGS)}")
    channels, order = SUPPORTED_ENCODINGS[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0 or step < w * channels:
        raise ValueError(f"inconsistent image geometry {w}x{h}, step {step} for {msg.encoding}")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if data.size != h * step:
        raise ValueError(f"image data has {data.size} bytes, expected height*step = {h * step}")
    pixels = data.reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    return np.ascontiguousarray(pixels[..., list(order)])


def camera_from_info(msg) -> PinholeCamera | DistortedCamera:
    """The camera model of the images CameraInfo describes. With non-zero distortion coefficients the
    images are raw: ``K`` plus the lens model (``plumb_bob``, ``rational_polynomial``,
    ``equidistant``); without, a pinhole from ``P`` if set, else ``K``. Raises ValueError when
    unusable (an unknown distortion model with non-zero coefficients included)."""
    p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    d = tuple(float(x) for x in msg.d)
    if any(x != 0.0 for x in d):
        intrinsics = PinholeCamera(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(msg.width),
                                   int(msg.height))
        return DistortedCamera(intrinsics, str(msg.distortion_model), d)
    source = p[:, :3] if p[0, 0] > 0 else k
    return PinholeCamera(float(source[0, 0]), float(source[1, 1]), float(source[0, 2]), float(source[1, 2]),
                         int(msg.width), int(msg.height))


def fix_from_navsatfix(msg) -> GnssFix:
    """The fix, with its horizontal covariance when the receiver reports one (``position_covariance``
    is ENU, row-major; ``COVARIANCE_TYPE_UNKNOWN`` (0) or a non-finite or negative variance: unknown)."""
    status_ok = int(msg.status.status) >= 0
    c = [float(x) for x in msg.position_covariance]
    covariance = None
    if int(msg.position_covariance_type) != 0 and all(math.isfinite(x) for x in c[:5]) and min(c[0], c[4]) > 0:
        covariance = np.array([[c[0], c[1]], [c[3], c[4]]])
    return GnssFix(stamp_to_seconds(msg.header.stamp), float(msg.latitude), float(msg.longitude),
                   status_ok and math.isfinite(msg.latitude) and math.isfinite(msg.longitude), covariance)


def attitude_from_imu(msg) -> Attitude:
    """ENU yaw of base_link and its pitch/roll from an IMU orientation (REP-145)."""
    q = (msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w)
    stamp = stamp_to_seconds(msg.header.stamp)
    if not all(math.isfinite(v) for v in q) or np.linalg.norm(q) < 1e-6:
        return Attitude(stamp, math.nan, math.nan, math.nan)
    yaw = quaternion_xyzw_to_yaw(q)
    _, pitch, roll = Rotation.from_quat(q).as_euler("ZYX")
    return Attitude(stamp, yaw, float(pitch), float(roll))


def odometry_from_msg(msg) -> tuple[float, tuple[float, float, float]]:
    """A nav_msgs/Odometry's stamp (s) and its child's planar pose in its parent frame,
    ``T_odom_base`` as (x, y, yaw): wheel or visual dead reckoning."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return stamp_to_seconds(msg.header.stamp), (float(p.x), float(p.y), quaternion_xyzw_to_yaw((q.x, q.y, q.z, q.w)))


StaticTransforms = dict[str, tuple[str, NDArray[np.float64], NDArray[np.float64]]]


def transform_chain(static: StaticTransforms, base: str, target: str) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """``T_base_target`` (translation, quaternion x, y, z, w) composed from ``/tf_static`` edges
    ``child -> (parent, translation, quaternion)``; None when ``target`` does not hang below ``base``."""
    translation, rotation = np.zeros(3), Rotation.identity()
    frame, hops = target, 0
    while frame != base:
        if frame not in static or hops > 64:
            return None
        parent, t, q = static[frame]
        step = Rotation.from_quat(q)
        translation, rotation = step.apply(translation) + t, step * rotation
        frame, hops = parent, hops + 1
    return translation, rotation.as_quat()


def add_static_transforms(static: StaticTransforms, msg) -> None:
    """Record a ``tf2_msgs/TFMessage``'s edges as ``child -> (parent, translation, quaternion x, y, z, w)``."""
    for t in msg.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        static[t.child_frame_id] = (t.header.frame_id, np.array([tr.x, tr.y, tr.z]), np.array([q.x, q.y, q.z, q.w]))


def sensor_mount(static: StaticTransforms, base: str, frame: str, sensor: str) -> PlanarMount | None:
    """The planar mount of ``frame`` on ``base`` from ``/tf_static`` (None when not below ``base``).
    ``sensor`` ``"camera"``: an optical frame (forward is its z); ``"gnss"``: an antenna has a place,
    no heading; anything else: forward is x."""
    chain = transform_chain(static, base, frame) if frame else None
    if chain is None:
        return None
    mount = PlanarMount.from_transform(*chain, optical=sensor == "camera")
    return PlanarMount(mount.forward_m, mount.left_m) if sensor == "gnss" else mount
