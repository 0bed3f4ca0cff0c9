"""Correlation head, network, losses, registrars and checkpoints."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from g2s_localization.config import to_dict
from g2s_localization.evaluation.metrics import CHI2_95_3DOF, frame_errors, publication_summary, summarize
from g2s_localization.registration.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from g2s_localization.registration.correlation import (
    Peak,
    ScoreVolume,
    correlate,
    correlate_pairs,
    correlate_window,
    pool_search_inputs,
    pose_from_scores,
    refine_peak,
    rotate_bev,
    yaw_candidates,
)
from g2s_localization.registration.model import G2SRegistrationNet, ModelConfig
from g2s_localization.registration.registrars import (
    BaselineRegistrar,
    LearnedRegistrar,
    coarse_to_fine,
    outside_radius_excluded,
    to_map_frame,
)
from g2s_localization.training.losses import make_pseudo_queries, target_cells

TINY = ModelConfig(ground_width=128, ground_height=40, feature_dim=4, width=8, bev_size=24, bev_metres_per_px=1.0,
                   search_radius_m=6.0, yaw_range_deg=4.0, yaw_step_deg=2.0)


class TestRotateBev:
    def test_counter_clockwise(self) -> None:
        f = torch.zeros(1, 1, 21, 21)
        f[0, 0, 0, 10] = 1.0  # 10 cells ahead
        rotated, _ = rotate_bev(f, torch.ones(1, 21, 21, dtype=torch.bool), torch.tensor([math.pi / 2, -math.pi / 2]))
        assert divmod(int(rotated[0, 0, 0].argmax()), 21) == (10, 0)  # +90 deg: ahead -> left
        assert divmod(int(rotated[0, 1, 0].argmax()), 21) == (10, 20)  # -90 deg: ahead -> right

    def test_zero_is_identity(self) -> None:
        f = torch.rand(2, 3, 9, 9)
        m = torch.rand(2, 9, 9) > 0.2
        rotated, rmask = rotate_bev(f, m, torch.zeros(1))
        torch.testing.assert_close(rotated[:, 0], f * m.unsqueeze(1))
        assert torch.equal(rmask[:, 0], m)


class TestCorrelate:
    def test_matches_direct_sum(self) -> None:
        bev, mask, sat = torch.randn(2, 3, 4, 10, 10), torch.rand(2, 3, 10, 10) > 0.3, torch.randn(2, 4, 16, 16)
        out = correlate(bev, mask, sat, 3)
        assert out.shape == (2, 3, 7, 7)
        for b, k, dy, dx in ((0, 0, 0, 0), (1, 2, -3, 2), (0, 1, 3, -3)):
            t = bev[b, k] * mask[b, k]
            norm = (mask[b, k].sum() * t.square().sum()).sqrt()  # unit-RMS template, mean over cells
            ref = (t * sat[b][:, 3 + dy:13 + dy, 3 + dx:13 + dx]).sum() / norm
            assert float(out[b, k, dy + 3, dx + 3]) == pytest.approx(float(ref), abs=1e-4)

    def test_pairs_diagonal_is_correlate(self) -> None:
        bev, mask, sat = torch.randn(3, 2, 4, 8, 8), torch.rand(3, 2, 8, 8) > 0.3, torch.randn(3, 4, 12, 12)
        pairs = correlate_pairs(bev, mask, sat, 2)
        assert pairs.shape == (3, 3, 2, 5, 5)
        torch.testing.assert_close(pairs[[0, 1, 2], [0, 1, 2]], correlate(bev, mask, sat, 2), atol=1e-5, rtol=0)

    def test_size_check(self) -> None:
        with pytest.raises(ValueError, match="cells wide"):
            correlate(torch.zeros(1, 1, 1, 8, 8), torch.ones(1, 1, 8, 8, dtype=torch.bool), torch.zeros(1, 1, 9, 9), 2)

    def test_finds_a_shifted_pattern(self) -> None:
        torch.manual_seed(0)
        sat = torch.nn.functional.normalize(torch.randn(1, 4, 20, 20), dim=1)
        dy, dx = 2, -3  # vehicle 2 cells behind (down) and 3 cells left of the patch centre
        bev = sat[:, :, 5 + dy:15 + dy, 5 + dx:15 + dx].unsqueeze(1)
        scores = correlate(bev, torch.ones(1, 1, 10, 10, dtype=torch.bool), sat, 5)
        assert divmod(int(scores[0, 0].argmax()), 11) == (dy + 5, dx + 5)
        assert float(scores.max()) == pytest.approx(1.0, abs=1e-5)


def wave_field(channels: int, seed: int = 0, shortest: float = 5.0):
    """A continuous feature field: sums of plane waves ``shortest`` to 2.4 x that many cells long, so a rotated view can be
    sampled exactly (a bilinearly rotated map would blur and bias sub-degree yaw)."""
    g = torch.Generator().manual_seed(seed)
    freq = 2 * math.pi / (shortest * (1 + 1.4 * torch.rand(channels, 3, generator=g)))
    angle = 2 * math.pi * torch.rand(channels, 3, generator=g)
    phase = 2 * math.pi * torch.rand(channels, 3, generator=g)

    def field(col: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        arg = (freq * torch.cos(angle))[..., None, None] * col + (freq * torch.sin(angle))[..., None, None] * row
        return torch.sin(arg + phase[..., None, None]).sum(1)  # (C, H, W)
    return field


def satellite_of(field, size: int) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32)
    return field(r[None, :], r[:, None]).unsqueeze(0)


def view_of(field, size: int, search: int, dy: int, dx: int, yaw_rad: float) -> torch.Tensor:
    """The BEV a vehicle at shift (dy, dx) cells, heading ``yaw_rad`` CCW of the patch's, sees
    (what :func:`rotate_bev` by ``yaw_rad`` turns back into the satellite window)."""
    centre = (size + 2 * search - 1) / 2
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    x, y = r[None, :], r[:, None]
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return field(centre + dx + c * x + s * y, centre + dy - s * x + c * y).unsqueeze(0)


def wedge_mask(size: int) -> torch.Tensor:
    """A forward-looking camera's BEV footprint: ahead of the centre, within +-40 deg."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    ahead, right = -r[:, None], r[None, :]
    return ((ahead > 1) & (right.abs() < ahead * math.tan(math.radians(40)))).unsqueeze(0)


class TestCorrelateWindow:
    def test_matches_rotate_and_correlate(self) -> None:
        torch.manual_seed(1)
        bev, sat = torch.randn(4, 20, 20), torch.randn(4, 26, 26)
        mask = wedge_mask(20)[0]
        yaws = torch.deg2rad(torch.tensor([-7.0, 0.0, 3.5]))
        rotated, rotated_mask = rotate_bev(bev[None], mask[None], yaws)
        torch.testing.assert_close(correlate_window(bev, mask, sat, yaws, 3), correlate(rotated, rotated_mask, sat[None], 3)[0],
                                   atol=1e-5, rtol=0)

    def test_size_check(self) -> None:
        with pytest.raises(ValueError, match="cells wide"):
            correlate_window(torch.zeros(1, 8, 8), torch.ones(8, 8, dtype=torch.bool), torch.zeros(1, 12, 12),
                             torch.zeros(1), 3)


class TestPoolSearchInputs:
    def test_halves_and_keeps_mostly_valid_cells(self) -> None:
        bev, sat = torch.ones(2, 3, 8, 8), torch.rand(2, 3, 12, 12)
        mask = torch.zeros(2, 8, 8, dtype=torch.bool)
        mask[:, :4, :3] = True  # two full coarse cells and two half-valid ones
        coarse_bev, coarse_mask, coarse_sat = pool_search_inputs(bev, mask, sat, 2)
        assert coarse_bev.shape == (2, 3, 4, 4) and coarse_sat.shape == (2, 3, 6, 6)
        assert int(coarse_mask[0].sum()) == 4 and bool(coarse_mask[0, 0, 1]) and not bool(coarse_mask[0, 0, 2])
        torch.testing.assert_close(coarse_sat[0, :, 0, 0], sat[0, :, :2, :2].mean((1, 2)))

    def test_rejects_indivisible_sizes(self) -> None:
        with pytest.raises(ValueError, match="divide"):
            pool_search_inputs(torch.zeros(1, 1, 9, 9), torch.ones(1, 9, 9, dtype=torch.bool), torch.zeros(1, 1, 13, 13), 2)


class TestRefinePeak:
    def test_recovers_a_sub_degree_yaw_and_the_shift(self) -> None:
        size, search = 48, 8
        field = wave_field(4)
        sat = satellite_of(field, size + 2 * search)
        truths = ((2, -3, 0.6), (-4, 1, -1.1))
        bev = torch.cat([view_of(field, size, search, dy, dx, math.radians(yaw)) for dy, dx, yaw in truths])
        mask = wedge_mask(size).expand(2, -1, -1)
        coarse = Peak(torch.tensor([-2.4, 4.4]), torch.tensor([3.4, -0.6]), torch.zeros(2))  # a cell off, yaw 0
        fine = refine_peak(bev * mask.unsqueeze(1), mask, sat.expand(2, -1, -1, -1), coarse, 1.0, search,
                           yaw_candidates(1.5, 0.25), 2)
        for i, (dy, dx, yaw) in enumerate(truths):
            assert float(fine.forward_m[i]) == pytest.approx(-dy, abs=0.25)
            assert float(fine.left_m[i]) == pytest.approx(-dx, abs=0.25)
            assert math.degrees(float(fine.yaw_offset[i])) == pytest.approx(yaw, abs=0.2)


class TestPoseFromScores:
    def test_peak_offsets_and_covariance(self) -> None:
        scores = torch.zeros(1, 3, 11, 11)
        scores[0, 2, 3, 7] = 10.0  # yaw +2 deg, dy = -2 (ahead), dx = +2 (right)
        volume = ScoreVolume(scores, yaw_candidates(2.0, 2.0), 0.5)
        est = pose_from_scores(volume, 0.1)
        assert float(est.forward_m) == pytest.approx(1.0, abs=1e-3)
        assert float(est.left_m) == pytest.approx(-1.0, abs=1e-3)
        assert math.degrees(float(est.yaw_offset)) == pytest.approx(2.0, abs=1e-3)
        assert float(est.confidence) > 0.99
        cov = est.covariance[0]
        assert float(cov[0, 0]) == pytest.approx(0.5**2 / 12, rel=0.05)  # the discretisation floor

    def test_two_peaks_report_the_spread(self) -> None:
        scores = torch.zeros(1, 1, 21, 21)
        scores[0, 0, 10, 2] = scores[0, 0, 10, 18] = 10.0  # 8 m left and 8 m right, equally good
        est = pose_from_scores(ScoreVolume(scores, torch.zeros(1), 1.0), 0.1)
        assert float(est.covariance[0, 1, 1]) > 50.0
        assert float(est.confidence) < 0.6

    def test_external_peak_and_resolution(self) -> None:
        scores = torch.zeros(1, 3, 11, 11)
        scores[0, 1, 5, 5] = 10.0
        peak = Peak(torch.tensor([0.3]), torch.tensor([-0.2]), torch.tensor([math.radians(0.4)]))
        est = pose_from_scores(ScoreVolume(scores, yaw_candidates(2.0, 2.0), 1.0), 0.1, peak, (0.4, math.radians(0.25)))
        assert float(est.forward_m) == pytest.approx(0.3) and float(est.left_m) == pytest.approx(-0.2)
        # second moment about the refined estimate plus the fine search's floor
        assert float(est.covariance[0, 0, 0]) == pytest.approx(0.3**2 + 0.4**2 / 12, rel=1e-3)
        assert float(est.covariance[0, 2, 2]) == pytest.approx(math.radians(0.4)**2 + math.radians(0.25)**2 / 12,
                                                               rel=1e-3)

    def test_gradients_flow(self) -> None:
        scores = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
        est = pose_from_scores(ScoreVolume(scores, yaw_candidates(2.0, 2.0).double(), 0.5), 0.2)
        (est.covariance.sum() + est.forward_m.sum()).backward()
        assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


class TestCoarseToFine:
    def test_finds_pose_outside_the_coarse_grid(self) -> None:
        # a 96-cell view: on smaller ones a smooth field lets a lateral shift stand in for a yaw
        config = ModelConfig(bev_size=96, bev_metres_per_px=1.0, search_radius_m=8.0, yaw_range_deg=6.0,
                             yaw_step_deg=2.0, coarse_pool=2, refine_window_cells=3)
        field = wave_field(8, seed=3)
        sat = satellite_of(field, 112)
        mask = wedge_mask(96)
        bev = view_of(field, 96, 8, 3, -5, math.radians(-2.7)) * mask.unsqueeze(1)  # odd shift, between yaw steps
        result = coarse_to_fine(bev, mask, sat, config)
        assert result.volume.scores.shape == (1, 7, 9, 9)  # +-6 deg / 2 deg, +-4 coarse cells
        assert float(result.peak.forward_m[0]) == pytest.approx(-3.0, abs=0.25)
        assert float(result.peak.left_m[0]) == pytest.approx(5.0, abs=0.25)
        assert math.degrees(float(result.peak.yaw_offset[0])) == pytest.approx(-2.7, abs=0.2)
        assert result.resolution == (1.0, pytest.approx(math.radians(0.25)))

    def test_radius_keeps_the_search_near_the_prior(self) -> None:
        """A true shift of 5.8 m lies outside a 3 m window: the peak stays inside it, and the
        covariance no longer counts the excluded shifts."""
        config = ModelConfig(bev_size=96, bev_metres_per_px=1.0, search_radius_m=8.0, yaw_range_deg=6.0,
                             yaw_step_deg=2.0, coarse_pool=2, refine_window_cells=1)
        field = wave_field(8, seed=3)
        mask = wedge_mask(96)
        bev = view_of(field, 96, 8, 3, -5, 0.0) * mask.unsqueeze(1)
        full = coarse_to_fine(bev, mask, satellite_of(field, 112), config)
        narrow = coarse_to_fine(bev, mask, satellite_of(field, 112), config, torch.tensor([3.0]))
        assert math.hypot(float(full.peak.forward_m[0]), float(full.peak.left_m[0])) > 5.0
        assert math.hypot(float(narrow.peak.forward_m[0]), float(narrow.peak.left_m[0])) <= 3.0 + math.sqrt(2)  # + the 1-cell refinement

    def test_config_rejects_an_indivisible_grid(self) -> None:
        with pytest.raises(ValueError, match="coarse_pool"):
            ModelConfig(bev_size=95)
        with pytest.raises(ValueError, match="refine_window_cells"):
            ModelConfig(refine_window_cells=0)


class TestOutsideRadiusExcluded:
    def test_known_values_and_batch(self) -> None:
        scores = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
        out = outside_radius_excluded(scores, 1.0, torch.tensor([1.0, 10.0]))
        kept = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]],
                            dtype=torch.bool)
        torch.testing.assert_close(out[0, 0][kept], scores[0, 0][kept])
        assert bool((out[0, 0][~kept] == scores[0].min() - 10.0).all())
        torch.testing.assert_close(out[1], scores[1])  # a radius beyond the window excludes nothing


class TestPseudoQueries:
    def test_query_is_the_shifted_rotated_patch(self) -> None:
        sat = torch.zeros(1, 3, 41, 41)
        sat[0, :, 20 - 6, 20 + 4] = 1.0  # 6 px ahead, 4 px right of the centre
        q = make_pseudo_queries(sat, 21, torch.zeros(1), torch.tensor([2.0]), torch.tensor([0.0]), 1.0)
        assert divmod(int(q[0, 0].argmax()), 21) == (10 - 4, 10 + 4)  # seen from 2 m further ahead
        q = make_pseudo_queries(sat, 21, torch.tensor([math.pi / 2]), torch.zeros(1), torch.zeros(1), 1.0)
        # turned left by 90 deg: the point 6 ahead / 4 right is now 4 behind / 6 right
        assert divmod(int(q[0, 0].argmax()), 21) == (10 + 4, 10 + 6)

    def test_targets_on_the_grid(self) -> None:
        volume = ScoreVolume(torch.zeros(2, 3, 11, 11), yaw_candidates(2.0, 2.0), 0.5)
        flat, inside = target_cells(volume, torch.tensor([[1.0, -0.5, math.radians(2.0)], [10.0, 0.0, 0.0]]))
        assert bool(inside[0]) and not bool(inside[1])
        assert int(flat[0]) == 2 * 121 + (5 - 2) * 11 + (5 + 1)


class TestNetwork:
    def test_forward_shapes_and_backward(self) -> None:
        net = G2SRegistrationNet(TINY)
        image = torch.rand(2, 3, 60, 200)
        K = torch.tensor([[100.0, 0.0, 99.5], [0.0, 100.0, 20.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
        z = torch.zeros(2)
        sat = torch.rand(2, 3, TINY.satellite_input_px, TINY.satellite_input_px)
        volume = net(image, K, torch.full((2,), 1.65), z, z, sat)
        d = 2 * TINY.search_cells + 1
        assert volume.scores.shape == (2, 5, d, d)
        est = net.estimate(volume)
        assert est.covariance.shape == (2, 3, 3)
        (est.forward_m.sum() + volume.scores.mean()).backward()
        assert net.ground_encoder.head.weight.grad is not None


class TestCheckpoints:
    def test_round_trip_and_errors(self, tmp_path: Path) -> None:
        net = G2SRegistrationNet(TINY)
        path = save_checkpoint(tmp_path / "m.safetensors", net, {"model": to_dict(TINY)}, step=7)
        tensors, meta = read_checkpoint(path)
        assert meta["step"] == 7
        loaded = LearnedRegistrar.from_checkpoint(path, device="cpu")
        for a, b in zip(net.state_dict().values(), loaded.net.state_dict().values()):
            assert torch.equal(a, b)
        # corrupt bytes, a non-checkpoint, a mismatched model
        (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
        with pytest.raises(CheckpointError, match="not a readable"):
            LearnedRegistrar.from_checkpoint(tmp_path / "bad.safetensors")
        with pytest.raises(CheckpointError, match="does not exist"):
            LearnedRegistrar.from_checkpoint(tmp_path / "none.safetensors")
        other = ModelConfig(**{**to_dict(TINY), "feature_dim": 6})
        save_checkpoint(tmp_path / "o.safetensors", G2SRegistrationNet(other), {"model": to_dict(TINY)})
        with pytest.raises(CheckpointError, match="does not fit"):
            LearnedRegistrar.from_checkpoint(tmp_path / "o.safetensors")
        pickle_like = tmp_path / "pickle.safetensors"
        pickle_like.write_bytes(b"\x80\x04\x95" + b"\x00" * 100)  # a pickle header is refused, never loaded
        with pytest.raises(CheckpointError):
            LearnedRegistrar.from_checkpoint(pickle_like)


class TestToMapFrame:
    def test_rotates_offsets_and_covariance(self) -> None:
        from g2s_localization.registration.correlation import PoseEstimate

        cov = torch.diag(torch.tensor([4.0, 1.0, 0.01]))[None]
        est = PoseEstimate(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.1]), cov, torch.ones(1),
                           torch.zeros(1, 1, 1, 1))
        offset, yaw, enu_cov = to_map_frame(est, torch.tensor([math.pi / 2], dtype=torch.float64))
        np.testing.assert_allclose(offset[0].numpy(), [-1.0, 2.0], atol=1e-12)  # facing north: forward = north
        assert float(yaw[0]) == pytest.approx(math.pi / 2 + 0.1)
        np.testing.assert_allclose(np.diag(enu_cov[0].numpy()), [1.0, 4.0, 0.01], atol=1e-12)


class TestMetrics:
    def test_known_errors(self) -> None:
        true_en = np.zeros((2, 2))
        est_en = np.array([[1.0, 0.0], [0.0, 2.0]])  # frame 0 faces east, frame 1 faces north
        errors = frame_errors(true_en, np.array([0.0, math.pi / 2]), est_en, np.array([0.0, math.pi / 2 + 0.1]),
                              np.stack([np.eye(3)] * 2))
        np.testing.assert_allclose(errors.longitudinal_m, [1.0, 2.0], atol=1e-12)
        np.testing.assert_allclose(errors.lateral_m, [0.0, 0.0], atol=1e-12)
        np.testing.assert_allclose(errors.nees, [1.0, 4.01], atol=1e-12)
        summary = summarize(errors)
        assert summary["longitudinal_within_1m_%"] == 50.0 and summary["lateral_within_1m_%"] == 100.0
        assert summary["inside_95_ellipse_%"] == 100.0 and CHI2_95_3DOF > 4.01
        np.testing.assert_allclose(errors.position_nees, [1.0, 4.0], atol=1e-12)

    def test_publication_summary(self) -> None:
        true_en = np.zeros((4, 2))
        est_en = np.array([[0.1, 0.0], [4.0, 0.0], [0.5, 0.0], [5.0, 0.0]])
        cov = np.stack([np.eye(3) * 0.01, np.eye(3) * 100.0, np.eye(3) * 0.01, np.eye(3)])
        errors = frame_errors(true_en, np.zeros(4), est_en, np.zeros(4), cov)
        out = publication_summary(errors, np.array([True, True, True, False]))
        assert out["availability_%"] == 75.0
        # frame 1: published 4 m off (a wide covariance does not excuse it); frame 2: 0.5 m off with a
        # 0.1 m std, outside its own 99 % ellipse; frame 0 is right; frame 3 is withheld
        assert out["confidently_wrong_%"] == 50.0
        assert out["published_frames"] == 3.0 and out["published_position_m_median"] == pytest.approx(0.5)
        assert "published_frames" not in publication_summary(errors, np.zeros(4, dtype=bool))


class TestBaseline:
    def test_recovers_the_pose_of_a_rendered_view(self, small_world_dir: Path) -> None:
        """A camera view rendered at a known pose is found from a prior 6 m and 4 deg off."""
        from g2s_localization.geo.tile_sources import open_tile_source
        from g2s_localization.geo.tiles import TileCache
        from g2s_localization.synthetic.camera_render import KITTI_CAMERA, CameraRenderer
        from g2s_localization.synthetic.generate import load_world

        world = load_world(small_world_dir)
        x, y, yaw = world.lane_pose(0, 25.0)
        image = CameraRenderer(world).render(float(x), float(y), yaw)
        frame = world.enu_frame
        prior_lat, prior_lon, _ = frame.to_geodetic(np.array([x + 4.0, y - 4.5, 0.0]))
        tiles = TileCache(open_tile_source(small_world_dir / "tiles"))
        result = BaselineRegistrar(device="cpu").localize(image, KITTI_CAMERA, tiles, float(prior_lat),
                                                          float(prior_lon), yaw + math.radians(4.0))
        east, north, _ = frame.to_enu(result.lat_deg, result.lon_deg)
        assert math.hypot(east - x, north - y) < 1.0
        assert abs(math.degrees(result.yaw_rad - yaw)) < 1.5
        assert result.covariance.shape == (3, 3) and np.all(np.linalg.eigvalsh(result.covariance) > 0)
        assert result.satellite is not None and result.satellite.shape[2] == 3

    def test_rejects_a_wrong_image(self, small_world_dir: Path) -> None:
        from g2s_localization.geo.tile_sources import open_tile_source
        from g2s_localization.geo.tiles import TileCache
        from g2s_localization.synthetic.camera_render import KITTI_CAMERA

        tiles = TileCache(open_tile_source(small_world_dir / "tiles"))
        with pytest.raises(ValueError, match="RGB uint8"):
            BaselineRegistrar(device="cpu").localize(np.zeros((375, 1242), np.uint8), KITTI_CAMERA, tiles,
                                                     49.0114, 8.4165, 0.0)
        with pytest.raises(ValueError, match="camera is"):
            BaselineRegistrar(device="cpu").localize(np.zeros((100, 100, 3), np.uint8), KITTI_CAMERA, tiles,
                                                     49.0114, 8.4165, 0.0)


class TestShippedWeights:
    def test_hard_preset_weights_load_with_the_default_search(self) -> None:
        """The weights trained on hard towns: weakly supervised, calibrated, the default's search settings."""
        from g2s_localization.registration.checkpoints import read_checkpoint
        from g2s_localization.registration.registrars import DEFAULT_WEIGHTS

        hard = DEFAULT_WEIGHTS.with_name("g2s_synthetic_hard.safetensors")
        _, meta = read_checkpoint(hard)
        assert meta["config"]["supervision"] == "weak" and meta["config"]["dataset_root"] == "data/g2s_hard"
        registrar, default = LearnedRegistrar.from_checkpoint(hard, device="cpu"), LearnedRegistrar.from_checkpoint(
            device="cpu")
        assert registrar.temperature == meta["extra"]["calibrated_temperature"]
        assert registrar.config == default.config

    def test_load_and_register_a_rendered_view(self, small_world_dir: Path) -> None:
        """The packaged weights (trained on synthetic towns) load without pickle and localize."""
        from g2s_localization.geo.tile_sources import open_tile_source
        from g2s_localization.geo.tiles import TileCache
        from g2s_localization.registration.checkpoints import read_checkpoint
        from g2s_localization.registration.registrars import DEFAULT_WEIGHTS
        from g2s_localization.synthetic.camera_render import KITTI_CAMERA, CameraRenderer
        from g2s_localization.synthetic.generate import load_world

        _, meta = read_checkpoint(DEFAULT_WEIGHTS)
        assert meta["config"]["supervision"] == "weak" and "SYNTHETIC" in meta["extra"]["note"]
        registrar = LearnedRegistrar.from_checkpoint(device="cpu")
        assert registrar.temperature == meta["extra"]["calibrated_temperature"]
        world = load_world(small_world_dir)  # a town the weights never saw
        x, y, yaw = world.lane_pose(2, 30.0)
        image = CameraRenderer(world).render(float(x), float(y), yaw)
        lat, lon, _ = world.enu_frame.to_geodetic(np.array([x - 5.0, y + 3.0, 0.0]))
        result = registrar.localize(image, KITTI_CAMERA, TileCache(open_tile_source(small_world_dir / "tiles")),
                                    float(lat), float(lon), yaw - math.radians(3.0))
        east, north, _ = world.enu_frame.to_enu(result.lat_deg, result.lon_deg)
        assert math.hypot(east - x, north - y) < 1.0
        assert abs(math.degrees(result.yaw_rad - yaw)) < 1.5
        assert 0.05 <= result.reference_support <= 1.0  # the edges back the learned pose up

    def test_reference_volume_is_the_baselines_own(self, small_world_dir: Path) -> None:
        """The learned registrar's cross-check scores its edge channels as the baseline does (the baseline
        leaves BEV cells outside the eroded mask unzeroed, which the coarse pooling mixes in at the border)."""
        from g2s_localization.geo.tile_sources import open_tile_source
        from g2s_localization.geo.tiles import TileCache
        from g2s_localization.registration.registrars import live_batch
        from g2s_localization.synthetic.camera_render import KITTI_CAMERA, CameraRenderer
        from g2s_localization.synthetic.generate import load_world

        world = load_world(small_world_dir)
        x, y, yaw = world.lane_pose(1, 20.0)
        image = CameraRenderer(world).render(float(x), float(y), yaw)
        learned, baseline = LearnedRegistrar.from_checkpoint(device="cpu"), BaselineRegistrar(device="cpu")
        cfg = learned.config
        lat, lon, _ = world.enu_frame.to_geodetic(np.array([x + 2.0, y, 0.0]))
        patch = TileCache(open_tile_source(small_world_dir / "tiles")).crop(
            float(lat), float(lon), yaw, cfg.satellite_input_px, cfg.satellite_metres_per_px)
        batch = live_batch(image, KITTI_CAMERA, 1.65, 0.0, 0.0, cfg)
        batch["satellite"] = torch.from_numpy(patch.image).permute(2, 0, 1)[None].float() / 255.0
        reference = learned.search(batch).reference
        own = baseline.search(batch).volume.scores
        assert int(reference.scores.argmax()) == int(own.argmax())
        assert float((reference.scores - own).abs().max()) < 0.05 * float(own.max() - own.min())
        assert baseline.search(batch).reference is None
        assert math.isnan(baseline.estimate(batch).support_at(0))
