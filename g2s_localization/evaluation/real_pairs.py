"""Registration on real cross-view pairs: is the answer right, and when it is wrong, does it say so?

Each pair's panorama is registered whole (facing each of several compass headings, orientation
known as in VIGOR) and as level pinhole views cut at those headings, against a heading-aligned
crop of the aerial image around priors drawn (fixed seed) inside the search window, with the
aerial's unknown ground sample distance swept over its range. The priors' spread stands for the
GNSS fix's reported covariance, which (as in the node) sets the search window and bounds where a
published pose may lie. A frame counts as *published* when it passes the node's gate
(:func:`g2s_localization.registration.reliability.publish_verdict`, the node's defaults); it is
*confidently wrong* when it is published and more than 3 m off, or its truth lies outside its
own 99 % ellipse (with the label's 1.5 m per-axis uncertainty added).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from g2s_localization.cameras.model import CameraModel
from g2s_localization.data.real_pairs import RealPair
from g2s_localization.evaluation.metrics import CONFIDENTLY_WRONG_M
from g2s_localization.geo.tiles import crop_north_up
from g2s_localization.registration.registrars import Registrar, live_batch, to_map_frame
from g2s_localization.registration.reliability import (
    CHI2_99_2DOF, position_std_m, publish_verdict, search_radius_m,
)
from g2s_localization.runtime.pipeline import PipelineConfig

LABEL_SIGMA_M = 1.5  # the pairs' labels are good to a metre or two


@dataclass(frozen=True)
class RealPairsConfig:
    """Defaults: 4 headings, 4 priors within +-8 m / +-8 deg, 3 scales across each pair's range."""

    headings_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)  # compass azimuths of the views
    views: tuple[str, ...] = ("pinhole", "panorama")  # 90 deg cuts, and the whole panorama facing the heading
    priors: int = 4
    prior_offset_m: float = 8.0
    prior_yaw_deg: float = 8.0
    scales: int = 3
    view_fov_deg: float = 90.0
    view_size: tuple[int, int] = (384, 192)
    seed: int = 0
    gate: PipelineConfig = PipelineConfig()  # its min_confidence and max_position_std_m: the node's defaults


@dataclass
class FrameRecord:
    pair: str
    view: str
    heading_deg: float
    metres_per_px: float
    error_east_m: float  # estimate - truth, ENU
    error_north_m: float
    error_m: float
    yaw_error_deg: float
    confidence: float
    position_std_m: float
    published: bool
    reason: str
    inside_99: bool

    @property
    def confidently_wrong(self) -> bool:
        return self.published and (self.error_m > CONFIDENTLY_WRONG_M or not self.inside_99)


@dataclass
class RegistrarSummary:
    name: str
    records: list[FrameRecord] = field(default_factory=list)

    def by_view(self) -> dict[str, "RegistrarSummary"]:
        views = sorted({r.view for r in self.records})
        return {v: RegistrarSummary(f"{self.name} ({v})", [r for r in self.records if r.view == v]) for v in views}

    def figures(self) -> dict[str, float | int]:
        n = len(self.records)
        published = [r for r in self.records if r.published]
        errors = np.array([r.error_m for r in self.records])
        yaw = np.array([r.yaw_error_deg for r in self.records])
        return {
            "frames": n,
            "availability": len(published) / n if n else math.nan,
            "confidently_wrong_rate": sum(r.confidently_wrong for r in self.records) / n if n else math.nan,
            "position_m_median": float(np.median(errors)) if n else math.nan,
            "yaw_deg_median": float(np.median(yaw)) if n else math.nan,
            "within_1m": float(np.mean(errors <= 1.0)) if n else math.nan,
            "within_3m": float(np.mean(errors <= 3.0)) if n else math.nan,
            "published_within_3m": (float(np.mean([r.error_m <= 3.0 for r in published])) if published
                                    else math.nan),
        }


def scales_of(pair: RealPair, count: int) -> list[float]:
    lo, hi = pair.aerial_metres_per_px_range
    return [float(x) for x in np.linspace(lo, hi, count)] if count > 1 and hi > lo else [(lo + hi) / 2.0]


def register_pair(registrar: Registrar, pair: RealPair, config: RealPairsConfig = RealPairsConfig()
                  ) -> list[FrameRecord]:
    """Every (scale, view, heading, prior) frame of one pair.

    A pinhole cut's priors are off in position and yaw. The whole panorama is north-aligned, so its
    orientation is known: it faces the prior heading exactly and only the position is off (VIGOR's
    2-DoF protocol); the registrar still searches its yaw window."""
    rng = np.random.default_rng(config.seed + sum(map(ord, pair.id)))
    panorama, model = pair.load_ground()
    aerial = pair.load_aerial()
    height_m = float(np.mean(pair.camera_height_m_range))
    records = []
    for mpp in scales_of(pair, config.scales):
        for kind in config.views:
            for heading in config.headings_deg:
                true_yaw = math.pi / 2 - math.radians(heading)
                offsets = rng.uniform(-config.prior_offset_m, config.prior_offset_m, (config.priors, 2))
                yaw_offsets = np.radians(rng.uniform(-config.prior_yaw_deg, config.prior_yaw_deg, config.priors))
                if kind == "pinhole":
                    image, camera = model.pinhole_view(panorama, heading, config.view_fov_deg, config.view_size)
                elif kind == "panorama":
                    image, camera, yaw_offsets = panorama, model.facing(heading), np.zeros(config.priors)
                else:
                    raise ValueError(f"unknown view {kind!r}: pinhole or panorama")
                records += _register_view(registrar, pair, kind, image, camera, height_m, aerial, mpp, heading,
                                          true_yaw, offsets, yaw_offsets, config.prior_offset_m, config.gate)
    return records


def _register_view(registrar: Registrar, pair: RealPair, kind: str, view: NDArray[np.uint8], camera: CameraModel,
                   height_m: float, aerial: NDArray[np.uint8], mpp: float, heading: float, true_yaw: float,
                   offsets_en: NDArray, yaw_offsets: NDArray, prior_spread_m: float, gate: PipelineConfig
                   ) -> list[FrameRecord]:
    n = len(offsets_en)
    prior_yaw = true_yaw + yaw_offsets
    cfg = registrar.config
    satellites = []
    for (east, north), yaw in zip(offsets_en, prior_yaw):
        centre = (pair.camera_px[0] + east / mpp, pair.camera_px[1] - north / mpp)
        satellites.append(crop_north_up(aerial, centre, mpp, float(yaw), cfg.satellite_input_px,
                                        cfg.satellite_metres_per_px, replicate_border=True))
    batch = {k: v.expand(n, *v.shape[1:]) for k, v in live_batch(view, camera, height_m, 0.0, 0.0, cfg).items()}
    batch["satellite"] = torch.from_numpy(np.stack(satellites)).permute(0, 3, 1, 2).float() / 255.0
    # what a GNSS receiver would report for these priors: the covariance of their uniform spread
    prior_cov = np.eye(2) * prior_spread_m**2 / 3.0
    radius = search_radius_m(prior_cov, cfg.search_radius_m)
    batch["search_radius_m"] = torch.full((n,), radius)
    search = registrar.search(batch)
    estimate = registrar.estimate_from(search)
    offset, yaw, cov = to_map_frame(estimate, torch.tensor(prior_yaw, dtype=torch.float64))
    records = []
    for i in range(n):
        error_en = offset[i].cpu().numpy() + offsets_en[i]  # estimate - truth, ENU metres
        cov_i = cov[i].cpu().numpy()
        c2 = cov_i[:2, :2] + np.eye(2) * LABEL_SIGMA_M**2
        inside = float(error_en @ np.linalg.solve(c2, error_en)) <= CHI2_99_2DOF
        yaw_err = math.degrees(abs(math.remainder(float(yaw[i]) - true_yaw, 2 * math.pi)))
        confidence = float(estimate.confidence[i])
        verdict = publish_verdict(float(yaw[i]), cov_i, confidence, gate.min_confidence,
                                  gate.max_position_std_m, offset[i].cpu().numpy(), prior_cov,
                                  estimate.support_at(i))
        records.append(FrameRecord(pair.id, kind, heading, mpp, *map(float, error_en), float(np.hypot(*error_en)),
                                   yaw_err, confidence, position_std_m(cov_i), verdict.publish,
                                   verdict.reason, inside))
    return records


def overlay(pair: RealPair, records: list[FrameRecord]) -> NDArray[np.uint8]:
    """The aerial image (RGB) with the labelled camera position (white ring) and every frame's
    estimate at its scale: green published within 3 m, red confidently wrong, grey withheld."""
    image = pair.load_aerial().copy()
    x0, y0 = pair.camera_px
    for r in records:
        x, y = x0 + r.error_east_m / r.metres_per_px, y0 - r.error_north_m / r.metres_per_px
        colour = (128, 128, 128) if not r.published else (220, 30, 30) if r.confidently_wrong else (40, 200, 40)
        cv2.circle(image, (int(round(x)), int(round(y))), 3, colour, -1, cv2.LINE_AA)
    cv2.circle(image, (int(round(x0)), int(round(y0))), 8, (255, 255, 255), 2, cv2.LINE_AA)
    return image
