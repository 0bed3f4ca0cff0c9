"""Sensor mounts: poses carried between base_link and the camera / GNSS antenna."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from g2s_localization.runtime.mount import PlanarMount

MOUNT = PlanarMount(1.2, 0.3, math.radians(1.0))


class TestPlanarMount:
    def test_known_values(self) -> None:
        east, north, yaw = MOUNT.sensor_pose((10.0, 20.0, math.pi / 2))  # base_link faces north
        assert (east, north) == pytest.approx((10.0 - 0.3, 21.2))  # 1.2 m ahead (north), 0.3 m left (west)
        assert yaw == pytest.approx(math.pi / 2 + math.radians(1.0))

    def test_round_trip(self) -> None:
        base = (3.0, -4.0, 2.5)
        assert MOUNT.base_pose(MOUNT.sensor_pose(base)) == pytest.approx(base)

    def test_covariance_matches_finite_differences(self) -> None:
        sensor = MOUNT.sensor_pose((0.0, 0.0, 0.7))
        step = 1e-6
        J = np.column_stack([(np.array(MOUNT.base_pose(tuple(np.add(sensor, d)))) -
                              np.array(MOUNT.base_pose(tuple(np.subtract(sensor, d))))) / (2 * step)
                             for d in np.eye(3) * step])
        cov = np.diag([0.04, 0.09, 1e-3])
        np.testing.assert_allclose(MOUNT.base_covariance(cov, 0.7), J @ cov @ J.T, atol=1e-8)

    def test_from_an_optical_frame_transform(self) -> None:
        # optical frame: z forward, x right, y down; pitched 5 deg down and turned 1 deg left
        level = Rotation.from_matrix([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
        R = Rotation.from_euler("ZY", [1.0, 5.0], degrees=True) * level  # yaw, then pitch down
        mount = PlanarMount.from_transform((1.2, 0.3, 1.5), tuple(R.as_quat()), optical=True)
        assert (mount.forward_m, mount.left_m) == (1.2, 0.3)
        assert math.degrees(mount.yaw_rad) == pytest.approx(1.0)
        assert math.degrees(mount.pitch_rad) == pytest.approx(5.0)
        antenna = PlanarMount.from_transform((-0.5, 0.0, 1.8), (0.0, 0.0, 0.0, 1.0), optical=False)
        assert antenna == PlanarMount(-0.5, 0.0, 0.0, 0.0)

    def test_rejects_non_finite(self) -> None:
        with pytest.raises(ValueError):
            PlanarMount(math.nan)


def test_transform_chain_composes_tf_static_edges() -> None:
    from g2s_localization.ros.messages import transform_chain

    level = Rotation.from_matrix([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # link -> optical
    edges = {
        "camera_link": ("base_link", np.array([1.2, 0.3, 1.5]), Rotation.from_euler("z", 1.0, degrees=True).as_quat()),
        "camera_optical_frame": ("camera_link", np.zeros(3), level.as_quat()),
        "gnss_link": ("base_link", np.array([-0.5, 0.0, 1.8]), np.array([0.0, 0.0, 0.0, 1.0])),
    }
    translation, quaternion = transform_chain(edges, "base_link", "camera_optical_frame")
    np.testing.assert_allclose(translation, [1.2, 0.3, 1.5], atol=1e-12)
    mount = PlanarMount.from_transform(translation, quaternion, optical=True)
    assert math.degrees(mount.yaw_rad) == pytest.approx(1.0) and mount.pitch_rad == pytest.approx(0.0, abs=1e-12)
    assert transform_chain(edges, "base_link", "base_link")[0].tolist() == [0.0, 0.0, 0.0]
    assert transform_chain(edges, "base_link", "unknown_frame") is None
    assert transform_chain(edges, "odom", "gnss_link") is None  # not below that base
