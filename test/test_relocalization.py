"""LPN descriptor index and retrieval training."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from g2s_localization import relocalization
from g2s_localization.checkpoints import CheckpointError
from g2s_localization.datasets import KittiRegistrationDataset
from g2s_localization.geodesy import EnuFrame
from g2s_localization.relocalization import (
    DescriptorIndex,
    RetrievalConfig,
    build_index,
    gallery_input,
    satellite_patch,
)
from g2s_localization.retrieval import LPNEmbedder
from g2s_localization.retrieval_training import (
    info_nce,
    load_embedder,
    prepare_pairs,
    save_embedder,
    train_embedder,
)
from g2s_localization.synthetic import load_world
from g2s_localization.tile_sources import open_tile_source
from g2s_localization.tiles import TileCache


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def toy_index(n: int = 50) -> DescriptorIndex:
    positions = np.stack([np.arange(n) * 8.0, np.zeros(n)], 1).astype(np.float32)
    return DescriptorIndex((49.0, 8.4), positions, np.zeros(n, np.float32), unit_rows(n, 16, 0), RetrievalConfig())


class TestDescriptorIndex:
    def test_search_finds_each_entry_first(self) -> None:
        index = toy_index()
        scores, rows = index.search(index.descriptors[[3, 17]], 5)
        assert rows[:, 0].tolist() == [3, 17]
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
        assert (np.diff(scores, axis=1) <= 1e-6).all()

    def test_mask_restricts_the_gallery(self) -> None:
        index = toy_index()
        mask = np.arange(len(index)) % 2 == 0
        _, rows = index.search(index.descriptors[[3]], 4, mask)
        assert all(r % 2 == 0 for r in rows[0])

    def test_faiss_and_numpy_agree(self, monkeypatch: pytest.MonkeyPatch) -> None:
        pytest.importorskip("faiss")
        index = toy_index(200)
        queries = unit_rows(7, 16, 1)
        numpy_scores, numpy_rows = index.search(queries, 10)
        monkeypatch.setattr(relocalization, "FAISS_MIN_GALLERY", 1)
        faiss_scores, faiss_rows = index.search(queries, 10)
        assert index._faiss is not None
        np.testing.assert_array_equal(faiss_rows, numpy_rows)
        np.testing.assert_allclose(faiss_scores, numpy_scores, atol=1e-5)

    def test_save_load_round_trip_and_bad_files(self, tmp_path: Path) -> None:
        index = toy_index()
        loaded = DescriptorIndex.load(index.save(tmp_path / "index.safetensors"))
        assert loaded.origin == index.origin and loaded.config == index.config
        np.testing.assert_array_equal(loaded.descriptors, index.descriptors)
        (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
        with pytest.raises(ValueError, match="cannot read descriptor index"):
            DescriptorIndex.load(tmp_path / "corrupt.safetensors")
        with pytest.raises(ValueError, match="cannot read descriptor index"):
            DescriptorIndex.load(tmp_path / "missing.safetensors")


def world_tiles(world_dir: Path) -> TileCache:
    return TileCache(open_tile_source(world_dir / "tiles"))


def test_build_index_retrieves_a_gallery_patch(small_world_dir: Path) -> None:
    """An untrained embedder still maps a patch to its own gallery entry: the index geometry is right."""
    world = load_world(small_world_dir)
    config = RetrievalConfig(stride_m=20.0, heading_step_deg=90.0)
    torch.manual_seed(0)
    embedder = LPNEmbedder(config.dim, config.rings, 8, 3, config.stages).eval()
    footprint = torch.ones(config.patch_px, config.patch_px, dtype=torch.bool)
    tiles = world_tiles(small_world_dir)
    anchor = (world.config.anchor_lat_deg, world.config.anchor_lon_deg)
    index = build_index(tiles, embedder, footprint, anchor, 40.0, config, progress=False)
    assert len(index) == 5 * 5 * 4
    np.testing.assert_allclose(np.linalg.norm(index.descriptors, axis=1), 1.0, atol=1e-5)
    lat, lon, _ = EnuFrame(*anchor).to_geodetic(np.array([20.0, -40.0, 0.0]))
    with torch.no_grad():
        query = embedder(gallery_input(satellite_patch(tiles, float(lat), float(lon), math.pi / 2, config)[None],
                                       footprint)).numpy()
    _, rows = index.search(query, 1)
    np.testing.assert_allclose(index.positions_en[rows[0, 0]], (20.0, -40.0), atol=1e-3)
    assert float(index.headings[rows[0, 0]]) == pytest.approx(math.pi / 2)
    with pytest.raises(ValueError, match="inside the tile cache"):
        build_index(tiles, embedder, footprint, (0.0, 0.0), 10.0, config, progress=False)


def test_info_nce_prefers_matching_pairs() -> None:
    q = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    none = torch.zeros(6, 6, dtype=torch.bool)
    assert float(info_nce(q, q, none)) < float(info_nce(q, q.roll(1, 0), none))
    # excluding every negative leaves nothing to contrast: the loss is zero
    assert float(info_nce(q, q.roll(1, 0), torch.ones(6, 6, dtype=torch.bool))) == pytest.approx(0.0, abs=1e-6)


def test_train_save_load_embedder(small_dataset: Path, tmp_path: Path) -> None:
    config = RetrievalConfig(width=8, dim=8)
    pairs = prepare_pairs(KittiRegistrationDataset(small_dataset, "train"), config, every=1, progress=False)
    assert pairs.queries.shape == pairs.positives.shape == (10, 3, 64, 64)
    assert float(pairs.queries.abs().sum()) > 0 and float(pairs.positives.abs().sum()) > 0
    net = train_embedder(pairs, config, steps=3, batch_size=4, progress=False)
    path = save_embedder(tmp_path / "lpn.safetensors", net, config)
    loaded, loaded_config = load_embedder(path)
    assert loaded_config == config
    torch.testing.assert_close(loaded(pairs.queries[:2]), net(pairs.queries[:2]))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_embedder(path)
