"""Synthetic world, satellite render, camera render and drive simulation."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from g2s_localization.cameras.bev import project_ground_to_image
from g2s_localization.cameras.pinhole import rotation_ground_from_camera
from g2s_localization.config import ConfigError, from_dict
from g2s_localization.geo.tile_sources import XyzDirectorySource
from g2s_localization.geo.tiles import TileCache
from g2s_localization.synthetic.camera_render import CameraRenderer, CameraRig
from g2s_localization.synthetic.drive import DriveConfig, simulate_drive
from g2s_localization.synthetic.satellite import export_tiles, render_satellite
from g2s_localization.synthetic.world import ASPHALT, MARKING, WorldConfig, generate_world

MAGENTA = (255, 0, 255)
CLEAN = dict(seed=3, size_m=350.0, colour_shift=0.0, tree_density=0.0, parked_car_density=0.0, shadow_strength=0.0,
             traffic_density=0.0)


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldConfig(seed=3, size_m=350.0))


def paint(world, x: float, y: float, half_px: int) -> tuple[float, float]:
    """Paint a square centred on the ground texel nearest (x, y); return that texel's ENU centre."""
    c, r = (int(round(float(v))) for v in world.ground_px(np.array(x), np.array(y)))
    world.ground_rgb[r - half_px:r + half_px + 1, c - half_px:c + half_px + 1] = MAGENTA
    half = (world.ground_rgb.shape[0] - 1) / 2.0
    res = world.config.ground_metres_per_px
    return (c - half) * res, (half - r) * res


def magenta_centroid(image: np.ndarray) -> np.ndarray:
    mask = (image[..., 0] > 180) & (image[..., 1] < 90) & (image[..., 2] > 180)
    assert mask.sum() > 0, "marker not visible"
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


class TestWorld:
    def test_deterministic_per_seed(self, world) -> None:
        again = generate_world(WorldConfig(seed=3, size_m=350.0))
        np.testing.assert_array_equal(again.ground_rgb, world.ground_rgb)
        np.testing.assert_array_equal(again.boxes, world.boxes)
        other = generate_world(WorldConfig(seed=4, size_m=350.0))
        assert not np.array_equal(other.nodes, world.nodes)

    def test_has_the_gaps(self, world) -> None:
        assert (world.ground_material == ASPHALT).mean() > 0.02
        assert (world.ground_material == MARKING).sum() > 1000  # lane lines and crosswalks
        cars = world.box_kind == 1
        assert (cars & world.box_in_satellite & ~world.box_in_drive).any()  # parked then gone
        assert (cars & ~world.box_in_satellite & world.box_in_drive).any()  # arrived after capture
        assert (world.box_kind == 0).sum() >= 5
        # street-tree canopies overhang the carriageway: part of the road is hidden from above
        canopy = np.zeros_like(world.ground_material)
        res = world.config.ground_metres_per_px
        for x, y, _, radius in world.canopies:
            c, r = world.ground_px(np.array(x), np.array(y))
            cv2.circle(canopy, (int(c), int(r)), int(radius / res), 1, -1)
        road = world.ground_material == ASPHALT
        assert 0.01 < (canopy.astype(bool) & road).sum() / road.sum() < 0.5

    def test_traffic_moves_along_its_lane(self, world) -> None:
        boxes0, colours = world.traffic_boxes(0.0)
        boxes1, _ = world.traffic_boxes(0.5)
        assert len(boxes0) > 0 and colours.shape == (len(boxes0), 2, 3)
        step = np.hypot(*(boxes1[:, :2] - boxes0[:, :2]).T)
        speeds = world.traffic[:, 2]
        moved = step < speeds  # not wrapped to the road's start in this half second
        np.testing.assert_allclose(step[moved], 0.5 * speeds[moved], rtol=1e-6)
        cols, rows = world.ground_px(boxes0[:, 0], boxes0[:, 1])
        material = world.ground_material[np.round(rows).astype(int), np.round(cols).astype(int)]
        assert np.isin(material, [ASPHALT, MARKING]).mean() > 0.9  # in the lanes

    def test_config_validation(self) -> None:
        with pytest.raises(ValueError, match="style"):
            WorldConfig(style="jungle")
        with pytest.raises(ValueError, match="size_m"):
            WorldConfig(size_m=50.0)
        with pytest.raises(ConfigError, match="unknown keys"):
            from_dict(WorldConfig, {"sead": 1})
        with pytest.raises(ConfigError, match="number"):
            from_dict(WorldConfig, {"size_m": "big"})
        assert from_dict(WorldConfig, {"size_m": 400}).size_m == 400.0


class TestRendersAgree:
    def test_camera_marker_where_geometry_says(self) -> None:
        world = generate_world(WorldConfig(**CLEAN))
        x, y, yaw = world.lane_pose(0, 20.0)
        c, s = math.cos(yaw), math.sin(yaw)
        px, py = paint(world, x + 12.0 * c - 1.0 * s, y + 12.0 * s + 1.0 * c, 3)
        ahead, left = (px - x) * c + (py - y) * s, -(px - x) * s + (py - y) * c  # marker in the ground frame
        rig = CameraRig()
        image = CameraRenderer(world, rig).render(x, y, yaw)
        assert image.shape == (375, 1242, 3)
        K = torch.tensor(rig.camera.matrix())[None]
        R = rotation_ground_from_camera(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
        expected, _ = project_ground_to_image(K, R, torch.tensor([rig.height_m], dtype=torch.float64),
                                              torch.tensor([[[ahead, left]]], dtype=torch.float64))
        np.testing.assert_allclose(magenta_centroid(image), expected[0, 0].numpy(), atol=1.5)

    def test_satellite_tiles_marker_where_geodesy_says(self, tmp_path: Path) -> None:
        world = generate_world(WorldConfig(**CLEAN))
        east, north = paint(world, 23.0, -41.0, 5)
        export_tiles(world, render_satellite(world), tmp_path, zooms=(19,), mbtiles=False)
        lat, lon, _ = world.enu_frame.to_geodetic(np.array([east, north, 0.0]))
        patch = TileCache(XyzDirectorySource(tmp_path / "tiles")).crop(float(lat), float(lon), None, 41, 0.2)
        np.testing.assert_allclose(magenta_centroid(patch.image), [20.0, 20.0], atol=1.0)


class TestDrive:
    def test_deterministic_and_on_the_road(self, world) -> None:
        cfg = DriveConfig(seed=2, duration_s=40.0)
        drive, again = simulate_drive(world, cfg), simulate_drive(world, cfg)
        np.testing.assert_array_equal(drive.true_xy, again.true_xy)
        np.testing.assert_array_equal(drive.gnss_xy, again.gnss_xy)
        assert len(drive.times_s) == 400 and np.allclose(np.diff(drive.times_s), 0.1)
        cols, rows = world.ground_px(drive.true_xy[:, 0], drive.true_xy[:, 1])
        material = world.ground_material[np.round(rows).astype(int), np.round(cols).astype(int)]
        assert np.isin(material, [ASPHALT, MARKING]).mean() > 0.97

    def test_yaw_follows_motion(self, world) -> None:
        drive = simulate_drive(world, DriveConfig(seed=5, duration_s=30.0))
        step = np.diff(drive.true_xy, axis=0)
        moving = np.linalg.norm(step, axis=1) > 0.3
        motion_yaw = np.arctan2(step[:, 1], step[:, 0])
        diff = np.angle(np.exp(1j * (motion_yaw - drive.true_yaw[:-1])))[moving]
        assert np.degrees(np.abs(diff)).max() < 5.0

    def test_gnss_error_is_realistic(self, world) -> None:
        errors, outage = [], 0
        for seed in range(6):
            drive = simulate_drive(world, DriveConfig(seed=seed, duration_s=60.0, outage_per_s=0.05))
            valid = drive.gnss_valid
            errors.append(np.linalg.norm(drive.gnss_xy[valid] - drive.true_xy[valid], axis=1))
            outage += int((~valid).sum())
            assert np.isnan(drive.gnss_xy[~valid]).all()
        median = float(np.median(np.concatenate(errors)))
        assert 3.0 < median < 12.0  # the 5-10 m class of consumer GNSS
        assert outage > 0
        heading_err = np.degrees(np.abs(np.angle(np.exp(1j * (drive.heading_yaw - drive.true_yaw)))))
        assert 0.05 < float(np.median(heading_err)) < 10.0

    def test_imu_is_rep145(self, world) -> None:
        drive = simulate_drive(world, DriveConfig(seed=1, duration_s=20.0))
        assert abs(float(np.median(drive.accel[:, 2])) - 9.81) < 0.2  # specific force: +g on z at rest
        yaw_rate = np.gradient(np.unwrap(drive.true_yaw), 0.1)
        assert np.corrcoef(yaw_rate, drive.gyro[:, 2])[0, 1] > 0.9


class TestHardPreset:
    def test_misregistered_tiles_sit_where_the_preset_says(self, tmp_path: Path) -> None:
        """With ``tile_misregistration_m`` the orthophoto is shifted by that much, in its seeded direction."""
        from dataclasses import replace

        from g2s_localization.synthetic.satellite import misregistration_en

        world = generate_world(replace(WorldConfig(**CLEAN), tile_misregistration_m=2.0))
        east, north = paint(world, 23.0, -41.0, 5)
        shift = misregistration_en(world)
        assert math.hypot(*shift) == pytest.approx(2.0)
        export_tiles(world, render_satellite(world), tmp_path, zooms=(19,), mbtiles=False)
        lat, lon, _ = world.enu_frame.to_geodetic(np.array([east, north, 0.0]))
        patch = TileCache(XyzDirectorySource(tmp_path / "tiles")).crop(float(lat), float(lon), None, 41, 0.2)
        # north-up crop centred at (20, 20): east is +column, north is -row, 0.2 m per pixel
        np.testing.assert_allclose(magenta_centroid(patch.image), [20.0 + shift[0] / 0.2, 20.0 - shift[1] / 0.2],
                                   atol=1.0)

    def test_other_season_turns_vegetation_not_roads(self) -> None:
        from g2s_localization.synthetic.satellite import other_season

        grass, asphalt = np.array([0.2, 0.45, 0.15], np.float32), np.array([0.35, 0.35, 0.37], np.float32)
        image = np.stack([grass, asphalt])[None]
        turned = other_season(image, 1.0)[0]
        assert turned[0, 0] > grass[0] + 0.1 and turned[0, 1] < grass[1]  # redder, less green
        np.testing.assert_allclose(turned[1], asphalt)
        np.testing.assert_array_equal(other_season(image, 0.0), image)

    def test_camera_effects_are_seeded_and_default_to_noise_only(self) -> None:
        from g2s_localization.synthetic.camera_render import HARD_CAMERA, CameraEffects

        flat = torch.full((40, 60, 3), 0.5)
        plain = CameraEffects().apply(flat, 7)
        noise = torch.randn(flat.shape, generator=torch.Generator().manual_seed(7)) * 0.012
        torch.testing.assert_close(plain, flat + noise)  # the renders of the default preset are unchanged
        hard = HARD_CAMERA.apply(flat, 7)
        torch.testing.assert_close(hard, HARD_CAMERA.apply(flat, 7))
        assert hard[0, 0].mean() < hard[20, 30].mean()  # vignetting darkens the corners

    def test_presets(self) -> None:
        from g2s_localization.synthetic.presets import HARD_WORLD, camera_effects, world_config

        assert world_config() == WorldConfig()
        hard = world_config("hard", seed=5, shadow_strength=None, tree_density=1.0)
        assert hard.seed == 5 and hard.tree_density == 1.0 and hard.shadow_strength == HARD_WORLD["shadow_strength"]
        assert camera_effects("hard").motion_blur_px > 0
        with pytest.raises(ValueError, match="unknown preset"):
            world_config("extreme")
        with pytest.raises(ValueError, match="unknown world settings"):
            world_config("hard", fog=1.0)


class TestHarderPreset:
    """Textured ground and roofs, look-alike streets: each knob does what it says and nothing else."""

    def test_look_alike_streets_are_a_straight_lattice_with_row_houses(self) -> None:
        plain = generate_world(WorldConfig(**{**CLEAN, "size_m": 520.0}))  # a 4 x 4 lattice
        regular = generate_world(WorldConfig(**{**CLEAN, "size_m": 520.0, "street_regularity": 1.0}))
        spacing = np.diff(np.unique(np.round(regular.nodes[:, 0], 6)))
        assert len(np.unique(np.round(regular.nodes[:, 0], 6))) < len(regular.nodes)  # intersections in rows
        np.testing.assert_allclose(spacing, spacing[0])
        assert len(regular.edges) > len(plain.edges)  # no links dropped: streets run straight through
        houses = regular.boxes[regular.box_kind == 0]
        same = (np.isclose(houses[:, 3], 10.0) & np.isclose(houses[:, 4], 9.0)).sum()
        assert same >= 10  # identical row houses

    def test_ground_texture_paints_roads_and_lawns_not_markings(self) -> None:
        plain = generate_world(WorldConfig(**CLEAN))
        textured = generate_world(WorldConfig(**{**CLEAN, "ground_texture": 1.0}))
        np.testing.assert_array_equal(textured.ground_material, plain.ground_material)
        changed = np.any(textured.ground_rgb != plain.ground_rgb, -1)
        assert changed[plain.ground_material == ASPHALT].mean() > 0.05
        assert not changed[plain.ground_material == MARKING].any()
        np.testing.assert_array_equal(textured.boxes, plain.boxes)  # its own random stream

    def test_roof_texture_changes_roofs_in_the_satellite_only(self) -> None:
        from dataclasses import replace

        plain = generate_world(WorldConfig(**CLEAN))
        roofs = replace(plain, config=replace(plain.config, roof_texture=1.0))
        a, b = render_satellite(plain).astype(int), render_satellite(roofs).astype(int)
        changed = np.abs(a - b).sum(-1) > 0
        assert changed.any()
        x, y, _, length, width, _, _ = plain.boxes[plain.box_kind == 0][0]
        assert changed.mean() < 0.3  # roofs only, not the ground
        # the first building's roof got two faces of different brightness
        half = (a.shape[0] - 1) / 2.0
        c, r = int(round(x / 0.2 + half)), int(round(half - y / 0.2))
        patch = b[r - 8:r + 9, c - 8:c + 9].mean(-1)
        assert patch.max() - patch.min() > 5

    def test_harder_preset_is_hard_plus_the_new_knobs(self) -> None:
        from g2s_localization.synthetic.presets import HARD_WORLD, camera_effects, world_config

        harder = world_config("harder", seed=2)
        assert all(getattr(harder, k) == v for k, v in HARD_WORLD.items())
        assert harder.ground_texture > 0 and harder.roof_texture > 0 and harder.street_regularity > 0
        assert camera_effects("harder") == camera_effects("hard")
        with pytest.raises(ValueError, match="street_regularity"):
            WorldConfig(street_regularity=1.5)
