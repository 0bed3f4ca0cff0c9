"""Registration samples from rosbag2 recordings and a tile cache: weak training on your own drives.

Each bag is read once (:mod:`bag_frames`); its usable frames, their priors and satellite crops go
to a cache folder keyed by the bag's files, the tile cache and the reading settings, so a second
run (or a resumed one) starts at once. The cache's index is written last: an interrupted read is
redone, never half-used.

Samples carry the same keys as :class:`KittiRegistrationDataset`'s, with the camera given as its
BEV pixel map (``bev_pixels`` / ``bev_seen``) instead of ``K``, so raw, distorted images train
through their lens model. Unlabelled bags give no ``target``: weak supervision only.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import Dataset
from tqdm import tqdm

from g2s_localization.data.bag_frames import BagTopics, camera_of, read_bag_frames
from g2s_localization.data.real_pairs import read_rgb
from g2s_localization.data.registration_dataset import perturbed_prior, prior_entries, truth_entries
from g2s_localization.geo.tile_sources import open_tile_source
from g2s_localization.geo.tiles import TileCache
from g2s_localization.registration.model import ModelConfig
from g2s_localization.registration.registrars import live_batch
from g2s_localization.runtime.bag_files import resolve_bag
from g2s_localization.runtime.mount import PlanarMount

CACHE_VERSION = 2  # 2: frames keep the bag's odometry and the camera mount


@dataclass(frozen=True)
class BagSource:
    bag: str = ""  # rosbag2 folder, bare .mcap / .db3, or a folder holding one
    tiles: str = ""  # the tile cache (XYZ folder or .mbtiles) covering the drive


@dataclass(frozen=True)
class BagSetConfig:
    sources: tuple[BagSource, ...] = ()
    topics: BagTopics = field(default_factory=BagTopics)
    every: int = 1  # use every n-th image
    cache_dir: str = "runs/bag_cache"
    camera_height_m: float = 1.65
    max_gnss_age_s: float = 0.5  # as the node: a fix or attitude further from the image is not used
    max_imu_age_s: float = 0.5

    def __post_init__(self) -> None:
        for source in self.sources:
            if not source.bag or not source.tiles:
                raise ValueError(f"every bag source needs 'bag' and 'tiles', got {source}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")


def _fingerprint(bag: Path, tiles: Path, settings: dict) -> str:
    """Changes when the bag's files, the tile cache's path or the settings change."""
    files = sorted(bag.rglob("*")) if bag.is_dir() else [bag]
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    blob = json.dumps({"v": CACHE_VERSION, "bag": str(bag.resolve()), "files": stats, "tiles": str(tiles.resolve()),
                       **settings}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def _read_png(path: Path) -> np.ndarray:
    try:
        return read_rgb(path)
    except ValueError as exc:
        raise ValueError(f"{exc}: delete its bag cache folder to read the bag again") from exc


def cache_bag(source: BagSource, bags: BagSetConfig, model: ModelConfig, labelled: bool,
              progress: bool = False) -> Path:
    """Read ``source`` once into its cache folder (or find it there); returns the folder."""
    bag, tiles = resolve_bag(source.bag), Path(source.tiles)
    if not tiles.exists():
        raise FileNotFoundError(f"tile cache {tiles} does not exist")
    settings = {"topics": asdict(bags.topics), "every": bags.every, "gnss_age": bags.max_gnss_age_s,
                "imu_age": bags.max_imu_age_s, "labelled": labelled, "crop_px": model.satellite_input_px,
                "crop_mpp": model.satellite_metres_per_px}
    folder = Path(bags.cache_dir) / f"{bag.stem}-{_fingerprint(bag, tiles, settings)}"
    if (folder / "index.yaml").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    frames, infos = [], []
    reader = read_bag_frames(bag, TileCache(open_tile_source(tiles)), bags.topics, bags.every, bags.max_gnss_age_s,
                             bags.max_imu_age_s, labelled, model.satellite_input_px, model.satellite_metres_per_px)
    bar = tqdm(desc=f"reading {bag.name}", unit="frame", disable=not progress)
    while True:
        try:
            frame, crop = next(reader)
        except StopIteration as done:
            report = done.value
            break
        n = len(frames)
        _png(folder / f"image_{n:06d}.png", frame.image)
        _png(folder / f"satellite_{n:06d}.png", crop)
        if frame.camera_info not in infos:
            infos.append(frame.camera_info)
        frames.append({"stamp_s": frame.stamp_s, "prior": list(frame.prior), "pitch_rad": frame.pitch_rad,
                       "roll_rad": frame.roll_rad, "camera": infos.index(frame.camera_info),
                       "truth": list(frame.truth) if frame.truth else None,
                       "odometry": list(frame.odometry) if frame.odometry else None,
                       "camera_mount": asdict(frame.camera_mount)})
        bar.update()
    bar.close()
    if not frames:
        raise ValueError(f"{bag}: no usable frames ({report.summary()})")
    index = {"bag": str(bag), "tiles": str(tiles), "settings": settings, "report": report.summary(),
             "cameras": infos, "frames": frames}
    tmp = folder / "index.yaml.tmp"
    tmp.write_text(yaml.safe_dump(index, sort_keys=False))
    tmp.replace(folder / "index.yaml")
    return folder


class BagRegistrationDataset(Dataset):
    """Frames of one or more bags. ``prior="gnss"``: the recorded fix and IMU heading (weak labels,
    no ground truth read); ``"perturbed"``: the evaluation protocol around the bag's ground truth
    (``topics.truth_fix`` / ``truth_pose``), for calibration on a labelled bag."""

    def __init__(self, bags: BagSetConfig, config: ModelConfig = ModelConfig(), prior: str = "gnss",
                 seed: int = 0, progress: bool = True) -> None:
        if prior not in ("gnss", "perturbed"):
            raise ValueError(f"prior must be 'gnss' or 'perturbed', got {prior!r}")
        if not bags.sources:
            raise ValueError("no bags given (bags.sources: a list of {bag: ..., tiles: ...})")
        self.bags, self.config, self.prior, self.seed = bags, config, prior, seed
        self.folders = [cache_bag(s, bags, config, labelled=prior == "perturbed", progress=progress)
                        for s in bags.sources]
        self.indexes = [yaml.safe_load((f / "index.yaml").read_text()) for f in self.folders]
        self.frames = [(i, n) for i, index in enumerate(self.indexes) for n in range(len(index["frames"]))]
        self.reports = [index["report"] for index in self.indexes]
        self._has_odometry = [any(f["odometry"] for f in index["frames"]) for index in self.indexes]
        self._cameras = [[camera_of(info) for info in index["cameras"]] for index in self.indexes]
        self._tiles: dict[int, TileCache] = {}  # opened in the worker that uses them

    def __len__(self) -> int:
        return len(self.frames)

    def camera_truth_and_prior(self, index: int) -> tuple[tuple[float, float, float] | None, tuple[float, float, float]]:
        """The camera's true ground pose (None for unlabelled bags) and its prior, each (lat, lon, ENU yaw)."""
        source, n = self.frames[index]
        record = self.indexes[source]["frames"][n]
        truth = tuple(record["truth"]) if record["truth"] else None
        if self.prior == "gnss":
            return truth, tuple(record["prior"])  # type: ignore[return-value]
        return truth, perturbed_prior(truth, self.config, self.seed, index)  # type: ignore[arg-type]

    def odometry(self, index: int) -> tuple[int, float, tuple[float, float, float] | None]:
        """Frame ``index``'s bag (one drive each), time (s) and ``T_odom_base`` (x, y, yaw) from the bag's
        odometry topic (None where it has no message near the image). A bag without any raises:
        carrying pseudo labels needs it."""
        source, n = self.frames[index]
        record = self.indexes[source]["frames"][n]
        if not self._has_odometry[source]:
            raise ValueError(f"{self.indexes[source]['bag']} has no odometry ({self.bags.topics.odometry!r}, "
                             f"nav_msgs/Odometry odom -> base_link): record it to carry pseudo labels, or set "
                             f"pseudo_label_track_s to 0")
        odometry = tuple(record["odometry"]) if record["odometry"] else None
        return source, float(record["stamp_s"]), odometry  # type: ignore[return-value]

    def camera_mount(self, index: int) -> PlanarMount:
        """The camera's mount on base_link (from the bag's /tf_static) for frame ``index``."""
        source, n = self.frames[index]
        return PlanarMount(**self.indexes[source]["frames"][n]["camera_mount"])

    def _satellite(self, source: int, n: int, prior: tuple[float, float, float]) -> np.ndarray:
        if self.prior == "gnss":  # cropped once, when the bag was read
            return _read_png(self.folders[source] / f"satellite_{n:06d}.png")
        if source not in self._tiles:
            self._tiles[source] = TileCache(open_tile_source(self.indexes[source]["tiles"]))
        cfg = self.config
        return self._tiles[source].crop(*prior, cfg.satellite_input_px, cfg.satellite_metres_per_px).image

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        source, n = self.frames[index]
        record = self.indexes[source]["frames"][n]
        truth, prior = self.camera_truth_and_prior(index)
        image = _read_png(self.folders[source] / f"image_{n:06d}.png")
        batch = live_batch(image, self._cameras[source][record["camera"]], self.bags.camera_height_m,
                           record["pitch_rad"], record["roll_rad"], self.config)
        sample = {key: value[0] for key, value in batch.items()}
        satellite = self._satellite(source, n, prior)
        sample.update(satellite=torch.from_numpy(satellite).permute(2, 0, 1).float() / 255.0, **prior_entries(prior),
                      index=torch.tensor(index))
        if truth is not None:
            sample.update(truth_entries(truth, prior))
        return sample
