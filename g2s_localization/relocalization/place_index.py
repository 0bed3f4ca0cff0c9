"""LPN place descriptors on the registration's own features, and their index over the tile cache.

Why on the registration's features: they already match across views (the registration
correlates them), so an LPN head on top only has to summarise a footprint, not bridge the
ground/satellite appearance gap. A descriptor is LPN's square-ring part pooling of a small
per-cell network's output, one projection per part. The rings are split into left and right
halves: LPN pools whole rings because University-1652 views come at any heading, whereas here
the IMU gives the heading, and halves keep the left and right sides of a street apart.

Both views are the same window of ``S x S`` feature cells, heading up with the vehicle at the
centre cell ``((S-1)/2, (S-1)/2)``: the camera's BEV features pooled to the map's cell, and a
window of a :class:`~.feature_map.SatelliteFeatureMap` grid. Parts only cover the camera's
footprint (a fixed wedge), so both views pool the same ground.

:class:`PlaceIndex` stores descriptors densely on a north-up lattice over the cache, one
layer per map heading (rotations covered), in safetensors with the head's weights beside them,
so a query is always embedded by the head that built the gallery.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from g2s_localization.relocalization.feature_map import (
    NORTH_UP_YAW,
    SatelliteFeatureMap,
    grid_cell_to_en,
    grid_en_to_cell,
    nearest_heading,
    read_tagged,
)
from g2s_localization.relocalization.map_search import ScoreMap
from g2s_localization.relocalization.place_head import RingPartHead, query_window

FORMAT = "g2s-place-index-1"
FAISS_MIN_GALLERY = 20000  # below this a matrix product is as fast and needs no extra library


@dataclass
class PlaceIndex:
    """Descriptors ``(D, H, W, E)`` on a north-up lattice of ``cell_m`` centred on ``origin``, layer
    ``d`` made from the map grid heading-up at ENU yaw ``headings[d]``; ``valid`` ``(D, H, W)``.

    Lattice conventions are those of :class:`~.feature_map.SatelliteFeatureMap` (row 0 north,
    column 0 west, centre cell at ``origin``), so :class:`~.map_search.SequenceSearch` sums its
    score maps the same way.
    """

    origin: tuple[float, float]
    cell_m: float
    descriptors: Tensor
    valid: Tensor
    headings: Tensor
    head: RingPartHead
    feature_cell_m: float  # cell of the descriptor windows (queries are pooled to it)
    registrar_name: str = ""
    _galleries: dict[int | None, tuple[NDArray[np.int64], object]] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.descriptors.shape[1]), int(self.descriptors.shape[2])

    def __len__(self) -> int:
        return int(self.valid.sum())

    def cell_to_en(self, row: Tensor | float, col: Tensor | float) -> tuple[Tensor, Tensor]:
        return grid_cell_to_en(self.shape, self.cell_m, row, col, NORTH_UP_YAW)

    def nearest_heading(self, yaw: float) -> int:
        return nearest_heading(self.headings, yaw)

    @torch.no_grad()
    def describe(self, bev: Tensor, mask: Tensor, heading_yaw: float, bev_cell_m: float) -> tuple[Tensor, int]:
        """Camera BEV features ``(C, s, s)`` at ``bev_cell_m`` -> descriptor ``(E,)`` and the layer to search."""
        pool = int(round(self.feature_cell_m / bev_cell_m))
        if pool < 1 or bev.shape[-1] != pool * self.head.window or bev.shape[0] != self.head.config["in_channels"]:
            raise ValueError(f"a {bev.shape[0]}-channel, {bev.shape[-1]}-cell BEV at {bev_cell_m:g} m does not give the "
                             f"index's {self.head.config['in_channels']} channels on {self.head.window} cells of "
                             f"{self.feature_cell_m:g} m")
        d = self.nearest_heading(heading_yaw)
        window, inside = query_window(bev, mask, heading_yaw - float(self.headings[d]), pool)
        return self.head(window[None], inside[None])[0], d

    def scores(self, descriptor: Tensor, layer: int) -> ScoreMap:
        """Cosine similarity of ``descriptor`` ``(E,)`` at every lattice cell of one layer; cells
        off the cache get the lowest valid score."""
        similarity = self.descriptors[layer].float() @ descriptor.float()
        valid = self.valid[layer]
        floor = float(similarity[valid].min()) if valid.any() else 0.0
        return ScoreMap(similarity.masked_fill(~valid, floor), layer)

    def search(self, queries: NDArray[np.float32], k: int, layer: int | None = None
               ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top-``k`` similarities and flat gallery rows ``d * H * W + r * W + c`` per query ``(Q, E)``;
        exact, with faiss when installed and the gallery is large. ``layer`` restricts to one heading."""
        rows, gallery = self._gallery(layer)
        k = min(k, len(rows))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not isinstance(gallery, np.ndarray):  # a faiss index
            scores, found = gallery.search(queries, k)
            return scores, rows[found]
        similarity = queries @ gallery.T
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(similarity, order, 1).astype(np.float32), rows[order]

    def _gallery(self, layer: int | None) -> tuple[NDArray[np.int64], object]:
        """Flat rows of the valid entries (of one layer) and their float32 descriptors, or a faiss
        index of them when large and faiss is installed; kept, since a query should not pay for it."""
        if layer not in self._galleries:
            keep = self.valid.flatten().numpy().copy()
            if layer is not None:
                keep &= np.repeat(np.arange(len(self.headings)) == layer, self.shape[0] * self.shape[1])
            rows = np.flatnonzero(keep)
            gallery: object = np.ascontiguousarray(self.descriptors.flatten(0, 2)[torch.from_numpy(rows)].float().numpy())
            if len(rows) >= FAISS_MIN_GALLERY:
                try:
                    import faiss
                except ImportError:
                    pass
                else:
                    flat = faiss.IndexFlatIP(gallery.shape[1])
                    flat.add(gallery)
                    gallery = flat
            self._galleries[layer] = (rows, gallery)
        return self._galleries[layer]

    def place(self, rows: NDArray[np.int64]) -> tuple[NDArray, NDArray, NDArray]:
        """Flat gallery rows -> ENU east, north (m from the origin) and heading (rad)."""
        h, w = self.shape
        d, r, c = rows // (h * w), (rows // w) % h, rows % w
        east, north = self.cell_to_en(torch.as_tensor(r), torch.as_tensor(c))
        return east.numpy(), north.numpy(), self.headings[torch.as_tensor(d)].numpy()

    def save(self, path: str | Path) -> Path:
        meta = {"format": FORMAT, "origin": json.dumps(self.origin), "cell_m": repr(self.cell_m),
                "feature_cell_m": repr(self.feature_cell_m), "registrar": self.registrar_name,
                "head": json.dumps(self.head.config)}
        tensors = {"descriptors": self.descriptors.half().contiguous(), "valid": self.valid.to(torch.uint8),
                   "headings": self.headings.float().contiguous()}
        tensors.update({f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()})
        save_file(tensors, str(path), metadata=meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "PlaceIndex":
        """Safetensors only; a missing, corrupt or foreign file raises ValueError."""
        try:
            tensors, meta = read_tagged(path, FORMAT, "place index")
            origin = tuple(float(v) for v in json.loads(meta["origin"]))
            cell_m, feature_cell_m = float(meta["cell_m"]), float(meta["feature_cell_m"])
            head = RingPartHead.from_tensors(json.loads(meta["head"]), {k[5:]: v for k, v in tensors.items()
                                                                        if k.startswith("head.")}, str(path))
            descriptors, valid, headings = tensors["descriptors"], tensors["valid"].bool(), tensors["headings"]
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read place index {path}: {exc}") from exc
        d = len(headings)
        if (descriptors.ndim != 4 or descriptors.shape[0] != d or valid.shape != descriptors.shape[:3]
                or descriptors.shape[-1] != head.config["parts"] * head.config["dim"]
                or not (cell_m > 0 and feature_cell_m > 0 and math.isfinite(cell_m + feature_cell_m))):
            raise ValueError(f"place index {path}: inconsistent shapes or cell sizes")
        if not (torch.isfinite(descriptors).all() and torch.isfinite(headings).all()):
            raise ValueError(f"place index {path}: non-finite values")
        return cls((origin[0], origin[1]), cell_m, descriptors, valid, headings.float(), head, feature_cell_m,
                   meta.get("registrar", ""))


@torch.no_grad()
def build_place_index(feature_map: SatelliteFeatureMap, head: RingPartHead, lattice_cells: int = 3,
                      progress: bool = True, shard: tuple[int, int] = (0, 1)) -> PlaceIndex:
    """Descriptors of every ``lattice_cells``-th map cell at every map heading (``shard = (k, n)``:
    only every ``n``-th heading from the ``k``-th; :func:`merge_place_indexes` joins the shards).

    Each part's mean is an FFT correlation of the cell features with that part's weights, so the
    window is described at every cell at once; lattice points are then read off by their position
    on each heading's grid. A lattice point whose window leaves the cache is invalid, never padded.
    """
    head = head.eval().cpu()
    s, o = head.window, (head.window - 1) / 2
    h, w = feature_map.shape
    if h < s or w < s or lattice_cells < 1:
        raise ValueError(f"a {w}x{h}-cell map cannot hold a {s}-cell window at lattice {lattice_cells}")
    if feature_map.features.shape[1] != head.config["in_channels"]:
        raise ValueError(f"the place head reads {head.config['in_channels']} channels, the feature map has "
                         f"{feature_map.features.shape[1]}: it was trained for another registrar")
    size = (h - 1) // lattice_cells + 1
    lattice = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) * lattice_cells
    rows, cols = torch.meshgrid(lattice + (h - 1) / 2, lattice + (w - 1) / 2, indexing="ij")
    east, north = feature_map.cell_to_en(rows, cols)
    kernel_spectra = torch.fft.rfft2(head.parts, s=(h, w))
    layers = len(feature_map.headings)
    dim = len(head.parts) * head.projection.shape[-1]
    descriptors = torch.zeros(layers, size, size, dim, dtype=torch.float16)
    valid = torch.zeros(layers, size, size, dtype=torch.bool)
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    for d in tqdm(range(shard[0], layers, shard[1]), desc="place index", disable=not progress, unit="heading"):
        heading = float(feature_map.headings[d])
        spectrum = torch.fft.rfft2(head.cell(feature_map.features[d][None].float())[0])
        r, c = grid_en_to_cell((h, w), feature_map.cell_m, east, north, heading)
        top, left = torch.round(r - o).long(), torch.round(c - o).long()
        inside = (top >= 0) & (top <= h - s) & (left >= 0) & (left <= w - s)
        top, left = top.clamp(0, h - s), left.clamp(0, w - s)
        covered = feature_map.covered(d, s)[top, left] & inside
        pooled = torch.stack([torch.fft.irfft2(spectrum * kernel_spectra[p].conj(), s=(h, w))[:, top, left]
                              for p in range(len(head.parts))], -1)  # (hidden, size, size, P)
        descriptors[d] = head.embed(pooled.permute(1, 2, 3, 0).reshape(-1, len(head.parts), pooled.shape[0])
                                    ).view(size, size, dim).half()
        valid[d] = covered
    return PlaceIndex(feature_map.origin, feature_map.cell_m * lattice_cells, descriptors, valid,
                      feature_map.headings.clone(), head, feature_map.cell_m, feature_map.registrar_name)


def merge_place_indexes(parts: list[PlaceIndex]) -> PlaceIndex:
    """The whole index from the heading shards of one build, in shard order (``parts[k]`` is shard
    ``(k, len(parts))``, which built headings ``k, k + n, ...``); shards of different builds raise ValueError."""
    if not parts:
        raise ValueError("no place index shards to merge")
    first, count = parts[0], len(parts)
    for part in parts[1:]:
        if (part.origin != first.origin or part.cell_m != first.cell_m
                or part.descriptors.shape != first.descriptors.shape or not torch.equal(part.headings, first.headings)
                or part.registrar_name != first.registrar_name):
            raise ValueError("place index shards come from different builds")
    descriptors, valid = first.descriptors.clone(), first.valid.clone()
    for d in range(len(first.headings)):
        descriptors[d], valid[d] = parts[d % count].descriptors[d], parts[d % count].valid[d]
    return PlaceIndex(first.origin, first.cell_m, descriptors, valid, first.headings.clone(), first.head,
                      first.feature_cell_m, first.registrar_name)
