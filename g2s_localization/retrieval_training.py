"""Training the LPN retrieval embedder on the synthetic world (ground truth poses as labels).

Pairs: a camera frame's bird's-eye projection and the heading-up satellite patch at its pose,
jittered by up to half a gallery cell and half a heading step, because the gallery
(:func:`~.relocalization.build_index`) only holds grid points. Loss: symmetric InfoNCE with the
other pairs of the batch as negatives, except pairs of the same world closer than twice the grid
stride (the same place is not a negative).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from .checkpoints import CheckpointError, load_model_weights, read_checkpoint, save_checkpoint
from .config import from_dict, to_dict
from .datasets import KittiRegistrationDataset
from .geodesy import EnuFrame
from .relocalization import RetrievalConfig, camera_footprint, gallery_input, query_input, satellite_patch
from .retrieval import LPNEmbedder

DEFAULT_RETRIEVAL_WEIGHTS = Path(__file__).parent / "weights" / "lpn_synthetic.safetensors"


@dataclass
class RetrievalPairs:
    queries: Tensor  # (N, 3, S, S) embedder inputs of the camera frames
    positives: Tensor  # (N, 3, S, S) embedder inputs of the jittered satellite patches
    world: Tensor  # (N,) world id: same-world pairs nearby are not negatives
    position_en: Tensor  # (N, 2) metres in one shared frame per world


@torch.no_grad()
def prepare_pairs(dataset: KittiRegistrationDataset, config: RetrievalConfig, every: int = 2, seed: int = 0,
                  progress: bool = True) -> RetrievalPairs:
    rng = np.random.default_rng(seed)
    queries, positives, worlds, positions = [], [], [], []
    world_frames: dict[int, tuple[int, EnuFrame]] = {}  # tile cache -> (world id, ENU frame at its first frame)
    footprint = None
    for index in tqdm(range(0, len(dataset), every), desc="retrieval pairs", disable=not progress):
        item = dataset[index]
        tiles = dataset.tile_cache(index)
        if tiles is None:
            raise ValueError("retrieval training needs synthetic drives with a tile cache")
        if footprint is None:
            camera = dataset.drives[dataset.frames[index].drive_index].camera()
            footprint = camera_footprint(camera, float(item["camera_height"]), config)
        batch = {k: v[None] for k, v in item.items()}
        queries.append(query_input(batch["image"], batch["K"], batch["camera_height"], batch["pitch"], batch["roll"],
                                   footprint, config)[0])
        lat, lon = (float(v) for v in item["true_latlon"])
        frame = EnuFrame(lat, lon)
        de, dn = rng.uniform(-config.stride_m / 2, config.stride_m / 2, 2)
        jlat, jlon, _ = frame.to_geodetic(np.array([de, dn, 0.0]))
        heading = float(item["true_yaw"]) + math.radians(rng.uniform(-0.5, 0.5) * config.heading_step_deg)
        positives.append(gallery_input(satellite_patch(tiles, float(jlat), float(jlon), heading, config)[None],
                                       footprint)[0])
        world_id, world_frame = world_frames.setdefault(id(tiles), (len(world_frames), frame))
        worlds.append(world_id)
        e, n, _ = world_frame.to_enu(lat, lon)
        positions.append((e, n))
    return RetrievalPairs(torch.stack(queries), torch.stack(positives), torch.tensor(worlds),
                          torch.tensor(positions, dtype=torch.float32))


def info_nce(query: Tensor, positive: Tensor, not_negative: Tensor, temperature: float = 0.07) -> Tensor:
    """Symmetric InfoNCE over a batch ``(B, D)`` x ``(B, D)``; ``not_negative`` ``(B, B)`` excludes pairs
    that are neither positive nor negative (off-diagonal entries only)."""
    logits = query @ positive.T / temperature
    eye = torch.eye(len(query), dtype=torch.bool, device=query.device)
    logits = logits.masked_fill(not_negative & ~eye, float("-inf"))
    target = torch.arange(len(query), device=query.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_embedder(pairs: RetrievalPairs, config: RetrievalConfig, steps: int = 600, batch_size: int = 64,
                   lr: float = 2e-3, seed: int = 0, progress: bool = True) -> LPNEmbedder:
    torch.manual_seed(seed)
    net = LPNEmbedder(config.dim, config.rings, config.width, 3, config.stages)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="retrieval training", disable=not progress)
    for _ in bar:
        rows = torch.randperm(len(pairs.queries), generator=generator)[:batch_size]
        same_place = (pairs.world[rows, None] == pairs.world[None, rows]) & (
            torch.cdist(pairs.position_en[rows], pairs.position_en[rows]) < 2 * config.stride_m)
        loss = info_nce(net(pairs.queries[rows]), net(pairs.positives[rows]), same_place)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


def save_embedder(path: str | Path, net: LPNEmbedder, config: RetrievalConfig, extra: dict | None = None) -> Path:
    return save_checkpoint(path, net, {"retrieval": to_dict(config)}, extra=extra)


def load_embedder(path: str | Path = DEFAULT_RETRIEVAL_WEIGHTS) -> tuple[LPNEmbedder, RetrievalConfig]:
    """Safetensors only; a corrupt or mismatched file raises CheckpointError."""
    tensors, meta = read_checkpoint(path)
    try:
        config = from_dict(RetrievalConfig, meta.get("config", {}).get("retrieval"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: retrieval configuration does not fit this version: {exc}") from exc
    net = LPNEmbedder(config.dim, config.rings, config.width, 3, config.stages)
    load_model_weights(net, tensors, str(path))
    return net.eval(), config
