"""Relocalization without (or against) GNSS: place retrieval over the cache, then fine registration.

Each frame is scored against every place of the cache: by correlating its BEV features with a
:class:`~.feature_map.SatelliteFeatureMap`, or by its LPN descriptor against a
:class:`~.place_index.PlaceIndex`. The score maps of the recent trajectory are summed along
dead-reckoned motion. An index's ranking alone is too coarse for a 1 km town, so its best hundred
places are verified against the feature map it was built from (:func:`verify_places`: the same
correlation, only near those places). The best few distinct places are registered within a few
metres (the track has already pinned each down to a cell). The answer is the best-scoring place,
refined; its covariance also spans the other candidates in proportion to how plausible they still
are, and its confidence is that plausibility times the registration's, so a relocalization that
is not yet sure says so (and the pipeline withholds it) instead of publishing a confident wrong pose.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from torch import Tensor

from g2s_localization.cameras.model import CameraModel
from g2s_localization.geo.geodesy import EnuFrame, wrap_angle
from g2s_localization.geo.tile_sources import TileError
from g2s_localization.geo.tiles import TileCache
from g2s_localization.registration.registrars import Registrar, RegistrationResult, live_batch
from g2s_localization.relocalization.feature_map import FORMAT as FEATURE_MAP_FORMAT
from g2s_localization.relocalization.feature_map import FORMAT_WHOLE_GRID, MapSearchConfig, SatelliteFeatureMap
from g2s_localization.relocalization.map_search import (
    ScoreMap,
    SequenceSearch,
    distinct_places,
    frame_template,
    score_map,
    shifted,
)
from g2s_localization.relocalization.place_index import FORMAT as PLACE_INDEX_FORMAT
from g2s_localization.relocalization.place_index import PlaceIndex


@dataclass(frozen=True)
class Candidate:
    east_m: float  # ENU metres from the place map's origin
    north_m: float
    map_score: float  # mean over the frames of the map search's score
    weight: float  # plausibility among the candidates (softmax of the summed scores)
    result: RegistrationResult | None  # fine registration at this place; None if it failed


@dataclass(frozen=True)
class Relocalization:
    """The chosen pose plus what led to it (status, diagnostics, benchmark)."""

    result: RegistrationResult
    candidates: list[Candidate]
    frames: int  # score maps that were summed
    retrieved: int  # places the LPN index handed to verification (0: map-wide correlation or no verification)
    search_s: float
    total_s: float


def candidate_weights(mean_scores: NDArray[np.float64], frames: int, temperature: float) -> NDArray[np.float64]:
    """Softmax of the summed scores: each frame is a piece of evidence, so evidence grows with frames."""
    summed = np.asarray(mean_scores, dtype=np.float64) * frames
    weights = np.exp((summed - summed.max()) / temperature)
    return weights / weights.sum()


def load_place_map(path: str | Path) -> PlaceIndex | SatelliteFeatureMap:
    """A place index (``g2s build-place-index``) or a feature map (``g2s build-feature-map``),
    told apart by the format in the file; anything else raises ValueError."""
    try:
        with safe_open(str(path), "pt") as handle:
            kind = (handle.metadata() or {}).get("format")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if kind == PLACE_INDEX_FORMAT:
        return PlaceIndex.load(path)
    if kind in (FEATURE_MAP_FORMAT, FORMAT_WHOLE_GRID):
        return SatelliteFeatureMap.load(path)
    raise ValueError(f"{path} is neither a place index nor a feature map (format {kind!r})")


class Relocalizer:
    """Stateful: call :meth:`update` once per frame while GNSS is missing or distrusted.

    ``position_en`` is the vehicle's position in any ENU-aligned local frame (odometry rotated by
    the IMU heading); pass None when no odometry is available: then each frame stands alone.

    With a place index, ``verify_map`` (the feature map the index was built from) re-scores the
    index's best ``config.retrieved`` places by correlation along the track (:func:`verify_places`)
    before the best few are registered: retrieval narrows a city to a hundred places cheaply, the
    registration's own features tell those apart. Without it the index's ranking is final.
    """

    def __init__(self, registrar: Registrar, tiles: TileCache, place_map: PlaceIndex | SatelliteFeatureMap,
                 config: MapSearchConfig = MapSearchConfig(), verify_map: SatelliteFeatureMap | None = None) -> None:
        if verify_map is not None:
            if not isinstance(place_map, PlaceIndex):
                raise ValueError("verify_map re-scores a place index's retrievals; a feature map needs none")
            if (verify_map.origin != place_map.origin or verify_map.registrar_name != place_map.registrar_name
                    or not torch.equal(verify_map.headings, place_map.headings)):
                raise ValueError("the verification feature map is not the one the place index was built from "
                                 "(origin, headings or registrar differ)")
        self.registrar, self.tiles, self.map, self.config = registrar, tiles, place_map, config
        self.verify_map = verify_map
        # Same network, narrower window: a single frame's +-20 m search can jump to a look-alike spot
        # that the summed track has already ruled out.
        self.refiner = copy.copy(registrar)
        self.refiner.config = replace(registrar.config, search_radius_m=config.refine_radius_m)
        self.search = SequenceSearch(place_map, config)
        if isinstance(place_map, SatelliteFeatureMap):
            place_map.prepare()
        self.frame = EnuFrame(*place_map.origin)

    def reset(self) -> None:
        self.search.reset()

    def observe(self, image: NDArray[np.uint8], camera: CameraModel, heading_yaw: float,
                position_en: tuple[float, float] | None, camera_height_m: float = 1.65, pitch: float = 0.0,
                roll: float = 0.0) -> ScoreMap:
        """Score this frame over the map and add it to the trajectory. Bad input raises ValueError."""
        if not all(math.isfinite(v) for v in (heading_yaw, camera_height_m, pitch, roll)):
            raise ValueError("relocalization needs a finite IMU heading and attitude")
        batch = live_batch(image, camera, camera_height_m, pitch, roll, self.registrar.config)
        bev, mask = self.registrar.ground_features(batch)
        if isinstance(self.map, PlaceIndex):
            scores = self.map.scores(*self.map.describe(bev[0].cpu(), mask[0].cpu(), heading_yaw,
                                                        self.registrar.config.bev_metres_per_px))
            if self.verify_map is not None:
                scores = replace(scores, template=frame_template(self.verify_map, bev[0], mask[0], heading_yaw,
                                                                 self.config))
        else:
            scores = score_map(self.map, bev[0], mask[0], heading_yaw, self.config)
        if position_en is None or not all(math.isfinite(v) for v in position_en):
            self.search.reset()
            position_en = (0.0, 0.0)
        self.search.add(scores, position_en)
        return scores

    def update(self, image: NDArray[np.uint8], camera: CameraModel, heading_yaw: float,
               position_en: tuple[float, float] | None, camera_height_m: float = 1.65, pitch: float = 0.0,
               roll: float = 0.0) -> Relocalization:
        """Add this frame and relocalize it. Raises ValueError for bad input or when no candidate registers."""
        start = time.perf_counter()
        self.observe(image, camera, heading_yaw, position_en, camera_height_m, pitch, roll)
        return self.relocalize(image, camera, heading_yaw, camera_height_m, pitch, roll, start)

    def relocalize(self, image: NDArray[np.uint8], camera: CameraModel, heading_yaw: float,
                   camera_height_m: float = 1.65, pitch: float = 0.0, roll: float = 0.0,
                   start: float | None = None) -> Relocalization:
        """Register the newest observed frame (``image``) at the best places of the summed score maps."""
        start = time.perf_counter() if start is None else start
        frames, retrieved = len(self.search.history), 0
        if self.verify_map is None:
            places = self.search.candidates()
        else:
            shortlist = self.search.candidates(self.config.retrieved, self.config.retrieval_separation_m)
            retrieved = len(shortlist)
            places = distinct_places(verify_places(self.verify_map, self.search.history, shortlist,
                                                   self.config.verify_radius_m),
                                     self.config.candidates, self.config.min_separation_m)
        search_s = time.perf_counter() - start
        weights = candidate_weights(np.array([p[2] for p in places]), frames, self.config.temperature)
        candidates = []
        for (east, north, score), weight in zip(places, weights):
            lat, lon, _ = self.frame.to_geodetic(np.array([east, north, 0.0]))
            try:
                result = self.refiner.localize(image, camera, self.tiles, float(lat), float(lon), heading_yaw,
                                               camera_height_m, pitch, roll)
            except TileError:
                result = None
            candidates.append(Candidate(east, north, score, float(weight), result))
        registered = [c for c in candidates if c.result is not None]
        if not registered:
            raise ValueError("no candidate place could be registered (all at the edge of the tile cache)")
        best = max(registered, key=lambda c: c.weight)
        chosen = best.result
        covariance = chosen.covariance + self._spread(registered, chosen)
        result = RegistrationResult(chosen.lat_deg, chosen.lon_deg, chosen.yaw_rad, covariance,
                                    best.weight * chosen.confidence, chosen.satellite)
        return Relocalization(result, candidates, frames, retrieved, search_s, time.perf_counter() - start)

    def _spread(self, candidates: list[Candidate], chosen: RegistrationResult) -> NDArray[np.float64]:
        """Weighted second moment of the candidates' poses about the chosen one."""
        frame = EnuFrame(chosen.lat_deg, chosen.lon_deg)
        spread = np.zeros((3, 3))
        total = sum(c.weight for c in candidates)
        for c in candidates:
            e, n, _ = frame.to_enu(c.result.lat_deg, c.result.lon_deg)
            d = np.array([e, n, wrap_angle(c.result.yaw_rad - chosen.yaw_rad)])
            spread += (c.weight / total) * np.outer(d, d)
        return spread


def _correlate_valid(crops: Tensor, kernels: Tensor) -> Tensor:
    """``F.conv2d(crops, kernels)`` (cross-correlation, no padding): crops ``(K, C, L, L)``, kernels
    ``(Y, C, s, s)`` -> ``(K, Y, L - s + 1, L - s + 1)``. By FFT with the channels contracted per
    frequency: over twice as fast as ``conv2d`` on CPU for 40-cell kernels."""
    size, out = crops.shape[-1], crops.shape[-1] - kernels.shape[-1] + 1
    spectra = torch.einsum("kcuv,ycuv->kyuv", torch.fft.rfft2(crops), torch.fft.rfft2(kernels, s=(size, size)).conj())
    return torch.fft.irfft2(spectra, s=(size, size))[..., :out, :out]


@torch.no_grad()
def verify_places(feature_map: SatelliteFeatureMap, history: Sequence[tuple[ScoreMap, tuple[float, float]]],
                  places: Sequence[tuple[float, float, float]], radius_m: float) -> list[tuple[float, float, float]]:
    """Re-score retrieved places with the registration's own correlation, frame by frame along the track.

    For each place (where the newest frame would stand) and each north-up offset within ``radius_m``,
    every kept frame's template is correlated with the map where dead reckoning puts that frame,
    and the scores are averaged over the frames: what :func:`~.map_search.score_map` and
    :class:`~.map_search.SequenceSearch` would give at that cell, computed only near the places.
    Returns ``(east, north, mean score)`` at each place's best offset, best first. Frames need
    their :class:`~.map_search.FrameTemplate` (``ScoreMap.template``).
    """
    if not history or not places:
        raise ValueError("nothing to verify: no frame or no place")
    steps = int(math.floor(radius_m / feature_map.cell_m + 1e-9))
    grid = torch.arange(-steps, steps + 1, dtype=torch.float32) * feature_map.cell_m
    d_north, d_east = (v.flatten() for v in torch.meshgrid(-grid, grid, indexing="ij"))  # (M,)
    place = torch.tensor([p[:2] for p in places], dtype=torch.float32)  # (K, 2)
    total = torch.zeros(len(places), len(d_east))
    e_now, n_now = history[-1][1]
    for scores, (e, n) in history:
        if scores.template is None:
            raise ValueError("a frame has no correlation template: score it with the feature map's frame_template")
        kernels, d = scores.template.kernels, scores.template.heading_index
        s = kernels.shape[-1]
        row, col = feature_map.en_to_cell(place[:, :1] + (e - e_now) + d_east, place[:, 1:] + (n - n_now) + d_north,
                                          float(feature_map.headings[d]))
        top, left = row - (s - 1) / 2, col - (s - 1) / 2  # (K, M) template top-left, fractional
        base_r, base_c = top.amin(1).floor().long(), left.amin(1).floor().long()
        span = int(max(float((top.amax(1) - base_r).max()), float((left.amax(1) - base_c).max()))) + 2
        crops = torch.stack([shifted(feature_map.features[d], int(r), int(c), 0.0, (span + s - 1, span + s - 1))
                             for r, c in zip(base_r, base_c)])  # zeros off the map
        corr = _correlate_valid(crops.float(), kernels).amax(1, keepdim=True)  # (K, 1, span, span), best yaw
        sample = torch.stack([(left - base_c[:, None]) / (span - 1) * 2 - 1,
                              (top - base_r[:, None]) / (span - 1) * 2 - 1], -1)[:, :, None]
        values = F.grid_sample(corr, sample, mode="bilinear", align_corners=True)[:, 0, :, 0]  # (K, M)
        covered = feature_map.covered(d, s)
        r_i, c_i = top.round().long(), left.round().long()
        inside = (r_i >= 0) & (r_i < covered.shape[0]) & (c_i >= 0) & (c_i < covered.shape[1])
        inside &= covered[r_i.clamp(0, covered.shape[0] - 1), c_i.clamp(0, covered.shape[1] - 1)]
        floor = float(values[inside].min()) if inside.any() else -1.0
        total += torch.where(inside, values, torch.tensor(floor))
    best, at = (total / len(history)).max(1)
    verified = [(float(place[k, 0] + d_east[at[k]]), float(place[k, 1] + d_north[at[k]]), float(best[k]))
                for k in range(len(places))]
    return sorted(verified, key=lambda v: -v[2])
