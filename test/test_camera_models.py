"""Camera models behind one interface: known values against OpenCV, batch, gradcheck, and the
bird's-eye projection through each model."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from g2s_localization.cameras.bev import bev_pixels, bev_sampling_grid, pixels_to_grid
from g2s_localization.cameras.distortion import DistortedCamera
from g2s_localization.cameras.equirectangular import EquirectangularCamera
from g2s_localization.cameras.pinhole import PinholeCamera, rotation_ground_from_camera

K = PinholeCamera(700.0, 690.0, 620.0, 180.0, 1240, 370)
POINTS = np.array([[0.3, -0.2, 4.0], [-2.0, 0.5, 5.0], [1.5, 1.0, 3.0], [0.0, 0.0, 7.0]])


def points_tensor(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(POINTS, dtype=dtype)[None]


class TestPinholeProject:
    def test_known_values_and_behind(self) -> None:
        pixels, seen = K.project(torch.tensor([[[1.0, 0.5, 2.0], [0.0, 0.0, -1.0]]], dtype=torch.float64))
        torch.testing.assert_close(pixels[0, 0], torch.tensor([970.0, 352.5], dtype=torch.float64))
        assert seen.tolist() == [[True, False]]


class TestDistortedCamera:
    @pytest.mark.parametrize("model, coefficients", [
        ("plumb_bob", (-0.3, 0.12, 0.001, -0.002, -0.02)),
        ("rational_polynomial", (0.5, -0.1, 0.001, 0.002, 0.01, 0.8, -0.05, 0.02)),
    ])
    def test_matches_opencv(self, model: str, coefficients: tuple[float, ...]) -> None:
        camera = DistortedCamera(K, model, coefficients)
        expected, _ = cv2.projectPoints(POINTS, np.zeros(3), np.zeros(3), K.matrix(), np.array(coefficients))
        pixels, seen = camera.project(points_tensor())
        np.testing.assert_allclose(pixels[0].numpy(), expected[:, 0], atol=1e-6)
        assert bool(seen.all())

    def test_equidistant_matches_opencv_fisheye(self) -> None:
        coefficients = (0.05, -0.01, 0.002, -0.0005)
        camera = DistortedCamera(K, "equidistant", coefficients)
        expected, _ = cv2.fisheye.projectPoints(POINTS[:, None], np.zeros(3), np.zeros(3), K.matrix(),
                                                np.array(coefficients))
        np.testing.assert_allclose(camera.project(points_tensor())[0][0].numpy(), expected[:, 0], atol=1e-6)

    def test_fold_back_is_out_of_view(self) -> None:
        camera = DistortedCamera(K, "plumb_bob", (-0.5, 0.0, 0.0, 0.0, 0.0))  # r (1 - 0.5 r^2) peaks at r = 0.816
        assert camera.max_angle_rad == pytest.approx(math.atan(math.sqrt(1 / 1.5)), abs=1e-3)
        _, seen = camera.project(torch.tensor([[[0.5, 0.0, 1.0], [1.2, 0.0, 1.0]]], dtype=torch.float64))
        assert seen.tolist() == [[True, False]]

    def test_batch_and_gradcheck(self) -> None:
        camera = DistortedCamera(K, "plumb_bob", (-0.3, 0.12, 0.001, -0.002, -0.02))
        batch = points_tensor().expand(3, -1, -1).clone()
        assert camera.project(batch)[0].shape == (3, 4, 2)
        points = points_tensor().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda p: camera.project(p)[0], (points,))

    def test_rejects_unknown_models_and_coefficients(self) -> None:
        with pytest.raises(ValueError, match="unsupported"):
            DistortedCamera(K, "kannala_brandt", (0.1,))
        with pytest.raises(ValueError, match="takes 4"):
            DistortedCamera(K, "equidistant", (0.1, 0.0, 0.0, 0.0, 0.3))
        assert DistortedCamera(K, "plumb_bob", (0.1, 0.0, 0.0, 0.0)).coefficients == (0.1, 0.0, 0.0, 0.0, 0.0)


class TestEquirectangularProject:
    def test_known_directions(self) -> None:
        model = EquirectangularCamera(720, 200, 100.0, -180.0).facing(90.0)  # optical axis looks east
        pixels, seen = model.project(torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 1.0]]],
                                                  dtype=torch.float64))
        # east is column 540 of a panorama starting south; right of east is south (column 0); 45 deg up: 90 rows
        torch.testing.assert_close(pixels[0], torch.tensor([[540.0, 100.0], [0.0, 100.0], [540.0, 10.0]],
                                                           dtype=torch.float64))
        assert bool(seen.all())


class TestBevPixels:
    def test_pinhole_matches_the_homography_grid(self) -> None:
        R = rotation_ground_from_camera(torch.tensor([0.02], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        height = torch.tensor([1.65], dtype=torch.float64)
        expected, expected_valid = bev_sampling_grid(K.matrix_tensor(torch.float64)[None], R, height, (1240, 370),
                                                     41, 0.5)
        grid, valid = pixels_to_grid(*bev_pixels(K.project, R, height, 41, 0.5), (1240, 370))
        torch.testing.assert_close(grid, expected)
        assert torch.equal(valid, expected_valid)

    def test_panorama_ground_point(self) -> None:
        """10 m ahead of a 2 m high panorama camera facing north: column of north, 11.3 deg down."""
        model = EquirectangularCamera(720, 200, 100.0, -180.0).facing(0.0)
        R = rotation_ground_from_camera(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        pixels, seen = bev_pixels(model.project, R, torch.tensor([2.0], dtype=torch.float64), 41, 0.5)
        u, v = pixels[0, 0, 20].tolist()  # row 0: 10 m ahead; column 20: straight ahead
        assert u == pytest.approx(360.0) and v == pytest.approx(100.0 + math.degrees(math.atan(0.2)) * 2.0)
        behind_u = pixels[0, 40, 20, 0].item()  # 10 m behind: south, column 0 (or its wrap, 720)
        assert min(behind_u, 720.0 - behind_u) == pytest.approx(0.0, abs=1e-6)
        assert bool(seen.all())  # a panorama sees every direction; the band's rows decide what is inside
        _, inside = pixels_to_grid(pixels, seen, (720, 200))
        assert not bool(inside[0, 20, 20])  # straight down lies below the band

    def test_distorted_image_gives_the_pinhole_bev(self) -> None:
        """A raw image (the pinhole image warped by a lens model) projects to the same bird's-eye view."""
        camera = DistortedCamera(K, "plumb_bob", (-0.25, 0.08, 0.0, 0.0, 0.0))
        rng = np.random.default_rng(0)
        pinhole = cv2.GaussianBlur(rng.random((370, 1240)).astype(np.float32), (0, 0), 3.0)
        # raw pixel -> its undistorted pixel, where the pinhole image is sampled
        u, v = np.meshgrid(np.arange(1240, dtype=np.float32), np.arange(370, dtype=np.float32))
        undistorted = cv2.undistortPoints(np.stack([u, v], -1).reshape(-1, 1, 2), K.matrix(),
                                          np.array(camera.coefficients), P=K.matrix()).reshape(370, 1240, 2)
        raw = cv2.remap(pinhole, undistorted[..., 0], undistorted[..., 1], cv2.INTER_LINEAR)
        R = rotation_ground_from_camera(torch.tensor([0.03]), torch.zeros(1))
        height = torch.tensor([1.65])
        views = []
        for model, image in ((K, pinhole), (camera, raw)):
            grid, valid = pixels_to_grid(*bev_pixels(model.project, R, height, 80, 0.4), (1240, 370))
            sampled = torch.nn.functional.grid_sample(torch.from_numpy(image)[None, None], grid.float(),
                                                      align_corners=True)[0, 0]
            views.append((sampled, valid[0]))
        both = views[0][1] & views[1][1]
        assert int(both.sum()) > 1000
        assert float((views[0][0] - views[1][0])[both].abs().mean()) < 0.01


def test_raw_distorted_view_is_registered(small_world_dir) -> None:
    """A rendered view warped by a lens model and registered with that model lands where the
    rectified view does (the same code path as pinhole images)."""
    from g2s_localization.geo.tile_sources import open_tile_source
    from g2s_localization.geo.tiles import TileCache
    from g2s_localization.registration.registrars import BaselineRegistrar
    from g2s_localization.synthetic.camera_render import KITTI_CAMERA, CameraRenderer
    from g2s_localization.synthetic.generate import load_world

    world = load_world(small_world_dir)
    x, y, yaw = world.lane_pose(0, 25.0)
    image = CameraRenderer(world).render(float(x), float(y), yaw)
    camera = DistortedCamera(KITTI_CAMERA, "plumb_bob", (-0.2, 0.05, 0.0, 0.0, 0.0))
    h, w = image.shape[:2]
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    undistorted = cv2.undistortPoints(np.stack([u, v], -1).reshape(-1, 1, 2), KITTI_CAMERA.matrix(),
                                      np.array(camera.coefficients), P=KITTI_CAMERA.matrix()).reshape(h, w, 2)
    raw = cv2.remap(image, undistorted[..., 0], undistorted[..., 1], cv2.INTER_LINEAR)
    prior_lat, prior_lon, _ = world.enu_frame.to_geodetic(np.array([x + 4.0, y - 4.5, 0.0]))
    tiles = TileCache(open_tile_source(small_world_dir / "tiles"))
    registrar = BaselineRegistrar(device="cpu")
    results = [registrar.localize(picture, model, tiles, float(prior_lat), float(prior_lon), yaw + math.radians(4.0))
               for picture, model in ((image, KITTI_CAMERA), (raw, camera))]
    positions = [world.enu_frame.to_enu(r.lat_deg, r.lon_deg)[:2] for r in results]
    assert math.hypot(positions[1][0] - x, positions[1][1] - y) < 1.0
    assert math.hypot(positions[1][0] - positions[0][0], positions[1][1] - positions[0][1]) < 0.5


def test_camera_info_with_distortion_gives_the_raw_model() -> None:
    from sensor_msgs.msg import CameraInfo

    from g2s_localization.ros.messages import camera_from_info

    info = CameraInfo(width=1240, height=370, distortion_model="plumb_bob")
    info.k = [700.0, 0.0, 620.0, 0.0, 690.0, 180.0, 0.0, 0.0, 1.0]
    info.p = [650.0, 0.0, 610.0, 0.0, 0.0, 650.0, 175.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [-0.3, 0.1, 0.0, 0.0, 0.0]
    raw = camera_from_info(info)
    assert isinstance(raw, DistortedCamera) and raw.intrinsics.fx == 700.0 and raw.coefficients[0] == -0.3
    info.d = [0.0] * 5  # rectified: P
    assert camera_from_info(info) == PinholeCamera(650.0, 650.0, 610.0, 175.0, 1240, 370)
    info.d = [0.1, 0.0, 0.0, 0.0]
    info.distortion_model = "unknown_lens"
    with pytest.raises(ValueError, match="unsupported distortion model"):
        camera_from_info(info)
