"""Registration frames out of rosbag2 recordings: what a vehicle records, no dataset layout needed.

One pass over a bag's small topics (CameraInfo, NavSatFix, Imu, /tf_static and, for labelled
bags only, the ground truth) and one over its images. Each sampled image is paired with the fix
and IMU attitude nearest in header time (within the node's own age limits), decoded by the node's
decoders, and given the prior the node would search from: the antenna's fix moved to the camera
through the /tf_static mounts, heading from the IMU (REP-145 ENU). Frames the node would refuse
(no fix, stale IMU, undecodable image, outside the tile cache) are skipped and counted. A bag's
odometry (``/odom``, nav_msgs/Odometry), when it has one, goes with each frame: self-training
carries pseudo labels along it, as it does along a KITTI drive's OXTS dead reckoning.

Weak training reads no ground truth: ``labelled=False`` never opens the truth topics.
"""
from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import cv2
import numpy as np
from numpy.typing import NDArray

from g2s_localization.data.bag_io import TOPICS, typestore
from g2s_localization.geo.geodesy import quaternion_xyzw_to_yaw
from g2s_localization.geo.tile_sources import TileError
from g2s_localization.geo.tiles import TileCache
from g2s_localization.runtime.bag_files import open_bag
from g2s_localization.runtime.message_decoding import (
    StaticTransforms,
    add_static_transforms,
    attitude_from_imu,
    camera_from_info,
    fix_from_navsatfix,
    image_to_rgb,
    odometry_from_msg,
    sensor_mount,
    stamp_to_seconds,
)
from g2s_localization.runtime.mount import PlanarMount
from g2s_localization.runtime.pipeline import attitude_problem, gnss_prior_problem
from g2s_localization.runtime.sync import NearestBuffer
from g2s_localization.runtime.tracking import MAX_ODOMETRY_AGE_S

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass(frozen=True)
class BagTopics:
    """Where a bag keeps what training needs (defaults: the node's topics)."""

    image: str = TOPICS["image"]  # sensor_msgs/Image or CompressedImage
    camera_info: str = TOPICS["camera_info"]
    fix: str = TOPICS["fix"]
    imu: str = TOPICS["imu"]
    base_frame: str = "base_link"
    truth_fix: str = TOPICS["gt_fix"]  # labelled bags only (calibration): base_link's WGS84 position
    truth_pose: str = TOPICS["gt_pose"]  # labelled bags only: base_link's pose in map (its ENU yaw)
    odometry: str = TOPICS["odom"]  # optional nav_msgs/Odometry, odom -> base_link: carries pseudo labels


@dataclass(frozen=True)
class BagFrame:
    """One usable image and what the node would search with (the camera's prior, WGS84 / ENU yaw)."""

    stamp_s: float
    image: NDArray[np.uint8]  # RGB, as recorded (raw images stay raw: ``camera_info`` has the lens)
    camera_info: dict  # CameraInfo fields needed to rebuild the camera model
    prior: tuple[float, float, float]  # camera lat, lon (deg), ENU yaw (rad)
    pitch_rad: float  # camera pitch below the horizon: IMU pitch + mount pitch
    roll_rad: float
    truth: tuple[float, float, float] | None = None  # camera lat, lon, yaw; labelled bags only
    odometry: tuple[float, float, float] | None = None  # T_odom_base (x, y, yaw) at the image, as the node pairs it
    camera_mount: PlanarMount = PlanarMount()  # the camera on base_link, from /tf_static


@dataclass
class BagReport:
    """How many images a bag had, how many were used and why the others were not."""

    images: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"{self.used} of {self.images} images used" + (f"; skipped: {why}" if why else "")


def info_fields(msg) -> dict:
    return {"width": int(msg.width), "height": int(msg.height), "distortion_model": str(msg.distortion_model),
            "d": [float(x) for x in msg.d], "k": [float(x) for x in msg.k], "p": [float(x) for x in msg.p]}


def camera_of(info: dict):
    """The camera model of stored CameraInfo fields (the node's ``camera_from_info``)."""
    return camera_from_info(SimpleNamespace(**info))


def decode_image(msg, msgtype: str) -> NDArray[np.uint8]:
    """RGB pixels of an Image (the node's decoder) or a CompressedImage (JPEG/PNG). Raises ValueError."""
    if msgtype == "sensor_msgs/msg/Image":
        return image_to_rgb(msg)
    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode compressed image (format {msg.format!r})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _mounts(static: StaticTransforms, base: str, camera_frame: str, gnss_frame: str) -> tuple[PlanarMount, PlanarMount]:
    """Camera and antenna mounts from /tf_static, as the node takes them. A camera not found below
    ``base`` raises: training through a wrong lever arm would teach the network a wrong offset."""
    camera = sensor_mount(static, base, camera_frame, "camera")
    if camera is None:
        raise ValueError(f"/tf_static has no chain {base} -> {camera_frame!r} (the camera's frame); frames known: "
                         f"{sorted(static) or 'none'}. Record /tf_static (robot_state_publisher) with the bag")
    return camera, sensor_mount(static, base, gnss_frame, "gnss") or PlanarMount()


def read_bag_frames(bag, tiles: TileCache, topics: BagTopics = BagTopics(), every: int = 1,
                    max_gnss_age_s: float = 0.5, max_imu_age_s: float = 0.5, labelled: bool = False,
                    crop_px: int = 256, crop_metres_per_px: float = 0.2):
    """Yield ``(BagFrame, satellite_crop)`` for every ``every``-th image of ``bag`` the node could use;
    returns (as the generator's value) a :class:`BagReport`. ``labelled`` reads the truth topics."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    ts, report = typestore(), BagReport()
    with open_bag(bag) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        needed = [topics.image, topics.camera_info, topics.fix, topics.imu] + \
            ([topics.truth_fix, topics.truth_pose] if labelled else [])
        missing = [t for t in needed if t not in by_topic]
        if missing:
            raise ValueError(f"{bag} lacks topic(s) {missing}; it has {sorted(by_topic)}")
        if by_topic[topics.image].msgtype not in IMAGE_TYPES:
            raise ValueError(f"{topics.image} is {by_topic[topics.image].msgtype}, expected one of {IMAGE_TYPES}")
        small = [by_topic[t] for t in needed[1:]] + [c for c in reader.connections
                                                     if c.topic in ("/tf_static", topics.odometry)]
        fixes, attitudes, infos, truth_fix, truth_yaw, odometry = (_whole_bag_buffer() for _ in range(6))
        static: StaticTransforms = {}
        frames = {"gnss": ""}
        for conn, _, raw in reader.messages(connections=small):
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == "/tf_static":
                add_static_transforms(static, msg)
            elif conn.topic == topics.camera_info:
                infos.add(stamp_to_seconds(msg.header.stamp), (msg.header.frame_id, info_fields(msg)))
            elif conn.topic == topics.fix:
                frames["gnss"] = frames["gnss"] or msg.header.frame_id
                fix = fix_from_navsatfix(msg)
                fixes.add(fix.stamp_s, fix)
            elif conn.topic == topics.imu:
                att = attitude_from_imu(msg)
                attitudes.add(att.stamp_s, att)
            elif conn.topic == topics.odometry:
                odometry.add(*odometry_from_msg(msg))
            elif conn.topic == topics.truth_fix:
                truth_fix.add(stamp_to_seconds(msg.header.stamp), (float(msg.latitude), float(msg.longitude)))
            elif conn.topic == topics.truth_pose:
                o = msg.pose.orientation
                truth_yaw.add(stamp_to_seconds(msg.header.stamp), quaternion_xyzw_to_yaw((o.x, o.y, o.z, o.w)))
        mounts: dict[str, tuple[PlanarMount, PlanarMount]] = {}
        image_conn = by_topic[topics.image]
        for n, (_, _, raw) in enumerate(reader.messages(connections=[image_conn])):
            report.images += 1
            if n % every:
                report.skipped["not sampled"] += 1
                continue
            msg = ts.deserialize_cdr(raw, image_conn.msgtype)
            stamp = stamp_to_seconds(msg.header.stamp)
            info, fix, att = _value(infos, stamp, math.inf), _value(fixes, stamp, max_gnss_age_s), \
                _value(attitudes, stamp, max_imu_age_s)
            reason = _refusal(stamp, info, fix, att, max_gnss_age_s, max_imu_age_s)
            if reason:
                report.skipped[reason] += 1
                continue
            camera_frame = info[0] or msg.header.frame_id
            if camera_frame not in mounts:
                mounts[camera_frame] = _mounts(static, topics.base_frame, camera_frame, frames["gnss"])
            camera_mount, gnss_mount = mounts[camera_frame]
            try:
                rgb = decode_image(msg, image_conn.msgtype)
                if rgb.shape[:2] != (info[1]["height"], info[1]["width"]):
                    raise ValueError(f"image {rgb.shape[1]}x{rgb.shape[0]} does not match its CameraInfo")
            except ValueError as exc:
                report.skipped[f"bad image ({exc})"] += 1
                continue
            # the node's prior: the antenna's fix moved to base_link, then to the camera
            prior = camera_mount.sensor_geodetic(*gnss_mount.base_geodetic(fix.lat_deg, fix.lon_deg, att.yaw_rad))
            truth = None
            if labelled:
                where, yaw = _value(truth_fix, stamp, max_gnss_age_s), _value(truth_yaw, stamp, max_gnss_age_s)
                if where is None or yaw is None:
                    report.skipped["no ground truth near the image"] += 1
                    continue
                truth = camera_mount.sensor_geodetic(where[0], where[1], yaw)
            try:
                crop = tiles.crop(prior[0], prior[1], prior[2], crop_px, crop_metres_per_px).image
            except TileError as exc:
                report.skipped[f"outside the tile cache ({type(exc).__name__})"] += 1
                continue
            report.used += 1
            yield BagFrame(stamp, rgb, info[1], prior, att.pitch_rad + camera_mount.pitch_rad, att.roll_rad,
                           truth, _value(odometry, stamp, MAX_ODOMETRY_AGE_S), camera_mount), crop
    return report


def _whole_bag_buffer() -> NearestBuffer:
    """The node's nearest-in-time buffer, holding a whole bag (no horizon, no clearing on jumps)."""
    return NearestBuffer(horizon_s=math.inf, max_items=sys.maxsize, jump_back_s=math.inf)


def _value(buffer: NearestBuffer, stamp: float, slop_s: float):
    found = buffer.nearest(stamp, slop_s)
    return None if found is None else found[1]


def _refusal(stamp: float, info, fix, att, max_gnss_age_s: float, max_imu_age_s: float) -> str:
    """Why the node would not register this image ('' when it would), in the node's words."""
    if info is None:
        return "no CameraInfo"
    return gnss_prior_problem(fix, stamp, max_gnss_age_s) or attitude_problem(att, stamp, max_imu_age_s)
