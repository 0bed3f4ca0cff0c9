"""The learned ground-to-satellite registration network (after Shi et al., ECCV 2024).

Ground features are projected to a bird's-eye grid by camera geometry (no learned lifting),
satellite features are computed on the prior-centred, heading-aligned patch, and a dense
yaw x translation correlation (:mod:`.correlation`) scores every pose in the search window.
The default feature extractor is small on purpose (a vehicle CPU at 10 Hz, training on a laptop);
``ModelConfig.backbone`` swaps in a paper-class ResNet-UNet (:mod:`.backbones`) for GPUs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from g2s_localization.cameras.bev import pinhole_bev_pixels, pixels_to_grid, project_image_to_bev
from g2s_localization.cameras.pinhole import rotation_ground_from_camera
from g2s_localization.registration.backbones import BACKBONES, conv_block, make_encoder
from g2s_localization.registration.correlation import (
    PoseEstimate,
    ScoreVolume,
    correlate,
    pose_from_scores,
    rotate_bev,
    yaw_candidates,
)



@dataclass(frozen=True)
class ModelConfig:
    """Resolutions and search window. Defaults: KITTI protocol (+-20 m, +-10 deg)."""

    ground_width: int = 512
    ground_height: int = 160
    feature_dim: int = 8
    width: int = 16
    bev_size: int = 160  # 64 m: far ground is what pins yaw down (a 38 m grid gave 0.8 deg medians)
    bev_metres_per_px: float = 0.4
    search_radius_m: float = 20.0
    yaw_range_deg: float = 10.0
    yaw_step_deg: float = 2.0  # coarse yaw step; training scores at this step too
    edge_prior: bool = True  # add fixed edge features beside the learned ones (see G2SRegistrationNet)
    coarse_pool: int = 2  # the coarse search runs on cells this many times larger ...
    refine_window_cells: int = 3  # ... then every shift within this many full cells of its peak ...
    refine_yaw_range_deg: float = 1.5  # ... at yaw offsets within this range of its yaw ...
    refine_yaw_step_deg: float = 0.25  # ... spaced this finely, is scored at full resolution
    backbone: str = "small"  # feature extractor of both branches: "small" (CPU default), "resnet18", "resnet34"

    def __post_init__(self) -> None:
        if self.bev_size % self.coarse_pool or self.search_cells % self.coarse_pool:
            raise ValueError(f"bev_size ({self.bev_size}) and search cells ({self.search_cells}) must divide by "
                             f"coarse_pool ({self.coarse_pool})")
        if not 0 < self.refine_window_cells <= self.search_cells:
            raise ValueError(f"refine_window_cells must be in 1..{self.search_cells}")
        if self.yaw_step_deg <= 0 or self.refine_yaw_step_deg <= 0:
            raise ValueError("yaw steps must be positive")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")

    @property
    def search_cells(self) -> int:
        return int(round(self.search_radius_m / self.bev_metres_per_px))

    @property
    def satellite_cells(self) -> int:
        return self.bev_size + 2 * self.search_cells

    @property
    def satellite_input_px(self) -> int:
        """The satellite encoder halves resolution once: input is twice the feature size."""
        return 2 * self.satellite_cells

    @property
    def satellite_metres_per_px(self) -> float:
        return self.bev_metres_per_px / 2.0


class BevRefiner(nn.Module):
    """Smooths projected features on the ground plane; masked cells stay empty."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(conv_block(feature_dim + 1, 16), nn.Conv2d(16, feature_dim, 3, padding=1))

    def forward(self, bev: Tensor, mask: Tensor) -> Tensor:
        m = mask.unsqueeze(1).to(bev.dtype)
        return (bev + self.net(torch.cat([bev, m], 1))) * m


def unit_channels(x: Tensor, eps: float = 1e-12) -> Tensor:
    """L2-normalise ``(B, C, H, W)`` over channels; same as ``F.normalize(x, dim=1)``, several times
    faster on CPU (the library's norm over the strided channel dimension dominated latency)."""
    return x * torch.rsqrt((x * x).sum(1, keepdim=True).clamp_min(eps * eps))


def grey(image: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB in 0..1 -> ``(B, 1, H, W)`` luma."""
    return (0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]).unsqueeze(1)


def edge_features(luma: Tensor, window: int = 15) -> Tensor:
    """Blurred image gradients ``(B, 2, H, W)`` divided by their local RMS: contrast-invariant, colour-free."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=luma.device,
                          dtype=luma.dtype) / 8.0
    blurred = F.avg_pool2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), 3, 1)
    padded = F.pad(blurred, (1, 1, 1, 1), mode="replicate")
    grad = torch.cat([F.conv2d(padded, kernel.view(1, 1, 3, 3)), F.conv2d(padded, kernel.t().reshape(1, 1, 3, 3))], 1)
    energy = (grad**2).sum(1, keepdim=True)
    for kernel_size, padding in (((window, 1), (window // 2, 0)), ((1, window), (0, window // 2))):  # separable box
        energy = F.avg_pool2d(energy, kernel_size, 1, padding, count_include_pad=False)
    return grad / (energy.sqrt() + 1e-3)


def erode(mask: Tensor, cells: int = 2) -> Tensor:
    """Shrink a ``(B, S, S)`` validity mask: gradients at the wedge border are not scene edges."""
    return F.max_pool2d((~mask).float().unsqueeze(1), 2 * cells + 1, 1, cells).squeeze(1) < 0.5


class G2SRegistrationNet(nn.Module):
    """Two-branch network plus the shared correlation head; forward returns the score volume.

    With ``edge_prior`` every BEV / satellite cell carries two fixed, training-free edge channels
    beside the learned ones, and the learned channels are scaled by a learned gain. Training then
    starts from the working geometric baseline and can only add what the data supports, which
    matters when weak labels and a CPU budget allow a short training run.
    """

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        self.ground_encoder = make_encoder(config.backbone, config.feature_dim, config.width)
        self.satellite_encoder = make_encoder(config.backbone, config.feature_dim, config.width)
        self.bev_refiner = BevRefiner(config.feature_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.01 if config.edge_prior else 0.05)))
        self.learned_gain = nn.Parameter(torch.tensor(0.3 if config.edge_prior else 1.0))
        # Mixed precision for the encoders only (where the FLOPs are); BEV projection, the FFT
        # correlation and the softmax stay float32. None = float32 throughout. Not saved.
        self.encoder_autocast: torch.dtype | None = None

    def encode(self, encoder: nn.Module, image: Tensor) -> Tensor:
        """``encoder(image)`` under autocast when :attr:`encoder_autocast` is set; float32 out."""
        if self.encoder_autocast is None:
            return encoder(image)
        with torch.autocast(image.device.type, dtype=self.encoder_autocast):
            return encoder(image).float()

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def ground_bev(self, image: Tensor, pixels: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
        """Camera image ``(B, 3, H, W)`` and where each BEV cell's ground point lies in it (``pixels``
        ``(B, S, S, 2)``, ``seen`` ``(B, S, S)``: :func:`camera_bev_pixels`, any camera model) -> BEV
        features ``(B, C, S, S)`` (camera ground point at the centre, forward up) and mask ``(B, S, S)``."""
        cfg = self.config
        h, w = image.shape[-2:]
        image_full = image
        image = F.interpolate(image, (cfg.ground_height, cfg.ground_width), mode="bilinear", align_corners=False)
        features = self.encode(self.ground_encoder, image)
        fh, fw = features.shape[-2:]
        grid, valid = pixels_to_grid(pixels, seen, (w, h), (fw, fh))
        bev = unit_channels(self.bev_refiner(project_image_to_bev(features, grid, valid), valid))
        if not cfg.edge_prior:
            return bev, valid
        grid_full, _ = pixels_to_grid(pixels, seen, (w, h))
        edges = edge_features(project_image_to_bev(grey(image_full), grid_full, valid))
        mask = erode(valid)
        return torch.cat([edges / math.sqrt(2.0), self.learned_gain * bev], 1) * mask.unsqueeze(1), mask

    def satellite_features(self, satellite: Tensor) -> Tensor:
        """Heading-aligned patch ``(B, 3, 2L, 2L)`` at half the BEV cell size -> ``(B, C, L, L)``."""
        learned = unit_channels(self.encode(self.satellite_encoder, satellite))
        if not self.config.edge_prior:
            return learned
        edges = edge_features(F.avg_pool2d(grey(satellite), 2))
        return torch.cat([edges / math.sqrt(2.0), self.learned_gain * learned], 1)

    def score_volume(self, bev: Tensor, mask: Tensor, satellite_features: Tensor) -> ScoreVolume:
        cfg = self.config
        yaws = yaw_candidates(cfg.yaw_range_deg, cfg.yaw_step_deg, bev.device).to(bev.dtype)
        rotated, rotated_mask = rotate_bev(bev, mask, yaws)
        scores = correlate(rotated, rotated_mask, satellite_features, cfg.search_cells)
        return ScoreVolume(scores, yaws, cfg.bev_metres_per_px)

    def forward(self, image: Tensor, K: Tensor, camera_height: Tensor, pitch: Tensor, roll: Tensor,
                satellite: Tensor) -> ScoreVolume:
        bev, mask = self.ground_bev(image, *pinhole_bev_pixels(K, rotation_ground_from_camera(pitch, roll), camera_height,
                                                                self.config.bev_size, self.config.bev_metres_per_px))
        return self.score_volume(bev, mask, self.satellite_features(satellite))

    def estimate(self, volume: ScoreVolume) -> PoseEstimate:
        return pose_from_scores(volume, self.temperature)


def camera_bev_pixels(batch: dict[str, Tensor], config: ModelConfig, device: torch.device | str = "cpu"
                      ) -> tuple[Tensor, Tensor]:
    """Where each BEV cell lies in a batch's images: ``bev_pixels``/``bev_seen`` when the batch
    carries them (live frames, any camera model), else from its pinhole ``K`` (dataset samples)."""
    if "bev_pixels" in batch:
        return batch["bev_pixels"].to(device), batch["bev_seen"].to(device)
    R = rotation_ground_from_camera(batch["pitch"].to(device), batch["roll"].to(device))
    return pinhole_bev_pixels(batch["K"].to(device), R, batch["camera_height"].to(device), config.bev_size,
                              config.bev_metres_per_px)
