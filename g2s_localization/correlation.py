"""Dense 3-DoF search shared by the learned model and the training-free baseline.

A bird's-eye (BEV) feature map of the ground view is rotated over yaw candidates and
cross-correlated (FFT) with the satellite feature map over every shift in the search window,
giving a score volume ``(B, K, D, D)``: K yaw offsets, D = 2P + 1 shifts per axis. A softmax
over the volume is the registration's likelihood; its argmax (refined to sub-cell) is the
estimate and its second moment about the estimate is the covariance, so an ambiguous match
(two similar peaks) reports the spread honestly instead of a confident single pose.

Conventions: the satellite patch is heading-aligned to the prior yaw (forward = up) and
centred on the prior position; shift ``(dy, dx)`` cells means the vehicle sits ``dx`` cells
right and ``dy`` cells down of the patch centre; yaw offset ``delta`` is counter-clockwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ScoreVolume:
    scores: Tensor  # (B, K, D, D) similarity of each yaw offset and shift
    yaw_offsets: Tensor  # (K,) radians
    cell_m: float  # metres per shift cell


@dataclass
class PoseEstimate:
    """Pose offsets in the prior's heading frame: forward (m), left (m), yaw offset (rad)."""

    forward_m: Tensor  # (B,)
    left_m: Tensor  # (B,)
    yaw_offset: Tensor  # (B,)
    covariance: Tensor  # (B, 3, 3) over (forward, left, yaw)
    confidence: Tensor  # (B,) probability mass within 1 m and 1 deg of the estimate
    probability: Tensor  # (B, K, D, D)


def rotate_bev(features: Tensor, mask: Tensor, yaw_offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate BEV maps ``(B, C, S, S)`` and masks ``(B, S, S)`` counter-clockwise by each offset.

    Returns ``(B, K, C, S, S)`` and ``(B, K, S, S)``; rotation is about the centre cell.
    """
    b, c, s, _ = features.shape
    k = yaw_offsets.shape[0]
    cos, sin = torch.cos(yaw_offsets), torch.sin(yaw_offsets)
    # affine_grid maps output (x right, y down, normalised) to input. A CCW rotation of content by
    # delta means output point p samples input R(-delta) p; in (x right, y down) coordinates a CCW
    # visual rotation R(delta) is [[c, s], [-s, c]], so its inverse is [[c, -s], [s, c]].
    theta = torch.zeros(k, 2, 3, dtype=features.dtype, device=features.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta, [k, 1, s, s], align_corners=True)  # (K, S, S, 2)
    grid = grid.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * k, s, s, 2)
    stacked = torch.cat([features, mask.unsqueeze(1).to(features.dtype)], 1)
    stacked = stacked.unsqueeze(1).expand(-1, k, -1, -1, -1).reshape(b * k, c + 1, s, s)
    rotated = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    rotated = rotated.view(b, k, c + 1, s, s)
    return rotated[:, :, :c] * (rotated[:, :, c:] > 0.5), rotated[:, :, c] > 0.5


def _spectra(bev: Tensor, bev_mask: Tensor, satellite: Tensor, search_cells: int) -> tuple[Tensor, Tensor, int]:
    s = bev.shape[-1]
    size = satellite.shape[-1]
    if size != s + 2 * search_cells:
        raise ValueError(f"satellite map must be {s + 2 * search_cells} cells wide, got {size}")
    t_hat = torch.fft.rfft2(bev * bev_mask.unsqueeze(2), s=(size, size))
    s_hat = torch.fft.rfft2(satellite, s=(size, size))
    return t_hat, s_hat, size


def _valid_shifts(corr: Tensor, bev_mask: Tensor, search_cells: int, count_dims: str) -> Tensor:
    d = 2 * search_cells + 1
    count = bev_mask.flatten(-2).sum(-1).clamp(min=1.0)  # (B, K)
    if count_dims == "pairs":
        count = count[:, None]
    return corr[..., :d, :d] / count[..., None, None]  # shift (dy, dx) + P sits at index dy + P


def correlate(bev: Tensor, bev_mask: Tensor, satellite: Tensor, search_cells: int) -> Tensor:
    """Mean cosine similarity of rotated BEV templates against the satellite map, every shift.

    ``bev`` ``(B, K, C, S, S)``, ``bev_mask`` ``(B, K, S, S)``, ``satellite`` ``(B, C, L, L)`` with
    ``L = S + 2 P``; features are expected L2-normalised per cell. Returns ``(B, K, D, D)``,
    ``D = 2 P + 1``. FFT cross-correlation: templates start at index 0, so no shift wraps.
    """
    t_hat, s_hat, size = _spectra(bev, bev_mask, satellite, search_cells)
    corr = torch.fft.irfft2((s_hat.unsqueeze(1) * t_hat.conj()).sum(2), s=(size, size))
    return _valid_shifts(corr, bev_mask, search_cells, "single")


def correlate_pairs(bev: Tensor, bev_mask: Tensor, satellite: Tensor, search_cells: int) -> Tensor:
    """Every ground view against every satellite map: ``(B_ground, B_sat, K, D, D)``."""
    t_hat, s_hat, size = _spectra(bev, bev_mask, satellite, search_cells)
    product = torch.einsum("jcxy,ikcxy->ijkxy", s_hat, t_hat.conj())
    corr = torch.fft.irfft2(product, s=(size, size))
    return _valid_shifts(corr, bev_mask, search_cells, "pairs")


def _parabola_vertex(s_lo: Tensor, s_0: Tensor, s_hi: Tensor, index: Tensor, size: int) -> Tensor:
    """Sub-cell peak position along one axis; the integer index at borders or without curvature."""
    curvature = s_lo - 2 * s_0 + s_hi
    usable = (index > 0) & (index < size - 1) & (curvature < 0)
    safe = torch.where(usable, curvature, -torch.ones_like(curvature))
    offset = torch.where(usable, 0.5 * (s_lo - s_hi) / safe, torch.zeros_like(s_0))
    return index.to(s_0.dtype) + offset.clamp(-0.5, 0.5)


def pose_from_scores(volume: ScoreVolume, temperature: Tensor | float) -> PoseEstimate:
    """Argmax with sub-cell refinement, plus covariance and confidence from the softmax."""
    scores = volume.scores
    b, k, d, _ = scores.shape
    p = torch.softmax(scores.flatten(1) / temperature, dim=1).view(b, k, d, d)
    centre = (d - 1) / 2.0
    cells = torch.arange(d, dtype=scores.dtype, device=scores.device) - centre
    best = p.flatten(1).argmax(1)
    bk, rem = best // (d * d), best % (d * d)
    by, bx = rem // d, rem % d
    # sub-cell refinement: a parabola through the peak and its two neighbours along each axis
    batch = torch.arange(b, device=scores.device)
    peak = scores[batch, bk, by, bx]
    fk = _parabola_vertex(scores[batch, (bk - 1).clamp(min=0), by, bx], peak,
                          scores[batch, (bk + 1).clamp(max=k - 1), by, bx], bk, k)
    fy = _parabola_vertex(scores[batch, bk, (by - 1).clamp(min=0), bx], peak,
                          scores[batch, bk, (by + 1).clamp(max=d - 1), bx], by, d)
    fx = _parabola_vertex(scores[batch, bk, by, (bx - 1).clamp(min=0)], peak,
                          scores[batch, bk, by, (bx + 1).clamp(max=d - 1)], bx, d)
    dy, dx = fy - centre, fx - centre
    step = (volume.yaw_offsets[1] - volume.yaw_offsets[0]) if k > 1 else torch.zeros((), dtype=scores.dtype)
    yaw = volume.yaw_offsets[0] + fk * step
    forward, left = -dy * volume.cell_m, -dx * volume.cell_m
    # second moment of the whole volume about the estimate: honest when peaks compete
    gy, gx = torch.meshgrid(cells, cells, indexing="ij")
    f_all = (-gy * volume.cell_m)[None, None] - forward[:, None, None, None]
    l_all = (-gx * volume.cell_m)[None, None] - left[:, None, None, None]
    y_all = volume.yaw_offsets[None, :, None, None] - yaw[:, None, None, None]
    f_all, l_all, y_all = (t.expand(b, k, d, d) for t in (f_all, l_all, y_all))
    stack = torch.stack([f_all, l_all, y_all], -1)  # (B, K, D, D, 3)
    cov = torch.einsum("bkyx,bkyxi,bkyxj->bij", p, stack, stack)
    yaw_step = float(volume.yaw_offsets[1] - volume.yaw_offsets[0]) if k > 1 else 0.0
    floor = torch.tensor([volume.cell_m**2 / 12, volume.cell_m**2 / 12, yaw_step**2 / 12], dtype=cov.dtype,
                         device=cov.device)
    cov = cov + torch.diag_embed(floor).expand(b, 3, 3)
    near = (f_all.abs() <= 1.0) & (l_all.abs() <= 1.0) & (y_all.abs() <= math.radians(1.0) + 1e-9)
    confidence = (p * near).flatten(1).sum(1)
    return PoseEstimate(forward, left, yaw, cov, confidence, p)


def yaw_candidates(range_deg: float, step_deg: float, device: torch.device | str = "cpu") -> Tensor:
    n = int(round(range_deg / step_deg))
    return torch.deg2rad(torch.arange(-n, n + 1, dtype=torch.float32, device=device) * step_deg)
