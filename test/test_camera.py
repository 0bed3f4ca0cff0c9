"""Camera geometry: one test class per function, known values, batch and gradcheck."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from g2s_localization.cameras import bev, pinhole
from g2s_localization.data.kitti_raw import kitti_camera, read_kitti_calib

# Real KITTI raw calib_cam_to_cam.txt lines (2011_09_26), camera 2 only plus the header.
KITTI_CALIB = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_02: 1.392000e+03 5.120000e+02
K_02: 9.597910e+02 0.000000e+00 6.960217e+02 0.000000e+00 9.569251e+02 2.241806e+02 0.000000e+00 0.000000e+00 1.000000e+00
D_02: -3.691481e-01 1.968681e-01 1.353473e-03 5.677587e-04 -6.770705e-02
R_02: 9.999758e-01 -5.267463e-03 -4.552439e-03 5.251945e-03 9.999804e-01 -3.413835e-03 4.570332e-03 3.389843e-03 9.999838e-01
T_02: 5.956621e-02 2.900141e-04 2.577209e-03
S_rect_02: 1.242000e+03 3.750000e+02
R_rect_02: 9.998817e-01 1.511453e-02 -2.841595e-03 -1.511724e-02 9.998853e-01 -9.338510e-04 2.827154e-03 9.766976e-04 9.999955e-01
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
"""


def simple_K(batch: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    K = torch.tensor([[700.0, 0.0, 600.0], [0.0, 700.0, 180.0], [0.0, 0.0, 1.0]], dtype=dtype)
    return K.expand(batch, 3, 3).clone()


def level(batch: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    zero = torch.zeros(batch, dtype=dtype)
    return pinhole.rotation_ground_from_camera(zero, zero)


class TestKittiCalib:
    def test_parses_real_format(self, tmp_path: Path) -> None:
        path = tmp_path / "calib_cam_to_cam.txt"
        path.write_text(KITTI_CALIB)
        calib = read_kitti_calib(path)
        assert calib["calib_time"] == "09-Jan-2012 13:57:47"
        camera = kitti_camera(calib, 2)
        assert (camera.fx, camera.fy, camera.cx, camera.cy) == (721.5377, 721.5377, 609.5593, 172.854)
        assert (camera.width, camera.height) == (1242, 375)

    def test_missing_key(self, tmp_path: Path) -> None:
        path = tmp_path / "calib.txt"
        path.write_text("S_rect_02: 1242 375\n")
        with pytest.raises(ValueError, match="P_rect_02"):
            kitti_camera(read_kitti_calib(path))

    def test_malformed_line(self, tmp_path: Path) -> None:
        path = tmp_path / "calib.txt"
        path.write_text("P_rect_02 1 2 3\n")
        with pytest.raises(ValueError, match="key: values"):
            read_kitti_calib(path)


class TestPinholeCamera:
    def test_resized_keeps_pixel_edges(self) -> None:
        camera = pinhole.PinholeCamera(700.0, 700.0, 599.5, 179.5, 1200, 360)  # principal point at the centre
        half = camera.resized(600, 180)
        assert (half.fx, half.fy, half.cx, half.cy) == (350.0, 350.0, 299.5, 89.5)

    def test_rejects_invalid(self) -> None:
        with pytest.raises(ValueError):
            pinhole.PinholeCamera(float("nan"), 1.0, 0.0, 0.0, 10, 10)
        with pytest.raises(ValueError):
            pinhole.PinholeCamera(1.0, 1.0, 0.0, 0.0, 0, 10)


class TestRotationGroundFromCamera:
    def test_level_camera_axes(self) -> None:
        R = level()[0]
        np.testing.assert_allclose(R @ torch.tensor([0.0, 0.0, 1.0], dtype=R.dtype), [1.0, 0.0, 0.0])  # optical z fwd
        np.testing.assert_allclose(R @ torch.tensor([1.0, 0.0, 0.0], dtype=R.dtype), [0.0, -1.0, 0.0])  # x right
        np.testing.assert_allclose(R @ torch.tensor([0.0, 1.0, 0.0], dtype=R.dtype), [0.0, 0.0, -1.0])  # y down

    def test_positive_pitch_looks_down(self) -> None:
        R = pinhole.rotation_ground_from_camera(torch.tensor([0.1]), torch.tensor([0.0]))[0]
        axis = R @ torch.tensor([0.0, 0.0, 1.0])
        assert axis[2].item() == pytest.approx(-math.sin(0.1), abs=1e-6)

    def test_batch_is_orthonormal(self) -> None:
        R = pinhole.rotation_ground_from_camera(torch.tensor([0.0, 0.05, -0.1]), torch.tensor([0.02, 0.0, 0.3]))
        eye = torch.eye(3).expand(3, 3, 3)
        torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-6, rtol=0)
        assert torch.allclose(torch.linalg.det(R), torch.ones(3))

    def test_shape_check(self) -> None:
        with pytest.raises(ValueError, match="roll"):
            pinhole.rotation_ground_from_camera(torch.zeros(2), torch.zeros(3))


class TestProjectGroundToImage:
    def test_known_values(self) -> None:
        # camera 1.65 m above the road, level: a point 10 m ahead lands fy * 1.65 / 10 px below cy,
        # one 2 m to the left fx * 2 / 10 px left of cx.
        pixels, in_front = bev.project_ground_to_image(
            simple_K(), level(), torch.tensor([1.65], dtype=torch.float64),
            torch.tensor([[[10.0, 0.0], [10.0, 2.0], [-5.0, 0.0]]], dtype=torch.float64))
        np.testing.assert_allclose(pixels[0, :2].numpy(), [[600.0, 295.5], [460.0, 295.5]])
        assert in_front.tolist() == [[True, True, False]]

    def test_pitch_moves_horizon_up(self) -> None:
        pitch = 0.05
        R = pinhole.rotation_ground_from_camera(torch.tensor([pitch], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        far = torch.tensor([[[1e7, 0.0]]], dtype=torch.float64)
        pixels, _ = bev.project_ground_to_image(simple_K(), R, torch.tensor([1.65], dtype=torch.float64), far)
        assert pixels[0, 0, 1].item() == pytest.approx(180.0 - 700.0 * math.tan(pitch), abs=1e-3)

    def test_gradcheck(self) -> None:
        K, R = simple_K(2), level(2)
        height = torch.tensor([1.65, 1.5], dtype=torch.float64, requires_grad=True)
        ground = torch.rand(2, 5, 2, dtype=torch.float64) * 10 + torch.tensor([5.0, -5.0], dtype=torch.float64)
        ground.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda h, g: bev.project_ground_to_image(K, R, h, g)[0], (height, ground))


class TestImageToGround:
    def test_known_values(self) -> None:
        ground, hits = bev.image_to_ground(simple_K(), level(), torch.tensor([1.65], dtype=torch.float64),
                                           torch.tensor([[[600.0, 295.5], [460.0, 295.5], [600.0, 100.0]]],
                                                        dtype=torch.float64))
        np.testing.assert_allclose(ground[0, :2].numpy(), [[10.0, 0.0], [10.0, 2.0]], atol=1e-9)
        assert hits.tolist() == [[True, True, False]]  # above the horizon never hits the road

    def test_inverse_with_pitch_and_roll(self) -> None:
        R = pinhole.rotation_ground_from_camera(torch.tensor([0.03, -0.02], dtype=torch.float64),
                                            torch.tensor([0.01, 0.04], dtype=torch.float64))
        h = torch.tensor([1.65, 1.8], dtype=torch.float64)
        ground = torch.tensor([[[8.0, 1.0], [30.0, -4.0]], [[12.0, 3.0], [6.0, 0.0]]], dtype=torch.float64)
        pixels, _ = bev.project_ground_to_image(simple_K(2), R, h, ground)
        back, hits = bev.image_to_ground(simple_K(2), R, h, pixels)
        torch.testing.assert_close(back, ground)
        assert bool(hits.all())

    def test_gradcheck(self) -> None:
        pixels = torch.tensor([[[600.0, 300.0], [400.0, 250.0]]], dtype=torch.float64, requires_grad=True)
        h = torch.tensor([1.65], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda p, hh: bev.image_to_ground(simple_K(), level(), hh, p)[0], (pixels, h))


class TestBevGroundCoordinates:
    def test_centre_and_axes(self) -> None:
        grid = bev.bev_ground_coordinates(5, 0.5, torch.float64)
        assert grid.shape == (5, 5, 2)
        np.testing.assert_allclose(grid[2, 2].numpy(), [0.0, 0.0])
        np.testing.assert_allclose(grid[0, 2].numpy(), [1.0, 0.0])   # top row is ahead
        np.testing.assert_allclose(grid[2, 4].numpy(), [0.0, -1.0])  # right column is to the right

    def test_rejects_bad(self) -> None:
        with pytest.raises(ValueError):
            bev.bev_ground_coordinates(0, 0.5)


class TestBevSampling:
    def test_grid_points_at_known_pixels(self) -> None:
        # BEV 41 x 41 at 0.5 m: cell (row 0, col 20) is 10 m ahead -> pixel (600, 295.5)
        grid, valid = bev.bev_sampling_grid(simple_K(), level(), torch.tensor([1.65], dtype=torch.float64),
                                            (1200, 360), 41, 0.5)
        assert grid.shape == (1, 41, 41, 2) and valid.shape == (1, 41, 41)
        expected = torch.tensor([600.0 * 2 / 1199 - 1, 295.5 * 2 / 359 - 1], dtype=torch.float64)
        torch.testing.assert_close(grid[0, 0, 20], expected)
        assert bool(valid[0, 0, 20]) and not bool(valid[0, 40, 20])  # behind the camera is invalid

    def test_painted_marker_lands_in_its_cell(self) -> None:
        image = torch.zeros(1, 1, 360, 1200, dtype=torch.float64)
        image[0, 0, 295:297, 459:462] = 1.0  # around pixel (460, 295.5): 10 m ahead, 2 m left
        grid, valid = bev.bev_sampling_grid(simple_K(), level(), torch.tensor([1.65], dtype=torch.float64),
                                            (1200, 360), 41, 0.5)
        projected = bev.project_image_to_bev(image, grid, valid)
        row, col = divmod(int(projected[0, 0].argmax()), 41)
        assert (row, col) == (0, 16)  # 10 m ahead -> row 20 - 20; 2 m left -> col 20 - 4
        assert projected[0, 0, 40].abs().sum() == 0  # cells behind the camera stay empty

    def test_project_gradcheck(self) -> None:
        image = torch.rand(1, 2, 12, 16, dtype=torch.float64, requires_grad=True)
        K = torch.tensor([[[8.0, 0.0, 7.5], [0.0, 8.0, 5.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
        grid, valid = bev.bev_sampling_grid(K, level(), torch.tensor([1.0], dtype=torch.float64), (16, 12), 6, 0.5)
        assert torch.autograd.gradcheck(lambda im: bev.project_image_to_bev(im, grid, valid), (image,))
