"""Satellite feature maps of the whole cache: built, saved, loaded, and addressed cell <-> ENU.

The registrar's satellite features over the cache (:func:`build_feature_map`) are what the LPN
place index (:mod:`.place_index`) is built from, what verifies the index's retrievals, and what
:mod:`.map_search` correlates a frame's BEV with, at the registration's own discrimination.

Conventions: every grid is square with its centre cell ``((H-1)/2, (W-1)/2)`` at ``origin``;
grid ``d`` is heading-up at ``headings[d]`` (north-up: row 0 north, column 0 west). Score maps
are on the north-up grid: ``(r, c)`` holds the score of the vehicle standing at that cell's
centre. Positions are ENU metres from ``origin``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from g2s_localization.geo.tile_sources import TileError
from g2s_localization.geo.tiles import TileCache
from g2s_localization.registration.registrars import Registrar

FORMAT = "g2s-feature-map-2"  # features of the valid cells only
FORMAT_WHOLE_GRID = "g2s-feature-map-1"  # read too
NORTH_UP_YAW = math.pi / 2  # ENU yaw of 'up' in a north-up map


def read_tagged(path: str | Path, fmt: str, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file whose metadata says ``format: fmt``; a foreign file
    raises ValueError, an unreadable one SafetensorError or OSError."""
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format") != fmt:
        raise ValueError(f"not a g2s {what}")
    return tensors, meta


def grid_cell_to_en(shape: tuple[int, int], cell_m: float, row: Tensor | float, col: Tensor | float,
                    heading: float) -> tuple[Tensor, Tensor]:
    """Cell ``(row, col)`` of a square grid heading-up at ENU yaw ``heading``, centred on the origin
    -> ENU metres (east, north) from the origin."""
    h, w = shape
    right = (torch.as_tensor(col, dtype=torch.float32) - (w - 1) / 2) * cell_m
    forward = ((h - 1) / 2 - torch.as_tensor(row, dtype=torch.float32)) * cell_m
    s, c = math.sin(heading), math.cos(heading)
    return right * s + forward * c, -right * c + forward * s


def grid_en_to_cell(shape: tuple[int, int], cell_m: float, east: Tensor, north: Tensor, heading: float
                    ) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`grid_cell_to_en`: fractional ``(row, col)``."""
    h, w = shape
    s, c = math.sin(heading), math.cos(heading)
    right, forward = east * s - north * c, east * c + north * s
    return (h - 1) / 2 - forward / cell_m, right / cell_m + (w - 1) / 2


def nearest_heading(headings: Tensor, yaw: float) -> int:
    """Index of the heading (ENU yaw, rad) closest to ``yaw``, across the +-pi wrap."""
    return int(torch.remainder(headings - yaw + math.pi, 2 * math.pi).sub(math.pi).abs().argmin())


@dataclass(frozen=True)
class MapSearchConfig:
    """Defaults: 1.6 m search cells, +-6 deg around the compass, 8 frames 8 m apart, 3 candidates."""

    pool: int = 4  # registration cells per search cell
    yaw_range_deg: float = 6.0  # around the IMU heading (compass error + vehicle slip)
    yaw_step_deg: float = 2.0
    frames: int = 8  # score maps summed along the recent trajectory
    frame_spacing_m: float = 8.0  # travel between kept frames: far apart views add new evidence
    candidates: int = 3  # distinct places handed to fine registration
    min_separation_m: float = 20.0
    temperature: float = 0.02  # of the candidates' softmax; see benchmarks/relocalization.py --fit
    refine_radius_m: float = 4.0  # fine registration window around each place: the track already pins it to a cell
    retrieved: int = 100  # places an LPN place index hands on to verification against a feature map
    retrieval_separation_m: float = 9.6  # between retrieved places (twice the index's 4.8 m lattice)
    verify_radius_m: float = 6.4  # verification searches this far around each retrieved place

    def __post_init__(self) -> None:
        if min(self.pool, self.frames, self.candidates, self.retrieved) < 1 or not self.temperature > 0:
            raise ValueError("pool, frames, candidates and retrieved must be at least 1 and temperature positive")
        if not (self.yaw_step_deg > 0 and self.yaw_range_deg >= 0 and self.frame_spacing_m >= 0
                and self.refine_radius_m > 0 and self.verify_radius_m >= 0 and self.retrieval_separation_m >= 0):
            raise ValueError("yaw_step_deg and refine_radius_m must be positive; yaw_range_deg, frame_spacing_m, "
                             "verify_radius_m and retrieval_separation_m non-negative")


@dataclass
class SatelliteFeatureMap:
    """Satellite features of the registrar at ``cell_m`` on ``D`` square grids ``(D, C, H, W)``, grid
    ``d`` heading-up at ENU yaw ``headings[d]`` (its rows run against that heading), all centred on
    ``origin``; ``valid`` ``(D, H, W)``.

    Why several headings: neither the learned features nor the signed edge channels are rotation
    invariant (a gradient's channels do not turn with the image), so a BEV may only be rotated by
    a few degrees before it is compared, as in the registration's own +-10 deg search.
    """

    origin: tuple[float, float]  # WGS84 lat, lon of the centre cell
    cell_m: float
    features: Tensor
    valid: Tensor
    headings: Tensor  # (D,) ENU yaw of each grid's 'up', rad
    registrar_name: str = ""
    _spectra: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _covered: dict[tuple[int, int], Tensor] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.features.shape[-2]), int(self.features.shape[-1])

    def cell_to_en(self, row: Tensor | float, col: Tensor | float, heading: float = NORTH_UP_YAW
                   ) -> tuple[Tensor, Tensor]:
        """Cell ``(row, col)`` of the grid heading-up at ``heading`` -> ENU metres from the origin."""
        return grid_cell_to_en(self.shape, self.cell_m, row, col, heading)

    def en_to_cell(self, east: Tensor, north: Tensor, heading: float) -> tuple[Tensor, Tensor]:
        return grid_en_to_cell(self.shape, self.cell_m, east, north, heading)

    def nearest_heading(self, yaw: float) -> int:
        return nearest_heading(self.headings, yaw)

    def spectrum(self, d: int) -> Tensor:
        if d not in self._spectra:
            self._spectra[d] = torch.fft.rfft2(self.features[d].float())
        return self._spectra[d]

    def prepare(self) -> None:
        """Compute every grid's spectrum now (about 4 bytes per cell and channel), so that no
        frame pays for it later: a turn onto a new heading would otherwise cost seconds on 1 km^2."""
        for d in range(len(self.headings)):
            self.spectrum(d)

    def covered(self, d: int, size: int) -> Tensor:
        """``(H - size + 1, W - size + 1)``: windows of ``size`` cells of grid ``d`` wholly on valid cells."""
        if (d, size) not in self._covered:
            invalid = (~self.valid[d]).float().cumsum(0).cumsum(1)
            padded = F.pad(invalid, (1, 0, 1, 0))
            window = padded[size:, size:] - padded[:-size, size:] - padded[size:, :-size] + padded[:-size, :-size]
            self._covered[(d, size)] = window < 0.5
        return self._covered[(d, size)]

    def save(self, path: str | Path) -> Path:
        """Features of the valid cells only (``(N, C)`` in cell order): a shard's file holds its part."""
        meta = {"format": FORMAT, "origin": json.dumps(self.origin), "cell_m": repr(self.cell_m),
                "registrar": self.registrar_name, "channels": str(self.features.shape[1])}
        cells = self.features.permute(0, 2, 3, 1)[self.valid].half().contiguous()
        save_file({"cell_features": cells, "valid": self.valid.to(torch.uint8).contiguous(),
                   "headings": self.headings.float().contiguous()}, str(path), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "SatelliteFeatureMap":
        """Safetensors only; a missing, corrupt or foreign file raises ValueError."""
        try:
            try:
                tensors, meta = read_tagged(path, FORMAT, "feature map")
                valid, cells = tensors["valid"].bool(), tensors["cell_features"].float()
                if cells.shape != (int(valid.sum()), int(meta["channels"])):
                    raise ValueError("cell features do not match the valid cells")
                features = torch.zeros(valid.shape[0], valid.shape[1], valid.shape[2], cells.shape[1])
                features[valid] = cells
                features = features.permute(0, 3, 1, 2).contiguous()
            except ValueError as exc:  # the first format kept the whole grid
                if "not a g2s" not in str(exc):
                    raise
                tensors, meta = read_tagged(path, FORMAT_WHOLE_GRID, "feature map")
                features, valid = tensors["features"].float(), tensors["valid"].bool()
            origin = tuple(float(v) for v in json.loads(meta["origin"]))
            cell_m, headings = float(meta["cell_m"]), tensors["headings"].float()
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read feature map {path}: {exc}") from exc
        if (features.ndim != 4 or valid.shape != (features.shape[0], *features.shape[2:])
                or headings.shape != (features.shape[0],) or not (cell_m > 0 and math.isfinite(cell_m))):
            raise ValueError(f"feature map {path}: inconsistent shapes or cell size")
        if not (torch.isfinite(features).all() and torch.isfinite(headings).all()):
            raise ValueError(f"feature map {path}: non-finite values")
        return cls((origin[0], origin[1]), cell_m, features, valid, headings, meta.get("registrar", ""))


@torch.no_grad()
def build_feature_map(tiles: TileCache, registrar: Registrar, origin: tuple[float, float], half_extent_m: float,
                      pool: int = 4, block_cells: int = 128, headings: int = 16,
                      progress: bool = True, shard: tuple[int, int] = (0, 1)) -> SatelliteFeatureMap:
    """The registrar's satellite features over ``origin +- half_extent_m`` on ``headings`` grids, in blocks.

    Each block is computed on a crop with a margin (the encoder's receptive field), so a grid
    equals one big forward pass; blocks outside the cache are left invalid, never padded.
    ``shard = (k, n)`` computes only every ``n``-th block from the ``k``-th: ``n`` independent
    workers build the shards and :func:`merge_feature_maps` joins them into the whole map, equal
    to one worker's (blocks never share a pooled cell).
    """
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    from g2s_localization.geo.geodesy import EnuFrame

    cfg = registrar.config
    cell = cfg.bev_metres_per_px
    per_block = block_cells - block_cells % pool
    cells = int(math.ceil(2 * half_extent_m / cell / per_block)) * per_block
    margin = 16  # feature cells each side: covers the encoder's dilated stack and the edge filter window
    yaws = NORTH_UP_YAW + torch.arange(headings, dtype=torch.float64) * (2 * math.pi / headings)
    yaws = torch.remainder(yaws + math.pi, 2 * math.pi) - math.pi
    frame = EnuFrame(*origin)
    grid = SatelliteFeatureMap(origin, cell, torch.zeros(1, 1, cells, cells), torch.zeros(1, cells, cells), yaws)
    features = valid = None
    jobs = [(d, r, c) for d in range(headings) for r in range(0, cells, per_block) for c in range(0, cells, per_block)]
    for d, r0, c0 in tqdm(jobs[index::count], desc="feature map", disable=not progress, unit="block"):
        heading = float(yaws[d])
        east, north = grid.cell_to_en(r0 + (per_block - 1) / 2, c0 + (per_block - 1) / 2, heading)
        lat, lon, _ = frame.to_geodetic(np.array([float(east), float(north), 0.0]))
        side = 2 * (per_block + 2 * margin)  # satellite input is at half the feature cell size
        try:
            patch = tiles.crop(float(lat), float(lon), heading, side, cfg.satellite_metres_per_px).image
        except TileError:
            continue
        image = torch.from_numpy(patch).permute(2, 0, 1)[None].float().to(registrar.device) / 255.0
        block = registrar.satellite_features(image)[0, :, margin:-margin, margin:-margin].cpu()
        block = F.avg_pool2d(block[None], pool)[0]  # pooled now: blocks never share a pooled cell
        if features is None:
            features = torch.zeros(headings, block.shape[0], cells // pool, cells // pool)
            valid = torch.zeros(headings, cells // pool, cells // pool, dtype=torch.bool)
        rows, cols = slice(r0 // pool, (r0 + per_block) // pool), slice(c0 // pool, (c0 + per_block) // pool)
        features[d, :, rows, cols] = block
        valid[d, rows, cols] = True
    if features is None and count > 1:  # this shard's blocks all lie outside the cache: an empty part
        probe = torch.zeros(1, 3, 4 * margin, 4 * margin, device=registrar.device)  # only its channel count matters
        features = torch.zeros(headings, registrar.satellite_features(probe).shape[1], cells // pool, cells // pool)
        valid = torch.zeros(headings, cells // pool, cells // pool, dtype=torch.bool)
    if features is None:
        raise ValueError(f"no part of {2 * half_extent_m:.0f} m square around {origin} is inside the tile cache")
    return SatelliteFeatureMap(origin, cell * pool, features, valid, yaws.float(), registrar.name)




def merge_feature_maps(parts: list[SatelliteFeatureMap]) -> SatelliteFeatureMap:
    """The whole map from the shards of one build (:func:`build_feature_map` with ``shard``): each
    cell from the one shard that computed it. Shards of different builds, or overlapping ones, raise
    ValueError."""
    if not parts:
        raise ValueError("no feature map shards to merge")
    first = parts[0]
    for part in parts[1:]:
        if (part.origin != first.origin or part.cell_m != first.cell_m or part.features.shape != first.features.shape
                or not torch.equal(part.headings, first.headings) or part.registrar_name != first.registrar_name):
            raise ValueError("feature map shards come from different builds (origin, cells, headings or registrar)")
    valid = torch.stack([p.valid for p in parts])
    if (valid.sum(0) > 1).any():
        raise ValueError("feature map shards overlap: the same shard given twice?")
    features = torch.zeros_like(first.features)
    for part in parts:
        features += part.features * part.valid[:, None]
    if not valid.any():
        raise ValueError("no part of the area is inside the tile cache")
    return SatelliteFeatureMap(first.origin, first.cell_m, features, valid.any(0), first.headings.clone(),
                               first.registrar_name)
