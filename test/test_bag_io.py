"""KITTI raw -> rosbag2: readable by rosbags, messages deserialize with rclpy."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, Image, Imu, NavSatFix
from tf2_msgs.msg import TFMessage

from g2s_localization.data.bag_io import FRAMES, TOPICS, kitti_to_bag, read_bag_datum
from g2s_localization.data.kitti_raw import KittiRawDrive
from g2s_localization.geo.geodesy import EnuFrame

ROS_TYPES = {TOPICS["image"]: Image, TOPICS["camera_info"]: CameraInfo, TOPICS["fix"]: NavSatFix,
             TOPICS["imu"]: Imu, TOPICS["gt_pose"]: PoseStamped, TOPICS["gt_fix"]: NavSatFix,
             TOPICS["odom"]: Odometry, TOPICS["tf_static"]: TFMessage}


def drive_dir(root: Path) -> Path:
    return root / "raw_data" / "2026_01_01" / "2026_01_01_drive_0007_sync"


def read_all(bag: Path) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(bag) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, deserialize_message(raw, ROS_TYPES[conn.topic])))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip(small_dataset: Path, tmp_path: Path, storage: str) -> None:
    bag = kitti_to_bag(drive_dir(small_dataset), tmp_path / "bag", storage=storage, progress=False)
    messages = read_all(bag)
    assert set(messages) == set(TOPICS.values())
    assert all(len(v) == 10 for topic, v in messages.items() if topic != TOPICS["tf_static"])
    assert len(messages[TOPICS["tf_static"]]) == 1  # static: once, first
    drive = KittiRawDrive(drive_dir(small_dataset))
    stamps = drive.timestamps_ns()

    stamp, image = messages[TOPICS["image"]][3]
    assert stamp == stamps[3]
    assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == stamps[3]
    assert (image.encoding, image.width, image.height, image.step) == ("rgb8", 1242, 375, 1242 * 3)
    assert image.header.frame_id == FRAMES["camera"]
    np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(375, 1242, 3), drive.image(3))

    info = messages[TOPICS["camera_info"]][0][1]
    assert info.k[0] == pytest.approx(721.5377) and info.p[2] == pytest.approx(609.5593)

    fix = messages[TOPICS["fix"]][5][1]
    oxts = drive.oxts(5)
    assert fix.header.frame_id == FRAMES["gnss"] and fix.status.status == 0
    assert (fix.latitude, fix.longitude) == (oxts.lat, oxts.lon)
    assert fix.position_covariance[0] == pytest.approx(oxts.pos_accuracy**2)

    imu = messages[TOPICS["imu"]][5][1]
    q = np.array([imu.orientation.x, imu.orientation.y, imu.orientation.z, imu.orientation.w])
    assert np.linalg.norm(q) == pytest.approx(1.0)
    assert imu.linear_acceleration.z == pytest.approx(oxts.au)

    datum = read_bag_datum(bag)
    assert datum == drive.datum()
    truth = drive.ground_truth()[7]
    pose = messages[TOPICS["gt_pose"]][7][1]
    e, n, _ = EnuFrame(*datum).to_enu(truth.lat, truth.lon, truth.alt)
    assert (pose.pose.position.x, pose.pose.position.y) == (pytest.approx(e, abs=1e-6), pytest.approx(n, abs=1e-6))
    assert pose.header.frame_id == "map"

    odom = messages[TOPICS["odom"]][9][1]
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    assert odom.twist.twist.linear.x == pytest.approx(drive.oxts(9).vf)
    assert 0.5 < odom.pose.pose.position.x < 20.0  # about 0.9 s of driving, integrated


def test_outage_becomes_no_fix(small_dataset: Path, tmp_path: Path) -> None:
    src = drive_dir(small_dataset)
    dst = tmp_path / "2026_01_01" / src.name
    shutil.copytree(src, dst)
    shutil.copy(small_dataset / "raw_data" / "2026_01_01" / "calib_cam_to_cam.txt", dst.parent)
    path = dst / "oxts" / "data" / "0000000002.txt"
    fields = path.read_text().split()
    fields[26] = "0"  # numsats
    path.write_text(" ".join(fields) + "\n")
    fix = read_all(kitti_to_bag(dst, tmp_path / "bag", progress=False))[TOPICS["fix"]][2][1]
    assert fix.status.status == -1 and np.isnan(fix.latitude)


def test_refuses_to_overwrite_and_bad_storage(small_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError):
        kitti_to_bag(drive_dir(small_dataset), tmp_path / "bag", progress=False)
    with pytest.raises(ValueError, match="storage"):
        kitti_to_bag(drive_dir(small_dataset), tmp_path / "other", storage="rosbag1", progress=False)
