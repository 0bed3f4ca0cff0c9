"""g2s_node as a separate process, talking to this test's rclpy node over real DDS on loopback."""
from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from g2s_localization_msgs.msg import RegistrationStatus
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, Imu, NavSatFix
from tf2_msgs.msg import TFMessage

from g2s_localization.data.kitti_calib import camera_mount
from g2s_localization.data.kitti_raw import find_drives
from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.runtime.pipeline import State


class Harness(Node):
    """Publishes sensor data like a vehicle and records what g2s_node answers."""

    def __init__(self, context: rclpy.Context, prefix: str = "") -> None:
        """``prefix``: namespace of the node under test, and of the sensor topics it is given."""
        super().__init__("g2s_test_harness", context=context)
        self.image_pub = self.create_publisher(Image, f"{prefix}/camera/image_raw", 10)
        self.info_pub = self.create_publisher(CameraInfo, f"{prefix}/camera/camera_info", 10)
        self.fix_pub = self.create_publisher(NavSatFix, f"{prefix}/gnss/fix", 10)
        self.imu_pub = self.create_publisher(Imu, f"{prefix}/imu/data", 10)
        self.poses: dict[float, PoseWithCovarianceStamped] = {}
        self.statuses: dict[float, RegistrationStatus] = {}
        self.tf: list[TFMessage] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.satellite: list[Image] = []
        stamp = lambda m: round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 3)  # noqa: E731
        self.create_subscription(PoseWithCovarianceStamped, f"{prefix}/g2s_localization/pose",
                                 lambda m: self.poses.__setitem__(stamp(m), m), 50)
        self.create_subscription(RegistrationStatus, f"{prefix}/g2s_localization/status",
                                 lambda m: self.statuses.__setitem__(stamp(m), m), 50)
        self.create_subscription(TFMessage, "/tf", self.tf.append, 50)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.create_subscription(Image, f"{prefix}/g2s_localization/satellite_prior", self.satellite.append, 5)

    def send(self, stamp: float, rgb: np.ndarray | None, camera_k: tuple, fix: tuple | None, yaw: float | None,
             encoding: str = "rgb8") -> None:
        sec, nsec = int(stamp), int(round((stamp - int(stamp)) * 1e9))
        def header(msg, frame):
            msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nsec, frame
            return msg
        fx, cx, cy, w, h = camera_k
        info = header(CameraInfo(width=w, height=h), "camera_optical_frame")
        info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        self.info_pub.publish(info)
        if fix is not None:
            msg = header(NavSatFix(), "gnss_link")
            msg.latitude, msg.longitude, msg.altitude = fix
            msg.status.status = 0 if math.isfinite(fix[0]) else -1
            self.fix_pub.publish(msg)
        if yaw is not None:
            imu = header(Imu(), "imu_link")
            imu.orientation.x, imu.orientation.y, imu.orientation.z, imu.orientation.w = \
                Rotation.from_euler("z", yaw).as_quat()
            self.imu_pub.publish(imu)
        time.sleep(0.05)  # let fix and IMU arrive first, as they would at 10 Hz
        img = header(Image(height=h, width=w, encoding=encoding, is_bigendian=0), "camera_optical_frame")
        data = rgb if rgb is not None else np.zeros((h, w, 2), np.uint8)
        img.step = w * data.shape[2]
        img.data = data.tobytes()
        self.image_pub.publish(img)


def wait_for(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def running_node(params: dict[str, object], namespace: str = ""):
    """g2s_node in its own process with these parameters, and a harness node that has seen it come up.

    With a ``namespace``, the node and its sensor topics live under it, apart from other nodes."""
    cmd = [sys.executable, "-m", "g2s_localization.ros.node", "--ros-args"]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
        params = {**{t: f"{namespace}/{d}" for t, d in (("image_topic", "camera/image_raw"), (
            "camera_info_topic", "camera/camera_info"), ("fix_topic", "gnss/fix"), ("imu_topic", "imu/data"))},
                  **params}
    for key, value in params.items():
        cmd += ["-p", f"{key}:={value}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    harness = Harness(context, namespace)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(harness)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    ready = wait_for(lambda: harness.image_pub.get_subscription_count() > 0 and harness.fix_pub.get_subscription_count() > 0
                     and harness.imu_pub.get_subscription_count() > 0
                     and harness.count_publishers(f"{namespace}/g2s_localization/status") > 0,
                     timeout=90.0)
    if not ready:
        proc.kill()
        pytest.fail(f"g2s_node did not come up: {proc.communicate()[0][-3000:]}")
    time.sleep(1.0)  # let the reverse direction (node -> harness) finish matching too
    try:
        yield harness, proc
    finally:
        executor.shutdown()
        harness.destroy_node()
        rclpy.shutdown(context=context)
        if proc.poll() is None:
            proc.send_signal(2)  # SIGINT: the node must stop cleanly
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def live(small_world_dir: Path, small_dataset: Path):
    from g2s_localization.synthetic.generate import load_world

    world = load_world(small_world_dir)
    drive = find_drives(small_dataset)[0]
    mount = camera_mount(drive.path.parent)  # the drive's camera sits off base_link; no /tf_static here
    params = {"tiles_path": small_world_dir / "tiles", "weights": "baseline", "device": "cpu",
              "datum_lat_deg": world.config.anchor_lat_deg, "datum_lon_deg": world.config.anchor_lon_deg,
              "min_confidence": 0.0, "camera_mount_x_m": mount.forward_m, "camera_mount_y_m": mount.left_m,
              "camera_mount_yaw_deg": math.degrees(mount.yaw_rad)}
    with running_node(params) as (harness, proc):
        yield harness, world, drive, proc


def camera_k(drive) -> tuple:
    cam = drive.camera()
    return cam.fx, cam.cx, cam.cy, cam.width, cam.height


def test_registers_a_drive_and_publishes_pose_tf_status(live) -> None:
    harness, world, drive, _ = live
    datum = EnuFrame(world.config.anchor_lat_deg, world.config.anchor_lon_deg)
    stamps = [s * 1e-9 for s in drive.timestamps_ns()]
    truth = drive.ground_truth()
    for frame, stamp in zip(drive.frames, stamps):
        o = drive.oxts(frame)
        harness.send(stamp, drive.image(frame), camera_k(drive), (o.lat, o.lon, o.alt), o.yaw)
        wait_for(lambda: round(stamp, 3) in harness.statuses, timeout=10.0)
    assert wait_for(lambda: len(harness.poses) >= 6, timeout=20.0), f"only {len(harness.poses)} poses"
    errors = []
    for frame, stamp in zip(drive.frames, stamps):
        pose = harness.poses.get(round(stamp, 3))
        if pose is None:
            continue
        assert pose.header.frame_id == "map"
        e, n, _ = datum.to_enu(truth[frame].lat, truth[frame].lon)
        errors.append(math.hypot(pose.pose.pose.position.x - e, pose.pose.pose.position.y - n))
        cov = np.array(pose.pose.covariance).reshape(6, 6)
        assert cov[0, 0] > 0 and cov[5, 5] > 0 and cov[2, 2] >= 1e5  # z is not estimated
        q = pose.pose.pose.orientation
        assert math.isclose(q.x**2 + q.y**2 + q.z**2 + q.w**2, 1.0, rel_tol=1e-6)
    assert float(np.median(errors)) < 1.0, errors  # base_link's pose: the 1.24 m lever arm is accounted for
    ok = [s for s in harness.statuses.values() if s.state == RegistrationStatus.STATE_OK]
    assert ok and all(s.header.frame_id == "map" for s in ok)
    assert wait_for(lambda: any(t.transforms and t.transforms[0].child_frame_id == "base_link" for t in harness.tf))
    assert wait_for(lambda: len(harness.diagnostics) > 0)
    assert harness.diagnostics[-1].status[0].name.startswith("g2s_localization")
    values = {kv.key: float(kv.value) for kv in harness.diagnostics[-1].status[0].values
              if kv.key.endswith("_ms")}  # where the node's time goes
    assert 0 < values["latency_p50_ms"] <= values["latency_p95_ms"] and values["features_ms"] > 0
    assert values["decode_ms"] > 0 and values["search_ms"] > 0 and values["crop_ms"] > 0
    assert wait_for(lambda: len(harness.satellite) > 0)
    assert harness.satellite[-1].encoding == "rgb8" and harness.satellite[-1].width > 0


def expect_state(harness: Harness, stamp: float, state: int, text: str) -> None:
    assert wait_for(lambda: round(stamp, 3) in harness.statuses, timeout=15.0), f"no status for {stamp}"
    status = harness.statuses[round(stamp, 3)]
    assert status.state == state, (status.state, status.message)
    assert text in status.message
    assert round(stamp, 3) not in harness.poses  # no pose for a faulty frame


def test_faults_give_a_status_and_no_pose(live) -> None:
    harness, world, drive, proc = live
    o = drive.oxts(0)
    image = drive.image(0)
    base = drive.timestamps_ns()[-1] * 1e-9 + 10.0
    k = camera_k(drive)
    harness.send(base + 1.0, None, k, (o.lat, o.lon, o.alt), o.yaw, encoding="mono16")
    expect_state(harness, base + 1.0, RegistrationStatus.STATE_BAD_INPUT, "unsupported image encoding")
    harness.send(base + 2.0, image, k, (math.nan, math.nan, math.nan), o.yaw)
    expect_state(harness, base + 2.0, RegistrationStatus.STATE_NO_GNSS, "no fix")
    harness.send(base + 3.0, image, k, (o.lat, o.lon, o.alt), None)
    expect_state(harness, base + 3.0, RegistrationStatus.STATE_STALE_IMU, "IMU")
    harness.send(base + 4.0, image, k, (0.001, 0.001, 0.0), o.yaw)
    expect_state(harness, base + 4.0, RegistrationStatus.STATE_OUTSIDE_COVERAGE, "tiles")
    harness.send(base - 100.0, image, k, (o.lat, o.lon, o.alt), o.yaw)
    expect_state(harness, base - 100.0, RegistrationStatus.STATE_INITIALIZING, "clock jumped back")
    assert proc.poll() is None  # still alive after all of it
    assert State.BAD_INPUT == RegistrationStatus.STATE_BAD_INPUT  # pipeline and message agree


@pytest.mark.parametrize("place_map", ["feature-map", "place-index"])
def test_relocalizes_without_gnss_along_the_odometry_track(small_world_dir: Path, small_dataset: Path,
                                                           baseline_relocalization_maps: dict[str, Path],
                                                           place_map: str) -> None:
    """GNSS reports no fix for the whole drive; the node follows odom->base_link on /tf and the IMU
    heading, searches the feature map (or retrieves from a place index and verifies against the
    feature map) and publishes RELOCALIZED poses at the truth, saying so."""
    drive = find_drives(small_dataset)[0]
    truth = drive.ground_truth()
    start = (truth[drive.frames[0]].lat, truth[drive.frames[0]].lon)
    mount = camera_mount(drive.path.parent)  # no /tf_static here: the mount parameters are the fallback
    params = {"tiles_path": small_world_dir / "tiles", "weights": "baseline", "device": "cpu",
              "relocalization_map": baseline_relocalization_maps["features"], "relocalization_max_std_m": 3.0,
              "camera_mount_x_m": mount.forward_m, "camera_mount_y_m": mount.left_m,
              "camera_mount_yaw_deg": math.degrees(mount.yaw_rad)}
    if place_map == "place-index":
        params["relocalization_map"] = baseline_relocalization_maps["places"]
        params["relocalization_features"] = baseline_relocalization_maps["features"]
    datum = EnuFrame(*start)  # no datum given and no fix ever: the map's origin is the datum
    with running_node(params, "/relocalizing") as (harness, proc):
        tf_pub = harness.create_publisher(TFMessage, "/tf", 10)
        stamps = [s * 1e-9 for s in drive.timestamps_ns()]
        for frame, stamp in zip(drive.frames, stamps):
            e, n, _ = datum.to_enu(truth[frame].lat, truth[frame].lon)
            odom = TransformStamped()
            odom.header.stamp.sec, odom.header.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
            odom.header.frame_id, odom.child_frame_id = "odom", "base_link"
            odom.transform.translation.x, odom.transform.translation.y = float(e) + 100.0, float(n) - 40.0
            q = Rotation.from_euler("z", truth[frame].yaw).as_quat()
            odom.transform.rotation.x, odom.transform.rotation.y, odom.transform.rotation.z, odom.transform.rotation.w = q
            tf_pub.publish(TFMessage(transforms=[odom]))
            harness.send(stamp, drive.image(frame), camera_k(drive), (math.nan, math.nan, math.nan),
                         drive.oxts(frame).yaw)
            assert wait_for(lambda: round(stamp, 3) in harness.statuses, timeout=20.0), f"no status for {stamp}"
        states = [harness.statuses[round(s, 3)] for s in stamps]
        assert all("relocaliz" in s.message and "no fix" in s.message for s in states), [s.message for s in states]
        assert any("retrieved and verified" in s.message for s in states) == (place_map == "place-index")
        relocalized = [(f, s) for f, s in zip(drive.frames, stamps)
                       if harness.statuses[round(s, 3)].state == RegistrationStatus.STATE_RELOCALIZED]
        assert relocalized, [s.message for s in states]
        assert states[-1].state == RegistrationStatus.STATE_RELOCALIZED, states[-1].message
        for frame, stamp in relocalized:
            pose = harness.poses[round(stamp, 3)]
            e, n, _ = datum.to_enu(truth[frame].lat, truth[frame].lon)
            assert math.hypot(pose.pose.pose.position.x - e, pose.pose.pose.position.y - n) < 1.5
            assert np.array(pose.pose.covariance).reshape(6, 6)[0, 0] <= 9.0
        assert wait_for(lambda: any(kv.key == "relocalized" and int(kv.value) >= len(relocalized)
                                    for d in harness.diagnostics for kv in d.status[0].values))
        assert proc.poll() is None


def test_every_pipeline_state_is_a_message_state_with_a_diagnostic_level() -> None:
    from g2s_localization.ros.node import LEVELS

    for state in State:
        assert getattr(RegistrationStatus, f"STATE_{state.name}") == state
        assert state in LEVELS


def test_camera_mount_comes_from_tf_static(small_world_dir: Path) -> None:
    """A latched /tf_static (base_link -> camera_link -> camera_optical_frame) published before the
    node sees a CameraInfo in that frame: the node takes the mount from it."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    params = {"tiles_path": small_world_dir / "tiles", "weights": "baseline", "device": "cpu"}
    with running_node(params, namespace="/mount_test") as (harness, proc):
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        static_pub = harness.create_publisher(TFMessage, "/tf_static", latched)
        link = TransformStamped()
        link.header.frame_id, link.child_frame_id = "base_link", "camera_link"
        link.transform.translation.x, link.transform.translation.y, link.transform.translation.z = 1.2, 0.3, 1.5
        link.transform.rotation.w = 1.0
        optical = TransformStamped()
        optical.header.frame_id, optical.child_frame_id = "camera_link", "camera_optical_frame"
        optical.transform.rotation.x, optical.transform.rotation.y = -0.5, 0.5
        optical.transform.rotation.z, optical.transform.rotation.w = -0.5, 0.5  # REP-103 optical axes
        static_pub.publish(TFMessage(transforms=[link, optical]))
        harness.send(1.0, np.zeros((4, 4, 3), np.uint8), (2.0, 1.5, 1.5, 4, 4), None, None)  # CameraInfo frame
        time.sleep(2.0)
        proc.send_signal(2)
        output = proc.communicate(timeout=30)[0]
    assert "camera mount from /tf_static (base_link -> camera_optical_frame): 1.20 m ahead, 0.30 m left, " \
           "yaw 0.00 deg, pitch 0.00 deg" in output, output[-2000:]


def test_without_a_mount_frames_wait_for_tf_static_then_use_the_parameters(small_world_dir: Path,
                                                                            small_dataset: Path) -> None:
    """No camera_mount_* set and no /tf_static yet: a pose now would be the camera's published as
    base_link's, so the first frames are INITIALIZING and say why; after tf_static_wait_s the
    parameters stand and frames go on (here to NO_GNSS: the fix is NaN)."""
    drive = find_drives(small_dataset)[0]
    params = {"tiles_path": small_world_dir / "tiles", "weights": "baseline", "device": "cpu",
              "tf_static_wait_s": 1.0}
    with running_node(params, namespace="/unmounted") as (harness, proc):
        frame = drive.frames[0]
        harness.send(1.0, drive.image(frame), camera_k(drive), (math.nan, math.nan, math.nan), drive.oxts(frame).yaw)
        expect_state(harness, 1.0, RegistrationStatus.STATE_INITIALIZING, "waiting for /tf_static base_link -> ")
        time.sleep(1.2)
        harness.send(1.1, drive.image(frame), camera_k(drive), (math.nan, math.nan, math.nan), drive.oxts(frame).yaw)
        expect_state(harness, 1.1, RegistrationStatus.STATE_NO_GNSS, "")
        assert proc.poll() is None
