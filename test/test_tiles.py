"""Tile sources, LRU cache and metric crops on a coordinate-pattern fixture.

Fixture tiles hold R = column, G = row within the tile and B = a tile id, so the colour a
crop shows at a pixel says exactly which world pixel it sampled.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import coordinate_tile, encode_png

from g2s_localization.geo.geodesy import WGS84_E2, latlon_from_world_pixel, mercator_pixel_size
from g2s_localization.geo.tile_sources import (
    CorruptTileError,
    MBTilesSource,
    MBTilesWriter,
    OutsideCoverageError,
    TilePathError,
    XyzDirectorySource,
    open_tile_source,
    write_xyz_tile,
)
from g2s_localization.geo.tiles import PatchGeoref, TileCache


def world_latlon(fix: dict, tile_dx: int, tile_dy: int, col: float, row: float) -> tuple[float, float]:
    """Lat/lon of the centre of pixel (col, row) of fixture tile (x0 + dx, y0 + dy)."""
    wx = (fix["x0"] + tile_dx) * 256 + col + 0.5
    wy = (fix["y0"] + tile_dy) * 256 + row + 0.5
    lat, lon = latlon_from_world_pixel(wx, wy, fix["zoom"])
    return float(lat), float(lon)


def tile_id(fix: dict, dx: int, dy: int) -> int:
    return int(coordinate_tile(fix["zoom"], fix["x0"] + dx, fix["y0"] + dy)[0, 0, 2])


@pytest.fixture(params=["xyz", "mbtiles"])
def cache(request: pytest.FixtureRequest, coordinate_tiles: dict) -> TileCache:
    return TileCache(open_tile_source(coordinate_tiles[request.param]))


class TestPatchGeoref:
    def test_north_up(self) -> None:
        ref = PatchGeoref(49.0, 8.4, math.pi / 2, 0.5, 101, 101)
        assert ref.centre_px == (50.0, 50.0)
        e, n = ref.pixel_to_offset(60.0, 50.0)
        assert (float(e), float(n)) == pytest.approx((5.0, 0.0))
        e, n = ref.pixel_to_offset(50.0, 40.0)
        assert (float(e), float(n)) == pytest.approx((0.0, 5.0))

    def test_heading_aligned(self) -> None:
        ref = PatchGeoref(49.0, 8.4, 0.0, 0.5, 101, 101)  # up = east
        e, n = ref.pixel_to_offset(50.0, 40.0)
        assert (float(e), float(n)) == pytest.approx((5.0, 0.0), abs=1e-12)
        e, n = ref.pixel_to_offset(60.0, 50.0)  # right of 'east' is south
        assert (float(e), float(n)) == pytest.approx((0.0, -5.0), abs=1e-12)

    def test_inverse_batch(self) -> None:
        ref = PatchGeoref(49.0, 8.4, 0.7, 0.2, 64, 48)
        u, v = np.array([0.0, 10.5, 63.0]), np.array([0.0, 47.0, 20.0])
        uu, vv = ref.offset_to_pixel(*ref.pixel_to_offset(u, v))
        np.testing.assert_allclose(uu, u, atol=1e-9)
        np.testing.assert_allclose(vv, v, atol=1e-9)


class TestCrop:
    def test_centre_pixel_samples_the_query_position(self, cache: TileCache, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 2, 2, 10, 20)
        east_m, _ = mercator_pixel_size(lat, 19)
        patch = cache.crop(lat, lon, None, 5, float(east_m))
        assert patch.image.shape == (5, 5, 3) and patch.image.dtype == np.uint8
        assert tuple(patch.image[2, 2]) == (10, 20, tile_id(coordinate_tiles, 2, 2))
        assert tuple(patch.image[2, 4][:2]) == (12, 20)  # two pixels east

    def test_north_south_scale_is_ellipsoidal(self, cache: TileCache, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 1, 1, 10, 20)
        east_m, north_m = (float(s) for s in mercator_pixel_size(lat, 19))
        patch = cache.crop(lat, lon, None, 441, east_m)
        # 220 patch rows south of centre are 220 * east/north = 220.64 tile rows (not 220)
        ratio = (1 - WGS84_E2 * math.sin(math.radians(lat)) ** 2) / (1 - WGS84_E2)
        assert east_m / north_m == pytest.approx(ratio)
        assert patch.image[220 + 220, 220, 1] == 241
        assert patch.image[220, 220 + 220, 0] == 230  # east-west is exact

    def test_heading_aligned_up_is_east(self, cache: TileCache, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 2, 1, 10, 20)
        east_m, _ = mercator_pixel_size(lat, 19)
        patch = cache.crop(lat, lon, 0.0, 201, float(east_m))
        assert tuple(patch.image[100 - 50, 100][:2]) == (60, 20)   # 50 px up = 50 px east
        assert tuple(patch.image[100, 100 + 40][:2]) == (10, 60)   # 40 px right = 40 px south
        assert patch.georef.up_yaw_rad == 0.0

    def test_stitches_across_tile_corners(self, cache: TileCache, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 2, 2, -0.5, -0.5)  # exactly on a tile corner
        east_m, _ = mercator_pixel_size(lat, 19)
        image = cache.crop(lat, lon, None, 64, float(east_m)).image
        assert image[10, 10, 2] == tile_id(coordinate_tiles, 1, 1)
        assert image[10, 50, 2] == tile_id(coordinate_tiles, 2, 1)
        assert image[50, 10, 2] == tile_id(coordinate_tiles, 1, 2)
        assert image[50, 50, 2] == tile_id(coordinate_tiles, 2, 2)

    def test_same_patch_from_folder_and_mbtiles(self, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 1, 2, 100.3, 7.9)
        patches = [TileCache(open_tile_source(coordinate_tiles[k])).crop(lat, lon, 1.1, 128, 0.2)
                   for k in ("xyz", "mbtiles")]
        np.testing.assert_array_equal(patches[0].image, patches[1].image)

    def test_resamples_to_any_resolution(self, cache: TileCache, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 2, 2, 10, 20)
        east_m, _ = mercator_pixel_size(lat, 19)
        patch = cache.crop(lat, lon, None, 21, 2.0 * float(east_m))
        assert patch.image[10, 10 + 5, 0] == 20  # 5 patch px = 10 tile px east

    def test_outside_coverage_raises(self, cache: TileCache, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 0, 0, 5, 5)  # patch would need the tile to the west
        with pytest.raises(OutsideCoverageError, match="lacks"):
            cache.crop(lat, lon, None, 64, 0.2)
        with pytest.raises(OutsideCoverageError):
            cache.crop(-33.86, 151.21, None, 64, 0.2)  # another continent

    def test_rejects_bad_requests(self, cache: TileCache, coordinate_tiles: dict) -> None:
        lat, lon = world_latlon(coordinate_tiles, 2, 2, 10, 20)
        for kwargs in ({"lat_deg": float("nan")}, {"size_px": 0}, {"metres_per_px": -1.0},
                       {"up_yaw_rad": float("inf")}):
            args = {"lat_deg": lat, "lon_deg": lon, "up_yaw_rad": None, "size_px": 32, "metres_per_px": 0.2} | kwargs
            with pytest.raises(ValueError):
                cache.crop(**args)

    def test_lru_stays_bounded(self, coordinate_tiles: dict) -> None:
        cache = TileCache(open_tile_source(coordinate_tiles["xyz"]), max_tiles=16)
        for dx in range(1, 3):
            for dy in range(1, 3):
                cache.crop(*world_latlon(coordinate_tiles, dx, dy, 128, 128), 0.3, 300, 0.2)
        assert 0 < len(cache._tiles) <= 16


class TestZoomChoice:
    def test_coarsest_zoom_fine_enough(self, tmp_path: Path) -> None:
        for z, x, y in ((18, 137188, 90026), (19, 274377, 180052)):
            write_xyz_tile(tmp_path, z, x, y, encode_png(coordinate_tile(z, x, y)))
        cache = TileCache(XyzDirectorySource(tmp_path))
        # zoom 18 at 49 deg: 0.597 * cos(49 deg) = 0.392 m/px; zoom 19: 0.196 m/px
        assert cache.choose_zoom(49.0, 0.4) == 18
        assert cache.choose_zoom(49.0, 0.3) == 19
        assert cache.choose_zoom(49.0, 0.1) == 19  # finer than stored: finest available


class TestBadTiles:
    @pytest.fixture
    def tile_copy(self, tmp_path: Path, coordinate_tiles: dict) -> tuple[Path, dict]:
        root = tmp_path / "copy"
        shutil.copytree(coordinate_tiles["xyz"], root)
        return root, coordinate_tiles

    def _centre(self, fix: dict) -> tuple[float, float]:
        return world_latlon(fix, 2, 2, 128, 128)

    def test_garbage_bytes(self, tile_copy: tuple[Path, dict]) -> None:
        root, fix = tile_copy
        (root / "19" / str(fix["x0"] + 2) / f"{fix['y0'] + 2}.png").write_bytes(b"not a png at all")
        with pytest.raises(CorruptTileError, match="not a decodable image"):
            TileCache(XyzDirectorySource(root)).crop(*self._centre(fix), None, 64, 0.2)

    def test_truncated_png_and_empty_file(self, tile_copy: tuple[Path, dict]) -> None:
        root, fix = tile_copy
        path = root / "19" / str(fix["x0"] + 2) / f"{fix['y0'] + 2}.png"
        path.write_bytes(path.read_bytes()[:100])
        with pytest.raises(CorruptTileError):
            TileCache(XyzDirectorySource(root)).crop(*self._centre(fix), None, 64, 0.2)
        path.write_bytes(b"")
        with pytest.raises(CorruptTileError):
            TileCache(XyzDirectorySource(root)).crop(*self._centre(fix), None, 64, 0.2)

    def test_wrong_tile_size(self, tile_copy: tuple[Path, dict]) -> None:
        root, fix = tile_copy
        small = coordinate_tile(19, 0, 0, size=128)
        (root / "19" / str(fix["x0"] + 2) / f"{fix['y0'] + 2}.png").write_bytes(encode_png(small))
        with pytest.raises(CorruptTileError, match="expected square"):
            TileCache(XyzDirectorySource(root)).crop(*world_latlon(fix, 1, 2, 255, 128), None, 64, 0.2)

    def test_symlink_out_of_root(self, tile_copy: tuple[Path, dict], tmp_path: Path) -> None:
        root, fix = tile_copy
        outside = tmp_path / "secret.png"
        outside.write_bytes(encode_png(coordinate_tile(19, 0, 0)))
        path = root / "19" / str(fix["x0"] + 2) / f"{fix['y0'] + 2}.png"
        path.unlink()
        os.symlink(outside, path)
        with pytest.raises(TilePathError, match="outside the cache root"):
            TileCache(XyzDirectorySource(root)).crop(*self._centre(fix), None, 64, 0.2)

    def test_corrupt_mbtiles(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.mbtiles"
        bad.write_bytes(os.urandom(4096))
        with pytest.raises(CorruptTileError, match="not a readable MBTiles"):
            MBTilesSource(bad)

    def test_missing_paths(self, tmp_path: Path) -> None:
        with pytest.raises(OutsideCoverageError):
            open_tile_source(tmp_path / "nowhere.mbtiles")
        with pytest.raises(OutsideCoverageError, match="no zoom-level"):
            XyzDirectorySource(tmp_path)

    def test_tile_address_outside_world(self, coordinate_tiles: dict) -> None:
        source = XyzDirectorySource(coordinate_tiles["xyz"])
        with pytest.raises(OutsideCoverageError):
            source.read(3, 8, 0)
        with pytest.raises(TypeError):
            source.read(19, "../../etc", 0)  # type: ignore[arg-type]


class TestMBTilesLayout:
    def test_rows_are_tms(self, tmp_path: Path) -> None:
        writer = MBTilesWriter(tmp_path / "one.mbtiles", name="one")
        writer.add(2, 1, 0, b"xyz-row-0")
        writer.close(bounds=(-90.0, 0.0, 0.0, 85.0))
        source = MBTilesSource(tmp_path / "one.mbtiles")
        row = source._db.execute("SELECT tile_row FROM tiles").fetchone()[0]
        assert row == 3  # 2^2 - 1 - 0
        assert source.read(2, 1, 0) == b"xyz-row-0"
        assert source.read(2, 1, 3) is None
        assert source.metadata["format"] == "png" and source.metadata["minzoom"] == "2"
        source.close()
