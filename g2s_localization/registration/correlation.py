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
    reference_support: Tensor | None = None  # (B,) training-free features' probability within 1 m, 1 deg

    def support_at(self, index: int) -> float:
        """Frame ``index``'s support from the training-free features; nan when not checked."""
        return math.nan if self.reference_support is None else float(self.reference_support[index])


def rotate_bev(features: Tensor, mask: Tensor, yaw_offsets: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate BEV maps ``(B, C, S, S)`` and masks ``(B, S, S)`` counter-clockwise by each offset.

    Returns ``(B, K, C, S, S)`` and ``(B, K, S, S)``; rotation is about the centre cell.
    """
    b, c, s, _ = features.shape
    k = yaw_offsets.shape[0]
    grid = _rotation_grid(yaw_offsets, s, features.dtype)
    grid = grid.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * k, s, s, 2)
    stacked = torch.cat([features, mask.unsqueeze(1).to(features.dtype)], 1)
    stacked = stacked.unsqueeze(1).expand(-1, k, -1, -1, -1).reshape(b * k, c + 1, s, s)
    rotated = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    rotated = rotated.view(b, k, c + 1, s, s)
    return rotated[:, :, :c] * (rotated[:, :, c:] > 0.5), rotated[:, :, c] > 0.5


def _rotation_grid(yaw_offsets: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """``(K, S, S, 2)`` sampling grid that rotates an ``S x S`` map CCW about its centre by each offset."""
    k = yaw_offsets.shape[0]
    cos, sin = torch.cos(yaw_offsets), torch.sin(yaw_offsets)
    # affine_grid maps output (x right, y down, normalised) to input. A CCW rotation of content by
    # delta means output point p samples input R(-delta) p; in (x right, y down) coordinates a CCW
    # visual rotation R(delta) is [[c, s], [-s, c]], so its inverse is [[c, -s], [s, c]].
    theta = torch.zeros(k, 2, 3, dtype=dtype, device=yaw_offsets.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    return F.affine_grid(theta, [k, 1, size, size], align_corners=True)


def correlate_window(bev: Tensor, mask: Tensor, satellite: Tensor, yaw_offsets: Tensor, window_cells: int) -> Tensor:
    """One BEV map ``(C, S, S)`` (mask ``(S, S)``) rotated by each of ``yaw_offsets`` ``(K,)`` against
    ``satellite`` ``(C, S + 2w, S + 2w)`` at every shift within ``w`` cells: ``(K, 2w + 1, 2w + 1)``.

    Same values as :func:`rotate_bev` + :func:`correlate`, computed only on cells that some
    rotation makes valid (the camera's wedge, ~1/4 of the grid): the fine search is then a small
    gather and one contraction instead of K full-grid rotations and FFTs.
    """
    c, s, _ = bev.shape
    w = window_cells
    if satellite.shape[-1] != s + 2 * w:
        raise ValueError(f"satellite window must be {s + 2 * w} cells wide, got {satellite.shape[-1]}")
    grid = _rotation_grid(yaw_offsets, s, bev.dtype)  # (K, S, S, 2)
    stacked = torch.cat([bev, mask.unsqueeze(0).to(bev.dtype)], 0).unsqueeze(0).expand(len(yaw_offsets), -1, -1, -1)
    rotated_mask = F.grid_sample(stacked[:, c:], grid, mode="bilinear", align_corners=True)[:, 0] > 0.5  # (K, S, S)
    cells = rotated_mask.any(0).flatten().nonzero().squeeze(1)  # (N,)
    rotated = F.grid_sample(stacked, grid.flatten(1, 2)[:, None, cells], mode="bilinear", align_corners=True)[:, :, 0]
    template = rotated[:, :c] * (rotated[:, c:] > 0.5)  # (K, C, N)
    norm = template_norm(template.unsqueeze(-1), rotated[:, c:c + 1].transpose(1, 2) > 0.5)  # (K,)
    row, col = cells // s, cells % s
    d = 2 * w + 1
    offsets = torch.arange(d, device=bev.device)
    index = (row[:, None, None] + offsets[None, :, None]) * (s + 2 * w) + col[:, None, None] + offsets[None, None, :]
    windows = torch.index_select(satellite.flatten(1), 1, index.flatten()).view(-1, d * d)  # (C N, D D)
    return (template.flatten(1) @ windows).view(-1, d, d) / norm[:, None, None]


def _spectra(bev: Tensor, bev_mask: Tensor, satellite: Tensor, search_cells: int) -> tuple[Tensor, Tensor, int]:
    s = bev.shape[-1]
    size = satellite.shape[-1]
    if size != s + 2 * search_cells:
        raise ValueError(f"satellite map must be {s + 2 * search_cells} cells wide, got {size}")
    t_hat = torch.fft.rfft2(bev * bev_mask.unsqueeze(2), s=(size, size))
    s_hat = torch.fft.rfft2(satellite, s=(size, size))
    return t_hat, s_hat, size


def template_norm(template: Tensor, mask: Tensor) -> Tensor:
    """``sqrt(valid cells x sum of squares)`` of masked templates ``(..., C, S, S)``: dividing a
    correlation by it gives the mean similarity per cell with the template scaled to unit RMS.

    The RMS matters: a bilinearly rotated template loses energy (interpolation smooths it), so
    dividing by the cell count alone favours the one unrotated candidate, pulling yaw towards
    the prior's.
    """
    count = mask.flatten(-2).sum(-1).clamp(min=1.0)
    energy = (template * mask.unsqueeze(-3)).square().flatten(-3).sum(-1)
    return (count * energy).sqrt().clamp(min=1e-6)


def _valid_shifts(corr: Tensor, norm: Tensor, search_cells: int) -> Tensor:
    d = 2 * search_cells + 1
    return corr[..., :d, :d] / norm[..., None, None]  # shift (dy, dx) + P sits at index dy + P


def correlate(bev: Tensor, bev_mask: Tensor, satellite: Tensor, search_cells: int) -> Tensor:
    """Similarity of rotated BEV templates with the satellite map at every shift.

    ``bev`` ``(B, K, C, S, S)``, ``bev_mask`` ``(B, K, S, S)``, ``satellite`` ``(B, C, L, L)`` with
    ``L = S + 2 P``; features are expected L2-normalised per cell, so a perfect match scores 1
    (see :func:`template_norm`). Returns ``(B, K, D, D)``, ``D = 2 P + 1``. FFT cross-correlation:
    templates start at index 0, so no shift wraps.
    """
    t_hat, s_hat, size = _spectra(bev, bev_mask, satellite, search_cells)
    corr = torch.fft.irfft2((s_hat.unsqueeze(1) * t_hat.conj()).sum(2), s=(size, size))
    return _valid_shifts(corr, template_norm(bev, bev_mask), search_cells)


def correlate_pairs(bev: Tensor, bev_mask: Tensor, satellite: Tensor, search_cells: int) -> Tensor:
    """Every ground view against every satellite map: ``(B_ground, B_sat, K, D, D)``."""
    t_hat, s_hat, size = _spectra(bev, bev_mask, satellite, search_cells)
    product = torch.einsum("jcxy,ikcxy->ijkxy", s_hat, t_hat.conj())
    corr = torch.fft.irfft2(product, s=(size, size))
    return _valid_shifts(corr, template_norm(bev, bev_mask)[:, None], search_cells)


def _parabola_vertex(s_lo: Tensor, s_0: Tensor, s_hi: Tensor, index: Tensor, size: int) -> Tensor:
    """Sub-cell peak position along one axis; the integer index at borders or without curvature."""
    curvature = s_lo - 2 * s_0 + s_hi
    usable = (index > 0) & (index < size - 1) & (curvature < 0)
    safe = torch.where(usable, curvature, -torch.ones_like(curvature))
    offset = torch.where(usable, 0.5 * (s_lo - s_hi) / safe, torch.zeros_like(s_0))
    return index.to(s_0.dtype) + offset.clamp(-0.5, 0.5)


@dataclass
class Peak:
    """Best pose in the prior's heading frame: forward (m), left (m), yaw offset (rad), each ``(B,)``."""

    forward_m: Tensor
    left_m: Tensor
    yaw_offset: Tensor


def volume_peak(volume: ScoreVolume) -> Peak:
    """Argmax of the volume, refined to sub-cell by a parabola through each axis' neighbours."""
    scores = volume.scores
    b, k, d, _ = scores.shape
    best = scores.flatten(1).argmax(1)
    bk, rem = best // (d * d), best % (d * d)
    by, bx = rem // d, rem % d
    batch = torch.arange(b, device=scores.device)
    peak = scores[batch, bk, by, bx]
    fk = _parabola_vertex(scores[batch, (bk - 1).clamp(min=0), by, bx], peak,
                          scores[batch, (bk + 1).clamp(max=k - 1), by, bx], bk, k)
    fy = _parabola_vertex(scores[batch, bk, (by - 1).clamp(min=0), bx], peak,
                          scores[batch, bk, (by + 1).clamp(max=d - 1), bx], by, d)
    fx = _parabola_vertex(scores[batch, bk, by, (bx - 1).clamp(min=0)], peak,
                          scores[batch, bk, by, (bx + 1).clamp(max=d - 1)], bx, d)
    centre = (d - 1) / 2.0
    step = (volume.yaw_offsets[1] - volume.yaw_offsets[0]) if k > 1 else torch.zeros((), dtype=scores.dtype)
    return Peak(-(fy - centre) * volume.cell_m, -(fx - centre) * volume.cell_m, volume.yaw_offsets[0] + fk * step)


def pose_from_scores(volume: ScoreVolume, temperature: Tensor | float, peak: Peak | None = None,
                     resolution: tuple[float, float] | None = None) -> PoseEstimate:
    """Estimate, covariance and confidence from the softmax of ``volume``.

    ``peak`` (default: the volume's own sub-cell argmax) is the estimate; a finer search
    (:func:`refine_peak`) passes its result here. The covariance is the softmax's second moment
    about the estimate, so competing peaks widen it, plus a quantisation floor from
    ``resolution`` = (cell metres, yaw step rad) of the search that produced the estimate.
    """
    scores = volume.scores
    b, k, d, _ = scores.shape
    p = torch.softmax(scores.flatten(1) / temperature, dim=1).view(b, k, d, d)
    peak = volume_peak(volume) if peak is None else peak
    forward, left, yaw = peak.forward_m, peak.left_m, peak.yaw_offset
    cells = (torch.arange(d, dtype=scores.dtype, device=scores.device) - (d - 1) / 2.0) * volume.cell_m
    gy, gx = torch.meshgrid(cells, cells, indexing="ij")
    f_all = -gy[None, None] - forward[:, None, None, None]
    l_all = -gx[None, None] - left[:, None, None, None]
    y_all = volume.yaw_offsets[None, :, None, None] - yaw[:, None, None, None]
    f_all, l_all, y_all = (t.expand(b, k, d, d) for t in (f_all, l_all, y_all))
    stack = torch.stack([f_all, l_all, y_all], -1)  # (B, K, D, D, 3)
    cov = torch.einsum("bkyx,bkyxi,bkyxj->bij", p, stack, stack)
    if resolution is None:
        resolution = (volume.cell_m, float(volume.yaw_offsets[1] - volume.yaw_offsets[0]) if k > 1 else 0.0)
    cell_m, yaw_step = resolution
    floor = torch.tensor([cell_m**2 / 12, cell_m**2 / 12, yaw_step**2 / 12], dtype=cov.dtype, device=cov.device)
    cov = cov + torch.diag_embed(floor).expand(b, 3, 3)
    near = (f_all.abs() <= 1.0) & (l_all.abs() <= 1.0) & (y_all.abs() <= math.radians(1.0) + 1e-9)
    confidence = (p * near).flatten(1).sum(1)
    return PoseEstimate(forward, left, yaw, cov, confidence, p)


def pool_search_inputs(bev: Tensor, mask: Tensor, satellite: Tensor, factor: int) -> tuple[Tensor, Tensor, Tensor]:
    """Average-pool BEV ``(B, C, S, S)``, mask ``(B, S, S)`` and satellite ``(B, C, L, L)`` by ``factor``
    for the coarse search; a coarse cell is valid when most of its fine cells are."""
    if factor == 1:
        return bev, mask, satellite
    if bev.shape[-1] % factor or satellite.shape[-1] % factor:
        raise ValueError(f"BEV {bev.shape[-1]} and satellite {satellite.shape[-1]} cells must divide by {factor}")
    coarse_mask = F.avg_pool2d(mask.unsqueeze(1).to(bev.dtype), factor).squeeze(1) >= 0.5
    coarse_bev = F.avg_pool2d(bev, factor) * coarse_mask.unsqueeze(1)
    return coarse_bev, coarse_mask, F.avg_pool2d(satellite, factor)


def refine_peak(bev: Tensor, mask: Tensor, satellite: Tensor, coarse: Peak, cell_m: float, search_cells: int,
                yaw_offsets: Tensor, window_cells: int) -> Peak:
    """Search finely around a coarse peak: ``yaw_offsets`` ``(K,)`` relative to the coarse yaw,
    shifts within ``window_cells`` of it, at the full resolution ``cell_m``.

    ``bev`` ``(B, C, S, S)``, ``mask`` ``(B, S, S)``, ``satellite`` ``(B, C, S + 2P, S + 2P)`` with
    ``P = search_cells``. Yaw precision comes from this stage: the coarse volume's yaw steps are
    too wide to resolve a fraction of a degree, and evaluating every shift at every fine yaw over
    the whole window would cost several times the coarse search.
    """
    s, w = bev.shape[-1], window_cells
    forward, left, yaw = [], [], []
    for i in range(bev.shape[0]):
        cy = int(round(-float(coarse.forward_m[i]) / cell_m))
        cx = int(round(-float(coarse.left_m[i]) / cell_m))
        cy, cx = (max(w - search_cells, min(search_cells - w, c)) for c in (cy, cx))
        y0, x0 = search_cells + cy - w, search_cells + cx - w
        crop = satellite[i:i + 1, :, y0:y0 + s + 2 * w, x0:x0 + s + 2 * w]
        yaws = coarse.yaw_offset[i] + yaw_offsets
        scores = correlate_window(bev[i], mask[i], crop[0], yaws, w)[None]
        local = volume_peak(ScoreVolume(scores, yaws, cell_m))
        forward.append(local.forward_m - cy * cell_m)
        left.append(local.left_m - cx * cell_m)
        yaw.append(local.yaw_offset)
    return Peak(torch.cat(forward), torch.cat(left), torch.cat(yaw))


def yaw_candidates(range_deg: float, step_deg: float, device: torch.device | str = "cpu") -> Tensor:
    n = int(round(range_deg / step_deg))
    return torch.deg2rad(torch.arange(-n, n + 1, dtype=torch.float32, device=device) * step_deg)
