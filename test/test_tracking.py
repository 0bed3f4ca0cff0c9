"""Fusion over frames: carrying a pose by odometry, agreement, and the track's life cycle."""
from __future__ import annotations

import math

import numpy as np
import pytest

from g2s_localization.runtime.tracking import Tracker, TrackedPose, agrees, carried, inside_prediction

TIGHT = np.diag([0.01, 0.01, 1e-6])


class TestCarried:
    def test_known_values(self) -> None:
        """Odometry's frame is turned 90 deg from the map: 3 m along odom x is 3 m along base_link's
        heading in the map (north-east here), whatever odom's own axes."""
        last = TrackedPose(0.0, (10.0, 5.0, math.pi / 2), (100.0, 200.0, math.pi / 4), TIGHT)
        (east, north, yaw), _ = carried(last, (10.0, 8.0, math.pi / 2 + 0.1), 0.0)
        assert (east, north) == pytest.approx((100.0 + 3 / math.sqrt(2), 200.0 + 3 / math.sqrt(2)))
        assert yaw == pytest.approx(math.pi / 4 + 0.1)

    def test_standing_still_keeps_the_covariance(self) -> None:
        last = TrackedPose(0.0, (1.0, 2.0, 0.3), (0.0, 0.0, 0.0), TIGHT)
        pose, covariance = carried(last, (1.0, 2.0, 0.3), 0.05)
        assert pose == pytest.approx((0.0, 0.0, 0.0))
        np.testing.assert_allclose(covariance, TIGHT[:2, :2])

    def test_uncertainty_grows_with_distance_and_heading(self) -> None:
        """10 m east with a 0.01 rad heading std: 0.1 m across the motion, plus 5 % drift each way."""
        last = TrackedPose(0.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), np.diag([0.0, 0.0, 1e-4]))
        _, covariance = carried(last, (10.0, 0.0, 0.0), 0.05)
        np.testing.assert_allclose(covariance, np.diag([0.25, 0.25 + 0.01]), atol=1e-12)


class TestAgrees:
    def test_inside_and_outside_the_ellipse(self) -> None:
        predicted = ((0.0, 0.0, 0.0), np.eye(2) * 0.5)
        assert agrees(predicted, (1.0, 1.0, 0.0), np.eye(3) * 0.5)  # d^2 = 2 / 1 = 2 < 9.21
        assert not agrees(predicted, (4.0, 0.0, 0.0), np.eye(3) * 0.5)  # 16 > 9.21


class TestInsidePrediction:
    def test_own_ellipse_only(self) -> None:
        predicted = ((10.0, 0.0, 0.0), np.eye(2) * 0.25)
        assert inside_prediction(predicted, (11.0, 0.5))  # d^2 = 1.25 / 0.25 = 5 < 9.21
        assert not inside_prediction(predicted, (12.0, 0.0))  # 16 > 9.21, however wide the estimate


class TestTracker:
    def pose(self, t: float, east: float) -> TrackedPose:
        return TrackedPose(t, (east, 0.0, 0.0), (east, 0.0, 0.0), TIGHT)

    def test_two_agreeing_poses_start_a_track(self) -> None:
        tracker = Tracker()
        tracker.update(0.0, (0.0, 0.0, 0.0), self.pose(0.0, 0.0), tracked=False)
        assert tracker.prior(0.1, (1.0, 0.0, 0.0)) is None  # one pose alone does not start a track
        tracker.update(0.1, (1.0, 0.0, 0.0), self.pose(0.1, 1.0), tracked=False)
        prior = tracker.prior(0.2, (2.0, 0.0, 0.0))
        assert prior is not None and prior[0][:2] == pytest.approx((2.0, 0.0))

    def test_disagreeing_poses_do_not(self) -> None:
        tracker = Tracker()
        tracker.update(0.0, (0.0, 0.0, 0.0), self.pose(0.0, 0.0), tracked=False)
        tracker.update(0.1, (1.0, 0.0, 0.0), self.pose(0.1, 15.0), tracked=False)  # 14 m off the odometry
        assert tracker.track is None and tracker.candidate.pose[0] == 15.0

    def test_misses_age_and_missing_odometry_end_or_skip_it(self) -> None:
        tracker = Tracker(max_age_s=2.0, max_misses=3)
        tracker.update(0.0, (0.0, 0.0, 0.0), self.pose(0.0, 0.0), tracked=False)
        tracker.update(0.1, (1.0, 0.0, 0.0), self.pose(0.1, 1.0), tracked=False)
        assert tracker.prior(0.2, None) is None and tracker.prior(5.0, (2.0, 0.0, 0.0)) is None
        for k in range(2):
            tracker.update(0.2 + 0.1 * k, (2.0, 0.0, 0.0), None, tracked=True)
        assert tracker.track is not None
        tracker.update(0.4, (2.0, 0.0, 0.0), None, tracked=True)
        assert tracker.track is None and tracker.prior(0.5, (2.0, 0.0, 0.0)) is None

    def test_withheld_peak_where_the_track_predicts_is_no_miss(self) -> None:
        """Too wide to publish but where the track says: neither confirms nor refutes the track, which
        still ends max_age_s after its last published pose."""
        tracker = Tracker(max_age_s=2.0, max_misses=3)
        tracker.update(0.0, (0.0, 0.0, 0.0), self.pose(0.0, 0.0), tracked=False)
        tracker.update(0.1, (1.0, 0.0, 0.0), self.pose(0.1, 1.0), tracked=False)
        for k in range(5):
            tracker.update(0.2 + 0.1 * k, (2.0 + k, 0.0, 0.0), None, tracked=True, withheld_en=(2.05 + k, 0.02))
        assert tracker.track is not None and tracker.misses == 0
        assert tracker.prior(2.2, (3.0, 0.0, 0.0)) is None  # aged out all the same
        for k in range(3):  # withheld peaks far from the prediction are misses
            tracker.update(0.7 + 0.1 * k, (7.0, 0.0, 0.0), None, tracked=True, withheld_en=(9.0, 0.0))
        assert tracker.track is None

    def test_disabled(self) -> None:
        tracker = Tracker(max_age_s=0.0)
        for k in range(3):
            tracker.update(0.1 * k, (float(k), 0.0, 0.0), self.pose(0.1 * k, float(k)), tracked=False)
        assert tracker.prior(0.3, (3.0, 0.0, 0.0)) is None
