"""Ground-plane geometry: the camera<->ground homography and the projection of a camera image onto
a bird's-eye-view grid (torch, batched, differentiable).

A bird's-eye (BEV) grid of ``S x S`` cells at ``metres_per_px`` has the camera's ground point at
its centre ``((S - 1) / 2, (S - 1) / 2)`` and forward pointing up, exactly like a heading-aligned
:class:`~g2s_localization.geo.tiles.PatchGeoref`, so BEV and satellite pixels line up one to one
under the true pose. Pixel centres sit at integer coordinates (OpenCV). Frames as in
:mod:`.pinhole`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from g2s_localization.cameras.pinhole import check_shape


def ground_to_image_homography(K: Tensor, R_ground_cam: Tensor, camera_height: Tensor) -> Tensor:
    """Homography ``(B, 3, 3)`` taking ground ``(x_fwd, y_left, 1)`` to homogeneous pixels."""
    check_shape("K", K, (None, 3, 3))
    check_shape("R_ground_cam", R_ground_cam, (K.shape[0], 3, 3))
    check_shape("camera_height", camera_height, (K.shape[0],))
    one = torch.ones_like(camera_height)
    plane = torch.diag_embed(torch.stack([one, one, -camera_height], -1))
    return K @ R_ground_cam.transpose(-1, -2) @ plane


def project_ground_to_image(
    K: Tensor, R_ground_cam: Tensor, camera_height: Tensor, ground_xy: Tensor
) -> tuple[Tensor, Tensor]:
    """Ground points ``(B, N, 2)`` to pixels ``(B, N, 2)`` and a mask of points in front."""
    check_shape("ground_xy", ground_xy, (K.shape[0], None, 2))
    H = ground_to_image_homography(K, R_ground_cam, camera_height)
    homogeneous = torch.cat([ground_xy, torch.ones_like(ground_xy[..., :1])], -1) @ H.transpose(-1, -2)
    depth = homogeneous[..., 2]
    in_front = depth > 1e-6
    safe_depth = torch.where(in_front, depth, torch.ones_like(depth))
    return homogeneous[..., :2] / safe_depth.unsqueeze(-1), in_front


def image_to_ground(K: Tensor, R_ground_cam: Tensor, camera_height: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels ``(B, N, 2)`` to ground ``(B, N, 2)`` (x fwd, y left) and a mask of rays that hit it."""
    check_shape("K", K, (None, 3, 3))
    check_shape("pixels", pixels, (K.shape[0], None, 2))
    check_shape("camera_height", camera_height, (K.shape[0],))
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


def bev_pixels(project: Callable[[Tensor], tuple[Tensor, Tensor]], R_ground_cam: Tensor, camera_height: Tensor,
               bev_size: int, metres_per_px: float) -> tuple[Tensor, Tensor]:
    """Where each BEV cell's ground point appears in the image, for any camera model.

    ``project`` maps optical-frame points ``(B, N, 3)`` to pixels ``(B, N, 2)`` and a mask of
    points the model sees (a pinhole's front half-space, a lens model's valid angle, a panorama's
    whole sphere). Returns pixels ``(B, S, S, 2)`` and that mask ``(B, S, S)``.
    """
    check_shape("R_ground_cam", R_ground_cam, (None, 3, 3))
    check_shape("camera_height", camera_height, (R_ground_cam.shape[0],))
    batch = R_ground_cam.shape[0]
    ground = bev_ground_coordinates(bev_size, metres_per_px, R_ground_cam.dtype, R_ground_cam.device)
    ground = ground.reshape(1, -1, 2).expand(batch, -1, -1)
    # ground point minus camera centre (0, 0, h) in the ground frame, then into the optical frame
    rays = torch.cat([ground, -camera_height.view(batch, 1, 1).expand(batch, ground.shape[1], 1)], -1)
    pixels, seen = project(rays @ R_ground_cam)  # row vectors: v_opt = R^T v_ground
    return pixels.view(batch, bev_size, bev_size, 2), seen.view(batch, bev_size, bev_size)


def pixels_to_grid(pixels: Tensor, seen: Tensor, image_size: tuple[int, int],
                   sampled_size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Image pixels ``(B, S, S, 2)`` -> a ``grid_sample`` grid (``align_corners=True``) over a map of
    ``sampled_size`` ``(width, height)`` that covers the same image (a resized copy or a feature
    map; default the image itself), and the validity mask: seen and inside the image."""
    width, height = image_size
    map_w, map_h = sampled_size or image_size
    u, v = pixels[..., 0], pixels[..., 1]
    inside = seen & (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
    # pixel edges stay on edges under resizing: c' = (c + 0.5) * s - 0.5
    u_map, v_map = (u + 0.5) * map_w / width - 0.5, (v + 0.5) * map_h / height - 0.5
    grid = torch.stack([u_map * 2.0 / max(map_w - 1, 1) - 1.0, v_map * 2.0 / max(map_h - 1, 1) - 1.0], -1)
    return torch.where(inside.unsqueeze(-1), grid, torch.full_like(grid, -2.0)), inside


def pinhole_bev_pixels(K: Tensor, R_ground_cam: Tensor, camera_height: Tensor, bev_size: int,
                       metres_per_px: float) -> tuple[Tensor, Tensor]:
    """:func:`bev_pixels` for pinhole cameras given as batched intrinsics ``K`` ``(B, 3, 3)``, through
    the ground homography (:func:`project_ground_to_image`)."""
    check_shape("K", K, (None, 3, 3))
    batch = K.shape[0]
    ground = bev_ground_coordinates(bev_size, metres_per_px, K.dtype, K.device).reshape(1, -1, 2)
    pixels, ahead = project_ground_to_image(K, R_ground_cam, camera_height, ground.expand(batch, -1, -1))
    return pixels.view(batch, bev_size, bev_size, 2), ahead.view(batch, bev_size, bev_size)


def bev_sampling_grid(
    K: Tensor, R_ground_cam: Tensor, camera_height: Tensor, image_size: tuple[int, int],
    bev_size: int, metres_per_px: float,
) -> tuple[Tensor, Tensor]:
    """Where each BEV cell looks in a pinhole image with intrinsics ``K`` ``(B, 3, 3)``.

    Returns a ``grid_sample`` grid ``(B, S, S, 2)`` (``align_corners=True``, i.e. -1 and +1 are
    the centres of the first and last pixels) and a validity mask ``(B, S, S)``: the ground
    point is in front of the camera and inside the image of size ``(width, height)``.
    """
    return pixels_to_grid(*pinhole_bev_pixels(K, R_ground_cam, camera_height, bev_size, metres_per_px), image_size)


def project_image_to_bev(image: Tensor, grid: Tensor, valid: Tensor) -> Tensor:
    """Resample an image or feature map ``(B, C, H, W)`` onto the BEV grid: ``(B, C, S, S)``."""
    check_shape("image", image, (None, None, None, None))
    check_shape("grid", grid, (image.shape[0], None, None, 2))
    bev = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return bev * valid.unsqueeze(1).to(bev.dtype)
