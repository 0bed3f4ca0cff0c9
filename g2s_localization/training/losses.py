"""Training objectives: weakly supervised (the ECCV 2024 recipe) and fully supervised.

Weak supervision never sees a true pose:

* :func:`rotation_pseudo_pair_loss` - self-supervised rotation (and shift) from pseudo pairs
  made of the satellite patch alone: a rotated, shifted crop, masked to the camera's field of
  view, must be found in the reference patch at the pose it was cut from.
* :func:`contrastive_translation_loss` - deep metric learning: a ground view must match the
  satellite patch around its own (noisy) GNSS fix better than patches from other places.
* :func:`gps_prior_loss` - optional: the match should fall within the GNSS error radius.

Full supervision (:func:`supervised_volume_loss`) is cross-entropy at the true pose cell.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from g2s_localization.registration.correlation import ScoreVolume, correlate_pairs, rotate_bev, yaw_candidates
from g2s_localization.registration.model import G2SRegistrationNet


def target_cells(volume: ScoreVolume, target: Tensor) -> tuple[Tensor, Tensor]:
    """Flat index of the (yaw, dy, dx) cell nearest ``target`` ``(B, 3)`` = forward, left, yaw; and validity."""
    b, k, d, _ = volume.scores.shape
    p = (d - 1) // 2
    dy = torch.round(-target[:, 0] / volume.cell_m).long() + p
    dx = torch.round(-target[:, 1] / volume.cell_m).long() + p
    yk = (target[:, 2:3] - volume.yaw_offsets[None].to(target.dtype)).abs().argmin(1)
    step = float(volume.yaw_offsets[1] - volume.yaw_offsets[0]) if k > 1 else 1.0
    inside = (dy >= 0) & (dy < d) & (dx >= 0) & (dx < d)
    inside &= (target[:, 2] - volume.yaw_offsets[yk].to(target.dtype)).abs() <= step / 2 + 1e-6
    flat = yk * d * d + dy.clamp(0, d - 1) * d + dx.clamp(0, d - 1)
    return flat, inside


def supervised_volume_loss(volume: ScoreVolume, temperature: Tensor, target: Tensor, keep: Tensor | None = None
                           ) -> Tensor:
    """Cross-entropy at the target cells of the frames whose target lies in the window (and ``keep``
    ``(B,)`` allows); zero, with a graph, when there are none."""
    flat, inside = target_cells(volume, target)
    if keep is not None:
        inside = inside & keep.to(inside.device)
    if not bool(inside.any()):
        return volume.scores.sum() * 0.0
    logits = volume.scores.flatten(1) / temperature
    return F.cross_entropy(logits[inside], flat[inside])


def make_pseudo_queries(satellite: Tensor, size: int, yaw: Tensor, forward_m: Tensor, left_m: Tensor,
                        metres_per_px: float) -> Tensor:
    """Top-down 'vehicle view' crops ``(B, 3, size, size)`` of satellite patches ``(B, 3, W, W)``.

    The crop is what a vehicle at ``(forward, left)`` from the patch centre, turned ``yaw``
    counter-clockwise, would see from above with its forward direction up.
    """
    b, _, w, _ = satellite.shape
    cq, cr = (size - 1) / 2.0, (w - 1) / 2.0
    idx = torch.arange(size, dtype=satellite.dtype, device=satellite.device)
    v, u = torch.meshgrid(idx, idx, indexing="ij")
    fwd_q, left_q = (cq - v) * metres_per_px, (cq - u) * metres_per_px
    c, s = torch.cos(yaw)[:, None, None], torch.sin(yaw)[:, None, None]
    fwd_r = forward_m[:, None, None] + c * fwd_q - s * left_q
    left_r = left_m[:, None, None] + s * fwd_q + c * left_q
    u_r, v_r = cr - left_r / metres_per_px, cr - fwd_r / metres_per_px
    grid = torch.stack([u_r / (w - 1) * 2 - 1, v_r / (w - 1) * 2 - 1], -1)
    return F.grid_sample(satellite, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def rotation_pseudo_pair_loss(net: G2SRegistrationNet, satellite: Tensor, satellite_features: Tensor,
                              fov_mask: Tensor, generator: torch.Generator, max_shift_m: float = 10.0) -> Tensor:
    """Self-supervised pose from satellite-only pseudo pairs (targets exactly on the grid)."""
    cfg = net.config
    b = satellite.shape[0]
    yaws = yaw_candidates(cfg.yaw_range_deg, cfg.yaw_step_deg, satellite.device)
    k_idx = torch.randint(len(yaws), (b,), generator=generator).to(satellite.device)
    max_cells = int(max_shift_m / cfg.bev_metres_per_px)
    cells = torch.randint(-max_cells, max_cells + 1, (b, 2), generator=generator).to(satellite.device)
    forward = cells[:, 0].to(satellite.dtype) * cfg.bev_metres_per_px
    left = cells[:, 1].to(satellite.dtype) * cfg.bev_metres_per_px
    query = make_pseudo_queries(satellite, 2 * cfg.bev_size, yaws[k_idx].to(satellite.dtype), forward, left,
                                cfg.satellite_metres_per_px)
    query_features = net.satellite_features(query) * fov_mask.unsqueeze(1)
    volume = net.score_volume(query_features, fov_mask, satellite_features)
    target = torch.stack([forward, left, yaws[k_idx].to(satellite.dtype)], -1)
    return supervised_volume_loss(volume, net.temperature, target)


def contrastive_translation_loss(bev: Tensor, mask: Tensor, satellite_features: Tensor, net: G2SRegistrationNet,
                                 prior_xy: Tensor, min_negative_distance_m: float, tau: float = 0.07,
                                 pool_tau: float = 0.02, yaw_stride: int = 2, pool: int = 2) -> Tensor:
    """InfoNCE over the batch: each view's own prior patch vs patches from elsewhere.

    A pair's score is a soft maximum over every pose in the window (the true pose is somewhere
    inside the noisy prior's window, but where is unknown). Pairs closer than
    ``min_negative_distance_m`` are not used as negatives: they may show the same place.
    Telling places apart needs neither the finest cells nor every yaw: features are pooled by
    ``pool`` and every ``yaw_stride``-th yaw is used, and rows are built one ground view at a
    time, which keeps each step's B x B volumes small.
    """
    cfg = net.config
    yaws = yaw_candidates(cfg.yaw_range_deg, cfg.yaw_step_deg, bev.device).to(bev.dtype)[::yaw_stride]
    coarse_bev = F.normalize(F.avg_pool2d(bev, pool), dim=1)
    coarse_mask = F.avg_pool2d(mask.unsqueeze(1).to(bev.dtype), pool).squeeze(1) > 0.5
    coarse_sat = F.normalize(F.avg_pool2d(satellite_features, pool), dim=1)
    search = (coarse_sat.shape[-1] - coarse_bev.shape[-1]) // 2
    rotated, rotated_mask = rotate_bev(coarse_bev, coarse_mask, yaws)
    rows = []
    for i in range(len(bev)):
        volumes = correlate_pairs(rotated[i:i + 1], rotated_mask[i:i + 1], coarse_sat, search)  # (1, B, K, D, D)
        rows.append(pool_tau * torch.logsumexp(volumes[0].flatten(1) / pool_tau, -1))
    scores = torch.stack(rows)  # (B_ground, B_sat)
    distance = torch.cdist(prior_xy, prior_xy)
    usable = (distance >= min_negative_distance_m) | torch.eye(len(bev), dtype=torch.bool, device=bev.device)
    logits = (scores / tau).masked_fill(~usable, float("-inf"))
    labels = torch.arange(len(bev), device=bev.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def gps_prior_loss(volume: ScoreVolume, temperature: Tensor, radius_m: float) -> Tensor:
    """Penalise probability mass further than ``radius_m`` from the prior (GNSS error bound)."""
    b, k, d, _ = volume.scores.shape
    cells = (torch.arange(d, device=volume.scores.device) - (d - 1) / 2) * volume.cell_m
    inside = (cells[:, None] ** 2 + cells[None, :] ** 2) <= radius_m**2
    p = torch.softmax(volume.scores.flatten(1) / temperature, 1).view(b, k, d, d)
    return -torch.log((p * inside).flatten(1).sum(1).clamp(min=1e-6)).mean()


def prior_positions_m(latlon: Tensor) -> Tensor:
    """Local metric positions ``(B, 2)`` of priors, only for distances within a batch."""
    lat0 = latlon[:, 0].mean()
    north = (latlon[:, 0] - lat0) * 111_132.0
    east = latlon[:, 1] * 111_320.0 * torch.cos(torch.deg2rad(lat0))
    east = east - east.mean()
    return torch.stack([east, north], -1).float()
