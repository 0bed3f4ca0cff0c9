"""Map-wide place search (feature map, score maps, trajectory sums) and the relocalizer."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.geo.tile_sources import open_tile_source
from g2s_localization.geo.tiles import TileCache
from g2s_localization.registration.registrars import BaselineRegistrar
from g2s_localization.relocalization.feature_map import (
    NORTH_UP_YAW,
    MapSearchConfig,
    SatelliteFeatureMap,
    build_feature_map,
)
from g2s_localization.relocalization.map_search import ScoreMap, SequenceSearch, score_map, shifted
from g2s_localization.relocalization.relocalizer import Relocalizer, _correlate_valid, candidate_weights, verify_places
from g2s_localization.synthetic.generate import load_world


def smooth_map(channels: int = 4, size: int = 96, seed: int = 0) -> SatelliteFeatureMap:
    """One north-up grid of smooth noise, plus the same turned heading-up for a vehicle heading west."""
    noise = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(seed))
    north_up = F.avg_pool2d(noise, 3, 1, 1)[0]
    west_up = torch.rot90(north_up, -1, (1, 2))  # west to the top: the north-up grid turned clockwise
    return SatelliteFeatureMap((49.0, 8.4), 1.6, torch.stack([north_up, west_up]),
                               torch.ones(2, size, size, dtype=torch.bool), torch.tensor([NORTH_UP_YAW, math.pi]))


class TestShifted:
    def test_known_values(self) -> None:
        x = torch.arange(12.0).view(3, 4)
        out = shifted(x, 1, -2, -1.0)
        assert out[0, 2] == x[1, 0] and out[1, 3] == x[2, 1]
        assert torch.all(out[2] == -1.0) and torch.all(out[:, :2] == -1.0)

    def test_beyond_the_map_is_all_fill(self) -> None:
        assert torch.all(shifted(torch.ones(3, 3), 5, 0, 0.0) == 0.0)

    def test_crops_a_window_of_any_size_over_channels(self) -> None:
        x = torch.arange(24.0).view(2, 3, 4)
        out = shifted(x, -1, 2, 0.0, (4, 3))  # the window from row -1, column 2: 4 rows, 3 columns
        assert out.shape == (2, 4, 3)
        assert torch.equal(out[:, 1:, :2], x[:, :, 2:]) and torch.all(out[:, 0] == 0) and torch.all(out[:, :, 2] == 0)


class TestCovered:
    def test_matches_a_max_pool(self) -> None:
        fmap = smooth_map(size=40)
        fmap.valid[1, 5:9, 20:22] = False
        for size in (1, 7, 40):
            expected = F.max_pool2d((~fmap.valid[1])[None, None].float(), size, 1)[0, 0] < 0.5
            assert torch.equal(fmap.covered(1, size), expected)
        assert fmap.covered(0, 7).all()


class TestCellGeometry:
    def test_grids_agree_on_places(self) -> None:
        fmap = smooth_map(size=11)
        east, north = fmap.cell_to_en(torch.tensor(2.0), torch.tensor(7.0))
        assert (float(east), float(north)) == pytest.approx((2 * 1.6, 3 * 1.6))
        west_east, west_north = fmap.cell_to_en(torch.tensor(3.0), torch.tensor(8.0), math.pi)  # heading west
        assert (float(west_east), float(west_north)) == pytest.approx((-2 * 1.6, 3 * 1.6))
        row, col = fmap.en_to_cell(east, north, math.pi)
        assert (float(row), float(col)) == pytest.approx((7.0, 8.0))

    def test_nearest_heading_wraps(self) -> None:
        fmap = smooth_map(size=5)
        assert fmap.nearest_heading(1.3) == 0 and fmap.nearest_heading(-3.0) == 1


class TestScoreMap:
    @pytest.mark.parametrize("heading, grid", [(NORTH_UP_YAW, 0), (math.pi, 1), (math.pi - 0.9, 0)])
    def test_peak_where_the_vehicle_stood(self, heading: float, grid: int) -> None:
        """A heading-up crop of the map scores best at the crop's centre, on the grid nearest its heading."""
        fmap = smooth_map()
        r0, c0, s = 30, 41, 25
        bev = torch.rot90(fmap.features[0, :, r0:r0 + s, c0:c0 + s], -1, (1, 2)) if heading == math.pi else \
            fmap.features[0, :, r0:r0 + s, c0:c0 + s]
        config = MapSearchConfig(pool=1, yaw_range_deg=0.0)
        out = score_map(fmap, bev, torch.ones(s, s, dtype=torch.bool), heading, config)
        assert out.scores.shape == (96, 96) and out.heading_index == grid
        if heading != math.pi - 0.9:  # a 50 deg turn of a crop that is not turned: no peak expected
            assert divmod(int(out.scores.argmax()), 96) == (r0 + 12, c0 + 12)
            rms = float(bev.square().sum(0).mean().sqrt())  # a perfect match scores the template's RMS
            assert float(out.scores.max()) == pytest.approx(rms, rel=1e-3)

    def test_more_yaws_never_score_less(self) -> None:
        fmap = smooth_map()
        bev = fmap.features[0, :, 10:34, 50:74]
        mask = torch.ones(24, 24, dtype=torch.bool)
        narrow = score_map(fmap, bev, mask, NORTH_UP_YAW, MapSearchConfig(pool=1, yaw_range_deg=0.0))
        wide = score_map(fmap, bev, mask, NORTH_UP_YAW, MapSearchConfig(pool=1, yaw_range_deg=4.0))
        assert torch.all(wide.scores >= narrow.scores - 1e-5)

    def test_rejects_a_mismatched_bev(self) -> None:
        with pytest.raises(ValueError, match="does not fit"):
            score_map(smooth_map(), torch.zeros(3, 24, 24), torch.ones(24, 24, dtype=torch.bool), 0.0,
                      MapSearchConfig(pool=1))


class TestSequenceSearch:
    def test_motion_resolves_an_ambiguous_place(self) -> None:
        """Each frame alone has two equal peaks; only one pair is consistent with the 16 m driven east."""
        fmap = smooth_map(size=60)
        config = MapSearchConfig(frames=2, frame_spacing_m=0.0, candidates=2, min_separation_m=5.0)
        search = SequenceSearch(fmap, config)
        first, second = torch.zeros(60, 60), torch.zeros(60, 60)
        first[20, 20] = first[40, 10] = 1.0  # the vehicle was here (20, 20) or there
        second[20, 30] = second[5, 50] = 1.0  # 10 cells (16 m) east of (20, 20), or elsewhere
        search.add(ScoreMap(first, 0), (0.0, 0.0))
        search.add(ScoreMap(second, 0), (16.0, 0.0))
        best = search.candidates()[0]
        assert (best[0], best[1]) == pytest.approx(tuple(float(v) for v in fmap.cell_to_en(20, 30)))
        assert best[2] == pytest.approx(1.0)

    def test_close_frames_replace_each_other(self) -> None:
        search = SequenceSearch(smooth_map(size=10), MapSearchConfig(frames=3, frame_spacing_m=5.0))
        for east in (0.0, 1.0, 2.0, 8.0, 20.0, 30.0):
            search.add(ScoreMap(torch.zeros(10, 10), 0), (east, 0.0))
        assert [p[0] for _, p in search.history] == [8.0, 20.0, 30.0]


class TestVerifyPlaces:
    @staticmethod
    def two_frame_track() -> tuple[SatelliteFeatureMap, SequenceSearch, MapSearchConfig]:
        """Two crops of the map, 16 m apart heading west (grid 1, a quarter turn), then north (grid 0)."""
        fmap, s = smooth_map(), 25
        config = MapSearchConfig(pool=1, yaw_range_deg=2.0, yaw_step_deg=2.0, frames=2, frame_spacing_m=0.0)
        search = SequenceSearch(fmap, config)
        mask = torch.ones(s, s, dtype=torch.bool)
        west = torch.rot90(fmap.features[0, :, 40:40 + s, 50:50 + s], -1, (1, 2))  # vehicle at cell (52, 62)
        north = fmap.features[0, :, 40:40 + s, 40:40 + s]  # at (52, 52): 10 cells (16 m) west of the first
        search.add(score_map(fmap, west, mask, math.pi, config), (0.0, 0.0))
        search.add(score_map(fmap, north, mask, NORTH_UP_YAW, config), (-16.0, 0.0))
        return fmap, search, config

    def test_equals_the_map_wide_sum_at_the_places(self) -> None:
        fmap, search, _ = self.two_frame_track()
        mean = search.accumulated() / 2
        cells = [(20, 20), (52, 51), (70, 33), (80, 60)]  # both frames' windows on the map
        places = [(*(float(v) for v in fmap.cell_to_en(r, c)), 0.0) for r, c in cells]
        verified = verify_places(fmap, search.history, places, radius_m=0.0)
        expected = sorted(((e, n, float(mean[r, c])) for (e, n, _), (r, c) in zip(places, cells)), key=lambda v: -v[2])
        for got, want in zip(verified, expected):
            assert got == pytest.approx(want, abs=1e-4)

    def test_finds_the_best_offset_within_the_radius(self) -> None:
        fmap, search, _ = self.two_frame_track()
        truth = tuple(float(v) for v in fmap.cell_to_en(52, 52))
        rms = [float(fmap.features[0, :, 40:65, c:c + 25].square().sum(0).mean().sqrt()) for c in (40, 50)]
        far = (truth[0] + 30.0, truth[1], 0.0)
        near = (truth[0] + 1.6, truth[1] - 3.2, 0.0)  # two cells off, inside a 4.8 m radius
        best, other = verify_places(fmap, search.history, [far, near], radius_m=4.8)
        assert (best[0], best[1]) == pytest.approx(truth, abs=1e-4)
        assert best[2] == pytest.approx(sum(rms) / 2, rel=1e-3) and other[2] < best[2]  # perfect matches

    def test_fft_correlation_equals_conv2d(self) -> None:
        generator = torch.Generator().manual_seed(1)
        crops, kernels = torch.randn(5, 3, 17, 17, generator=generator), torch.randn(2, 3, 9, 9, generator=generator)
        torch.testing.assert_close(_correlate_valid(crops, kernels), F.conv2d(crops, kernels), atol=1e-4, rtol=1e-4)

    def test_needs_frame_templates(self) -> None:
        fmap = smooth_map()
        with pytest.raises(ValueError, match="no correlation template"):
            verify_places(fmap, [(ScoreMap(torch.zeros(96, 96), 0), (0.0, 0.0))], [(0.0, 0.0, 0.0)], 1.6)
        with pytest.raises(ValueError, match="nothing to verify"):
            verify_places(fmap, [], [(0.0, 0.0, 0.0)], 1.6)


class TestCandidateWeights:
    def test_evidence_grows_with_frames(self) -> None:
        one = candidate_weights(np.array([0.30, 0.29]), 1, 0.02)
        eight = candidate_weights(np.array([0.30, 0.29]), 8, 0.02)
        assert one.sum() == pytest.approx(1.0) and 0.5 < one[0] < eight[0]


def world_map(world_dir: Path, registrar: BaselineRegistrar, half_extent_m: float = 100.0
              ) -> tuple[TileCache, SatelliteFeatureMap]:
    world = load_world(world_dir)
    tiles = TileCache(open_tile_source(world_dir / "tiles"))
    anchor = (world.config.anchor_lat_deg, world.config.anchor_lon_deg)
    return tiles, build_feature_map(tiles, registrar, anchor, half_extent_m, pool=4, block_cells=128, headings=2,
                                    progress=False)


class TestFeatureMap:
    def test_blocks_equal_one_pass(self, small_world_dir: Path) -> None:
        registrar = BaselineRegistrar(device="cpu")
        tiles, fmap = world_map(small_world_dir, registrar, 50.0)
        h, w = fmap.shape
        assert fmap.valid.all() and h == w == 256 // 4
        assert fmap.headings.tolist() == pytest.approx([NORTH_UP_YAW, -NORTH_UP_YAW])
        cell = registrar.config.bev_metres_per_px
        for d, heading in enumerate(fmap.headings.tolist()):
            patch = tiles.crop(*fmap.origin, heading, 2 * 256, cell / 2).image
            direct = registrar.satellite_features(torch.from_numpy(patch).permute(2, 0, 1)[None].float() / 255.0)
            direct = F.avg_pool2d(direct, 4)[0]
            inner = slice(2, -2)  # the direct pass has no margin at its own border
            torch.testing.assert_close(fmap.features[d, :, inner, inner], direct[:, inner, inner], atol=2e-2, rtol=0)

    def test_save_load_and_corrupt_files(self, small_world_dir: Path, tmp_path: Path) -> None:
        _, fmap = world_map(small_world_dir, BaselineRegistrar(device="cpu"), 20.0)
        path = fmap.save(tmp_path / "map.safetensors")
        loaded = SatelliteFeatureMap.load(path)
        assert loaded.origin == fmap.origin and loaded.cell_m == fmap.cell_m
        torch.testing.assert_close(loaded.features, fmap.features.half().float())
        assert torch.equal(loaded.valid, fmap.valid)
        path.write_bytes(path.read_bytes()[:64])
        with pytest.raises(ValueError, match="cannot read feature map"):
            SatelliteFeatureMap.load(path)
        with pytest.raises(ValueError, match="cannot read feature map"):
            SatelliteFeatureMap.load(tmp_path / "missing.safetensors")

    def test_outside_the_cache_raises(self, small_world_dir: Path) -> None:
        tiles = TileCache(open_tile_source(small_world_dir / "tiles"))
        with pytest.raises(ValueError, match="inside the tile cache"):
            build_feature_map(tiles, BaselineRegistrar(device="cpu"), (10.0, 10.0), 20.0, progress=False)


def drive_map(world_dir: Path, dataset: KittiRegistrationDataset, registrar: BaselineRegistrar
              ) -> tuple[TileCache, SatelliteFeatureMap]:
    """Feature map 112 m wide around the drive: places 48 m across (over twice the registration's
    +-20 m window) to choose from. The 1 s test drive is too short to single out its street in a
    whole town of look-alike streets; benchmarks/relocalization.py measures that case."""
    tiles = TileCache(open_tile_source(world_dir / "tiles"))
    start = dataset.truth(0)
    return tiles, build_feature_map(tiles, registrar, (start.lat, start.lon), 56.0, 4, 128, progress=False)


def test_relocalizer_finds_the_drive_without_gnss(small_world_dir: Path, small_dataset: Path) -> None:
    """Feed the drive's frames with dead-reckoned positions and the IMU heading, never its GNSS:
    the relocalized pose is the true one, and its confidence and covariance are well formed."""
    registrar = BaselineRegistrar(device="cpu")
    dataset = KittiRegistrationDataset(small_dataset, "train")
    tiles, fmap = drive_map(small_world_dir, dataset, registrar)
    drive = dataset.drives[0]
    camera = drive.camera()
    frame = EnuFrame(*fmap.origin)
    relocalizer = Relocalizer(registrar, tiles, fmap, MapSearchConfig(frame_spacing_m=2.0))
    for index, ref in enumerate(dataset.frames):
        (lat, lon, yaw), _ = dataset.camera_truth_and_prior(index)  # the relocalizer finds the camera
        e, n, _ = frame.to_enu(lat, lon)
        oxts = drive.oxts(ref.frame)
        out = relocalizer.update(drive.image(ref.frame), camera, yaw, (float(e) + 7.0, float(n) - 3.0),
                                 dataset.camera_height_m, oxts.pitch, oxts.roll)
    east, north, _ = EnuFrame(lat, lon).to_enu(out.result.lat_deg, out.result.lon_deg)
    assert math.hypot(east, north) < 1.0
    assert out.frames == 4 and len(out.candidates) == 3  # frames kept 2 m apart over the 8 m driven
    assert out.total_s >= out.search_s > 0
    assert 0.0 < out.result.confidence <= 1.0
    assert sum(c.weight for c in out.candidates) == pytest.approx(1.0)
    assert np.all(np.linalg.eigvalsh(out.result.covariance) > 0)


def test_relocalizer_rejects_a_missing_heading(small_world_dir: Path) -> None:
    registrar = BaselineRegistrar(device="cpu")
    tiles, fmap = world_map(small_world_dir, registrar, 20.0)
    from g2s_localization.cameras.pinhole import PinholeCamera

    camera = PinholeCamera(100.0, 100.0, 63.5, 31.5, 128, 64)
    with pytest.raises(ValueError, match="finite IMU heading"):
        Relocalizer(registrar, tiles, fmap).update(np.zeros((64, 128, 3), np.uint8), camera, math.nan, None)
