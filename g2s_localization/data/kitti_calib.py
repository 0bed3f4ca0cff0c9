"""KITTI raw's calibration chain: IMU (base_link, x forward, y left, z up) -> Velodyne -> camera 0
-> rectified camera 2 (the left colour camera, optical axes x right, y down, z forward).

Files, per date folder, as the KITTI raw release and pykitti read them::

    calib_imu_to_velo.txt   R (3x3), T (3): velodyne <- IMU
    calib_velo_to_cam.txt   R, T (camera 0 <- velodyne), delta_f, delta_c
    calib_cam_to_cam.txt    S/K/D/R/T_0x and S_rect/R_rect/P_rect_0x for cameras 0..3

``T_cam2rect <- IMU = T2 · R_rect_00 · T_cam0_velo · T_velo_imu``, where ``T2`` shifts by
camera 2's baseline ``P_rect_02[0, 3] / P_rect_02[0, 0]``. The inverse is the camera's mount on
base_link, which bags carry on ``/tf_static``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from g2s_localization.cameras.pinhole import PinholeCamera
from g2s_localization.data.kitti_raw import read_kitti_calib
from g2s_localization.runtime.mount import PlanarMount

# optical axes in a level x-forward, y-left, z-up frame: x_opt = -y, y_opt = -z, z_opt = x
R_OPTICAL_LEVEL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _fmt(a) -> str:
    return " ".join(f"{v:.9e}" for v in np.asarray(a, dtype=np.float64).ravel())


def _rigid(R: NDArray, t: NDArray) -> NDArray[np.float64]:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _read_rigid(path: Path) -> NDArray[np.float64]:
    calib = read_kitti_calib(path)
    R, t = calib.get("R"), calib.get("T")
    if not (isinstance(R, np.ndarray) and R.size == 9 and isinstance(t, np.ndarray) and t.size == 3):
        raise ValueError(f"{path} lacks R (9 values) and T (3 values)")
    return _rigid(R.reshape(3, 3), t)


def write_calibration(date_dir: str | Path, camera: PinholeCamera, T_base_camera: NDArray[np.float64]) -> None:
    """The three calibration files of a date folder for a rig whose rectified camera 2 has the
    intrinsics ``camera`` and sits at ``T_base_camera`` (4x4, base_link <- camera optical). The
    Velodyne is put at base_link and camera 0 at camera 2 (zero baseline): one real camera."""
    date_dir = Path(date_dir)
    date_dir.mkdir(parents=True, exist_ok=True)
    header = ["calib_time: 01-Jan-2026 00:00:00"]
    (date_dir / "calib_imu_to_velo.txt").write_text("\n".join(header + [
        f"R: {_fmt(np.eye(3))}", f"T: {_fmt(np.zeros(3))}"]) + "\n")
    T_cam_velo = np.linalg.inv(T_base_camera)
    (date_dir / "calib_velo_to_cam.txt").write_text("\n".join(header + [
        f"R: {_fmt(T_cam_velo[:3, :3])}", f"T: {_fmt(T_cam_velo[:3, 3])}",
        "delta_f: 0.000000e+00 0.000000e+00", "delta_c: 0.000000e+00 0.000000e+00"]) + "\n")
    k = np.array([[camera.fx, 0, camera.cx], [0, camera.fy, camera.cy], [0, 0, 1]], dtype=np.float64)
    p = np.hstack([k, np.zeros((3, 1))])
    size = [camera.width, camera.height]
    lines = header + ["corner_dist: 9.950000e-02"]
    for index in range(4):
        lines += [f"S_{index:02d}: {_fmt(size)}", f"K_{index:02d}: {_fmt(k)}", f"D_{index:02d}: {_fmt(np.zeros(5))}",
                  f"R_{index:02d}: {_fmt(np.eye(3))}", f"T_{index:02d}: {_fmt(np.zeros(3))}",
                  f"S_rect_{index:02d}: {_fmt(size)}", f"R_rect_{index:02d}: {_fmt(np.eye(3))}",
                  f"P_rect_{index:02d}: {_fmt(p)}"]
    (date_dir / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")


def base_to_camera(date_dir: str | Path, camera_index: int = 2) -> NDArray[np.float64] | None:
    """``T_base_camera`` (4x4, base_link = the OXTS/IMU frame <- rectified camera optical frame)
    from a date folder's calibration chain; None when the IMU or Velodyne file is missing (only
    the intrinsics were published)."""
    date_dir = Path(date_dir)
    imu_velo, velo_cam = date_dir / "calib_imu_to_velo.txt", date_dir / "calib_velo_to_cam.txt"
    if not (imu_velo.is_file() and velo_cam.is_file()):
        return None
    cam = read_kitti_calib(date_dir / "calib_cam_to_cam.txt")
    rect, projection = cam.get("R_rect_00"), cam.get(f"P_rect_{camera_index:02d}")
    if not (isinstance(rect, np.ndarray) and rect.size == 9 and isinstance(projection, np.ndarray)
            and projection.size == 12):
        raise ValueError(f"{date_dir / 'calib_cam_to_cam.txt'} lacks R_rect_00 or P_rect_{camera_index:02d}")
    projection = projection.reshape(3, 4)
    baseline = np.eye(4)
    baseline[0, 3] = projection[0, 3] / projection[0, 0]
    T_cam_imu = baseline @ _rigid(rect.reshape(3, 3), np.zeros(3)) @ _read_rigid(velo_cam) @ _read_rigid(imu_velo)
    return np.linalg.inv(T_cam_imu)


def camera_mount(date_dir: str | Path, camera_index: int = 2) -> PlanarMount:
    """The camera's planar mount on base_link from a date folder's calibration chain (at base_link
    when the chain is missing, as in a folder with the intrinsics only)."""
    T = base_to_camera(date_dir, camera_index)
    if T is None:
        return PlanarMount()
    return PlanarMount.from_transform(tuple(T[:3, 3]), tuple(Rotation.from_matrix(T[:3, :3]).as_quat()), optical=True)


def level_camera_mount(height_m: float, forward_m: float = 0.0, left_m: float = 0.0,
                       yaw_rad: float = 0.0, pitch_rad: float = 0.0) -> NDArray[np.float64]:
    """``T_base_camera`` of a camera ``height_m`` above base_link's origin (on the road), looking
    forward turned by ``yaw_rad`` (left positive) and pitched down by ``pitch_rad``."""
    cy, sy, cp, sp = np.cos(yaw_rad), np.sin(yaw_rad), np.cos(pitch_rad), np.sin(pitch_rad)
    yaw = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    pitch = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])  # about y: positive tilts x down
    return _rigid(yaw @ pitch @ R_OPTICAL_LEVEL.T, np.array([forward_m, left_m, height_m]))
