"""Panorama camera model, the real-pairs reader, aerial crops and the real-pairs evaluation loop,
on images the tests paint (the real pairs are never copied here)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from g2s_localization.cameras.equirectangular import EquirectangularCamera
from g2s_localization.data.real_pairs import read_pairs
from g2s_localization.evaluation.real_pairs import RealPairsConfig, RegistrarSummary, register_pair
from g2s_localization.geo.tiles import crop_north_up
from g2s_localization.registration.registrars import BaselineRegistrar
from g2s_localization.registration.reliability import (
    LOW_CONFIDENCE, NOT_FINITE, PUBLISH, UNRELIABLE, publish_verdict, search_radius_m,
)

from flat_ground import panorama_on_ground, random_patches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class TestEquirectangularCamera:
    def test_known_directions_of_a_cvusa_band(self) -> None:
        model = EquirectangularCamera(1232, 224, 130.0, -180.0)
        azimuth, elevation = model.pixel_to_direction([0, 308, 616, 924], [130, 130, 130 - 1232 / 36, 224])
        np.testing.assert_allclose(np.degrees(azimuth), [-180, -90, 0, 90])  # south, west, north, east
        np.testing.assert_allclose(np.degrees(elevation), [0, 0, 10, -(224 - 130) * 360 / 1232])

    def test_direction_round_trip_wraps_columns(self) -> None:
        model = EquirectangularCamera.full_sphere(64, 32, 0.0)
        assert model.horizon_row == 15.5
        u, v = model.direction_to_pixel(np.radians([-10.0, 370.0]), np.radians([0.0, 45.0]))
        np.testing.assert_allclose(u, [64 - 64 * 10 / 360, 64 * 10 / 360])
        np.testing.assert_allclose(model.pixel_to_direction(u, v)[1], np.radians([0.0, 45.0]))

    def test_pinhole_view_looks_where_it_is_pointed(self) -> None:
        model = EquirectangularCamera(720, 200, 100.0, -180.0)
        panorama = np.zeros((200, 720, 3), np.uint8)
        u_east, _ = model.direction_to_pixel(math.radians(90.0), 0.0)  # a post due east, on the horizon
        panorama[90:111, int(u_east) - 2:int(u_east) + 3] = 255
        view, camera = model.pinhole_view(panorama, 90.0, 60.0, (121, 61))
        assert view[30, 60].min() == 255  # the principal point sees it
        assert view[30, 10].max() == 0
        assert camera.fx == pytest.approx(60.5 / math.tan(math.radians(30.0)))
        behind, _ = model.pinhole_view(panorama, 270.0, 60.0, (121, 61))
        assert behind.max() == 0

    def test_view_across_the_seam_and_outside_the_band(self) -> None:
        model = EquirectangularCamera(360, 40, 20.0, 0.0)
        panorama = np.full((40, 360, 3), 100, np.uint8)
        view, _ = model.pinhole_view(panorama, 0.0, 90.0, (64, 64))  # column 0 is the seam
        assert view[32, 32].min() == 100  # continuous across u = 0
        assert view[0, 32].max() == 0  # 45 deg up lies above a +-20 deg band: black

    def test_rejects_bad_models_and_images(self) -> None:
        with pytest.raises(ValueError):
            EquirectangularCamera(100, 60, 10.0)  # more than 180 deg of rows
        model = EquirectangularCamera(100, 20, 10.0)
        with pytest.raises(ValueError):
            model.pinhole_view(np.zeros((10, 100, 3), np.uint8), 0.0, 90.0, (32, 32))
        with pytest.raises(ValueError):
            model.pinhole_view(np.zeros((20, 100, 3), np.uint8), 0.0, 180.0, (32, 32))


class TestCropNorthUp:
    def test_north_up_is_a_plain_crop(self) -> None:
        aerial = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
        crop = crop_north_up(aerial, (30.0, 20.0), 0.5, math.pi / 2, 11, 0.5)
        np.testing.assert_array_equal(crop, aerial[15:26, 25:36])

    def test_heading_east_turns_east_up(self) -> None:
        aerial = np.zeros((41, 41, 3), np.uint8)
        aerial[20, 30] = 255  # 10 px east of the centre
        crop = crop_north_up(aerial, (20.0, 20.0), 1.0, 0.0, 41, 1.0)  # ENU yaw 0: east is up
        assert np.unravel_index(crop[..., 0].argmax(), crop.shape[:2]) == (10, 20)

    def test_border(self) -> None:
        aerial = np.full((10, 10, 3), 200, np.uint8)
        assert crop_north_up(aerial, (0.0, 0.0), 1.0, math.pi / 2, 5, 1.0)[0, 0, 0] == 0
        assert crop_north_up(aerial, (0.0, 0.0), 1.0, math.pi / 2, 5, 1.0, replicate_border=True)[0, 0, 0] == 200


def write_pairs(folder: Path, extra: str = "") -> Path:
    """A painted pair: flat ground of random patches (no repeating pattern, so every pose is
    distinct) seen by a level panorama 2 m up, and the same ground north-up at 0.2 m/px."""
    aerial = random_patches(600, 400, seed=3)
    cv2.imwrite(str(folder / "aerial0.png"), aerial)
    ground = panorama_on_ground(aerial, (300.0, 300.0), 0.2, EquirectangularCamera(720, 180, 120.0, -180.0), 2.0)
    cv2.imwrite(str(folder / "ground0.png"), ground)
    (folder / "pairs.yaml").write_text(
        "defaults:\n  ground_model: equirectangular_band\n  camera_height_m_range: [2.0, 2.0]\n"
        "  aerial_metres_per_px_range: [0.2, 0.2]\n  band_horizon_row: 120.0\n" + extra +
        "pairs:\n  - {id: painted, ground: ground0.png, aerial: aerial0.png, camera_px: [300.0, 300.0]}\n")
    return folder / "pairs.yaml"


class TestReadPairs:
    def test_reads_defaults_and_overrides(self, tmp_path: Path) -> None:
        (pair,) = read_pairs(write_pairs(tmp_path, "  azimuth_at_column0_deg: -180.0\n"))
        assert pair.id == "painted" and pair.camera_px == (300.0, 300.0)
        assert pair.aerial_metres_per_px_range == (0.2, 0.2)
        _, model = pair.load_ground()
        assert (model.width, model.height, model.horizon_row) == (720, 180, 120.0)

    def test_unknown_keys_warn_missing_keys_raise(self, tmp_path: Path) -> None:
        with pytest.warns(UserWarning, match="future_key"):
            read_pairs(write_pairs(tmp_path, "  future_key: 1\n"))
        (tmp_path / "bad.yaml").write_text("pairs:\n  - {id: x, ground: g.png}\n")
        with pytest.raises(ValueError, match="aerial"):
            read_pairs(tmp_path / "bad.yaml")
        (tmp_path / "model.yaml").write_text("pairs:\n  - {id: x, ground: g, aerial: a, camera_px: [1, 2], "
                                             "ground_model: fisheye}\n")
        with pytest.raises(ValueError, match="ground_model"):
            read_pairs(tmp_path / "model.yaml")


class TestWithheldReason:
    def test_gate(self) -> None:
        assert publish_verdict(0.1, np.eye(3), 0.5, 0.05) == (PUBLISH, "")
        low = publish_verdict(0.1, np.eye(3), 0.01, 0.05)
        assert low.kind == LOW_CONFIDENCE and "below" in low.reason and not low.publish
        assert publish_verdict(math.nan, np.eye(3), 0.5, 0.05).kind == NOT_FINITE
        assert publish_verdict(0.0, np.full((3, 3), np.inf), 0.5, 0.05).kind == NOT_FINITE


def test_painted_pair_is_registered_and_scored(tmp_path: Path) -> None:
    """The whole loop on a pair whose panorama is the aerial seen through the panorama model."""
    (pair,) = read_pairs(write_pairs(tmp_path))
    config = RealPairsConfig(headings_deg=(0.0, 90.0), priors=2, prior_offset_m=4.0, scales=1)
    summary = RegistrarSummary("baseline", register_pair(BaselineRegistrar(device="cpu"), pair, config))
    figures = summary.figures()
    assert figures["frames"] == 8
    views = summary.by_view()
    assert set(views) == {"pinhole", "panorama"}
    for view in views.values():  # the whole panorama goes through its own camera model, not cuts
        assert max(r.error_m for r in view.records) < 1.0, [r.error_m for r in view.records]
    assert max(r.yaw_error_deg for r in views["panorama"].records) < 1.0
    assert 0.0 <= figures["confidently_wrong_rate"] <= figures["availability"] <= 1.0


def test_benchmark_without_pairs_says_so(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_pairs.py"), "--pairs",
                             str(tmp_path / "none.yaml")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "no real pairs" in result.stdout


def test_benchmark_writes_json(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path)
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_pairs.py"), "--pairs", str(pairs),
                             "--priors", "1", "--json", str(out), "--out", str(tmp_path / "overlays")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert set(figures) == {"g2s-net", "edge-ncc baseline"}
    for values in figures.values():
        assert {"confidently_wrong_rate", "availability", "position_m_median", "yaw_deg_median", "frames"} <= set(values)
        assert values["frames"] == 8  # 2 views x 4 headings x 1 prior x 1 scale (the range is a single value)
    assert len(list((tmp_path / "overlays").glob("overlay_painted_*.png"))) == 2


class TestPublishGate:
    """The gate the node and the benchmarks share (``publish_verdict``) and the GNSS window."""

    def test_wide_covariance_is_withheld(self) -> None:
        wide = np.diag([4.0, 0.01, 1e-4])  # 2 m std along one axis: competing places
        verdict = publish_verdict(0.0, wide, 0.9, 0.05, 1.0)
        assert verdict.kind == UNRELIABLE and "position std 2.0 m" in verdict.reason
        assert publish_verdict(0.0, wide, 0.9, 0.05, 2.5).publish

    def test_pose_outside_the_gnss_ellipse_is_withheld(self) -> None:
        cov = np.diag([0.04, 0.04, 1e-4])
        gnss = np.diag([1.0, 1.0])  # 1 m per axis: the 99 % ellipse has a 3.03 m radius
        assert publish_verdict(0.0, cov, 0.9, 0.05, 1.0, np.array([2.0, 1.0]), gnss).publish
        verdict = publish_verdict(0.0, cov, 0.9, 0.05, 1.0, np.array([3.0, 1.0]), gnss)
        assert verdict.kind == UNRELIABLE and "from the GNSS fix" in verdict.reason

    def test_pose_the_training_free_features_do_not_support_is_withheld(self) -> None:
        cov = np.diag([0.04, 0.04, 1e-4])
        verdict = publish_verdict(0.0, cov, 0.9, 0.05, 1.0, reference_support=0.01)
        assert verdict.kind == UNRELIABLE and "training-free features do not support" in verdict.reason
        assert publish_verdict(0.0, cov, 0.9, 0.05, 1.0, reference_support=0.3).publish
        assert publish_verdict(0.0, cov, 0.9, 0.05, 1.0, reference_support=math.nan).publish  # not checked

    def test_search_radius_from_the_fix_covariance(self) -> None:
        assert search_radius_m(None, 20.0) == 20.0
        assert search_radius_m(np.diag([4.0, 1.0]), 20.0) == pytest.approx(2.0 * math.sqrt(9.210340371976182))
        assert search_radius_m(np.diag([1e-4, 1e-4]), 20.0) == 4.0  # RTK: the floor
        assert search_radius_m(np.diag([400.0, 1.0]), 20.0) == 20.0  # poor fix: the configured window
        assert search_radius_m(np.full((2, 2), np.nan), 20.0) == 20.0

    def test_navsatfix_covariance_is_read_when_known(self) -> None:
        from sensor_msgs.msg import NavSatFix

        from g2s_localization.ros.messages import fix_from_navsatfix

        msg = NavSatFix(latitude=49.0, longitude=8.4)
        msg.position_covariance = [4.0, 0.5, 0.0, 0.5, 9.0, 0.0, 0.0, 0.0, 16.0]
        msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_KNOWN
        np.testing.assert_allclose(fix_from_navsatfix(msg).covariance_en, [[4.0, 0.5], [0.5, 9.0]])
        msg.position_covariance_type = NavSatFix.COVARIANCE_TYPE_UNKNOWN
        assert fix_from_navsatfix(msg).covariance_en is None
