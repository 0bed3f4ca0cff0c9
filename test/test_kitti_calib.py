"""KITTI's calibration chain (IMU -> Velodyne -> camera 0 -> rectified camera 2), written and read."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from g2s_localization.data.kitti_calib import base_to_camera, camera_mount, level_camera_mount, write_calibration
from g2s_localization.data.kitti_raw import kitti_camera, read_kitti_calib
from g2s_localization.runtime.mount import PlanarMount
from g2s_localization.synthetic.camera_render import DRIVE_RIG, KITTI_CAMERA


def test_round_trip_of_an_off_base_mount(tmp_path: Path) -> None:
    mount = level_camera_mount(1.6, forward_m=1.2, left_m=0.3, yaw_rad=math.radians(1.0), pitch_rad=math.radians(2.0))
    write_calibration(tmp_path, KITTI_CAMERA, mount)
    np.testing.assert_allclose(base_to_camera(tmp_path), mount, atol=1e-9)
    planar = PlanarMount.from_transform(mount[:3, 3], Rotation.from_matrix(mount[:3, :3]).as_quat(), optical=True)
    assert (planar.forward_m, planar.left_m) == pytest.approx((1.2, 0.3))
    assert math.degrees(planar.yaw_rad) == pytest.approx(1.0) and math.degrees(planar.pitch_rad) == pytest.approx(2.0)


def test_the_files_pykitti_reads(tmp_path: Path) -> None:
    write_calibration(tmp_path, KITTI_CAMERA, level_camera_mount(1.65))
    cam = read_kitti_calib(tmp_path / "calib_cam_to_cam.txt")
    for index in range(4):
        assert cam[f"P_rect_{index:02d}"].size == 12 and cam[f"S_rect_{index:02d}"].size == 2
    assert cam["R_rect_00"].size == 9
    assert kitti_camera(cam, 2) == KITTI_CAMERA
    for name in ("calib_imu_to_velo.txt", "calib_velo_to_cam.txt"):
        calib = read_kitti_calib(tmp_path / name)
        assert calib["R"].size == 9 and calib["T"].size == 3


def test_baseline_of_camera_2_and_missing_files(tmp_path: Path) -> None:
    write_calibration(tmp_path, KITTI_CAMERA, level_camera_mount(1.65))
    text = (tmp_path / "calib_cam_to_cam.txt").read_text()
    p = KITTI_CAMERA.fx
    # camera 2 0.06 m right of camera 0 (KITTI's P_rect_02[0, 3] = fx * baseline, here -fx * -0.06)
    text = "\n".join(line if not line.startswith("P_rect_02") else
                     "P_rect_02: " + " ".join(f"{v:.9e}" for v in [p, 0, KITTI_CAMERA.cx, 0.06 * p, 0, KITTI_CAMERA.fy,
                                                                     KITTI_CAMERA.cy, 0, 0, 0, 1, 0])
                     for line in text.splitlines())
    (tmp_path / "calib_cam_to_cam.txt").write_text(text + "\n")
    # T2 moves points by +0.06 m along the optical x: the camera centre sits 0.06 m along -x_opt (left)
    assert base_to_camera(tmp_path)[:3, 3] == pytest.approx([0.0, 0.06, 1.65])
    (tmp_path / "calib_imu_to_velo.txt").unlink()
    assert base_to_camera(tmp_path) is None


def test_synthetic_drives_carry_the_chain_and_bags_the_mount(small_dataset: Path, tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader

    from g2s_localization.data.bag_io import TOPICS, kitti_to_bag, typestore

    date_dir = small_dataset / "raw_data" / "2026_01_01"
    # drives are rendered with the camera off base_link (DRIVE_RIG), and their calibration says so
    rig = DRIVE_RIG
    np.testing.assert_allclose(base_to_camera(date_dir), level_camera_mount(1.65, rig.forward_m, rig.left_m,
                                                                            rig.yaw_rad), atol=1e-9)
    assert camera_mount(date_dir).forward_m == pytest.approx(1.2) and camera_mount(date_dir).left_m == pytest.approx(0.3)
    bag = kitti_to_bag(date_dir / "2026_01_01_drive_0007_sync", tmp_path / "bag", progress=False)
    ts = typestore()
    with Reader(bag) as reader:
        (conn,) = [c for c in reader.connections if c.topic == TOPICS["tf_static"]]
        (message,) = [ts.deserialize_cdr(raw, conn.msgtype) for _, _, raw in reader.messages(connections=[conn])]
    children = {t.child_frame_id: t for t in message.transforms}
    assert set(children) == {"camera_optical_frame", "imu_link", "gnss_link"}
    camera = children["camera_optical_frame"]
    assert camera.header.frame_id == "base_link" and camera.transform.translation.z == pytest.approx(1.65)
