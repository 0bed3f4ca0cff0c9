"""Equirectangular panoramas (street-view cameras, VIGOR, CVUSA) and pinhole views cut from them.

Conventions: 360 deg across the width at ``360 / W`` deg per pixel, the same vertically; pixel
centres sit at integer coordinates (OpenCV). Column ``u`` looks at azimuth
``azimuth_at_column0_deg + 360 u / W`` (degrees, clockwise from the panorama's reference, north for
a north-aligned panorama); row ``v`` at elevation ``(horizon_row - v) * 360 / W`` (up positive).
A full-sphere panorama is ``W x W/2`` with the horizon at the middle row ``(H - 1) / 2``; a band
(CVUSA) is a strip of rows around the horizon, wherever its level horizon lies.

Azimuths here are compass-style (clockwise); ENU yaw (REP-103, counter-clockwise from east) is
``pi/2 - azimuth`` (:func:`g2s_localization.geo.geodesy.heading_to_yaw`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from g2s_localization.cameras.pinhole import PinholeCamera


@dataclass(frozen=True)
class EquirectangularCamera:
    """A 360 deg panorama of ``width x height`` pixels (see the module's conventions)."""

    width: int
    height: int
    horizon_row: float
    azimuth_at_column0_deg: float = -180.0

    def __post_init__(self) -> None:
        if self.width < 4 or self.height < 2:
            raise ValueError(f"panorama must be at least 4x2 px, got {self.width}x{self.height}")
        if not (math.isfinite(self.horizon_row) and math.isfinite(self.azimuth_at_column0_deg)):
            raise ValueError("horizon_row and azimuth_at_column0_deg must be finite")
        if self.height > self.width // 2 + 1:
            raise ValueError(f"a {self.width} px wide panorama covers at most {self.width // 2} rows (180 deg), "
                             f"got {self.height}")

    @classmethod
    def full_sphere(cls, width: int, height: int, azimuth_at_column0_deg: float = -180.0) -> "EquirectangularCamera":
        """360 x 180 deg, horizon in the middle row."""
        return cls(width, height, (height - 1) / 2.0, azimuth_at_column0_deg)

    @property
    def radians_per_px(self) -> float:
        return 2.0 * math.pi / self.width

    def pixel_to_direction(self, u: ArrayLike, v: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Pixels -> (azimuth clockwise from the reference, elevation), radians."""
        step = self.radians_per_px
        azimuth = math.radians(self.azimuth_at_column0_deg) + np.asarray(u, dtype=np.float64) * step
        elevation = (self.horizon_row - np.asarray(v, dtype=np.float64)) * step
        return azimuth, elevation

    def direction_to_pixel(self, azimuth: ArrayLike, elevation: ArrayLike
                           ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(azimuth, elevation) in radians -> pixels; ``u`` wrapped into ``[0, W)``."""
        step = self.radians_per_px
        u = np.mod((np.asarray(azimuth, dtype=np.float64) - math.radians(self.azimuth_at_column0_deg)) / step,
                   self.width)
        return u, self.horizon_row - np.asarray(elevation, dtype=np.float64) / step

    def facing(self, forward_azimuth_deg: float) -> "EquirectangularCamera":
        """The same panorama with azimuths counted from ``forward_azimuth_deg`` (the optical axis
        of :meth:`project`): e.g. the vehicle heading, so that the bird's-eye view points ahead."""
        return replace(self, azimuth_at_column0_deg=self.azimuth_at_column0_deg - forward_azimuth_deg)

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Points ``(B, N, 3)`` in an optical frame (x right, y down, z towards azimuth 0) -> pixels
        ``(B, N, 2)`` (``u`` in ``[0, W)``) and whether a direction exists (not the centre)."""
        x, y, z = points.unbind(-1)
        horizontal = torch.hypot(x, z)
        azimuth = torch.atan2(x, z)
        elevation = torch.atan2(-y, horizontal)
        step = self.radians_per_px
        u = torch.remainder((azimuth - math.radians(self.azimuth_at_column0_deg)) / step, self.width)
        v = self.horizon_row - elevation / step
        return torch.stack([u, v], -1), (horizontal > 1e-9) | (y.abs() > 1e-9)

    def pinhole_view(self, panorama: NDArray[np.uint8], azimuth_deg: float, horizontal_fov_deg: float,
                     size: tuple[int, int], pitch_deg: float = 0.0) -> tuple[NDArray[np.uint8], PinholeCamera]:
        """A level (``pitch_deg`` down positive) pinhole view looking at ``azimuth_deg`` of
        ``horizontal_fov_deg``, ``size = (width, height)`` px, principal point at the image centre;
        rows beyond the panorama's band are black."""
        if panorama.shape[:2] != (self.height, self.width):
            raise ValueError(f"panorama is {panorama.shape[1]}x{panorama.shape[0]}, "
                             f"the model {self.width}x{self.height}")
        if not 0.0 < horizontal_fov_deg < 180.0:
            raise ValueError(f"horizontal_fov_deg must be within (0, 180), got {horizontal_fov_deg}")
        width, height = size
        focal = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
        camera = PinholeCamera(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        # optical ray (x right, y down, z forward), pitched down about the camera's x axis
        x, y, z = (u - camera.cx) / focal, (v - camera.cy) / focal, np.ones_like(u)
        p = math.radians(pitch_deg)
        forward, down = z * math.cos(p) - y * math.sin(p), z * math.sin(p) + y * math.cos(p)
        azimuth = math.radians(azimuth_deg) + np.arctan2(x, forward)
        elevation = np.arctan2(-down, np.hypot(x, forward))
        map_u, map_v = self.direction_to_pixel(azimuth, elevation)
        # wrap horizontally: pad one column each side so bilinear sampling across the seam works
        padded = np.concatenate([panorama[:, -1:], panorama, panorama[:, :1]], axis=1)
        view = cv2.remap(padded, (map_u + 1.0).astype(np.float32), map_v.astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return view, camera
