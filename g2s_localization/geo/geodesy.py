"""Geodesy and angle conventions, documented in one place for the whole package.

Frames and angles (REP-103 / REP-105):

* ``map`` is a local ENU frame: x east, y north, z up, metres, anchored at a
  WGS84 origin (:class:`EnuFrame`).
* ``base_link`` is the vehicle body: x forward, y left, z up.
* ``yaw`` is the ENU heading of ``base_link`` x: 0 = east, positive counter-clockwise,
  radians, wrapped to (-pi, pi]. KITTI OXTS ``yaw`` uses the same convention.
* ``heading`` (compass) is 0 = north, positive clockwise, radians; only GNSS receivers and
  humans speak it, so convert at the edge with :func:`heading_to_yaw`.
* Quaternions follow ROS order ``(x, y, z, w)``.

Web-Mercator (EPSG:3857, XYZ/"slippy" tiles): a *world pixel* at zoom ``z`` is a continuous
coordinate in ``[0, tile_size * 2**z)``, x to the east, y to the south; pixel ``i`` covers
``[i, i + 1)`` so its centre is at ``i + 0.5``. Tile ``(x, y)`` covers world pixels
``[x * tile_size, (x + 1) * tile_size)``. MBTiles stores rows in TMS order (flipped y).

Tiles put WGS84 latitude and longitude onto a sphere, so one tile pixel is not square on the
ground: east-west it spans ``N cos(lat) * 2 pi / (tile_size 2^z)`` metres and north-south
``M cos(lat) * 2 pi / (tile_size 2^z)`` metres (``N``, ``M`` the ellipsoid's prime-vertical and
meridian radii). The two differ by about 0.3 % at mid latitudes, i.e. 15 cm over a 50 m patch,
which matters for a sub-metre localizer; :func:`mercator_pixel_size` gives both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

WGS84_A = 6378137.0
"""WGS84 semi-major axis in metres."""
WGS84_F = 1.0 / 298.257223563
"""WGS84 flattening."""
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
"""WGS84 first eccentricity squared."""
WEB_MERCATOR_MAX_LAT = 85.0511287798066
"""Latitude (degrees) where the square Web-Mercator world ends."""

FloatArray = NDArray[np.float64]


# ----------------------------------------------------------------------------- ellipsoid
def prime_vertical_radius(lat_deg: ArrayLike) -> FloatArray:
    """Radius of curvature in the prime vertical, N(lat), metres."""
    s = np.sin(np.radians(lat_deg))
    return WGS84_A / np.sqrt(1.0 - WGS84_E2 * s * s)


def meridian_radius(lat_deg: ArrayLike) -> FloatArray:
    """Radius of curvature along the meridian, M(lat), metres."""
    s = np.sin(np.radians(lat_deg))
    return WGS84_A * (1.0 - WGS84_E2) / (1.0 - WGS84_E2 * s * s) ** 1.5


def geodetic_to_ecef(lat_deg: ArrayLike, lon_deg: ArrayLike, alt_m: ArrayLike = 0.0) -> FloatArray:
    """WGS84 geodetic to Earth-centred Earth-fixed coordinates, shape ``(..., 3)`` metres."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    n = prime_vertical_radius(lat_deg)
    alt = np.asarray(alt_m, dtype=np.float64)
    x = (n + alt) * np.cos(lat) * np.cos(lon)
    y = (n + alt) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + alt) * np.sin(lat)
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def ecef_to_geodetic(ecef: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ECEF ``(..., 3)`` to WGS84 ``(lat_deg, lon_deg, alt_m)``.

    Fixed-point iteration on latitude; five rounds reach sub-micrometre accuracy for any point
    near the Earth's surface, which is all a vehicle needs.
    """
    p = np.asarray(ecef, dtype=np.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    lon = np.arctan2(y, x)
    rho = np.hypot(x, y)
    lat = np.arctan2(z, rho * (1.0 - WGS84_E2))
    for _ in range(5):
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
        alt = rho / np.cos(lat) - n
        lat = np.arctan2(z, rho * (1.0 - WGS84_E2 * n / (n + alt)))
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * np.sin(lat) ** 2)
    alt = rho / np.cos(lat) - n
    return np.degrees(lat), np.degrees(lon), alt


@dataclass(frozen=True)
class EnuFrame:
    """A local east-north-up tangent frame (the ``map`` frame) anchored at a WGS84 origin."""

    origin_lat_deg: float
    origin_lon_deg: float
    origin_alt_m: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.origin_lat_deg) and abs(self.origin_lat_deg) <= 90.0):
            raise ValueError(f"origin latitude must be finite and within +-90 deg, got {self.origin_lat_deg}")
        if not (math.isfinite(self.origin_lon_deg) and abs(self.origin_lon_deg) <= 180.0):
            raise ValueError(f"origin longitude must be finite and within +-180 deg, got {self.origin_lon_deg}")

    def _rotation_enu_ecef(self) -> FloatArray:
        lat, lon = math.radians(self.origin_lat_deg), math.radians(self.origin_lon_deg)
        sl, cl, sp, cp = math.sin(lon), math.cos(lon), math.sin(lat), math.cos(lat)
        return np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])

    def to_enu(self, lat_deg: ArrayLike, lon_deg: ArrayLike, alt_m: ArrayLike = 0.0) -> FloatArray:
        """Geodetic to ENU metres in this frame, shape ``(..., 3)``."""
        delta = geodetic_to_ecef(lat_deg, lon_deg, alt_m) - geodetic_to_ecef(
            self.origin_lat_deg, self.origin_lon_deg, self.origin_alt_m
        )
        return delta @ self._rotation_enu_ecef().T

    def to_geodetic(self, enu: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """ENU metres ``(..., 3)`` in this frame to ``(lat_deg, lon_deg, alt_m)``."""
        enu = np.asarray(enu, dtype=np.float64)
        origin = geodetic_to_ecef(self.origin_lat_deg, self.origin_lon_deg, self.origin_alt_m)
        return ecef_to_geodetic(origin + enu @ self._rotation_enu_ecef())


# ----------------------------------------------------------------------------- Web Mercator
def world_pixel_from_latlon(
    lat_deg: ArrayLike, lon_deg: ArrayLike, zoom: int, tile_size: int = 256
) -> tuple[FloatArray, FloatArray]:
    """WGS84 to continuous Web-Mercator world pixels ``(px, py)`` at ``zoom``."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    if np.any(np.abs(lat) > WEB_MERCATOR_MAX_LAT):
        raise ValueError(f"latitude outside the Web-Mercator world (|lat| <= {WEB_MERCATOR_MAX_LAT:.4f} deg)")
    world = tile_size * float(2**zoom)
    px = (np.asarray(lon_deg, dtype=np.float64) + 180.0) / 360.0 * world
    merc_y = np.log(np.tan(np.pi / 4.0 + np.radians(lat) / 2.0))
    py = (1.0 - merc_y / np.pi) / 2.0 * world
    return px, py


def latlon_from_world_pixel(
    px: ArrayLike, py: ArrayLike, zoom: int, tile_size: int = 256
) -> tuple[FloatArray, FloatArray]:
    """Inverse of :func:`world_pixel_from_latlon`: ``(lat_deg, lon_deg)``."""
    world = tile_size * float(2**zoom)
    lon = np.asarray(px, dtype=np.float64) / world * 360.0 - 180.0
    merc_y = np.pi * (1.0 - 2.0 * np.asarray(py, dtype=np.float64) / world)
    lat = np.degrees(2.0 * np.arctan(np.exp(merc_y)) - np.pi / 2.0)
    return lat, lon


def tile_index(lat_deg: float, lon_deg: float, zoom: int) -> tuple[int, int]:
    """XYZ tile ``(x, y)`` that contains a WGS84 point at ``zoom``."""
    px, py = world_pixel_from_latlon(lat_deg, lon_deg, zoom, tile_size=1)
    last = 2**zoom - 1
    return min(int(math.floor(float(px))), last), min(int(math.floor(float(py))), last)


def tile_bounds(x: int, y: int, zoom: int) -> tuple[float, float, float, float]:
    """``(north_lat, west_lon, south_lat, east_lon)`` of an XYZ tile, degrees."""
    north, west = latlon_from_world_pixel(x, y, zoom, tile_size=1)
    south, east = latlon_from_world_pixel(x + 1, y + 1, zoom, tile_size=1)
    return float(north), float(west), float(south), float(east)


def ground_resolution(lat_deg: ArrayLike, zoom: int, tile_size: int = 256) -> FloatArray:
    """The usual spherical metres-per-pixel of Web-Mercator tiles at ``lat`` and ``zoom``.

    Kept for comparison with tile providers' documentation; use :func:`mercator_pixel_size`
    for metric work.
    """
    return 2.0 * np.pi * WGS84_A * np.cos(np.radians(lat_deg)) / (tile_size * 2.0**zoom)


def mercator_pixel_size(lat_deg: ArrayLike, zoom: int, tile_size: int = 256) -> tuple[FloatArray, FloatArray]:
    """Ground size of one world pixel on the WGS84 ellipsoid: ``(east_m, north_m)``."""
    radians_per_pixel = 2.0 * np.pi / (tile_size * 2.0**zoom)
    cos_lat = np.cos(np.radians(lat_deg))
    return (
        prime_vertical_radius(lat_deg) * cos_lat * radians_per_pixel,
        meridian_radius(lat_deg) * cos_lat * radians_per_pixel,
    )


# ----------------------------------------------------------------------------- angles
def wrap_angle(angle_rad: ArrayLike) -> FloatArray:
    """Wrap radians to (-pi, pi]."""
    a = np.asarray(angle_rad, dtype=np.float64)
    wrapped = np.mod(a + np.pi, 2.0 * np.pi) - np.pi
    return np.where(wrapped == -np.pi, np.pi, wrapped)


def heading_frame_to_enu(forward_m: float, left_m: float, yaw_rad: float) -> tuple[float, float]:
    """A planar vector given along a heading (``forward``, ``left`` of a frame yawed ``yaw_rad`` from
    east, counter-clockwise) as (east, north). ``-yaw_rad`` turns (east, north) back into it."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return forward_m * c - left_m * s, forward_m * s + left_m * c


def heading_to_yaw(heading_rad: ArrayLike) -> FloatArray:
    """Compass heading (0 north, clockwise) to ENU yaw (0 east, counter-clockwise)."""
    return wrap_angle(np.pi / 2.0 - np.asarray(heading_rad, dtype=np.float64))


def yaw_to_heading(yaw_rad: ArrayLike) -> FloatArray:
    """ENU yaw to compass heading, wrapped to [0, 2 pi)."""
    return np.mod(np.pi / 2.0 - np.asarray(yaw_rad, dtype=np.float64), 2.0 * np.pi)


def yaw_to_quaternion_xyzw(yaw_rad: float) -> tuple[float, float, float, float]:
    """Quaternion ``(x, y, z, w)`` of a pure rotation about z by ``yaw``."""
    x, y, z, w = Rotation.from_euler("z", yaw_rad).as_quat()
    return float(x), float(y), float(z), float(w)


def quaternion_xyzw_to_yaw(quaternion_xyzw: ArrayLike) -> float:
    """Yaw of a quaternion ``(x, y, z, w)``: the ENU heading of the rotated x axis.

    Taken from the rotated x axis rather than Euler angles so it stays meaningful when an IMU
    reports roll and pitch as well.
    """
    q = np.asarray(quaternion_xyzw, dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-9:
        raise ValueError(f"expected a finite non-zero quaternion (x, y, z, w), got {q}")
    x_axis = Rotation.from_quat(q).apply([1.0, 0.0, 0.0])
    return float(math.atan2(x_axis[1], x_axis[0]))
