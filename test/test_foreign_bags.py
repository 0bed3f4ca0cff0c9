"""Bags from other tools: rosbag2 folders, bare .mcap / .db3 files, folders without metadata, and
a KITTI-to-MCAP converter's conventions; every refusal is one clear line, never a traceback."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from g2s_localization.runtime.bag_files import resolve_bag


def write_converter_bag(folder: Path) -> Path:
    """A single .mcap as a third-party KITTI converter writes it: its own topic names, the pose
    as map->base_link on /tf, no NavSatFix, no metadata.yaml beside it."""
    ts = get_typestore(Stores.ROS2_KILTED)
    T = ts.types
    staging = folder / "staging"
    with Writer(staging, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image = writer.add_connection("/kitti/camera_color_left/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        info = writer.add_connection("/kitti/camera_color_left/camera_info", "sensor_msgs/msg/CameraInfo",
                                     typestore=ts)
        imu = writer.add_connection("/kitti/imu", "sensor_msgs/msg/Imu", typestore=ts)
        tf = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=ts)
        for k in range(3):
            stamp = 1_000_000_000 + k * 100_000_000
            header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=k * 100_000_000),
                                              frame_id="camera_color_left")
            pixels = np.zeros(12, np.uint8)
            writer.write(image, stamp, ts.serialize_cdr(T["sensor_msgs/msg/Image"](
                header=header, height=2, width=2, encoding="rgb8", is_bigendian=0, step=6, data=pixels),
                "sensor_msgs/msg/Image"))
            roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            writer.write(info, stamp, ts.serialize_cdr(T["sensor_msgs/msg/CameraInfo"](
                header=header, height=2, width=2, distortion_model="plumb_bob", d=np.zeros(5),
                k=np.eye(3).reshape(-1), r=np.eye(3).reshape(-1), p=np.zeros(12), binning_x=0, binning_y=0, roi=roi),
                "sensor_msgs/msg/CameraInfo"))
            vec = T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
            quat = T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
            writer.write(imu, stamp, ts.serialize_cdr(T["sensor_msgs/msg/Imu"](
                header=header, orientation=quat, orientation_covariance=np.zeros(9), angular_velocity=vec,
                angular_velocity_covariance=np.zeros(9), linear_acceleration=vec,
                linear_acceleration_covariance=np.zeros(9)), "sensor_msgs/msg/Imu"))
            map_header = T["std_msgs/msg/Header"](stamp=header.stamp, frame_id="map")
            transform = T["geometry_msgs/msg/TransformStamped"](
                header=map_header, child_frame_id="base_link",
                transform=T["geometry_msgs/msg/Transform"](translation=vec, rotation=quat))
            writer.write(tf, stamp, ts.serialize_cdr(T["tf2_msgs/msg/TFMessage"](transforms=[transform]),
                                                     "tf2_msgs/msg/TFMessage"))
    bare = folder / "kitti_2011_09_26_drive_0001.mcap"
    shutil.move(next(staging.glob("*.mcap")), bare)
    shutil.rmtree(staging)
    return bare


class TestResolveBag:
    def test_the_forms_a_bag_comes_in(self, tmp_path: Path) -> None:
        bare = write_converter_bag(tmp_path)
        assert resolve_bag(bare) == bare  # a bare .mcap
        assert resolve_bag(tmp_path) == bare  # a folder holding one, no metadata.yaml
        (tmp_path / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
        assert resolve_bag(tmp_path) == tmp_path  # a rosbag2 folder

    def test_refusals_say_what_was_found(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="does not exist"):
            resolve_bag(tmp_path / "missing")
        with pytest.raises(ValueError, match="no metadata.yaml and no .mcap"):
            resolve_bag(tmp_path)
        (tmp_path / "a.mcap").write_bytes(b"")
        (tmp_path / "b.db3").write_bytes(b"")
        with pytest.raises(ValueError, match="several bag files"):
            resolve_bag(tmp_path)
        (tmp_path / "notes.txt").write_text("hi")
        with pytest.raises(ValueError, match="not a rosbag2 file"):
            resolve_bag(tmp_path / "notes.txt")


def g2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "g2s_localization", *args], capture_output=True, text=True,
                          timeout=120)


def test_converter_bag_is_read_and_its_gaps_named(tmp_path: Path, small_world_dir: Path) -> None:
    bare = write_converter_bag(tmp_path)
    result = g2s("evaluate", str(bare), "--tiles", str(small_world_dir / "area.mbtiles"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "carries no map datum: pass --datum" in result.stderr
    result = g2s("evaluate", str(tmp_path), "--tiles", str(small_world_dir / "area.mbtiles"), "--datum",
                 "49.0,8.4", "--out", str(tmp_path / "eval"), "--truth-tf", "world,vehicle")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no ground truth: neither /ground_truth/pose nor world -> vehicle on /tf" in result.stderr, result.stderr
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "broken.mcap").write_bytes(b"not an mcap file")
    result = g2s("replay", str(damaged), "--wait-timeout", "0.1")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "cannot read bag" in result.stderr


def test_converter_bag_is_evaluated(tmp_path: Path, small_world_dir: Path) -> None:
    """Its topics named on the command line, truth from map->base_link on /tf: the node runs on it
    and the report says what it could and could not score (no camera mount, no GNSS: no pose, no EKF)."""
    bare = write_converter_bag(tmp_path)
    out = tmp_path / "eval"
    result = g2s("evaluate", str(bare), "--tiles", str(small_world_dir / "area.mbtiles"), "--datum", "49.0,8.4",
                 "--out", str(out), "--weights", "baseline", "--image-topic", "/kitti/camera_color_left/image_raw",
                 "--camera-info-topic", "/kitti/camera_color_left/camera_info", "--imu-topic", "/kitti/imu")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "Ground truth: map -> base_link on /tf" in report and "3 camera frames" in report
    # no camera mount on /tf_static and none set: its first frames wait for one (2 s), and no GNSS anyway
    assert "INITIALIZING" in report and "No pose to score" in report and "Not run" in report


def test_replay_publishes_a_folder_without_metadata(tmp_path: Path) -> None:
    write_converter_bag(tmp_path)
    result = g2s("replay", str(tmp_path), "--wait-timeout", "0.5", "--rate", "5")
    assert result.returncode == 0, result.stderr
    assert "replayed 12 messages" in result.stdout  # 3 x (image, camera info, imu, tf)
