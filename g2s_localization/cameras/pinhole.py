"""Pinhole intrinsics and the camera-to-ground rotation.

Conventions:

* Pixel centres sit at integer coordinates (OpenCV), ``u`` right, ``v`` down.
* The camera *optical* frame is x right, y down, z forward (REP-103 ``*_optical``).
* The *ground* frame lies on the road directly below the camera: x forward, y left, z up
  (``base_link`` orientation, REP-103), so the camera centre is at ``(0, 0, height)``.
* ``R_ground_cam`` rotates optical-frame vectors into the ground frame. Positive ``pitch``
  tilts the optical axis down (a rotation about ground +y, as REP-103 pitch); positive
  ``roll`` rotates about the forward axis.

Batched torch functions follow kornia: inputs are checked for shape, everything is
differentiable (the registration model learns through them). The projection onto a bird's-eye
grid is :mod:`.bev`; KITTI's calibration files are read in :mod:`g2s_localization.data.kitti_raw`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

# Optical axes expressed in the ground frame: z_opt -> +x, x_opt -> -y, y_opt -> -z.
_R_GROUND_OPTICAL_LEVEL = ((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0))


def check_shape(name: str, t: Tensor, shape: tuple[int | None, ...]) -> None:
    """Raise ValueError unless ``t`` has ``shape`` (``None``: any size, shown as ``B``)."""
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        pretty = tuple("B" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {pretty}, got {tuple(t.shape)}")


@dataclass(frozen=True)
class PinholeCamera:
    """Rectified pinhole intrinsics in pixels and the image size they belong to."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"invalid intrinsics fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"invalid image size {self.width}x{self.height}")

    def matrix(self) -> NDArray[np.float64]:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def matrix_tensor(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
        return torch.tensor(self.matrix(), dtype=dtype, device=device)

    def resized(self, width: int, height: int) -> "PinholeCamera":
        """Intrinsics of the same camera after resizing the image to ``width x height``.

        With integer pixel centres, pixel edges sit at ``-0.5``; scaling keeps edges on edges.
        """
        sx, sy = width / self.width, height / self.height
        return PinholeCamera(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Optical-frame points ``(B, N, 3)`` -> pixels ``(B, N, 2)``, in front ``(B, N)``."""
        x, y, z = points.unbind(-1)
        ahead = z > 1e-6
        z_safe = torch.where(ahead, z, torch.ones_like(z))
        return torch.stack([self.fx * x / z_safe + self.cx, self.fy * y / z_safe + self.cy], -1), ahead

    @classmethod
    def from_projection(cls, projection: NDArray, width: int, height: int) -> "PinholeCamera":
        """From a rectified 3x4 projection matrix such as KITTI's ``P_rect_02``."""
        p = np.asarray(projection, dtype=np.float64).reshape(3, 4)
        return cls(float(p[0, 0]), float(p[1, 1]), float(p[0, 2]), float(p[1, 2]), int(width), int(height))


# ----------------------------------------------------------------------------- torch geometry
def rotation_ground_from_camera(pitch: Tensor, roll: Tensor) -> Tensor:
    """``R_ground_cam`` ``(B, 3, 3)`` for camera ``pitch`` and ``roll`` ``(B,)`` in radians."""
    check_shape("pitch", pitch, (None,))
    check_shape("roll", roll, (pitch.shape[0],))
    zero, one = torch.zeros_like(pitch), torch.ones_like(pitch)
    cp, sp, cr, sr = torch.cos(pitch), torch.sin(pitch), torch.cos(roll), torch.sin(roll)
    r_pitch = torch.stack([cp, zero, sp, zero, one, zero, -sp, zero, cp], -1).view(-1, 3, 3)
    r_roll = torch.stack([one, zero, zero, zero, cr, -sr, zero, sr, cr], -1).view(-1, 3, 3)
    level = torch.tensor(_R_GROUND_OPTICAL_LEVEL, dtype=pitch.dtype, device=pitch.device)
    return r_pitch @ r_roll @ level



