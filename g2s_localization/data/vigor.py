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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from g2s_localization.geo.geodesy import EnuFrame

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
