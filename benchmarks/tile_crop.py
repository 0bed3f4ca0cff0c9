"""Tile-cache crop latency: 512x512 heading-aligned patches at 0.2 m/px, warm cache, one core.

Writes a textured zoom-19 tile block to a temporary folder (XYZ and MBTiles), warms the LRU,
then times crops at random positions and headings inside the block. Target: < 5 ms warm.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from g2s_localization.geo.geodesy import latlon_from_world_pixel
from g2s_localization.geo.tile_sources import MBTilesWriter, open_tile_source, write_xyz_tile
from g2s_localization.geo.tiles import TileCache

ZOOM, X0, Y0, N = 19, 274374, 180048, 8


def build_tiles(root: Path) -> None:
    rng = np.random.default_rng(0)
    writer = MBTilesWriter(root / "bench.mbtiles", name="bench")
    for dx in range(N):
        for dy in range(N):
            tile = cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (5, 5), 0)
            png = cv2.imencode(".png", tile)[1].tobytes()
            write_xyz_tile(root / "xyz", ZOOM, X0 + dx, Y0 + dy, png)
            writer.add(ZOOM, X0 + dx, Y0 + dy, png)
    writer.close()


def time_crops(cache: TileCache, repeats: int, size: int, mpp: float) -> list[float]:
    rng = np.random.default_rng(1)
    margin = 3 * 256  # keep rotated patches inside the block
    times = []
    for i in range(repeats + 20):
        wx = X0 * 256 + margin + rng.uniform(0, N * 256 - 2 * margin)
        wy = Y0 * 256 + margin + rng.uniform(0, N * 256 - 2 * margin)
        lat, lon = latlon_from_world_pixel(wx, wy, ZOOM)
        start = time.perf_counter()
        cache.crop(float(lat), float(lon), rng.uniform(-math.pi, math.pi), size, mpp)
        if i >= 20:  # the first crops fill the LRU
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--mpp", type=float, default=0.2)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_tiles(root)
        print(f"crop {args.size}x{args.size} px at {args.mpp} m/px, heading-aligned, warm LRU, 1 thread")
        for name, path in (("xyz", root / "xyz"), ("mbtiles", root / "bench.mbtiles")):
            cache = TileCache(open_tile_source(path))
            ms = np.array(time_crops(cache, args.repeats, args.size, args.mpp)) * 1e3
            print(f"  {name:8s} median {np.median(ms):6.2f} ms   p95 {np.percentile(ms, 95):6.2f} ms   "
                  f"max {ms.max():6.2f} ms   (target < 5 ms)")


if __name__ == "__main__":
    main()
