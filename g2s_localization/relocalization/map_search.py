"""Map-wide correlation of a frame with a :class:`~.feature_map.SatelliteFeatureMap`, and the sum of
such score maps along the dead-reckoned track (:class:`SequenceSearch`).

A 64 m camera wedge of a street looks like other streets; adding the score maps of the last few
frames, shifted by the vehicle's own motion (odometry + IMU heading), makes the place unique.
Score maps are on the feature map's north-up grid: ``(r, c)`` holds the score of the vehicle
standing at that cell's centre.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from g2s_localization.registration.correlation import rotate_bev, template_norm, yaw_candidates
from g2s_localization.relocalization.feature_map import MapSearchConfig, SatelliteFeatureMap


@dataclass(frozen=True)
class FrameTemplate:
    """One frame's BEV as correlation kernels for grid ``heading_index`` of a feature map:
    ``(Y, C, s, s)``, one per yaw offset, each divided by its RMS norm
    (:func:`~g2s_localization.registration.correlation.template_norm`), so that a plain correlation with the map gives the
    registration's score. Cell ``((s-1)/2, (s-1)/2)`` is the vehicle."""

    kernels: Tensor
    heading_index: int


@dataclass(frozen=True)
class ScoreMap:
    """Score of one frame for the vehicle at each cell of the north-up grid ``(H, W)`` (best over yaws)."""

    scores: Tensor
    heading_index: int  # the map grid the frame was scored on
    template: FrameTemplate | None = None  # kept to verify retrieved places (relocalizer)


def frame_template(feature_map: SatelliteFeatureMap, bev: Tensor, mask: Tensor, heading_yaw: float,
                   config: MapSearchConfig) -> FrameTemplate:
    """A heading-up BEV ``(C, S, S)`` (mask ``(S, S)``) pooled to the map's cells and turned by the
    few degrees between the vehicle heading and the nearest map grid (and by each yaw offset)."""
    c, s, _ = bev.shape
    if s % config.pool or c != feature_map.features.shape[1]:
        raise ValueError(f"BEV {tuple(bev.shape)} does not fit the map ({feature_map.features.shape[1]} channels, "
                         f"pool {config.pool})")
    d = feature_map.nearest_heading(heading_yaw)
    yaws = heading_yaw - float(feature_map.headings[d]) + yaw_candidates(config.yaw_range_deg, config.yaw_step_deg,
                                                                          bev.device)
    rotated, rotated_mask = rotate_bev(bev[None], mask[None], yaws)
    template = F.avg_pool2d(rotated[0].float(), config.pool).cpu()  # (Y, C, s, s)
    template_mask = F.avg_pool2d(rotated_mask[0, :, None].float(), config.pool)[:, 0].cpu() > 0.5
    template = template * template_mask[:, None]
    return FrameTemplate(template / template_norm(template, template_mask)[:, None, None, None], d)


def score_map(feature_map: SatelliteFeatureMap, bev: Tensor, mask: Tensor, heading_yaw: float,
              config: MapSearchConfig) -> ScoreMap:
    """Correlate one heading-up BEV ``(C, S, S)`` (mask ``(S, S)``) with the whole map.

    Scored on the grid nearest the vehicle heading with the frame's :func:`frame_template`, as the
    registration scores (mean per-cell similarity of the RMS-normalised template); the result is
    resampled to the north-up grid, so that the frames of a trajectory can be summed whatever the
    headings they were scored at.
    """
    template = frame_template(feature_map, bev, mask, heading_yaw, config)
    d, size = template.heading_index, template.kernels.shape[-1]
    h, w = feature_map.shape
    if h < size or w < size:
        raise ValueError(f"feature map {h}x{w} is smaller than the {size}-cell template")
    spectrum = torch.fft.rfft2(template.kernels, s=(h, w))
    corr = torch.fft.irfft2((feature_map.spectrum(d)[None] * spectrum.conj()).sum(1), s=(h, w))  # channels summed
    scores = corr[:, : h - size + 1, : w - size + 1].amax(0)  # template top-left at (r, c): vehicle at + o
    inside = feature_map.covered(d, size)
    floor = float(scores[inside].min()) if inside.any() else 0.0
    scores = torch.where(inside, scores, torch.tensor(floor))
    # resample: north-up cell -> ENU -> cell of grid d -> template top-left index
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    row_d, col_d = feature_map.en_to_cell(*feature_map.cell_to_en(rows, cols), float(feature_map.headings[d]))
    o = (size - 1) / 2
    span = max(h - size, 1)  # template top-left positions run 0..h - size
    sample = torch.stack([(col_d - o) / span * 2 - 1, (row_d - o) / span * 2 - 1], -1)
    resampled = F.grid_sample(scores[None, None], sample[None], mode="bilinear", padding_mode="border",
                              align_corners=True)[0, 0]
    outside = (sample.abs() > 1).any(-1)
    return ScoreMap(resampled.masked_fill(outside, floor), d, template)


class SequenceSearch:
    """Score maps of the recent trajectory, aligned by dead reckoning and summed.

    ``add`` takes each frame's position in any ENU-aligned local frame (odometry rotated by the
    IMU heading); only its differences matter. The newest frame is always used; older ones are kept
    ``frame_spacing_m`` apart, so the window spans about ``frames x spacing`` metres of travel.
    ``feature_map`` is anything with north-up ``cell_m`` and ``cell_to_en`` (a feature map or a
    :class:`~.place_index.PlaceIndex`).
    """

    def __init__(self, feature_map: SatelliteFeatureMap, config: MapSearchConfig = MapSearchConfig()) -> None:
        self.map, self.config = feature_map, config
        self.history: deque[tuple[ScoreMap, tuple[float, float]]] = deque(maxlen=config.frames)

    def reset(self) -> None:
        self.history.clear()

    def add(self, scores: ScoreMap, position_en: tuple[float, float]) -> None:
        """Append the newest frame; the previous newest stays only if it is ``frame_spacing_m`` past its predecessor."""
        if len(self.history) >= 2:
            (e1, n1), (e0, n0) = self.history[-1][1], self.history[-2][1]
            if math.hypot(e1 - e0, n1 - n0) < self.config.frame_spacing_m:
                self.history.pop()
        self.history.append((scores, position_en))

    def accumulated(self) -> Tensor:
        """Sum of the kept score maps, each shifted so that every cell means the newest frame's place."""
        if not self.history:
            raise ValueError("no frame added")
        newest, (e_now, n_now) = self.history[-1]
        total = newest.scores.clone()
        for scores, (e, n) in list(self.history)[:-1]:
            dc, dr = int(round((e - e_now) / self.map.cell_m)), int(round((n_now - n) / self.map.cell_m))
            total += shifted(scores.scores, dr, dc, float(scores.scores.min()))
        return total

    def candidates(self, count: int | None = None, separation_m: float | None = None
                   ) -> list[tuple[float, float, float]]:
        """Distinct places ``(east, north, mean score)`` of the newest frame, best first (by default
        ``config.candidates`` of them, ``config.min_separation_m`` apart)."""
        count = self.config.candidates if count is None else count
        total = self.accumulated() / len(self.history)
        values, flat = total.flatten().topk(min(total.numel(), max(400, 8 * count)))
        east, north = self.map.cell_to_en(flat // total.shape[1], flat % total.shape[1])
        return distinct_places(zip(east.tolist(), north.tolist(), values.tolist()), count,
                               self.config.min_separation_m if separation_m is None else separation_m)


def distinct_places(places: Iterable[tuple[float, float, float]], count: int, separation_m: float
                    ) -> list[tuple[float, float, float]]:
    """The first ``count`` of ``(east, north, score)`` (best first) that lie ``separation_m`` from every earlier pick."""
    chosen: list[tuple[float, float, float]] = []
    for e, n, v in places:
        if all(math.hypot(e - c[0], n - c[1]) >= separation_m for c in chosen):
            chosen.append((e, n, v))
            if len(chosen) == count:
                break
    return chosen


def shifted(grid: Tensor, dr: int, dc: int, fill: float, size: tuple[int, int] | None = None) -> Tensor:
    """``out[..., r, c] = grid[..., r + dr, c + dc]``, ``fill`` where that falls outside ``grid``;
    ``out`` is ``size`` ``(rows, cols)`` (default: the grid's own), so this also crops a window."""
    h, w = grid.shape[-2:]
    rows, cols = (h, w) if size is None else size
    out = grid.new_full((*grid.shape[:-2], rows, cols), fill)
    r0, r1, c0, c1 = max(0, -dr), min(rows, h - dr), max(0, -dc), min(cols, w - dc)
    if r0 < r1 and c0 < c1:
        out[..., r0:r1, c0:c1] = grid[..., r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    return out
