"""Shared fixtures. ROS-facing tests get an isolated DDS domain on loopback per session."""
from __future__ import annotations

import os
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from g2s_localization.geo.tile_sources import MBTilesWriter, write_xyz_tile

# One random DDS domain per test session, discovery restricted to this machine.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(Path(__file__).resolve().parent.parent / "config" / "fastdds_localhost_shm.xml"))

# Tiles of the coordinate-pattern fixture: zoom 19 around Karlsruhe (KITTI's city).
FIXTURE_ZOOM = 19
FIXTURE_TILE_X0 = 274376
FIXTURE_TILE_Y0 = 180050
FIXTURE_TILES = 4


def coordinate_tile(z: int, x: int, y: int, size: int = 256) -> np.ndarray:
    """RGB tile whose pixel (r, c) holds R = c, G = r, B = tile id, so colours tell position."""
    rows, cols = np.mgrid[0:size, 0:size]
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[..., 0] = cols % 256
    tile[..., 1] = rows % 256
    tile[..., 2] = (x * 7 + y * 13 + z * 31) % 256
    return tile


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def coordinate_tiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The same 4x4 block of coordinate tiles as an XYZ folder and as MBTiles."""
    root = tmp_path_factory.mktemp("tiles")
    xyz = root / "xyz"
    writer = MBTilesWriter(root / "area.mbtiles", name="fixture")
    for dx in range(FIXTURE_TILES):
        for dy in range(FIXTURE_TILES):
            x, y = FIXTURE_TILE_X0 + dx, FIXTURE_TILE_Y0 + dy
            png = encode_png(coordinate_tile(FIXTURE_ZOOM, x, y))
            write_xyz_tile(xyz, FIXTURE_ZOOM, x, y, png)
            writer.add(FIXTURE_ZOOM, x, y, png)
    writer.close()
    return {"xyz": xyz, "mbtiles": root / "area.mbtiles", "zoom": FIXTURE_ZOOM,
            "x0": FIXTURE_TILE_X0, "y0": FIXTURE_TILE_Y0, "n": FIXTURE_TILES}


@pytest.fixture(scope="session")
def small_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smallest allowed synthetic town, rendered and exported once per session."""
    from g2s_localization.synthetic.generate import make_world
    from g2s_localization.synthetic.world import WorldConfig

    out = tmp_path_factory.mktemp("world")
    make_world(out, WorldConfig(seed=3, size_m=350.0), progress=False)
    return out


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory, small_world_dir: Path) -> Path:
    """A 1 s (10 frame) synthetic drive in KITTI raw layout."""
    from g2s_localization.synthetic.drive import DriveConfig
    from g2s_localization.synthetic.generate import make_drive

    root = tmp_path_factory.mktemp("dataset")
    make_drive(root, small_world_dir, DriveConfig(seed=1, duration_s=1.0), number=7, split="train", progress=False)
    return root


@pytest.fixture(scope="session")
def baseline_relocalization_maps(tmp_path_factory: pytest.TempPathFactory, small_world_dir: Path,
                                 small_dataset: Path) -> dict[str, Path]:
    """Baseline-registrar feature map 112 m across around the small drive's start, and a place
    index built from it with an untrained head (the baseline registrar has no trained one; in a
    map this small the retrieval shortlist spans nearly every place, so verification decides)."""
    import torch

    from g2s_localization.data.kitti_raw import find_drives
    from g2s_localization.geo.tile_sources import open_tile_source
    from g2s_localization.geo.tiles import TileCache
    from g2s_localization.registration.registrars import BaselineRegistrar
    from g2s_localization.relocalization.feature_map import build_feature_map
    from g2s_localization.relocalization.place_head import RingPartHead, part_kernels
    from g2s_localization.relocalization.place_index import build_place_index

    out = tmp_path_factory.mktemp("relocalization_maps")
    drive = find_drives(small_dataset)[0]
    start = drive.ground_truth()[drive.frames[0]]
    registrar = BaselineRegistrar(device="cpu")
    tiles = TileCache(open_tile_source(small_world_dir / "tiles"))
    fmap = build_feature_map(tiles, registrar, (start.lat, start.lon), 56.0, progress=False)
    window = registrar.config.bev_size // 4
    footprint = torch.zeros(window, window, dtype=torch.bool)
    footprint[: window // 2] = True  # ahead of the camera
    torch.manual_seed(0)
    head = RingPartHead(fmap.features.shape[1], part_kernels(footprint, 4, 2), hidden=8, dim=4)
    return {"features": fmap.save(out / "features.safetensors"),
            "places": build_place_index(fmap, head, progress=False).save(out / "places.safetensors")}
