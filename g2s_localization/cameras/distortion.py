"""Raw (distorted) cameras as ROS ``CameraInfo`` describes them: ``plumb_bob`` (k1 k2 p1 p2 k3),
``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6) and ``equidistant`` (fisheye: k1 k2 k3 k4).

The models are OpenCV's (``cv2.projectPoints`` and ``cv2.fisheye.projectPoints``), written in torch
so that a raw image is projected to the bird's-eye view directly, without rectifying it first.
A polynomial lens model folds back beyond some field angle; rays past the first radius where the
distorted radius stops growing are reported as not in view, never as wrapped pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from g2s_localization.cameras.pinhole import PinholeCamera

COEFFICIENTS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


@dataclass(frozen=True)
class DistortedCamera:
    """A pinhole ``K`` (of the raw image) plus a lens distortion model and its coefficients."""

    intrinsics: PinholeCamera
    model: str
    coefficients: tuple[float, ...]
    max_angle_rad: float = field(init=False)  # rays beyond this angle from the axis are out of view

    def __post_init__(self) -> None:
        if self.model not in COEFFICIENTS:
            raise ValueError(f"unsupported distortion model {self.model!r}; supported: {sorted(COEFFICIENTS)}")
        d = tuple(float(c) for c in self.coefficients)
        need = COEFFICIENTS[self.model]
        # shorter lists mean trailing zeros (OpenCV's convention); longer ones only with zeros beyond
        if not all(map(math.isfinite, d)) or any(c != 0.0 for c in d[need:]):
            raise ValueError(f"{self.model} takes {need} finite coefficients, got {self.coefficients}")
        object.__setattr__(self, "coefficients", (d + (0.0,) * need)[:need])
        object.__setattr__(self, "max_angle_rad", self._monotonic_limit())

    @property
    def width(self) -> int:
        return self.intrinsics.width

    @property
    def height(self) -> int:
        return self.intrinsics.height

    def _factor(self, r2):
        """Radial scale ``r_distorted / r`` of ``plumb_bob`` / ``rational_polynomial`` at ``r^2``."""
        d = self.coefficients
        factor = 1 + d[0] * r2 + d[1] * r2**2 + d[4] * r2**3
        if self.model == "rational_polynomial":
            factor = factor / (1 + d[5] * r2 + d[6] * r2**2 + d[7] * r2**3)
        return factor

    def _theta_distorted(self, theta):
        """``equidistant``: distorted angle for the angle ``theta`` from the optical axis."""
        d = self.coefficients
        t2 = theta * theta
        return theta * (1 + d[0] * t2 + d[1] * t2**2 + d[2] * t2**3 + d[3] * t2**4)

    def _monotonic_limit(self) -> float:
        """The largest angle from the axis up to which the distorted radius keeps growing."""
        angles = np.linspace(0.0, math.radians(89.9), 4000)
        r = np.tan(angles)
        radial = self._theta_distorted(angles) if self.model == "equidistant" else r * self._factor(r * r)
        growing = np.diff(radial) > 0
        stop = len(growing) if growing.all() else int(np.argmin(growing))
        return float(angles[stop])

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Points in the optical frame ``(B, N, 3)`` (x right, y down, z forward) -> pixels of the raw
        image ``(B, N, 2)`` and whether each lies in front, within the lens model's valid angle."""
        x, y, z = points.unbind(-1)
        ahead = z > 1e-6
        z_safe = torch.where(ahead, z, torch.ones_like(z))
        a, b = x / z_safe, y / z_safe
        r2 = a * a + b * b
        in_model = ahead & (r2 < math.tan(self.max_angle_rad) ** 2)
        if self.model == "equidistant":
            r = torch.sqrt(r2.clamp(min=1e-18))
            scale = self._theta_distorted(torch.atan(r)) / r
            xd, yd = a * scale, b * scale
        else:
            d, factor = self.coefficients, self._factor(r2)
            xd = a * factor + 2 * d[2] * a * b + d[3] * (r2 + 2 * a * a)
            yd = b * factor + d[2] * (r2 + 2 * b * b) + 2 * d[3] * a * b
        k = self.intrinsics
        return torch.stack([k.fx * xd + k.cx, k.fy * yd + k.cy], -1), in_model
