"""Training the LPN place head from GNSS labels only (no ground truth), on the registrar's features.

A sample is one camera frame: its BEV features, turned onto the nearest map heading, and the
satellite feature window at its label (the positive, a little larger so training can jitter it by
about the index lattice's half step) plus one window at a random place of the same area (an extra
negative beside the rest of the batch). Loss: InfoNCE of each query against every window in the
batch, except other windows within ``same_place_m`` of its label.

Labels: raw GNSS is metres off (7 m median on the synthetic drives), which teaches the head to
ignore exactly the shifts it must tell apart. So by default each frame is first registered by the
(weakly supervised) registrar within its window around the fix, and the registered position is the
label: still no ground truth, but pseudo-labels about as good as the registration.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.registration.registrars import Registrar, live_batch
from g2s_localization.relocalization.feature_map import SatelliteFeatureMap, build_feature_map
from g2s_localization.relocalization.place_head import RingPartHead, part_kernels, query_window


@dataclass(frozen=True)
class PlaceHeadConfig:
    """Defaults: 8 rings x 2 sides of a 64 m window at 1.6 m cells, 32 hidden channels, 8 per part."""

    rings: int = 8
    sides: int = 2
    hidden: int = 32
    dim: int = 8
    pool: int = 4  # registration cells per descriptor cell
    jitter_cells: int = 2  # positives are shifted up to this much: the index lattice's half step and more
    same_place_m: float = 8.0
    registered_labels: bool = True  # pseudo-labels from registering each frame around its fix; False: raw GNSS


@dataclass
class PlaceSamples:
    queries: Tensor  # (N, C, S, S) camera windows on their map grid's heading
    masks: Tensor  # (N, S, S)
    positives: Tensor  # (N, C, S + 2j, S + 2j) map windows centred on the GNSS fix
    negatives: Tensor  # (N, C, S, S) map windows at random places of the same area and heading
    fix_en: Tensor  # (N, 2) label (registered or raw GNSS), metres in its area's map frame
    negative_en: Tensor  # (N, 2)
    area: Tensor  # (N,) which feature map

    @property
    def footprint(self) -> Tensor:
        """Cells the camera sees in most frames: where the parts pool."""
        return self.masks.float().mean(0) > 0.5


def _area_map(dataset: KittiRegistrationDataset, indices: list[int], registrar: Registrar, pool: int,
              window_m: float) -> SatelliteFeatureMap:
    """Feature map over the GNSS fixes of ``indices`` (one tile cache), with room for a window."""
    fixes = [dataset.drives[dataset.frames[i].drive_index].oxts(dataset.frames[i].frame) for i in indices]
    frame = EnuFrame(fixes[0].lat, fixes[0].lon)
    en = np.array([frame.to_enu(f.lat, f.lon)[:2] for f in fixes])
    centre = (en.max(0) + en.min(0)) / 2
    lat, lon, _ = frame.to_geodetic(np.array([centre[0], centre[1], 0.0]))
    half = float(np.abs(en - centre).max()) + window_m
    return build_feature_map(dataset.tile_cache(indices[0]), registrar, (float(lat), float(lon)), half, pool,
                             progress=False)


@torch.no_grad()
def prepare_place_samples(dataset: KittiRegistrationDataset, registrar: Registrar,
                          config: PlaceHeadConfig = PlaceHeadConfig(), every: int = 2, seed: int = 0,
                          progress: bool = True) -> PlaceSamples:
    """Samples from every ``every``-th frame with a GNSS fix; builds a feature map per tile cache."""
    rng = np.random.default_rng(seed)
    window = registrar.config.bev_size // config.pool
    j = config.jitter_cells
    groups: dict[int, list[int]] = {}
    for index in range(0, len(dataset), every):
        ref = dataset.frames[index]
        tiles = dataset.tile_cache(index)
        if tiles is None:
            raise ValueError("place-head training needs drives with a satellite tile cache")
        if dataset.drives[ref.drive_index].oxts(ref.frame).has_fix:
            groups.setdefault(id(tiles), []).append(index)
    if not groups:
        raise ValueError("no frame with a GNSS fix to train on")
    out: dict[str, list] = {k: [] for k in ("q", "m", "p", "n", "fix", "neg", "area")}
    cell_m = registrar.config.bev_metres_per_px * config.pool
    bar = tqdm(total=sum(map(len, groups.values())), desc="place samples", disable=not progress)
    for area, indices in enumerate(groups.values()):
        fmap = _area_map(dataset, indices, registrar, config.pool, window * cell_m)
        frame = EnuFrame(*fmap.origin)
        h, w = fmap.shape
        tiles = dataset.tile_cache(indices[0])
        spots = [torch.nonzero(fmap.covered(d, window)) for d in range(len(fmap.headings))]  # negatives' windows
        for index in indices:
            ref = dataset.frames[index]
            drive = dataset.drives[ref.drive_index]
            fix, image, camera = drive.oxts(ref.frame), drive.image(ref.frame), drive.camera()
            batch = live_batch(image, camera, dataset.camera_height_m, fix.pitch, fix.roll, registrar.config)
            bev, mask = registrar.ground_features(batch)
            d = fmap.nearest_heading(fix.yaw)
            query, inside = query_window(bev[0].cpu(), mask[0].cpu(), fix.yaw - float(fmap.headings[d]), config.pool)
            lat, lon = fix.lat, fix.lon
            if config.registered_labels:
                found = registrar.localize(image, camera, tiles, lat, lon, fix.yaw, dataset.camera_height_m, fix.pitch,
                                           fix.roll)
                lat, lon = found.lat_deg, found.lon_deg
            east, north, _ = frame.to_enu(lat, lon)
            r, c = fmap.en_to_cell(torch.tensor(east), torch.tensor(north), float(fmap.headings[d]))
            top, left = int(round(float(r) - (window - 1) / 2)) - j, int(round(float(c) - (window - 1) / 2)) - j
            if not (0 <= top <= h - window - 2 * j and 0 <= left <= w - window - 2 * j):
                continue
            nr, nc = (int(v) for v in spots[d][rng.integers(len(spots[d]))])
            ne, nn = fmap.cell_to_en(nr + (window - 1) / 2, nc + (window - 1) / 2, float(fmap.headings[d]))
            out["q"].append(query.half())
            out["m"].append(inside)
            out["p"].append(fmap.features[d, :, top:top + window + 2 * j, left:left + window + 2 * j].half())
            out["n"].append(fmap.features[d, :, nr:nr + window, nc:nc + window].half())
            out["fix"].append((east, north))
            out["neg"].append((float(ne), float(nn)))
            out["area"].append(area)
            bar.update()
    bar.close()
    if not out["q"]:
        raise ValueError("every frame's window runs off its tile cache")
    return PlaceSamples(torch.stack(out["q"]), torch.stack(out["m"]), torch.stack(out["p"]), torch.stack(out["n"]),
                        torch.tensor(out["fix"], dtype=torch.float32), torch.tensor(out["neg"], dtype=torch.float32),
                        torch.tensor(out["area"]))


def train_place_head(samples: PlaceSamples, config: PlaceHeadConfig = PlaceHeadConfig(), steps: int = 800,
                     batch_size: int = 96, lr: float = 3e-3, temperature: float = 0.05, seed: int = 0,
                     progress: bool = True) -> RingPartHead:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    footprint = samples.footprint
    parts = part_kernels(footprint, config.rings, config.sides)
    head = RingPartHead(samples.queries.shape[1], parts, config.hidden, config.dim)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    s, j, n = head.window, config.jitter_cells, len(samples.queries)
    full = footprint.float()
    bar = tqdm(range(steps), desc="place head", disable=not progress)
    for _ in bar:
        rows = torch.randperm(n, generator=generator)[:batch_size]
        b = len(rows)
        dr, dc = torch.randint(0, 2 * j + 1, (2,), generator=generator).tolist()
        positives = samples.positives[rows, :, dr:dr + s, dc:dc + s].float()
        windows = torch.cat([positives, samples.negatives[rows].float()])
        query = head(samples.queries[rows].float(), samples.masks[rows].float())
        gallery = head(windows, full.expand(len(windows), s, s))
        places = torch.cat([samples.fix_en[rows], samples.negative_en[rows]])
        areas = torch.cat([samples.area[rows], samples.area[rows]])
        same = (torch.cdist(samples.fix_en[rows], places) < config.same_place_m) & (samples.area[rows, None] == areas)
        same[torch.arange(b), torch.arange(b)] = False
        logits = (query @ gallery.T / temperature).masked_fill(same, float("-inf"))
        loss = F.cross_entropy(logits, torch.arange(b))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return head.eval()


