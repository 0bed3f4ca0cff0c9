"""Geodesy against published constants and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from g2s_localization.geo import geodesy as g

A = 6378137.0
B = 6356752.314245  # WGS84 semi-minor axis, published


class TestGeodeticToEcef:
    def test_known_points(self) -> None:
        np.testing.assert_allclose(g.geodetic_to_ecef(0.0, 0.0), [A, 0.0, 0.0], atol=1e-6)
        np.testing.assert_allclose(g.geodetic_to_ecef(0.0, 90.0), [0.0, A, 0.0], atol=1e-6)
        np.testing.assert_allclose(g.geodetic_to_ecef(90.0, 0.0), [0.0, 0.0, B], atol=1e-3)
        np.testing.assert_allclose(g.geodetic_to_ecef(0.0, 180.0, 100.0), [-(A + 100.0), 0.0, 0.0], atol=1e-6)

    def test_batch_and_inverse(self) -> None:
        lat = np.array([49.0, -33.9, 0.0, 78.2])
        lon = np.array([8.4, 151.2, -179.9, 15.6])
        alt = np.array([110.0, 5.0, -20.0, 300.0])
        ecef = g.geodetic_to_ecef(lat, lon, alt)
        assert ecef.shape == (4, 3)
        lat2, lon2, alt2 = g.ecef_to_geodetic(ecef)
        np.testing.assert_allclose(lat2, lat, atol=1e-10)
        np.testing.assert_allclose(lon2, lon, atol=1e-10)
        np.testing.assert_allclose(alt2, alt, atol=1e-6)


class TestRadii:
    def test_equator_and_pole(self) -> None:
        e2 = g.WGS84_E2
        assert g.prime_vertical_radius(0.0) == pytest.approx(A)
        assert g.meridian_radius(0.0) == pytest.approx(A * (1 - e2))
        # at the pole both radii equal a^2 / b
        assert g.prime_vertical_radius(90.0) == pytest.approx(A * A / B, rel=1e-12)
        assert g.meridian_radius(90.0) == pytest.approx(A * A / B, rel=1e-12)


class TestEnuFrame:
    def test_small_offsets_at_equator(self) -> None:
        frame = g.EnuFrame(0.0, 0.0)
        # 0.001 deg of longitude on the equator is a * pi/180 * 0.001 = 111.3195 m east
        east = frame.to_enu(0.0, 0.001)
        assert east[0] == pytest.approx(111.31949, abs=1e-4)
        assert abs(east[1]) < 1e-9
        assert east[2] == pytest.approx(-(111.31949**2) / (2 * A), abs=1e-5)  # Earth curves away
        # 0.001 deg of latitude: the meridian radius a(1-e2) times the angle = 110.5743 m north
        north = frame.to_enu(0.001, 0.0)
        assert north[1] == pytest.approx(110.5743, abs=1e-3)
        assert abs(north[0]) < 1e-9

    def test_up_is_up(self) -> None:
        frame = g.EnuFrame(49.0, 8.4, 100.0)
        np.testing.assert_allclose(frame.to_enu(49.0, 8.4, 150.0), [0.0, 0.0, 50.0], atol=1e-6)

    def test_inverse_batch(self) -> None:
        frame = g.EnuFrame(49.01, 8.43, 115.0)
        enu = np.array([[10.0, -20.0, 1.0], [500.0, 300.0, -2.0], [-1000.0, 50.0, 0.0]])
        lat, lon, alt = frame.to_geodetic(enu)
        np.testing.assert_allclose(frame.to_enu(lat, lon, alt), enu, atol=1e-6)

    def test_rejects_bad_origin(self) -> None:
        with pytest.raises(ValueError):
            g.EnuFrame(float("nan"), 8.0)
        with pytest.raises(ValueError):
            g.EnuFrame(91.0, 8.0)


class TestWebMercator:
    def test_world_centre_and_corners(self) -> None:
        px, py = g.world_pixel_from_latlon(0.0, 0.0, 0)
        assert (float(px), float(py)) == pytest.approx((128.0, 128.0))
        px, py = g.world_pixel_from_latlon(g.WEB_MERCATOR_MAX_LAT, -180.0, 3)
        assert (float(px), float(py)) == pytest.approx((0.0, 0.0), abs=1e-6)

    def test_tile_index_karlsruhe(self) -> None:
        # x = floor((8.4 + 180) / 360 * 2^19) = floor(274377.39)
        # y = floor((1 - ln(tan(45 + 49/2 deg)) / pi) / 2 * 2^19) = floor(180052.3)
        assert g.tile_index(49.0, 8.4, 19) == (274377, 180052)
        assert g.tile_index(0.0001, 0.0001, 1) == (1, 0)
        assert g.tile_index(-0.0001, -0.0001, 1) == (0, 1)

    def test_tile_bounds(self) -> None:
        north, west, south, east = g.tile_bounds(0, 0, 0)
        assert (north, west, south, east) == pytest.approx((85.0511287798066, -180.0, -85.0511287798066, 180.0))
        assert g.tile_bounds(1, 1, 1) == pytest.approx((0.0, 0.0, -85.0511287798066, 180.0))

    def test_inverse(self) -> None:
        lat, lon = g.latlon_from_world_pixel(*g.world_pixel_from_latlon(49.0123, 8.4567, 19), 19)
        assert (float(lat), float(lon)) == pytest.approx((49.0123, 8.4567), abs=1e-12)

    def test_rejects_polar(self) -> None:
        with pytest.raises(ValueError):
            g.world_pixel_from_latlon(89.0, 0.0, 10)

    def test_ground_resolution_published(self) -> None:
        assert g.ground_resolution(0.0, 0) == pytest.approx(156543.03392804097)
        assert g.ground_resolution(0.0, 19) == pytest.approx(0.29858214173896974)
        assert g.ground_resolution(60.0, 19) == pytest.approx(0.29858214173896974 / 2)

    def test_ellipsoidal_pixel_size(self) -> None:
        east, north = g.mercator_pixel_size(0.0, 0)
        assert east == pytest.approx(156543.03392804097)
        assert north == pytest.approx(156543.03392804097 * (1 - g.WGS84_E2))
        # ratio N/M = (1 - e2 sin^2 lat) / (1 - e2): about 0.29 % at 49 deg
        east, north = g.mercator_pixel_size(49.0, 19)
        expected = (1 - g.WGS84_E2 * math.sin(math.radians(49.0)) ** 2) / (1 - g.WGS84_E2)
        assert east / north == pytest.approx(expected)
        assert 1.0028 < east / north < 1.0030


class TestAngles:
    def test_wrap(self) -> None:
        np.testing.assert_allclose(g.wrap_angle([0.0, 3 * math.pi, -math.pi, 2 * math.pi + 0.1]),
                                   [0.0, math.pi, math.pi, 0.1], atol=1e-12)

    def test_heading_to_yaw(self) -> None:
        headings = np.radians([0.0, 90.0, 180.0, 270.0])  # N, E, S, W
        np.testing.assert_allclose(g.heading_to_yaw(headings), [math.pi / 2, 0.0, -math.pi / 2, math.pi], atol=1e-12)
        np.testing.assert_allclose(g.yaw_to_heading(g.heading_to_yaw(headings)), headings, atol=1e-12)

    def test_quaternion_order_is_xyzw(self) -> None:
        x, y, z, w = g.yaw_to_quaternion_xyzw(math.pi / 2)
        assert (x, y, z, w) == pytest.approx((0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)))
        assert g.quaternion_xyzw_to_yaw((0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5))) == pytest.approx(math.pi / 2)
        assert g.quaternion_xyzw_to_yaw((0.0, 0.0, 0.0, 1.0)) == pytest.approx(0.0)

    def test_quaternion_rejects_garbage(self) -> None:
        with pytest.raises(ValueError):
            g.quaternion_xyzw_to_yaw((0.0, 0.0, 0.0, 0.0))
        with pytest.raises(ValueError):
            g.quaternion_xyzw_to_yaw((float("nan"), 0.0, 0.0, 1.0))


class TestHeadingFrameToEnu:
    def test_known_values(self) -> None:
        # heading north (yaw 90 deg): forward is north, left is west
        assert g.heading_frame_to_enu(2.0, 0.0, math.pi / 2) == pytest.approx((0.0, 2.0))
        assert g.heading_frame_to_enu(0.0, 3.0, math.pi / 2) == pytest.approx((-3.0, 0.0))
        assert g.heading_frame_to_enu(1.0, 1.0, 0.0) == (1.0, 1.0)

    def test_negative_yaw_inverts(self) -> None:
        for yaw in (-2.5, -0.3, 0.7, 3.0):
            east, north = g.heading_frame_to_enu(4.0, -1.5, yaw)
            assert math.hypot(east, north) == pytest.approx(math.hypot(4.0, -1.5))
            assert g.heading_frame_to_enu(east, north, -yaw) == pytest.approx((4.0, -1.5), abs=1e-12)
