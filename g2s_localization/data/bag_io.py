"""rosbag2 files without ROS: KITTI raw drive -> bag (mcap or sqlite3), written with ``rosbags``.

Topics and frames (REP-105 / REP-145)::

    /camera/image_raw     sensor_msgs/msg/Image        camera_optical_frame  rgb8
    /camera/camera_info   sensor_msgs/msg/CameraInfo   camera_optical_frame
    /gnss/fix             sensor_msgs/msg/NavSatFix    gnss_link
    /imu/data             sensor_msgs/msg/Imu          imu_link  (orientation x,y,z,w in ENU)
    /ground_truth/pose    geometry_msgs/msg/PoseStamped  map    (base_link pose)
    /ground_truth/fix     sensor_msgs/msg/NavSatFix    base_link (exact geodetic truth)
    /tf_static            tf2_msgs/msg/TFMessage       base_link -> camera_optical_frame (KITTI calibration
                                                        chain, when present), imu_link, gnss_link
    /odom                 nav_msgs/msg/Odometry        odom -> base_link, dead-reckoned from
                          the OXTS forward speed and yaw rate (a wheel/IMU odometry stand-in)

The ``map`` datum (WGS84 origin of ENU) is stored in the bag's custom metadata so a replay
can put poses in the same frame (:func:`read_bag_datum`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from g2s_localization.data.kitti_calib import base_to_camera
from g2s_localization.data.kitti_raw import KittiRawDrive
from g2s_localization.geo.geodesy import EnuFrame

TOPICS = {
    "image": "/camera/image_raw",
    "camera_info": "/camera/camera_info",
    "fix": "/gnss/fix",
    "imu": "/imu/data",
    "gt_pose": "/ground_truth/pose",
    "gt_fix": "/ground_truth/fix",
    "odom": "/odom",
    "tf_static": "/tf_static",
}
FRAMES = {"camera": "camera_optical_frame", "gnss": "gnss_link", "imu": "imu_link", "map": "map", "base": "base_link",
          "odom": "odom"}
DATUM_KEYS = ("g2s.datum_lat_deg", "g2s.datum_lon_deg", "g2s.datum_alt_m")


def typestore():
    """Message definitions of the ROS 2 release these wheels are (Kilted)."""
    return get_typestore(Stores.ROS2_KILTED)


def _stamp(ts, stamp_ns: int):
    return ts.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def kitti_to_bag(drive_dir: str | Path, bag_path: str | Path, storage: str = "mcap",
                 datum: tuple[float, float, float] | None = None, progress: bool = True) -> Path:
    """Convert a KITTI raw drive (real or synthetic) to a rosbag2 directory at ``bag_path``."""
    drive = KittiRawDrive(drive_dir)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
    if plugin is None:
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    ts = typestore()
    T = ts.types
    camera = drive.camera()
    image_stamps, oxts_stamps = drive.timestamps_ns("image_02"), drive.timestamps_ns("oxts")
    truth = drive.ground_truth()
    if not (len(image_stamps) >= len(drive.frames) and len(oxts_stamps) >= len(drive.frames)):
        raise ValueError(f"{drive.path}: fewer timestamps than frames")
    datum = datum or drive.datum() or (truth[0].lat, truth[0].lon, truth[0].alt)
    enu = EnuFrame(*datum)
    out = Path(bag_path)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another path")
    header = lambda stamp, frame: T["std_msgs/msg/Header"](stamp=_stamp(ts, stamp), frame_id=frame)  # noqa: E731
    k_matrix = np.array([camera.fx, 0, camera.cx, 0, camera.fy, camera.cy, 0, 0, 1], dtype=np.float64)
    p_matrix = np.array([camera.fx, 0, camera.cx, 0, 0, camera.fy, camera.cy, 0, 0, 0, 1, 0], dtype=np.float64)
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)

    with Writer(out, version=9, storage_plugin=plugin) as writer:
        for key, value in zip(DATUM_KEYS, datum):
            writer.set_custom_data(key, repr(float(value)))
        writer.set_custom_data("g2s.source", str(drive.path.name))
        conns = {
            "image": writer.add_connection(TOPICS["image"], "sensor_msgs/msg/Image", typestore=ts),
            "camera_info": writer.add_connection(TOPICS["camera_info"], "sensor_msgs/msg/CameraInfo", typestore=ts),
            "fix": writer.add_connection(TOPICS["fix"], "sensor_msgs/msg/NavSatFix", typestore=ts),
            "imu": writer.add_connection(TOPICS["imu"], "sensor_msgs/msg/Imu", typestore=ts),
            "gt_pose": writer.add_connection(TOPICS["gt_pose"], "geometry_msgs/msg/PoseStamped", typestore=ts),
            "gt_fix": writer.add_connection(TOPICS["gt_fix"], "sensor_msgs/msg/NavSatFix", typestore=ts),
            "odom": writer.add_connection(TOPICS["odom"], "nav_msgs/msg/Odometry", typestore=ts),
            "tf_static": writer.add_connection(TOPICS["tf_static"], "tf2_msgs/msg/TFMessage", typestore=ts),
        }
        odometry = drive.dead_reckoning()  # x, y, yaw in odom, integrated from speed and yaw rate

        def put(name: str, stamp: int, msg) -> None:
            writer.write(conns[name], stamp, ts.serialize_cdr(msg, msg.__msgtype__))

        put("tf_static", min(image_stamps[0], oxts_stamps[0]),
            _static_transforms(ts, header(min(image_stamps[0], oxts_stamps[0]), FRAMES["base"]),
                               base_to_camera(drive.path.parent)))
        for i, frame in enumerate(tqdm(drive.frames, desc="bag", disable=not progress, unit="frame")):
            t_img, t_oxts = image_stamps[i], oxts_stamps[i]
            put("camera_info", t_img, T["sensor_msgs/msg/CameraInfo"](
                header=header(t_img, FRAMES["camera"]), height=camera.height, width=camera.width,
                distortion_model="plumb_bob", d=np.zeros(5), k=k_matrix, r=np.eye(3).reshape(-1), p=p_matrix,
                binning_x=0, binning_y=0, roi=roi))
            o = drive.oxts(frame)
            put("fix", t_oxts, _navsatfix(ts, header(t_oxts, FRAMES["gnss"]), o.lat, o.lon, o.alt,
                                          o.pos_accuracy if o.has_fix else None))
            qx, qy, qz, qw = Rotation.from_euler("ZYX", [o.yaw, o.pitch, o.roll]).as_quat()
            vec = T["geometry_msgs/msg/Vector3"]
            put("imu", t_oxts, T["sensor_msgs/msg/Imu"](
                header=header(t_oxts, FRAMES["imu"]),
                orientation=T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
                orientation_covariance=np.diag([1e-4, 1e-4, math.radians(2.0) ** 2]).reshape(-1),
                angular_velocity=vec(x=o.wf, y=o.wl, z=o.wu),
                angular_velocity_covariance=np.diag([4e-6] * 3).reshape(-1),
                linear_acceleration=vec(x=o.af, y=o.al, z=o.au),
                linear_acceleration_covariance=np.diag([2.5e-3] * 3).reshape(-1)))
            rgb = drive.image(frame)  # after its camera info, fix and IMU: consumers pair on arrival
            put("image", t_img, T["sensor_msgs/msg/Image"](
                header=header(t_img, FRAMES["camera"]), height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                is_bigendian=0, step=rgb.shape[1] * 3, data=np.ascontiguousarray(rgb).reshape(-1)))
            gt = truth[i]
            e, n, u = enu.to_enu(gt.lat, gt.lon, gt.alt)
            gq = Rotation.from_euler("ZYX", [gt.yaw, gt.pitch, gt.roll]).as_quat()
            put("gt_pose", t_img, T["geometry_msgs/msg/PoseStamped"](
                header=header(t_img, FRAMES["map"]),
                pose=T["geometry_msgs/msg/Pose"](
                    position=T["geometry_msgs/msg/Point"](x=float(e), y=float(n), z=float(u)),
                    orientation=T["geometry_msgs/msg/Quaternion"](x=gq[0], y=gq[1], z=gq[2], w=gq[3]))))
            put("gt_fix", t_img, _navsatfix(ts, header(t_img, FRAMES["base"]), gt.lat, gt.lon, gt.alt, 0.0))
            odom_pose = odometry[i]
            oq = Rotation.from_euler("z", odom_pose[2]).as_quat()
            put("odom", t_oxts, T["nav_msgs/msg/Odometry"](
                header=header(t_oxts, FRAMES["odom"]), child_frame_id=FRAMES["base"],
                pose=T["geometry_msgs/msg/PoseWithCovariance"](
                    pose=T["geometry_msgs/msg/Pose"](
                        position=T["geometry_msgs/msg/Point"](x=odom_pose[0], y=odom_pose[1], z=0.0),
                        orientation=T["geometry_msgs/msg/Quaternion"](x=oq[0], y=oq[1], z=oq[2], w=oq[3])),
                    covariance=np.diag([0.01, 0.01, 1e6, 1e6, 1e6, 1e-3]).reshape(-1)),
                twist=T["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T["geometry_msgs/msg/Twist"](linear=vec(x=o.vf, y=0.0, z=0.0),
                                                       angular=vec(x=0.0, y=0.0, z=o.wu)),
                    covariance=np.diag([0.01, 1e6, 1e6, 1e6, 1e6, 2.5e-5]).reshape(-1))))
    return out


def _static_transforms(ts, header, T_base_camera: np.ndarray | None):
    """/tf_static: the IMU and the OXTS antenna at base_link (KITTI's OXTS frame), and the camera's
    mount from the calibration chain when the drive has it."""
    T = ts.types
    mounts = {FRAMES["imu"]: np.eye(4), FRAMES["gnss"]: np.eye(4)}
    if T_base_camera is not None:
        mounts[FRAMES["camera"]] = T_base_camera
    transforms = []
    for child, mount in mounts.items():
        x, y, z, w = Rotation.from_matrix(mount[:3, :3]).as_quat()
        tx, ty, tz = (float(v) for v in mount[:3, 3])
        transforms.append(T["geometry_msgs/msg/TransformStamped"](
            header=header, child_frame_id=child, transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
                rotation=T["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w)))))
    return T["tf2_msgs/msg/TFMessage"](transforms=transforms)


def _navsatfix(ts, header, lat: float, lon: float, alt: float, sigma_m: float | None):
    """NavSatFix; ``sigma_m=None`` means no fix (status -1, NaN position, unknown covariance)."""
    T = ts.types
    status_cls = T["sensor_msgs/msg/NavSatStatus"]
    if sigma_m is None:
        status = status_cls(status=status_cls.STATUS_NO_FIX, service=status_cls.SERVICE_GPS)
        return T["sensor_msgs/msg/NavSatFix"](header=header, status=status, latitude=math.nan, longitude=math.nan,
                                              altitude=math.nan, position_covariance=np.zeros(9),
                                              position_covariance_type=0)
    status = status_cls(status=status_cls.STATUS_FIX, service=status_cls.SERVICE_GPS)
    var = sigma_m * sigma_m
    return T["sensor_msgs/msg/NavSatFix"](header=header, status=status, latitude=lat, longitude=lon, altitude=alt,
                                          position_covariance=np.diag([var, var, 4 * var]).reshape(-1),
                                          position_covariance_type=2)


def read_bag_datum(bag_path: str | Path) -> tuple[float, float, float] | None:
    """The map datum a bag was written with (``metadata.yaml`` custom data, beside a bare storage
    file too), or None for bags from elsewhere."""
    path = Path(bag_path)
    meta_file = (path if path.is_dir() else path.parent) / "metadata.yaml"
    if not meta_file.is_file():
        return None
    meta = yaml.safe_load(meta_file.read_text()) or {}
    custom = meta.get("rosbag2_bagfile_information", {}).get("custom_data") or {}
    if not all(k in custom for k in DATUM_KEYS):
        return None
    return tuple(float(custom[k]) for k in DATUM_KEYS)  # type: ignore[return-value]
