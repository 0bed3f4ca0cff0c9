"""LPN place descriptors on registration features: parts, head, index, training, relocalizer."""
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
from g2s_localization.registration.checkpoints import CheckpointError
from g2s_localization.registration.registrars import BaselineRegistrar, LearnedRegistrar
from g2s_localization.relocalization import place_index
from g2s_localization.relocalization.feature_map import (
    NORTH_UP_YAW,
    MapSearchConfig,
    SatelliteFeatureMap,
    build_feature_map,
)
from g2s_localization.relocalization.place_head import (
    RingPartHead,
    load_place_head,
    part_kernels,
    query_window,
    save_place_head,
)
from g2s_localization.relocalization.place_index import PlaceIndex, build_place_index
from g2s_localization.relocalization.relocalizer import Relocalizer
from g2s_localization.training.place_training import PlaceHeadConfig, prepare_place_samples, train_place_head


def small_head(window: int = 8, channels: int = 3, seed: int = 0) -> RingPartHead:
    torch.manual_seed(seed)
    footprint = torch.zeros(window, window, dtype=torch.bool)
    footprint[: window // 2 + 1] = True  # the camera sees ahead: the upper half
    return RingPartHead(channels, part_kernels(footprint, 2, 2), hidden=6, dim=4).eval()


def random_map(size: int = 24, channels: int = 3, seed: int = 0) -> SatelliteFeatureMap:
    noise = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(seed))
    north_up = F.avg_pool2d(noise, 3, 1, 1)[0]
    west_up = torch.rot90(north_up, -1, (1, 2))
    valid = torch.ones(2, size, size, dtype=torch.bool)
    valid[:, :, :4] = False  # a strip off the cache
    valid[1] = torch.rot90(valid[0], -1, (0, 1))
    return SatelliteFeatureMap((49.0, 8.4), 1.6, torch.stack([north_up, west_up]), valid,
                               torch.tensor([NORTH_UP_YAW, math.pi]))


class TestPartKernels:
    def test_known_values(self) -> None:
        parts = part_kernels(torch.ones(4, 4, dtype=torch.bool), 2, 2)
        assert parts.shape == (4, 4, 4)
        torch.testing.assert_close(parts.sum((1, 2)), torch.ones(4))
        # ring 0 is the central 2x2, split into its left and right columns
        assert parts[0, 1:3, 1].tolist() == [0.5, 0.5] and parts[0].count_nonzero() == 2
        assert parts[2, 0].tolist() == pytest.approx([1 / 6, 1 / 6, 0, 0])  # outer ring, left half: 6 cells

    def test_parts_outside_the_footprint_are_dropped(self) -> None:
        footprint = torch.ones(8, 8, dtype=torch.bool)
        footprint[2:6, 2:6] = False  # nothing seen near the vehicle
        assert len(part_kernels(footprint, 2, 2)) == 2
        with pytest.raises(ValueError, match="empty"):
            part_kernels(torch.zeros(8, 8, dtype=torch.bool), 2, 2)


class TestRingPartHead:
    def test_unit_norm_and_batch(self) -> None:
        head = small_head()
        x, m = torch.randn(5, 3, 8, 8), torch.ones(5, 8, 8)
        z = head(x, m)
        assert z.shape == (5, len(head.parts) * 4)
        torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
        torch.testing.assert_close(head(x[2:3], m[2:3]), z[2:3])

    def test_masked_cells_do_not_count(self) -> None:
        head = small_head()
        x, m = torch.randn(1, 3, 8, 8), torch.ones(1, 8, 8)
        m[:, 0, 0] = 0
        y = x.clone()
        y[:, :, 0, 0] = 100.0
        torch.testing.assert_close(head(x, m), head(y, m))

    def test_gradcheck(self) -> None:
        head = small_head().double()
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: head(t, torch.ones(2, 8, 8, dtype=torch.float64)), (x,))


class TestBuildPlaceIndex:
    def test_lattice_descriptors_equal_the_head_on_each_window(self) -> None:
        fmap, head = random_map(), small_head()
        index = build_place_index(fmap, head, lattice_cells=2, progress=False)
        assert index.cell_m == pytest.approx(3.2) and index.shape == (12, 12)
        o = (head.window - 1) / 2
        checked = 0
        for d in range(2):
            for i in range(index.shape[0]):
                for j in range(index.shape[1]):
                    east, north = index.cell_to_en(i, j)
                    r, c = fmap.en_to_cell(east, north, float(fmap.headings[d]))
                    top, left = int(round(float(r) - o)), int(round(float(c) - o))
                    fits = 0 <= top <= 24 - 8 and 0 <= left <= 24 - 8
                    assert bool(index.valid[d, i, j]) == (fits and bool(fmap.valid[d, top:top + 8, left:left + 8].all()))
                    if index.valid[d, i, j]:
                        window = fmap.features[d, :, top:top + 8, left:left + 8][None]
                        direct = head(window, torch.ones(1, 8, 8))[0]
                        torch.testing.assert_close(index.descriptors[d, i, j].float(), direct, atol=2e-3, rtol=0)
                        checked += 1
        assert checked > 20

    def test_scores_search_and_places(self) -> None:
        index = build_place_index(random_map(), small_head(), lattice_cells=2, progress=False)
        d, i, j = 1, 5, 7
        query = index.descriptors[d, i, j].float()
        scores = index.scores(query, d)
        assert scores.heading_index == d and divmod(int(scores.scores.argmax()), 12) == (i, j)
        assert float(scores.scores[~index.valid[d]].max()) == pytest.approx(float(scores.scores[index.valid[d]].min()))
        values, rows = index.search(query[None].numpy(), 3, layer=d)
        east, north, heading = index.place(rows[0])
        expected = index.cell_to_en(i, j)
        assert (east[0], north[0], heading[0]) == pytest.approx((float(expected[0]), float(expected[1]), math.pi))
        assert values[0, 0] == pytest.approx(1.0, abs=1e-3) and values[0, 0] >= values[0, 1]

    def test_faiss_and_numpy_agree(self, monkeypatch: pytest.MonkeyPatch) -> None:
        pytest.importorskip("faiss")
        index = build_place_index(random_map(), small_head(), lattice_cells=2, progress=False)
        queries = index.descriptors[0, 4:6, 6].float().numpy()
        exact = index.search(queries, 4)
        monkeypatch.setattr(place_index, "FAISS_MIN_GALLERY", 1)
        large = build_place_index(random_map(), small_head(), lattice_cells=2, progress=False)
        fast = large.search(queries, 4)
        assert not isinstance(large._gallery(None)[1], np.ndarray)  # kept as a faiss index
        np.testing.assert_allclose(fast[0], exact[0], atol=1e-5)
        assert np.array_equal(fast[1][:, 0], exact[1][:, 0])
        np.testing.assert_allclose(large.search(queries, 4)[0], fast[0])  # the kept index answers again

    def test_save_load_and_corrupt_files(self, tmp_path: Path) -> None:
        index = build_place_index(random_map(), small_head(), lattice_cells=2, progress=False)
        path = index.save(tmp_path / "places.safetensors")
        loaded = PlaceIndex.load(path)
        assert loaded.origin == index.origin and loaded.cell_m == index.cell_m
        assert torch.equal(loaded.valid, index.valid) and torch.equal(loaded.descriptors, index.descriptors)
        x = torch.randn(1, 3, 8, 8)
        torch.testing.assert_close(loaded.head(x, torch.ones(1, 8, 8)), index.head(x, torch.ones(1, 8, 8)))
        path.write_bytes(path.read_bytes()[:100])
        with pytest.raises(ValueError, match="cannot read place index"):
            PlaceIndex.load(path)
        with pytest.raises(ValueError, match="cannot read place index"):
            PlaceIndex.load(tmp_path / "missing.safetensors")
        SatelliteFeatureMap((0.0, 0.0), 1.0, torch.zeros(1, 1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool),
                            torch.zeros(1)).save(tmp_path / "map.safetensors")
        with pytest.raises(ValueError, match="not a g2s place index"):
            PlaceIndex.load(tmp_path / "map.safetensors")


class TestQueryWindow:
    def test_pools_and_turns(self) -> None:
        bev = torch.zeros(2, 16, 16)
        bev[0, :4] = 1.0  # the far end of the BEV (ahead) is lit
        window, inside = query_window(bev, torch.ones(16, 16, dtype=torch.bool), 0.0, 4)
        assert window.shape == (2, 4, 4) and inside.all()
        assert window[0, 0].tolist() == pytest.approx([1.0] * 4) and float(window[0, 1:].abs().max()) < 1e-6
        turned, _ = query_window(bev, torch.ones(16, 16, dtype=torch.bool), math.pi / 2, 4)
        assert float(turned[0, 1:3, 0].mean()) > 0.9  # turned counter-clockwise: ahead is now on the left


def test_train_save_load_head(small_world_dir: Path, small_dataset: Path, tmp_path: Path) -> None:
    """GNSS-labelled samples of the test drive train a head whose query lands nearer its own window
    than the random ones; the weights survive a save/load, a corrupt file raises."""
    registrar = BaselineRegistrar(device="cpu")
    dataset = KittiRegistrationDataset(small_dataset, "train")
    config = PlaceHeadConfig(rings=4, hidden=8, dim=4)
    samples = prepare_place_samples(dataset, registrar, config, every=1, progress=False)
    n, s = len(samples.queries), registrar.config.bev_size // config.pool
    assert n == len(dataset) and samples.queries.shape[-1] == s
    assert samples.positives.shape[-1] == s + 2 * config.jitter_cells
    head = train_place_head(samples, config, steps=30, batch_size=8, progress=False)
    j = config.jitter_cells
    with torch.no_grad():
        query = head(samples.queries.float(), samples.masks.float())
        full = samples.footprint.float().expand(n, s, s)
        positive = head(samples.positives[:, :, j:j + s, j:j + s].float(), full)
        negative = head(samples.negatives.float(), full)
    assert float((query * positive).sum(1).mean()) > float((query * negative).sum(1).mean())
    path = save_place_head(tmp_path / "head.safetensors", head)
    loaded = load_place_head(path)
    torch.testing.assert_close(loaded(samples.queries[:2].float(), samples.masks[:2].float()), query[:2])
    path.write_bytes(path.read_bytes()[:80])
    with pytest.raises(CheckpointError):
        load_place_head(path)


@pytest.mark.parametrize("verify", [False, True], ids=["index-ranking", "verified"])
def test_relocalizer_with_a_place_index_finds_the_drive(small_world_dir: Path, small_dataset: Path,
                                                        verify: bool) -> None:
    """Shipped weights end to end: the learned registrar's features and the shipped LPN head index
    the ground around the test drive (an unseen town, 144 m across); fed dead reckoning and the
    IMU heading, never GNSS, the relocalizer puts the drive where it is, whether the index's
    ranking is final or its retrievals are verified against the feature map."""
    registrar = LearnedRegistrar.from_checkpoint(device="cpu")
    dataset = KittiRegistrationDataset(small_dataset, "train")
    head = load_place_head()
    tiles = TileCache(open_tile_source(small_world_dir / "tiles"))
    start = dataset.truth(0)
    fmap = build_feature_map(tiles, registrar, (start.lat, start.lon), 72.0, 4, 128, headings=8, progress=False)
    index = build_place_index(fmap, head, lattice_cells=2, progress=False)
    drive, frame = dataset.drives[0], EnuFrame(*index.origin)
    config = MapSearchConfig(frame_spacing_m=2.0, retrieved=20)
    relocalizer = Relocalizer(registrar, tiles, index, config, fmap if verify else None)
    for i, ref in enumerate(dataset.frames):
        (lat, lon, yaw), _ = dataset.camera_truth_and_prior(i)  # the relocalizer finds the camera
        e, n, _ = frame.to_enu(lat, lon)
        oxts = drive.oxts(ref.frame)
        out = relocalizer.update(drive.image(ref.frame), drive.camera(), yaw, (float(e) + 5.0, float(n)),
                                 dataset.camera_height_m, oxts.pitch, oxts.roll)
    east, north, _ = EnuFrame(lat, lon).to_enu(out.result.lat_deg, out.result.lon_deg)
    assert math.hypot(east, north) < 1.0
    assert out.frames == 4 and 0.0 < out.result.confidence <= 1.0
    assert out.retrieved == (20 if verify else 0)


def test_relocalizer_refuses_a_verification_map_that_does_not_fit() -> None:
    fmap = random_map()
    index = build_place_index(fmap, small_head(), lattice_cells=2, progress=False)
    registrar = BaselineRegistrar(device="cpu")
    with pytest.raises(ValueError, match="needs none"):
        Relocalizer(registrar, None, fmap, verify_map=fmap)
    moved = SatelliteFeatureMap((49.1, 8.4), fmap.cell_m, fmap.features, fmap.valid, fmap.headings)
    with pytest.raises(ValueError, match="not the one the place index was built from"):
        Relocalizer(registrar, None, index, verify_map=moved)
