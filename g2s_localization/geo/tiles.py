"""Satellite patches around a position: the online form of SA-Occ's ``gen_sat`` step.

:class:`TileCache` decodes tiles from a :class:`~.tile_sources.TileSource` into an LRU cache
and :meth:`TileCache.crop` stitches them into a north-up or heading-aligned patch at any
metres-per-pixel, with a :class:`PatchGeoref` that says exactly where every pixel lies.

Patch pixel convention (OpenCV's): pixel ``(u, v)`` has its centre at integer ``(u, v)``,
``u`` to the right, ``v`` down; the query position lies at the patch centre
``((W - 1) / 2, (H - 1) / 2)``. "Up" in the patch points along ENU yaw ``up_yaw_rad``
(``pi / 2`` = north-up; the vehicle yaw = heading-aligned, forward is up).
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from g2s_localization.geo.geodesy import ground_resolution, mercator_pixel_size, tile_index, world_pixel_from_latlon
from g2s_localization.geo.tile_sources import CorruptTileError, OutsideCoverageError, TileSource

MAX_PATCH_SIDE_PX = 4096
NORTH_UP = math.pi / 2.0


@dataclass(frozen=True)
class PatchGeoref:
    """Where a patch lies: centre (WGS84), the ENU yaw its 'up' points to, and its scale."""

    centre_lat_deg: float
    centre_lon_deg: float
    up_yaw_rad: float
    metres_per_px: float
    width: int
    height: int

    @property
    def centre_px(self) -> tuple[float, float]:
        return (self.width - 1) / 2.0, (self.height - 1) / 2.0

    def pixel_to_offset(self, u: ArrayLike, v: ArrayLike) -> tuple[NDArray, NDArray]:
        """Pixel ``(u, v)`` to ``(east, north)`` metres from the patch centre."""
        cu, cv = self.centre_px
        right = (np.asarray(u, dtype=np.float64) - cu) * self.metres_per_px
        forward = (cv - np.asarray(v, dtype=np.float64)) * self.metres_per_px
        s, c = math.sin(self.up_yaw_rad), math.cos(self.up_yaw_rad)
        return right * s + forward * c, -right * c + forward * s

    def offset_to_pixel(self, east: ArrayLike, north: ArrayLike) -> tuple[NDArray, NDArray]:
        """``(east, north)`` metres from the patch centre to pixel ``(u, v)``."""
        e, n = np.asarray(east, dtype=np.float64), np.asarray(north, dtype=np.float64)
        s, c = math.sin(self.up_yaw_rad), math.cos(self.up_yaw_rad)
        right, forward = e * s - n * c, e * c + n * s
        cu, cv = self.centre_px
        return cu + right / self.metres_per_px, cv - forward / self.metres_per_px


@dataclass(frozen=True)
class GeoPatch:
    """An RGB ``(H, W, 3)`` uint8 satellite patch and where it lies."""

    image: NDArray[np.uint8]
    georef: PatchGeoref


class TileCache:
    """Decoded-tile LRU over a tile source, thread-safe, with metric cropping."""

    def __init__(self, source: TileSource, max_tiles: int = 512) -> None:
        if max_tiles < 16:
            raise ValueError("max_tiles must be at least 16 (one crop may need a 4x4 block)")
        self.source = source
        self.max_tiles = max_tiles
        self.tile_size: int | None = None
        self._tiles: OrderedDict[tuple[int, int, int], NDArray[np.uint8] | None] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ tiles
    def tile(self, z: int, x: int, y: int) -> NDArray[np.uint8] | None:
        """Decoded RGB tile, or None where the source has none (both answers are cached)."""
        key = (z, x, y)
        with self._lock:
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
        decoded = self._decode(key, self.source.read(z, x, y))
        with self._lock:
            self._tiles[key] = decoded
            self._tiles.move_to_end(key)
            while len(self._tiles) > self.max_tiles:
                self._tiles.popitem(last=False)
        return decoded

    def _decode(self, key: tuple[int, int, int], encoded: bytes | None) -> NDArray[np.uint8] | None:
        if encoded is None:
            return None
        name = "/".join(map(str, key))
        bgr = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), cv2.IMREAD_COLOR) if encoded else None
        if bgr is None:
            raise CorruptTileError(f"tile {name} is not a decodable image ({len(encoded)} bytes)")
        h, w = bgr.shape[:2]
        if h != w or (self.tile_size is not None and w != self.tile_size):
            raise CorruptTileError(f"tile {name} is {w}x{h}; expected square {self.tile_size or w} px tiles")
        self.tile_size = w
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def choose_zoom(self, lat_deg: float, metres_per_px: float) -> int:
        """Coarsest stored zoom at least as fine as ``metres_per_px`` (else the finest stored)."""
        levels = self.source.zoom_levels
        for z in levels:
            if ground_resolution(lat_deg, z, self.tile_size or 256) <= metres_per_px * 1.0001:
                return z
        return levels[-1]

    # ------------------------------------------------------------------ crop
    def crop(
        self,
        lat_deg: float,
        lon_deg: float,
        up_yaw_rad: float | None,
        size_px: int | tuple[int, int],
        metres_per_px: float,
        zoom: int | None = None,
    ) -> GeoPatch:
        """Patch centred on a WGS84 position; ``up_yaw_rad=None`` gives north-up.

        Raises :class:`OutsideCoverageError` when any needed tile is missing and
        :class:`CorruptTileError` when one cannot be decoded; never returns a padded patch.
        """
        width, height = (size_px, size_px) if isinstance(size_px, int) else size_px
        if not (0 < width <= MAX_PATCH_SIDE_PX and 0 < height <= MAX_PATCH_SIDE_PX):
            raise ValueError(f"patch size must be within 1..{MAX_PATCH_SIDE_PX} px, got {width}x{height}")
        if not (math.isfinite(lat_deg) and math.isfinite(lon_deg)):
            raise ValueError(f"position must be finite, got lat={lat_deg} lon={lon_deg}")
        if not (math.isfinite(metres_per_px) and metres_per_px > 0):
            raise ValueError(f"metres_per_px must be positive, got {metres_per_px}")
        up_yaw = NORTH_UP if up_yaw_rad is None else float(up_yaw_rad)
        if not math.isfinite(up_yaw):
            raise ValueError(f"yaw must be finite, got {up_yaw_rad}")
        if self.tile_size is None:  # learn the tile size before choosing a zoom
            self._probe_tile_size(lat_deg, lon_deg)
        z = self.choose_zoom(lat_deg, metres_per_px) if zoom is None else zoom
        tile = self.tile_size or 256
        georef = PatchGeoref(lat_deg, lon_deg, up_yaw, metres_per_px, width, height)

        # Affine map patch pixel (u, v) -> world pixel centre coordinates (OpenCV convention).
        east_m, north_m = (float(s) for s in mercator_pixel_size(lat_deg, z, tile))
        centre_x, centre_y = (float(c) for c in world_pixel_from_latlon(lat_deg, lon_deg, z, tile))
        s, c = math.sin(up_yaw), math.cos(up_yaw)
        kx, ky = metres_per_px / east_m, metres_per_px / north_m
        linear = np.array([[kx * s, -kx * c], [ky * c, ky * s]])
        cu, cv = georef.centre_px
        offset = np.array([centre_x - 0.5, centre_y - 0.5]) - linear @ np.array([cu, cv])

        corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
        world = corners @ linear.T + offset
        x0, y0 = (int(math.floor((world[:, i].min() - 1.0) / tile)) for i in (0, 1))
        x1, y1 = (int(math.floor((world[:, i].max() + 1.0) / tile)) for i in (0, 1))
        mosaic = self._mosaic(z, x0, y0, x1, y1, lat_deg, lon_deg)

        to_mosaic = np.hstack([linear, (offset - np.array([x0 * tile, y0 * tile]))[:, None]])
        image = cv2.warpAffine(
            mosaic, to_mosaic, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return GeoPatch(image=image, georef=georef)

    def _mosaic(self, z: int, x0: int, y0: int, x1: int, y1: int, lat: float, lon: float) -> NDArray[np.uint8]:
        tile = self.tile_size or 256
        if x0 < 0 or y0 < 0 or x1 >= 2**z or y1 >= 2**z:
            raise OutsideCoverageError(f"patch at ({lat:.6f}, {lon:.6f}) crosses the edge of the world at zoom {z}")
        mosaic = np.empty(((y1 - y0 + 1) * tile, (x1 - x0 + 1) * tile, 3), dtype=np.uint8)
        for ty in range(y0, y1 + 1):
            for tx in range(x0, x1 + 1):
                decoded = self.tile(z, tx, ty)
                if decoded is None:
                    raise OutsideCoverageError(
                        f"patch at ({lat:.6f}, {lon:.6f}) needs tile {z}/{tx}/{ty}, which the cache lacks"
                    )
                r, q = (ty - y0) * tile, (tx - x0) * tile
                mosaic[r : r + tile, q : q + tile] = decoded
        return mosaic

    def _probe_tile_size(self, lat_deg: float, lon_deg: float) -> None:
        for z in reversed(self.source.zoom_levels):
            x, y = tile_index(lat_deg, lon_deg, z)
            if self.tile(z, x, y) is not None:
                return
        raise OutsideCoverageError(f"no tile at any zoom covers ({lat_deg:.6f}, {lon_deg:.6f})")


def crop_north_up(image: NDArray[np.uint8], centre_px: tuple[float, float], image_metres_per_px: float,
                  up_yaw_rad: float, size_px: int, metres_per_px: float, replicate_border: bool = False
                  ) -> NDArray[np.uint8]:
    """Square patch of a north-up image (an aerial photo, a KITTI ``satmap``) centred on
    ``centre_px`` (x right, y down, pixel centres at integers), turned so that ENU yaw
    ``up_yaw_rad`` points up, resampled to ``metres_per_px``. Beyond the image: black, or the edge
    pixels with ``replicate_border``."""
    s, c = math.sin(up_yaw_rad), math.cos(up_yaw_rad)
    k = metres_per_px / image_metres_per_px
    # patch (u, v) -> right = (u - o) k, forward = (o - v) k source pixels; then east right, south down
    linear = np.array([[k * s, -k * c], [k * c, k * s]])
    o = (size_px - 1) / 2.0
    offset = np.asarray(centre_px, dtype=np.float64) - linear @ np.array([o, o])
    return cv2.warpAffine(image, np.hstack([linear, offset[:, None]]), (size_px, size_px),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE if replicate_border else cv2.BORDER_CONSTANT)
