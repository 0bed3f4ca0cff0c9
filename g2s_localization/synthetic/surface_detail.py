"""Textured ground and roofs instead of flat colours (the ``ground_texture`` / ``roof_texture`` knobs).

Real asphalt carries repair patches, cracks, oil stains and manhole covers; lawns carry mowing
stripes; roofs are pitched (one face lit, one in shade) and carry chimneys and solar panels. All of
it puts edges into the images that a training-free edge matcher must not mistake for markings:
ground detail is seen by both the camera and the satellite (it is painted into the shared ground
raster), roof detail by the satellite only (the drive camera sees facades, not roofs).

Each function draws from its own generator, so a world without these knobs is bit for bit the
world it was before they existed.
"""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

SOLAR_PANEL = (0.12, 0.16, 0.26)
CHIMNEY = (0.25, 0.22, 0.2)


def ground_detail(ground_rgb: NDArray[np.uint8], asphalt: NDArray[np.bool_], grass: NDArray[np.bool_],
                  metres_per_px: float, strength: float, rng: np.random.Generator) -> NDArray[np.uint8]:
    """``ground_rgb`` ``(N, N, 3)`` with road wear on ``asphalt`` and mowing stripes on ``grass``
    (masks ``(N, N)``; painted before the markings, which stay crisp on top)."""
    if strength <= 0:
        return ground_rgb
    res = metres_per_px
    n = asphalt.shape[0]
    offset = np.zeros((n, n), np.float32)  # brightness change, 0..255 scale
    rows, cols = np.nonzero(asphalt)
    area_m2 = len(rows) * res * res
    picks = rng.integers(0, max(1, len(rows)), size=int(strength * area_m2 / 25.0))  # one item per 25 m^2
    for k, i in enumerate(picks):
        centre = (int(cols[i]), int(rows[i]))
        kind = k % 4
        if kind == 0:  # repair patch: a darker or lighter rectangle of newer asphalt
            size = (float(rng.uniform(1.0, 4.0) / res), float(rng.uniform(0.8, 3.0) / res))
            box = cv2.boxPoints((centre, size, float(rng.uniform(0, 180)))).astype(np.int32)
            cv2.fillPoly(offset, [box], float(rng.choice([-1.0, 1.0]) * rng.uniform(10, 22)))
        elif kind == 1:  # crack: a thin random walk
            steps = rng.normal(0.0, 1.0, (int(rng.integers(6, 20)), 2)) * 0.6 / res
            path = (np.cumsum(steps, 0) + np.array(centre)).astype(np.int32)
            cv2.polylines(offset, [path], False, -28.0, 1)
        elif kind == 2:  # oil stain: a soft dark blot
            axes = (int(rng.uniform(0.3, 1.0) / res), int(rng.uniform(0.2, 0.6) / res))
            cv2.ellipse(offset, centre, axes, float(rng.uniform(0, 180)), 0, 360, -18.0, -1)
        else:  # manhole cover with a bright rim
            radius = int(round(0.35 / res))
            cv2.circle(offset, centre, radius + 1, 20.0, -1)
            cv2.circle(offset, centre, radius, -32.0, -1)
    offset = cv2.GaussianBlur(offset, (0, 0), 0.7)
    offset[~asphalt] = 0.0
    offset += lawn_stripes(n, res, rng) * grass
    rgb = ground_rgb.astype(np.float32) + strength * offset[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def lawn_stripes(n: int, metres_per_px: float, rng: np.random.Generator, period_m: float = 2.0,
                 cell_m: float = 40.0) -> NDArray[np.float32]:
    """Mowing stripes ``(N, N)`` (+-9 brightness), their direction changing from lawn to lawn (cells of ``cell_m``)."""
    res = metres_per_px
    cells = max(1, int(round(n * res / cell_m)))
    angle = cv2.resize(rng.uniform(0, math.pi, (cells, cells)).astype(np.float32), (n, n),
                       interpolation=cv2.INTER_NEAREST)
    coords = np.arange(n, dtype=np.float32) * res
    phase = (coords[None, :] * np.cos(angle) + coords[:, None] * np.sin(angle)) * (2 * math.pi / period_m)
    return (9.0 * np.sign(np.sin(phase))).astype(np.float32)


def paint_roof_detail(image: NDArray[np.float32], box: NDArray[np.float64], roof: NDArray[np.float64],
                      to_px: Callable[[NDArray], NDArray[np.int32]], sun_xy: NDArray[np.float64], strength: float,
                      rng: np.random.Generator) -> None:
    """A pitched roof on ``box`` (cx, cy, z0, length, width, height, yaw): the face towards the sun
    (``sun_xy``, unit, ENU) lit, the other shaded, a ridge line, and chimneys / solar panels."""
    x, y, _, length, width, _, yaw = box
    along_x = length >= width  # the ridge runs along the longer side
    half_l, half_w = length / 2.0, width / 2.0
    for side in (-1.0, 1.0):
        if along_x:
            face = _local_rect(x, y, yaw, -half_l, half_l, 0.0, side * half_w)
            normal_local = np.array([0.0, side])
        else:
            face = _local_rect(x, y, yaw, 0.0, side * half_l, -half_w, half_w)
            normal_local = np.array([side, 0.0])
        c, s = math.cos(yaw), math.sin(yaw)
        normal = np.array([c * normal_local[0] - s * normal_local[1], s * normal_local[0] + c * normal_local[1]])
        shade = 1.0 + 0.4 * strength * float(normal @ sun_xy)
        cv2.fillPoly(image, [to_px(face)], tuple(float(v) for v in np.clip(roof * shade, 0, 1)), cv2.LINE_AA, 4)
    ridge = _local_rect(x, y, yaw, -half_l, half_l, 0.0, 0.0) if along_x else _local_rect(x, y, yaw, 0, 0, -half_w, half_w)
    cv2.polylines(image, [to_px(ridge[:2])], False, tuple(float(v) * 0.6 for v in roof), 1, cv2.LINE_AA, 4)
    for _ in range(int(rng.integers(0, 1 + round(3 * strength)))):
        u, v = rng.uniform(-0.6, 0.6) * half_l, rng.uniform(-0.6, 0.6) * half_w
        if rng.uniform() < 0.5:  # a panel array, 2-4 m by 1.7 m
            panel = _local_rect(x, y, yaw, u, u + rng.uniform(2.0, 4.0), v, v + 1.7)
            cv2.fillPoly(image, [to_px(panel)], SOLAR_PANEL, cv2.LINE_AA, 4)
        else:
            chimney = _local_rect(x, y, yaw, u, u + 0.8, v, v + 0.8)
            cv2.fillPoly(image, [to_px(chimney)], CHIMNEY, cv2.LINE_AA, 4)


def _local_rect(x: float, y: float, yaw: float, u0: float, u1: float, v0: float, v1: float) -> NDArray[np.float64]:
    """Corners ``(4, 2)`` of the rectangle ``u0..u1`` x ``v0..v1`` in the box frame (u along yaw) in ENU."""
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], np.float64)
    return local @ np.array([[c, s], [-s, c]]) + np.array([x, y])
