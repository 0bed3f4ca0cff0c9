"""LPN descriptors over the tile cache: the descriptor route to relocalization without GNSS.

Both views are overhead images of the same footprint: the camera image projected to a
bird's-eye grid by camera geometry (vehicle at the centre, heading up), and satellite patches
cut heading-up at grid positions and headings over the cache, masked to the same camera wedge.
Each is reduced to grey level and edges (``overhead_channels``) before the shared LPN embedder,
which narrows the ground/satellite appearance gap a small network would otherwise have to learn.

:class:`DescriptorIndex` holds the gallery (safetensors on disk, no pickle) and searches it
exactly, with faiss when it is installed and the gallery is large, numpy otherwise. On the
synthetic towns a single-view descriptor is far from the recall the node needs, so the node's
relocalizer (:mod:`.relocalizer`) searches the map by correlation over a trajectory instead;
this index serves the University-1652-style retrieval protocol and the comparison benchmark.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from .camera import (
    PinholeCamera,
    bev_sampling_grid,
    project_image_to_bev,
    rotation_ground_from_camera,
)
from .geodesy import EnuFrame
from .model import edge_features, erode, grey
from .retrieval import LPNEmbedder
from .tile_sources import TileError
from .tiles import TileCache

FAISS_MIN_GALLERY = 20000  # below this, a numpy matrix product is as fast and needs no extra library


@dataclass(frozen=True)
class RetrievalConfig:
    """Footprint and gallery sampling. Defaults: 64 m x 64 m at 1 m cells, 8 m grid, 30 deg headings."""

    patch_px: int = 64
    metres_per_px: float = 1.0
    stride_m: float = 8.0
    heading_step_deg: float = 30.0
    dim: int = 32
    rings: int = 4
    width: int = 32
    stages: int = 3  # 64 px -> 8 x 8 features: one cell-wide band per ring


def overhead_channels(rgb: Tensor, mask: Tensor) -> Tensor:
    """``(B, 3, S, S)`` RGB in 0..1 and footprint ``(B, S, S)`` -> ``(B, 3, S, S)`` grey + edges,
    zero outside the (eroded) footprint so the wedge border is not an edge."""
    luma = grey(rgb)
    inside = erode(mask, 1).unsqueeze(1).to(rgb.dtype)
    return torch.cat([luma - 0.5, edge_features(luma)], 1) * inside


def camera_footprint(camera: PinholeCamera, camera_height_m: float, config: RetrievalConfig) -> Tensor:
    """``(S, S)`` cells the camera sees on flat ground with zero pitch and roll (the gallery mask)."""
    zero = torch.zeros(1)
    _, valid = bev_sampling_grid(camera.matrix_tensor()[None], rotation_ground_from_camera(zero, zero),
                                 torch.tensor([camera_height_m]), (camera.width, camera.height), config.patch_px,
                                 config.metres_per_px)
    return valid[0]


def query_input(image: Tensor, K: Tensor, camera_height: Tensor, pitch: Tensor, roll: Tensor,
                footprint: Tensor, config: RetrievalConfig) -> Tensor:
    """Camera images ``(B, 3, H, W)`` -> embedder input ``(B, 3, S, S)``, heading up."""
    h, w = image.shape[-2:]
    grid, valid = bev_sampling_grid(K, rotation_ground_from_camera(pitch, roll), camera_height, (w, h),
                                    config.patch_px, config.metres_per_px)
    return overhead_channels(project_image_to_bev(image, grid, valid), valid & footprint)


def gallery_input(patches: Tensor, footprint: Tensor) -> Tensor:
    """Heading-up satellite patches ``(B, 3, S, S)`` -> embedder input ``(B, 3, S, S)``."""
    return overhead_channels(patches, footprint.expand(len(patches), -1, -1))


def satellite_patch(tiles: TileCache, lat: float, lon: float, heading: float, config: RetrievalConfig) -> Tensor:
    patch = tiles.crop(lat, lon, heading, config.patch_px, config.metres_per_px).image
    return torch.from_numpy(patch).permute(2, 0, 1).float() / 255.0


@dataclass
class DescriptorIndex:
    """Gallery of descriptors at ENU positions (relative to ``origin``) and headings (ENU yaw, rad)."""

    origin: tuple[float, float]  # WGS84 lat, lon of the ENU frame
    positions_en: NDArray[np.float32]  # (N, 2) metres east, north
    headings: NDArray[np.float32]  # (N,)
    descriptors: NDArray[np.float32]  # (N, D), unit norm
    config: RetrievalConfig
    _faiss: object | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.descriptors)

    def save(self, path: str | Path) -> Path:
        meta = {"format": "g2s-descriptor-index-1", "origin": json.dumps(self.origin),
                "config": json.dumps(self.config.__dict__)}
        save_file({"positions_en": torch.from_numpy(self.positions_en), "headings": torch.from_numpy(self.headings),
                   "descriptors": torch.from_numpy(self.descriptors)}, str(path), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> DescriptorIndex:
        """Safetensors only; a missing, corrupt or foreign file raises ValueError."""
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as handle:
                meta = handle.metadata() or {}
            if meta.get("format") != "g2s-descriptor-index-1":
                raise ValueError("not a g2s descriptor index")
            config = RetrievalConfig(**json.loads(meta["config"]))
            origin = tuple(json.loads(meta["origin"]))
            arrays = [tensors[k].numpy() for k in ("positions_en", "headings", "descriptors")]
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read descriptor index {path}: {exc}") from exc
        if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
            raise ValueError(f"descriptor index {path}: arrays differ in length")
        return cls((float(origin[0]), float(origin[1])), *arrays, config)

    def search(self, queries: NDArray[np.float32], k: int, mask: NDArray[np.bool_] | None = None
               ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top-``k`` cosine similarities and gallery rows per query ``(Q, D)``; exact search.

        ``mask`` ``(N,)`` restricts the gallery (e.g. to headings near a compass reading).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self) if mask is None else int(mask.sum()))
        if mask is None and len(self) >= FAISS_MIN_GALLERY:
            try:
                import faiss
            except ImportError:
                faiss = None
            if faiss is not None:
                if self._faiss is None:
                    self._faiss = faiss.IndexFlatIP(self.descriptors.shape[1])
                    self._faiss.add(np.ascontiguousarray(self.descriptors))
                scores, rows = self._faiss.search(queries, k)
                return scores, rows.astype(np.int64)
        similarity = queries @ self.descriptors.T
        if mask is not None:
            similarity = np.where(mask[None], similarity, -np.inf)
        rows = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(similarity, rows, 1).astype(np.float32), rows


@torch.no_grad()
def build_index(tiles: TileCache, embedder: LPNEmbedder, footprint: Tensor, origin: tuple[float, float],
                half_extent_m: float, config: RetrievalConfig, batch_size: int = 64,
                progress: bool = True) -> DescriptorIndex:
    """Descriptors on a grid over the square ``origin +- half_extent_m`` at every heading step.

    Grid points whose patch is not wholly inside the cache are skipped (never padded).
    """
    frame = EnuFrame(*origin)
    steps = np.arange(-half_extent_m, half_extent_m + 1e-6, config.stride_m)
    headings = np.radians(np.arange(0.0, 360.0, config.heading_step_deg))
    items = [(e, n, h) for n in steps for e in steps for h in headings]
    positions, yaws, descriptors, batch = [], [], [], []
    embedder.eval()

    def flush() -> None:
        if batch:
            patches = torch.stack([b[3] for b in batch])
            descriptors.append(embedder(gallery_input(patches, footprint)).numpy())
            positions.extend((b[0], b[1]) for b in batch)
            yaws.extend(b[2] for b in batch)
            batch.clear()

    for east, north, heading in tqdm(items, desc="descriptor index", disable=not progress, unit="patch"):
        lat, lon, _ = frame.to_geodetic(np.array([east, north, 0.0]))
        try:
            batch.append((east, north, heading, satellite_patch(tiles, float(lat), float(lon), heading, config)))
        except TileError:
            continue
        if len(batch) == batch_size:
            flush()
    flush()
    if not descriptors:
        raise ValueError(f"no grid point within {half_extent_m} m of {origin} is inside the tile cache")
    return DescriptorIndex(origin, np.asarray(positions, np.float32), np.asarray(yaws, np.float32),
                           np.concatenate(descriptors).astype(np.float32), config)
