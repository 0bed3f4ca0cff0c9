"""Registrars: one interface for the learned model and the training-free baseline.

Both take the same batch (the dict that
:class:`~g2s_localization.data.registration_dataset.KittiRegistrationDataset` yields, or one built by
:meth:`Registrar.localize` from a live image and the tile cache) and return a
:class:`~.correlation.PoseEstimate` in the prior's heading frame; :func:`to_map_frame` turns it
into an absolute ENU pose with covariance. One code path on CUDA and CPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

from g2s_localization.cameras.bev import bev_pixels, pixels_to_grid, project_image_to_bev
from g2s_localization.cameras.model import CameraModel
from g2s_localization.cameras.pinhole import rotation_ground_from_camera
from g2s_localization.config import from_dict
from g2s_localization.geo.geodesy import EnuFrame, wrap_angle
from g2s_localization.geo.tiles import TileCache
from g2s_localization.registration.checkpoints import CheckpointError, load_model_weights, read_checkpoint
from g2s_localization.registration.correlation import (
    Peak,
    PoseEstimate,
    ScoreVolume,
    correlate,
    pool_search_inputs,
    pose_from_scores,
    refine_peak,
    rotate_bev,
    volume_peak,
    yaw_candidates,
)
from g2s_localization.registration.model import (
    G2SRegistrationNet, ModelConfig, camera_bev_pixels, edge_features, erode, grey,
)

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "g2s_synthetic.safetensors"
BASELINE_TEMPERATURE = 0.0082  # the edge baseline's softmax temperature (see BaselineRegistrar)
EDGE_CHANNELS = 2  # with ModelConfig.edge_prior, the first channels are the baseline's edges / sqrt(2)


@dataclass(frozen=True)
class RegistrationResult:
    """An absolute pose of base_link: WGS84 position, ENU yaw, covariance over (east, north, yaw)."""

    lat_deg: float
    lon_deg: float
    yaw_rad: float
    covariance: NDArray[np.float64]  # (3, 3) m^2 / rad^2, ENU east, north, yaw
    confidence: float
    satellite: NDArray[np.uint8] | None = None  # the heading-aligned patch used (SA-Occ BEV prior)
    reference_support: float = math.nan  # training-free features' probability near the pose (nan: unchecked)


@dataclass
class SearchResult:
    """Coarse score volume (likelihood and covariance) and the refined peak (the estimate)."""

    volume: ScoreVolume
    peak: Peak
    resolution: tuple[float, float]  # (metres, rad) steps of the search that found ``peak``
    reference: ScoreVolume | None = None  # the training-free features' coarse volume (cross-check)


def coarse_volume(bev: Tensor, mask: Tensor, satellite: Tensor, config: ModelConfig,
                  radius_m: Tensor | None = None) -> ScoreVolume:
    """Every pose of the window on pooled cells and coarse yaws: ``(B, K, D, D)`` scores."""
    cfg = config
    coarse_bev, coarse_mask, coarse_sat = pool_search_inputs(bev, mask, satellite, cfg.coarse_pool)
    yaws = yaw_candidates(cfg.yaw_range_deg, cfg.yaw_step_deg, bev.device).to(bev.dtype)
    rotated, rotated_mask = rotate_bev(coarse_bev, coarse_mask, yaws)
    scores = correlate(rotated, rotated_mask, coarse_sat, cfg.search_cells // cfg.coarse_pool)
    cell_m = cfg.bev_metres_per_px * cfg.coarse_pool
    if radius_m is not None:
        scores = outside_radius_excluded(scores, cell_m, radius_m.to(scores.device))
    return ScoreVolume(scores, yaws, cell_m)


def coarse_to_fine(bev: Tensor, mask: Tensor, satellite: Tensor, config: ModelConfig,
                   radius_m: Tensor | None = None) -> SearchResult:
    """Score every pose in the window on pooled cells and coarse yaws, then refine around the best.

    ``bev`` ``(B, C, S, S)``, ``mask`` ``(B, S, S)``, ``satellite`` ``(B, C, L, L)`` at
    ``config.bev_metres_per_px``. The coarse volume keeps competing peaks visible (covariance);
    the fine stage gives sub-degree yaw and sub-cell translation at a fraction of a full-resolution
    search's cost. ``radius_m`` ``(B,)`` narrows each frame's window below the configured one (a
    precise GNSS fix need not consider look-alike places 20 m away).
    """
    cfg = config
    volume = coarse_volume(bev, mask, satellite, cfg, radius_m)
    fine_yaws = yaw_candidates(cfg.refine_yaw_range_deg, cfg.refine_yaw_step_deg, bev.device).to(bev.dtype)
    peak = refine_peak(bev, mask, satellite, volume_peak(volume), cfg.bev_metres_per_px, cfg.search_cells,
                       fine_yaws, cfg.refine_window_cells)
    return SearchResult(volume, peak, (cfg.bev_metres_per_px, math.radians(cfg.refine_yaw_step_deg)))


def outside_radius_excluded(scores: Tensor, cell_m: float, radius_m: Tensor) -> Tensor:
    """Volumes ``(B, K, D, D)`` with every shift farther than ``radius_m`` ``(B,)`` from the prior
    pushed far below the rest (finite, so peak fitting stays defined; its softmax weight is nil)."""
    d = scores.shape[-1]
    cells = (torch.arange(d, device=scores.device, dtype=scores.dtype) - (d - 1) / 2.0) * cell_m
    distance = torch.hypot(cells[:, None], cells[None, :])
    outside = distance[None] > radius_m.to(scores.dtype)[:, None, None]  # (B, D, D)
    floor = scores.amin(dim=(1, 2, 3), keepdim=True) - 10.0
    return torch.where(outside[:, None], floor, scores)


def to_map_frame(estimate: PoseEstimate, prior_yaw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Offsets ``(B, 2)`` east/north from the prior, yaw ``(B,)`` and ENU covariance ``(B, 3, 3)``."""
    c, s = torch.cos(prior_yaw), torch.sin(prior_yaw)
    east = estimate.forward_m.double() * c - estimate.left_m.double() * s
    north = estimate.forward_m.double() * s + estimate.left_m.double() * c
    J = torch.zeros(len(c), 3, 3, dtype=torch.float64, device=c.device)
    J[:, 0, 0], J[:, 0, 1], J[:, 1, 0], J[:, 1, 1], J[:, 2, 2] = c, -s, s, c, 1.0
    cov = J @ estimate.covariance.double() @ J.transpose(1, 2)
    yaw = torch.atan2(torch.sin(prior_yaw + estimate.yaw_offset.double()), torch.cos(prior_yaw + estimate.yaw_offset.double()))
    return torch.stack([east, north], -1), yaw, cov


class Registrar:
    """Common driver: device placement, batching from live inputs, absolute results."""

    name = "registrar"

    def __init__(self, config: ModelConfig, device: str | torch.device | None = None) -> None:
        self.config = config
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    temperature: float = 0.05
    last_timings: dict[str, float] = {}  # seconds per stage of the last frame (replaced, never mutated)
    cross_check: bool = False  # also score the training-free edge channels and compare (learned features)

    def ground_features(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """BEV features ``(B, C, S, S)`` (heading up, camera ground point at the centre), mask ``(B, S, S)``."""
        raise NotImplementedError

    def satellite_features(self, satellite: Tensor) -> Tensor:
        """Satellite image ``(B, 3, 2L, 2L)`` in 0..1 at half the BEV cell -> features ``(B, C, L, L)``."""
        raise NotImplementedError

    @torch.no_grad()
    def features(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """BEV features ``(B, C, S, S)``, BEV mask ``(B, S, S)``, satellite features ``(B, C, L, L)``."""
        return (*self.ground_features(batch), self.satellite_features(batch["satellite"]))

    @torch.no_grad()
    def search(self, batch: dict[str, Tensor]) -> SearchResult:
        """The coarse-to-fine search; ``batch["search_radius_m"]`` ``(B,)``, when present, narrows the window."""
        start = time.perf_counter()
        features = self.features(batch)
        featured = time.perf_counter()
        result = coarse_to_fine(*features, self.config, batch.get("search_radius_m"))
        if self.cross_check:  # the baseline's own volume: its edge channels, at its own scale
            bev, mask, satellite = features
            result.reference = coarse_volume(bev[:, :EDGE_CHANNELS], mask, satellite[:, :EDGE_CHANNELS] * math.sqrt(2.0),
                                             self.config, batch.get("search_radius_m"))
        self.last_timings = {**self.last_timings, "features": featured - start, "search": time.perf_counter() - featured}
        return result

    def score_volume(self, batch: dict[str, Tensor]) -> ScoreVolume:
        """The coarse search's volume (what the covariance and the plots' score maps come from)."""
        return self.search(batch).volume

    @torch.no_grad()
    def estimate(self, batch: dict[str, Tensor]) -> PoseEstimate:
        return self.estimate_from(self.search(batch))

    def estimate_from(self, result: SearchResult) -> PoseEstimate:
        """The pose, covariance and confidence a search result stands for (this registrar's temperature).

        With a reference volume, ``reference_support`` is the probability the training-free features'
        own (calibrated) softmax puts within 1 m and 1 deg of this estimate: the same measure as the
        confidence, from independent evidence."""
        estimate = pose_from_scores(result.volume, self.temperature, result.peak, result.resolution)
        if result.reference is None:
            return estimate
        support = pose_from_scores(result.reference, BASELINE_TEMPERATURE, result.peak, result.resolution).confidence
        return replace(estimate, reference_support=support)

    def localize(self, image: NDArray[np.uint8], camera: CameraModel, tiles: TileCache, prior_lat: float,
                 prior_lon: float, prior_yaw: float, camera_height_m: float = 1.65, pitch: float = 0.0,
                 roll: float = 0.0, search_radius_m: float | None = None) -> RegistrationResult:
        """Register one RGB image against the tile cache around a prior (WGS84, ENU yaw), within
        ``search_radius_m`` of it (default and at most: the configured window)."""
        cfg = self.config
        start = time.perf_counter()
        patch = tiles.crop(prior_lat, prior_lon, prior_yaw, cfg.satellite_input_px, cfg.satellite_metres_per_px)
        cropped = time.perf_counter()
        batch = live_batch(image, camera, camera_height_m, pitch, roll, cfg)
        batch["satellite"] = torch.from_numpy(patch.image).permute(2, 0, 1)[None].float() / 255.0
        if search_radius_m is not None and search_radius_m < cfg.search_radius_m:
            batch["search_radius_m"] = torch.tensor([float(search_radius_m)])
        # where a frame's time goes (seconds), for the node's diagnostics; search() adds its stages
        self.last_timings = {"crop": cropped - start, "bev": time.perf_counter() - cropped}
        est = self.estimate(batch)
        offset, yaw, cov = to_map_frame(est, torch.tensor([prior_yaw], dtype=torch.float64, device=est.forward_m.device))
        lat, lon, _ = EnuFrame(prior_lat, prior_lon).to_geodetic(
            np.array([float(offset[0, 0]), float(offset[0, 1]), 0.0]))
        return RegistrationResult(float(lat), float(lon), float(wrap_angle(float(yaw[0]))),
                                  cov[0].cpu().numpy(), float(est.confidence[0]), patch.image, est.support_at(0))


def live_batch(image: NDArray[np.uint8], camera: CameraModel, camera_height_m: float, pitch: float,
               roll: float, config: ModelConfig) -> dict[str, Tensor]:
    """A batch of one from a live RGB image and its camera model (pinhole, raw with lens distortion,
    or a panorama facing the prior heading), without the satellite entry: the BEV cell -> pixel map
    comes from the model itself. Bad shapes raise ValueError."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the camera is {camera.width}x{camera.height}")
    t = lambda x: torch.tensor([x], dtype=torch.float32)  # noqa: E731
    pixels, seen = bev_pixels(camera.project, rotation_ground_from_camera(t(pitch), t(roll)), t(camera_height_m),
                              config.bev_size, config.bev_metres_per_px)
    return {"image": torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0,
            "bev_pixels": pixels, "bev_seen": seen, "camera_height": t(camera_height_m), "pitch": t(pitch),
            "roll": t(roll)}


class LearnedRegistrar(Registrar):
    name = "g2s-net"

    def __init__(self, net: G2SRegistrationNet, device: str | torch.device | None = None,
                 temperature: float | None = None) -> None:
        super().__init__(net.config, device)
        self.net = net.to(self.device).eval()
        self.temperature = float(net.temperature.detach()) if temperature is None else temperature
        self.cross_check = net.config.edge_prior

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_WEIGHTS, device: str | torch.device | None = None
                        ) -> "LearnedRegistrar":
        """Weights from safetensors only; a corrupt or mismatched file raises CheckpointError."""
        tensors, meta = read_checkpoint(path)
        model_cfg = meta.get("config", {}).get("model")
        if not isinstance(model_cfg, dict):
            raise CheckpointError(f"{path}: metadata lacks the model configuration")
        try:
            config = from_dict(ModelConfig, model_cfg)
        except ValueError as exc:
            raise CheckpointError(f"{path}: model configuration does not fit this version: {exc}") from exc
        net = G2SRegistrationNet(config)
        load_model_weights(net, tensors, str(path))
        calibrated = meta.get("extra", {}).get("calibrated_temperature")
        return cls(net, device, float(calibrated) if calibrated else None)

    @torch.no_grad()
    def ground_features(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        d = self.device
        return self.net.ground_bev(batch["image"].to(d), *camera_bev_pixels(batch, self.config, d))

    @torch.no_grad()
    def satellite_features(self, satellite: Tensor) -> Tensor:
        return self.net.satellite_features(satellite.to(self.device))


class BaselineRegistrar(Registrar):
    """Training-free: bird's-eye projection of the image, edge features, correlation over x, y, yaw.

    The default temperature (0.0082) was fitted with :func:`~g2s_localization.evaluation.registration_eval.calibrate_temperature` on
    160 frames of the synthetic unseen-town validation split (val2); it makes the 95 % ellipsoids
    hold about 95 % of truths there.
    """

    name = "edge-ncc baseline"

    def __init__(self, config: ModelConfig = ModelConfig(), temperature: float = BASELINE_TEMPERATURE,
                 device: str | torch.device | None = None) -> None:
        super().__init__(config, device)
        self.temperature = temperature

    @torch.no_grad()
    def ground_features(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        image = batch["image"].to(self.device)
        h, w = image.shape[-2:]
        grid, valid = pixels_to_grid(*camera_bev_pixels(batch, self.config, self.device), (w, h))
        return edge_features(project_image_to_bev(grey(image), grid, valid)), erode(valid)

    @torch.no_grad()
    def satellite_features(self, satellite: Tensor) -> Tensor:
        # no rescaling: correlations divide by the template's RMS
        return edge_features(F.avg_pool2d(grey(satellite.to(self.device)), 2))


class PriorRegistrar(Registrar):
    """The raw prior as an 'estimate': the comparison row every figure needs."""

    name = "prior only"

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__(config, "cpu")

    def estimate(self, batch: dict[str, Tensor]) -> PoseEstimate:
        b = batch["image"].shape[0]
        r, y = self.config.search_radius_m, math.radians(self.config.yaw_range_deg)
        cov = torch.diag(torch.tensor([r * r / 3, r * r / 3, y * y / 3])).expand(b, 3, 3)  # uniform window
        zero = torch.zeros(b)
        return PoseEstimate(zero, zero, zero, cov, torch.zeros(b), torch.zeros(b, 1, 1, 1))


def registrar_from_weights(weights: str | Path = "", device: str | torch.device | None = None) -> Registrar:
    """'' = the shipped weights, 'baseline' = the training-free registrar, else a safetensors path
    (the node's ``weights`` parameter); a bad file raises CheckpointError (a ValueError)."""
    if str(weights) == "baseline":
        return BaselineRegistrar(device=device)
    return LearnedRegistrar.from_checkpoint(weights or DEFAULT_WEIGHTS, device)
