"""Camera geometry: pinhole intrinsics, KITTI calibration, ground-plane homography and the
projection of image pixels to a bird's-eye grid aligned with a heading-up satellite patch.

Conventions:

* Pixel centres sit at integer coordinates (OpenCV), ``u`` right, ``v`` down.
* The camera *optical* frame is x right, y down, z forward (REP-103 ``*_optical``).
* The *ground* frame lies on the road directly below the camera: x forward, y left, z up
  (``base_link`` orientation, REP-103), so the camera centre is at ``(0, 0, height)``.
* ``R_ground_cam`` rotates optical-frame vectors into the ground frame. Positive ``pitch``
  tilts the optical axis down (a rotation about ground +y, as REP-103 pitch); positive
  ``roll`` rotates about the forward axis.
* A bird's-eye (BEV) grid of ``S x S`` cells at ``metres_per_px`` has the camera's ground point
  at its centre ``((S - 1) / 2, (S - 1) / 2)`` and forward pointing up, exactly like a
  heading-aligned :class:`~g2s_localization.tiles.PatchGeoref`, so BEV and satellite pixels
  line up one to one under the true pose.

Batched torch functions follow kornia: inputs are checked for shape, everything is
differentiable (the registration model learns through them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

# Optical axes expressed in the ground frame: z_opt -> +x, x_opt -> -y, y_opt -> -z.
_R_GROUND_OPTICAL_LEVEL = ((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0))


def _check_shape(name: str, t: Tensor, shape: tuple[int | None, ...]) -> None:
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

    @classmethod
    def from_projection(cls, projection: NDArray, width: int, height: int) -> "PinholeCamera":
        """From a rectified 3x4 projection matrix such as KITTI's ``P_rect_02``."""
        p = np.asarray(projection, dtype=np.float64).reshape(3, 4)
        return cls(float(p[0, 0]), float(p[1, 1]), float(p[0, 2]), float(p[1, 2]), int(width), int(height))


def read_kitti_calib(path: str | Path) -> dict[str, NDArray[np.float64] | str]:
    """Parse a KITTI ``calib_*.txt`` (``key: v1 v2 ...``); non-numeric values stay strings."""
    entries: dict[str, NDArray[np.float64] | str] = {}
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}:{line_no}: expected 'key: values', got {line!r}")
        try:
            entries[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            entries[key.strip()] = value.strip()
    return entries


def kitti_camera(calib: dict[str, NDArray[np.float64] | str], camera_index: int = 2) -> PinholeCamera:
    """Rectified intrinsics of KITTI camera ``camera_index`` (2 = left colour) from calib_cam_to_cam."""
    key_p, key_s = f"P_rect_{camera_index:02d}", f"S_rect_{camera_index:02d}"
    projection, size = calib.get(key_p), calib.get(key_s)
    if not isinstance(projection, np.ndarray) or projection.size != 12:
        raise ValueError(f"calibration lacks a 3x4 {key_p}")
    if not isinstance(size, np.ndarray) or size.size != 2:
        raise ValueError(f"calibration lacks {key_s} (image width and height)")
    return PinholeCamera.from_projection(projection, int(round(size[0])), int(round(size[1])))


# ----------------------------------------------------------------------------- torch geometry
def rotation_ground_from_camera(pitch: Tensor, roll: Tensor) -> Tensor:
    """``R_ground_cam`` ``(B, 3, 3)`` for camera ``pitch`` and ``roll`` ``(B,)`` in radians."""
    _check_shape("pitch", pitch, (None,))
    _check_shape("roll", roll, (pitch.shape[0],))
    zero, one = torch.zeros_like(pitch), torch.ones_like(pitch)
    cp, sp, cr, sr = torch.cos(pitch), torch.sin(pitch), torch.cos(roll), torch.sin(roll)
    r_pitch = torch.stack([cp, zero, sp, zero, one, zero, -sp, zero, cp], -1).view(-1, 3, 3)
    r_roll = torch.stack([one, zero, zero, zero, cr, -sr, zero, sr, cr], -1).view(-1, 3, 3)
    level = torch.tensor(_R_GROUND_OPTICAL_LEVEL, dtype=pitch.dtype, device=pitch.device)
    return r_pitch @ r_roll @ level


def ground_to_image_homography(K: Tensor, R_ground_cam: Tensor, camera_height: Tensor) -> Tensor:
    """Homography ``(B, 3, 3)`` taking ground ``(x_fwd, y_left, 1)`` to homogeneous pixels."""
    _check_shape("K", K, (None, 3, 3))
    _check_shape("R_ground_cam", R_ground_cam, (K.shape[0], 3, 3))
    _check_shape("camera_height", camera_height, (K.shape[0],))
    one = torch.ones_like(camera_height)
    plane = torch.diag_embed(torch.stack([one, one, -camera_height], -1))
    return K @ R_ground_cam.transpose(-1, -2) @ plane


def project_ground_to_image(
    K: Tensor, R_ground_cam: Tensor, camera_height: Tensor, ground_xy: Tensor
) -> tuple[Tensor, Tensor]:
    """Ground points ``(B, N, 2)`` to pixels ``(B, N, 2)`` and a mask of points in front."""
    _check_shape("ground_xy", ground_xy, (K.shape[0], None, 2))
    H = ground_to_image_homography(K, R_ground_cam, camera_height)
    homogeneous = torch.cat([ground_xy, torch.ones_like(ground_xy[..., :1])], -1) @ H.transpose(-1, -2)
    depth = homogeneous[..., 2]
    in_front = depth > 1e-6
    safe_depth = torch.where(in_front, depth, torch.ones_like(depth))
    return homogeneous[..., :2] / safe_depth.unsqueeze(-1), in_front


def image_to_ground(K: Tensor, R_ground_cam: Tensor, camera_height: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels ``(B, N, 2)`` to ground ``(B, N, 2)`` (x fwd, y left) and a mask of rays that hit it."""
    _check_shape("K", K, (None, 3, 3))
    _check_shape("pixels", pixels, (K.shape[0], None, 2))
    _check_shape("camera_height", camera_height, (K.shape[0],))
    rays_cam = torch.cat([pixels, torch.ones_like(pixels[..., :1])], -1) @ torch.linalg.inv(K).transpose(-1, -2)
    rays = rays_cam @ R_ground_cam.transpose(-1, -2)
    down = -rays[..., 2]
    hits = down > 1e-6
    scale = camera_height.unsqueeze(-1) / torch.where(hits, down, torch.ones_like(down))
    return rays[..., :2] * scale.unsqueeze(-1), hits


def bev_ground_coordinates(size: int, metres_per_px: float, dtype: torch.dtype = torch.float32,
                           device: torch.device | str = "cpu") -> Tensor:
    """Ground ``(x_fwd, y_left)`` in metres of every BEV cell centre, shape ``(size, size, 2)``."""
    if size <= 0 or not metres_per_px > 0:
        raise ValueError(f"BEV size and resolution must be positive, got {size}, {metres_per_px}")
    centre = (size - 1) / 2.0
    idx = torch.arange(size, dtype=dtype, device=device)
    v, u = torch.meshgrid(idx, idx, indexing="ij")
    return torch.stack([(centre - v) * metres_per_px, (centre - u) * metres_per_px], -1)


def bev_sampling_grid(
    K: Tensor, R_ground_cam: Tensor, camera_height: Tensor, image_size: tuple[int, int],
    bev_size: int, metres_per_px: float,
) -> tuple[Tensor, Tensor]:
    """Where each BEV cell looks in the image.

    Returns a ``grid_sample`` grid ``(B, S, S, 2)`` (``align_corners=True``, i.e. -1 and +1 are
    the centres of the first and last pixels) and a validity mask ``(B, S, S)``: the ground
    point is in front of the camera and inside the image of size ``(width, height)``.
    """
    width, height = image_size
    batch = K.shape[0]
    ground = bev_ground_coordinates(bev_size, metres_per_px, K.dtype, K.device).reshape(1, -1, 2)
    pixels, in_front = project_ground_to_image(K, R_ground_cam, camera_height, ground.expand(batch, -1, -1))
    u, v = pixels[..., 0], pixels[..., 1]
    inside = in_front & (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=K.dtype, device=K.device)
    grid = pixels * scale - 1.0
    grid = torch.where(inside.unsqueeze(-1), grid, torch.full_like(grid, -2.0))
    return grid.view(batch, bev_size, bev_size, 2), inside.view(batch, bev_size, bev_size)


def project_image_to_bev(image: Tensor, grid: Tensor, valid: Tensor) -> Tensor:
    """Resample an image or feature map ``(B, C, H, W)`` onto the BEV grid: ``(B, C, S, S)``."""
    _check_shape("image", image, (None, None, None, None))
    _check_shape("grid", grid, (image.shape[0], None, None, 2))
    bev = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return bev * valid.unsqueeze(1).to(bev.dtype)
