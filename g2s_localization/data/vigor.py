"""VIGOR layout reader and its 2-DoF protocol (position only; panoramas are north-aligned).

Layout (VIGOR release, with the corrected labels published alongside SliceMatch)::

    VIGOR/<City>/panorama/<prefix>,<lat>,<lon>,.jpg
    VIGOR/<City>/satellite/satellite_<lat>_<lon>.png          (640 x 640, centred on lat/lon)
    VIGOR/splits__corrected/<City>/same_area_balanced_{train,test}.txt   (panorama names)
    VIGOR/splits__corrected/<City>/pano_label_balanced.txt
        <pano> <sat> <d> <d> <sat> <d> <d> <sat> <d> <d> <sat> <d> <d>   (positive first)

The ground-truth position of a panorama in its positive satellite image is computed here from
the two file names' coordinates (ENU offset / ground resolution), not from the delta columns,
so it does not depend on their sign conventions. Cross-area uses the city split of the
protocol: train on NewYork + Seattle, test on SanFrancisco + Chicago.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from g2s_localization.cameras.bev import bev_pixels
from g2s_localization.cameras.equirectangular import EquirectangularCamera
from g2s_localization.cameras.pinhole import rotation_ground_from_camera
from g2s_localization.data.real_pairs import read_rgb
from g2s_localization.data.registration_dataset import SatmapImageSource
from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.registration.model import ModelConfig

# Ground resolution of the 640 px satellite images, metres per pixel (corrected labels).
VIGOR_METRES_PER_PX = {"NewYork": 0.113248, "Seattle": 0.100817, "SanFrancisco": 0.118141, "Chicago": 0.111262}
CROSS_AREA = {"train": ("NewYork", "Seattle"), "test": ("SanFrancisco", "Chicago")}
SAT_SIZE_PX = 640


@dataclass(frozen=True)
class VigorSample:
    city: str
    panorama: Path
    satellite: Path
    pano_lat: float
    pano_lon: float
    sat_lat: float
    sat_lon: float

    @property
    def offset_m(self) -> tuple[float, float]:
        """Panorama position relative to the satellite image centre: (east, north) metres."""
        east, north, _ = EnuFrame(self.sat_lat, self.sat_lon).to_enu(self.pano_lat, self.pano_lon)
        return float(east), float(north)

    @property
    def pixel(self) -> tuple[float, float]:
        """Panorama position in the satellite image, (u, v) with pixel centres at integers."""
        east, north = self.offset_m
        mpp = VIGOR_METRES_PER_PX[self.city]
        centre = (SAT_SIZE_PX - 1) / 2.0
        return centre + east / mpp, centre - north / mpp


def parse_panorama_name(name: str) -> tuple[float, float]:
    parts = Path(name).name.split(",")
    if len(parts) < 3:
        raise ValueError(f"not a VIGOR panorama name (prefix,lat,lon,.jpg): {name}")
    return float(parts[-3]), float(parts[-2])


def parse_satellite_name(name: str) -> tuple[float, float]:
    stem = Path(name).stem
    if not stem.startswith("satellite_"):
        raise ValueError(f"not a VIGOR satellite name (satellite_lat_lon.png): {name}")
    lat, lon = stem[len("satellite_"):].split("_")
    return float(lat), float(lon)


def read_vigor(root: str | Path, cities: tuple[str, ...], split: str = "test", area: str = "same",
               label_dir: str = "splits__corrected") -> list[VigorSample]:
    """Samples of ``cities``; ``area='same'`` uses the same-area list, ``'cross'`` every labelled panorama."""
    root = Path(root)
    samples = []
    for city in cities:
        if city not in VIGOR_METRES_PER_PX:
            raise ValueError(f"unknown VIGOR city {city!r}")
        labels_file = root / label_dir / city / "pano_label_balanced.txt"
        positives = {}
        for line_no, line in enumerate(labels_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4:
                raise ValueError(f"{labels_file}:{line_no}: expected '<pano> <sat> <dx> <dy> ...'")
            positives[Path(fields[0]).name] = Path(fields[1]).name
        if area == "same":
            listed = (root / label_dir / city / f"same_area_balanced_{split}.txt").read_text().split()
            names = [Path(n).name for n in listed]
        else:
            names = list(positives)
        for name in names:
            sat = positives[name]
            plat, plon = parse_panorama_name(name)
            slat, slon = parse_satellite_name(sat)
            samples.append(VigorSample(city, root / city / "panorama" / name, root / city / "satellite" / sat,
                                       plat, plon, slat, slon))
    return samples


def localization_errors_m(samples: list[VigorSample], predicted_px: np.ndarray) -> np.ndarray:
    """2-DoF protocol: metric distance between predicted and true pixel positions, (N,)."""
    truth = np.array([s.pixel for s in samples])
    mpp = np.array([VIGOR_METRES_PER_PX[s.city] for s in samples])
    return np.linalg.norm(np.asarray(predicted_px) - truth, axis=1) * mpp


class VigorRegistrationDataset(Dataset):
    """VIGOR panoramas as registration samples, through the panorama camera model.

    Panoramas are north-aligned (north at the centre column, as in CVUSA; ``azimuth_at_column0_deg``
    otherwise), so the orientation is known: each sample faces a heading drawn per sample (seeded)
    and the prior differs from the truth in position only (the 2-DoF protocol). Priors: ``"gnss"``
    is the centre of the positive satellite image (the coarse label weak training may use);
    ``"perturbed"`` is the truth offset uniformly within the search window (evaluation). Keys as
    :class:`~g2s_localization.data.registration_dataset.KittiRegistrationDataset`, with
    ``bev_pixels``/``bev_seen`` from the panorama model in place of ``K``. ``cities`` narrows the
    protocol's cities (all four for same-area; the split's pair for cross-area).
    """

    def __init__(self, root: str | Path, split: str = "train", area: str = "same",
                 config: ModelConfig = ModelConfig(), prior: str = "gnss", seed: int = 0,
                 camera_height_m: float = 2.5, panorama_size: tuple[int, int] = (1024, 512),
                 azimuth_at_column0_deg: float = -180.0, label_dir: str = "splits__corrected",
                 cities: tuple[str, ...] = ()) -> None:
        if prior not in ("gnss", "perturbed"):
            raise ValueError(f"prior must be 'gnss' or 'perturbed', got {prior!r}")
        if area not in ("same", "cross") or split not in ("train", "test"):
            raise ValueError(f"area must be same or cross and split train or test, got {area!r}, {split!r}")
        cities = cities or (tuple(VIGOR_METRES_PER_PX) if area == "same" else CROSS_AREA[split])
        self.samples = read_vigor(root, cities, split, area, label_dir)
        if not self.samples:
            raise FileNotFoundError(f"no VIGOR samples for {area}-area {split} under {root}")
        self.config, self.prior, self.seed, self.camera_height_m = config, prior, seed, camera_height_m
        self.panorama_size, self.azimuth_at_column0_deg = panorama_size, azimuth_at_column0_deg

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, index])
        heading_deg = float(rng.uniform(0.0, 360.0))
        yaw = math.pi / 2 - math.radians(heading_deg)
        truth = EnuFrame(sample.pano_lat, sample.pano_lon)
        if self.prior == "gnss":
            prior_lat, prior_lon = sample.sat_lat, sample.sat_lon
        else:
            r = self.config.search_radius_m
            lat, lon, _ = truth.to_geodetic(np.array([*rng.uniform(-r, r, 2), 0.0]))
            prior_lat, prior_lon = float(lat), float(lon)
        east, north, _ = EnuFrame(prior_lat, prior_lon).to_enu(sample.pano_lat, sample.pano_lon)
        c, s = math.cos(yaw), math.sin(yaw)
        panorama = cv2.resize(read_rgb(sample.panorama), self.panorama_size, interpolation=cv2.INTER_AREA)
        width, height = self.panorama_size
        model = EquirectangularCamera.full_sphere(width, height, self.azimuth_at_column0_deg).facing(heading_deg)
        zero = torch.zeros(1)
        pixels, seen = bev_pixels(model.project, rotation_ground_from_camera(zero, zero),
                                  torch.tensor([self.camera_height_m]), self.config.bev_size,
                                  self.config.bev_metres_per_px)
        source = SatmapImageSource(sample.satellite, sample.sat_lat, sample.sat_lon, VIGOR_METRES_PER_PX[sample.city])
        satellite = source.crop(prior_lat, prior_lon, yaw, self.config.satellite_input_px,
                                self.config.satellite_metres_per_px)
        return {
            "image": torch.from_numpy(panorama).permute(2, 0, 1).float() / 255.0,
            "bev_pixels": pixels[0], "bev_seen": seen[0],
            "camera_height": torch.tensor(self.camera_height_m, dtype=torch.float32),
            "pitch": torch.tensor(0.0), "roll": torch.tensor(0.0),
            "satellite": torch.from_numpy(satellite).permute(2, 0, 1).float() / 255.0,
            "prior_yaw": torch.tensor(yaw, dtype=torch.float64),
            "prior_latlon": torch.tensor([prior_lat, prior_lon], dtype=torch.float64),
            "true_latlon": torch.tensor([sample.pano_lat, sample.pano_lon], dtype=torch.float64),
            "true_yaw": torch.tensor(yaw, dtype=torch.float64),
            "target": torch.tensor([east * c + north * s, -east * s + north * c, 0.0], dtype=torch.float32),
            "index": torch.tensor(index),
        }
