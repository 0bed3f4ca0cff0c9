"""The LPN place-descriptor head: square-ring part pooling of the registration's features over the
camera footprint, and its safetensors I/O.

Rings are split into left and right halves: LPN pools whole rings because University-1652 views
come at any heading, whereas here the IMU gives the heading, and halves keep the left and right
sides of a street apart. Both views are the same window of ``S x S`` feature cells, heading up
with the vehicle at the centre cell ``((S-1)/2, (S-1)/2)``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from g2s_localization.registration.checkpoints import (
    CheckpointError,
    load_model_weights,
    read_checkpoint,
    save_checkpoint,
)
from g2s_localization.registration.correlation import rotate_bev

DEFAULT_PLACE_WEIGHTS = Path(__file__).parent / "weights" / "lpn_places.safetensors"


def part_kernels(footprint: Tensor, rings: int, sides: int) -> Tensor:
    """Footprint ``(S, S)`` (bool) -> part weights ``(P, S, S)``, each summing to 1.

    Ring ``i``: cells whose Chebyshev distance from the centre, in half-extents, lies in
    ``[i / rings, (i + 1) / rings)``; side ``j``: the ``j``-th of ``sides`` column bands, left to right.
    Parts the footprint misses (the camera does not see the ground under the vehicle) are left out,
    so ``P <= rings * sides``.
    """
    s = footprint.shape[-1]
    if footprint.shape != (s, s) or rings < 1 or sides < 1:
        raise ValueError(f"need a square footprint and at least one ring and side, got {tuple(footprint.shape)}")
    coords = (torch.arange(s, dtype=torch.float32) - (s - 1) / 2) / (s / 2)
    radius = torch.maximum(coords.abs()[:, None], coords.abs()[None, :])
    ring = torch.clamp((radius * rings).long(), max=rings - 1)
    side = torch.clamp(((coords + 1) / 2 * sides).long(), max=sides - 1)[None, :].expand(s, s)
    parts = F.one_hot(ring * sides + side, rings * sides).permute(2, 0, 1).float() * footprint.float()
    counts = parts.sum((1, 2))
    if not (counts > 0).any():
        raise ValueError("the footprint is empty")
    return parts[counts > 0] / counts[counts > 0, None, None]


class RingPartHead(nn.Module):
    """Feature window ``(B, C, S, S)`` + mask ``(B, S, S)`` -> unit descriptor ``(B, P * dim)``.

    Per-cell MLP, masked mean over each part (``parts`` ``(P, S, S)``, a buffer saved with the
    weights), one linear projection per part, each part normalised; the concatenation divided by
    ``sqrt(P)`` has unit norm, so a dot product is the mean per-part cosine.
    """

    def __init__(self, in_channels: int, parts: Tensor, hidden: int = 32, dim: int = 8) -> None:
        super().__init__()
        self.register_buffer("parts", parts.float())
        self.cell = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(),
                                  nn.Conv2d(hidden, hidden, 1), nn.ReLU())
        self.projection = nn.Parameter(torch.randn(len(parts), hidden, dim) / math.sqrt(hidden))

    @property
    def window(self) -> int:
        return int(self.parts.shape[-1])

    def pool(self, features: Tensor, mask: Tensor) -> Tensor:
        """``(B, C, S, S)``, ``(B, S, S)`` -> per-part means of the cell features ``(B, P, hidden)``."""
        m = mask.to(features.dtype)
        total = torch.einsum("bhxy,pxy->bph", self.cell(features) * m[:, None], self.parts)
        weight = torch.einsum("bxy,pxy->bp", m, self.parts).clamp(min=1e-3)
        return total / weight[..., None]

    def embed(self, pooled: Tensor) -> Tensor:
        """``(B, P, hidden)`` -> ``(B, P * dim)``."""
        z = F.normalize(torch.einsum("bph,phd->bpd", pooled, self.projection), dim=2)
        return z.flatten(1) / math.sqrt(len(self.parts))

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.embed(self.pool(features, mask))

    @property
    def config(self) -> dict[str, int]:
        return {"in_channels": self.cell[0].in_channels, "hidden": self.cell[0].out_channels,
                "dim": int(self.projection.shape[-1]), "parts": len(self.parts), "window": self.window}

    @classmethod
    def from_tensors(cls, config: dict[str, int], tensors: dict[str, Tensor], source: str) -> "RingPartHead":
        """A head from its config and state dict; a mismatch raises ValueError naming ``source``."""
        try:
            parts = torch.zeros(int(config["parts"]), int(config["window"]), int(config["window"]))
            head = cls(int(config["in_channels"]), parts, int(config["hidden"]), int(config["dim"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{source}: bad place-descriptor head configuration {config}: {exc}") from exc
        load_model_weights(head, {f"model.{k}": v for k, v in tensors.items()}, source)
        return head.eval()


def query_window(bev: Tensor, mask: Tensor, yaw_offset: float, pool: int) -> tuple[Tensor, Tensor]:
    """Camera BEV features ``(C, s, s)`` + mask ``(s, s)``, turned by ``yaw_offset`` (rad, counter-
    clockwise) onto a map grid's heading, pooled by ``pool`` -> ``(C, S, S)``, mask ``(S, S)``."""
    rotated, rotated_mask = rotate_bev(bev[None], mask[None], torch.tensor([yaw_offset], dtype=bev.dtype))
    window = F.avg_pool2d(rotated[0].float(), pool)[0]
    inside = F.avg_pool2d(rotated_mask[0, :, None].float(), pool)[0, 0] > 0.5
    return window * inside, inside


DEFAULT_PLACE_WEIGHTS = Path(__file__).parent / "weights" / "lpn_places.safetensors"


def save_place_head(path: str | Path, head: RingPartHead, extra: dict | None = None) -> Path:
    return save_checkpoint(path, head, {"place_head": head.config}, extra=extra)


def load_place_head(path: str | Path = DEFAULT_PLACE_WEIGHTS) -> RingPartHead:
    """Safetensors only; a corrupt or mismatched file raises CheckpointError."""
    tensors, meta = read_checkpoint(path)
    try:
        return RingPartHead.from_tensors(meta.get("config", {}).get("place_head"),
                                         {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                                         str(path))
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
