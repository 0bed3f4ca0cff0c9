"""Registration samples from KITTI-layout datasets (real KITTI + satmap, or the synthetic set).

A sample is one camera frame with a *prior* pose and the satellite patch around that prior,
heading-aligned to the prior yaw (SA-Occ style). Priors come either from the recorded GNSS /
compass (``prior="gnss"``: the only labels weak supervision may use) or from the ground truth
perturbed uniformly within the search window (``prior="perturbed"``: the papers' evaluation
protocol, seeded per sample so every run sees the same priors).

Satellite patches come from the world's tile cache for synthetic drives (the node's own code
path) or from the drive's north-up ``satmap`` image, centred on the OXTS fix, for real KITTI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from g2s_localization.cameras.pinhole import PinholeCamera
from g2s_localization.data.kitti_calib import camera_mount
from g2s_localization.data.kitti_raw import GroundTruthPose, KittiRawDrive, find_drives
from g2s_localization.geo.geodesy import EnuFrame, heading_frame_to_enu, wrap_angle
from g2s_localization.geo.tile_sources import open_tile_source
from g2s_localization.geo.tiles import PatchGeoref, TileCache, crop_north_up
from g2s_localization.registration.model import ModelConfig
from g2s_localization.runtime.mount import PlanarMount

KITTI_CAMERA_HEIGHT_M = 1.65


class SatmapImageSource:
    """Crops from one north-up satmap image centred on a known WGS84 point (real KITTI)."""

    def __init__(self, path: Path, centre_lat: float, centre_lon: float, metres_per_px: float) -> None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode satmap {path}")
        self.image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = self.image.shape[:2]
        self.georef = PatchGeoref(centre_lat, centre_lon, math.pi / 2, metres_per_px, w, h)

    def crop(self, lat: float, lon: float, up_yaw: float, size: int, metres_per_px: float) -> np.ndarray:
        east, north, _ = EnuFrame(self.georef.centre_lat_deg, self.georef.centre_lon_deg).to_enu(lat, lon)
        u, v = self.georef.offset_to_pixel(east, north)
        return crop_north_up(self.image, (float(u), float(v)), self.georef.metres_per_px, up_yaw, size, metres_per_px)


@dataclass(frozen=True)
class FrameRef:
    drive_index: int
    frame: int


class KittiRegistrationDataset(Dataset):
    """Frames listed in ``<root>/<split>_files.txt`` (or every frame of every drive; ``a+b`` joins the
    lists ``a`` and ``b``, as more training drives kept in a list of their own). ``only_with_fix``
    keeps the frames whose OXTS has a GNSS fix: without one, a ``"gnss"`` prior would fall back to the
    evaluation protocol around the truth, which weak training must never see."""

    def __init__(self, root: str | Path, split: str | None = None, config: ModelConfig = ModelConfig(),
                 prior: str = "gnss", seed: int = 0, satmap_metres_per_px: float = 0.2,
                 camera_height_m: float = KITTI_CAMERA_HEIGHT_M, only_with_fix: bool = False) -> None:
        if prior not in ("gnss", "perturbed"):
            raise ValueError(f"prior must be 'gnss' or 'perturbed', got {prior!r}")
        self.root, self.config, self.prior, self.seed = Path(root), config, prior, seed
        self.satmap_metres_per_px, self.camera_height_m = satmap_metres_per_px, camera_height_m
        self.drives = find_drives(self.root)
        if not self.drives:
            raise FileNotFoundError(f"no KITTI raw drives under {self.root}")
        by_name = {(d.date, d.name): i for i, d in enumerate(self.drives)}
        if split is None:
            self.frames = [FrameRef(i, f) for i, d in enumerate(self.drives) for f in d.frames]
        else:
            self.frames = []
            for name in split.split("+"):  # "train+train_more": several lists, in order
                list_file = self.root / f"{name}_files.txt"
                if not list_file.is_file():
                    raise FileNotFoundError(f"split {name!r} has no list {list_file}")
                for line in list_file.read_text().split("\n"):
                    if not line.strip():
                        continue
                    parts = line.split()[0].split("/")  # date/drive/image_02/data/frame.png
                    self.frames.append(FrameRef(by_name[(parts[0], parts[1])], int(Path(parts[-1]).stem)))
        if only_with_fix:  # weak training: a frame without a GNSS fix has no label (the node skips it too)
            self.frames = [ref for ref in self.frames if self.drives[ref.drive_index].oxts(ref.frame).has_fix]
        used = sorted({ref.drive_index for ref in self.frames})  # drives outside the split may be incomplete
        self._truth = {i: {g.frame: g for g in self.drives[i].ground_truth()} for i in used}
        self._cameras: dict[int, PinholeCamera] = {}
        self._caches: dict[Path, TileCache] = {}
        self._drive_world: dict[Path, Path | None] = {}
        self._mounts: dict[Path, PlanarMount] = {}
        self._odometry: dict[int, dict[int, tuple[float, tuple[float, float, float]]]] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def truth(self, index: int) -> GroundTruthPose:
        """Ground-truth pose of frame ``index`` (labels for evaluation and benchmarks, never a prior)."""
        ref = self.frames[index]
        return self._truth[ref.drive_index][ref.frame]

    def tile_cache(self, index: int) -> TileCache | None:
        """The tile cache of frame ``index``'s world (synthetic drives), None for real KITTI drives."""
        return self._tile_cache(self.drives[self.frames[index].drive_index])

    def _tile_cache(self, drive: KittiRawDrive) -> TileCache | None:
        """The world tile cache of a synthetic drive (named in its datum file); None for real drives."""
        if drive.path not in self._drive_world:
            datum_file = drive.path / "ground_truth" / "datum.yaml"
            world = yaml.safe_load(datum_file.read_text()).get("world") if datum_file.is_file() else None
            self._drive_world[drive.path] = (Path(world) if Path(world).is_absolute() else self.root / world) \
                if world else None
        world_dir = self._drive_world[drive.path]
        if world_dir is None:
            return None
        if world_dir not in self._caches:  # one cache per world, shared by its drives
            self._caches[world_dir] = TileCache(open_tile_source(world_dir / "tiles"))
        return self._caches[world_dir]

    def _mount(self, drive: KittiRawDrive) -> PlanarMount:
        """The camera's mount on base_link from the drive's calibration chain (at base_link without one)."""
        date_dir = drive.path.parent
        if date_dir not in self._mounts:
            self._mounts[date_dir] = camera_mount(date_dir)
        return self._mounts[date_dir]

    def _satellite(self, drive: KittiRawDrive, frame: int, lat: float, lon: float, up_yaw: float) -> np.ndarray:
        size, mpp = self.config.satellite_input_px, self.config.satellite_metres_per_px
        cache = self._tile_cache(drive)
        if cache is not None:
            return cache.crop(lat, lon, up_yaw, size, mpp).image
        oxts = drive.oxts(frame)
        source = SatmapImageSource(drive.satmap_path(self.root, frame), oxts.lat, oxts.lon, self.satmap_metres_per_px)
        return source.crop(lat, lon, up_yaw, size, mpp)

    def camera_truth_and_prior(self, index: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """The camera's true ground pose and its prior, each (lat, lon, ENU yaw): the registration
        finds the camera's pose, so both are the camera's (base_link's through the drive's mount)."""
        ref = self.frames[index]
        drive = self.drives[ref.drive_index]
        base_truth, mount = self.truth(index), self._mount(drive)
        truth = mount.sensor_geodetic(base_truth.lat, base_truth.lon, base_truth.yaw)
        if self.prior == "gnss":
            oxts = drive.oxts(ref.frame)
            if oxts.has_fix:
                return truth, mount.sensor_geodetic(oxts.lat, oxts.lon, oxts.yaw)
        return truth, perturbed_prior(truth, self.config, self.seed, index)

    def odometry(self, index: int) -> tuple[int, float, tuple[float, float, float]]:
        """Frame ``index``'s drive, time (s) and ``T_odom_base`` (x, y, yaw) from the drive's wheel
        speed and yaw rate (:meth:`KittiRawDrive.dead_reckoning`, trapezoidal): what a vehicle records besides GNSS."""
        ref = self.frames[index]
        if ref.drive_index not in self._odometry:
            drive = self.drives[ref.drive_index]
            stamps = drive.timestamps_ns("oxts")
            self._odometry[ref.drive_index] = {frame: (stamp * 1e-9, pose) for frame, stamp, pose
                                               in zip(drive.frames, stamps, drive.dead_reckoning(trapezoid=True))}
        stamp_s, pose = self._odometry[ref.drive_index][ref.frame]
        return ref.drive_index, stamp_s, pose

    def camera_mount(self, index: int) -> PlanarMount:
        """The camera's mount on base_link for frame ``index``'s drive."""
        return self._mount(self.drives[self.frames[index].drive_index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ref = self.frames[index]
        drive = self.drives[ref.drive_index]
        oxts = drive.oxts(ref.frame)
        if ref.drive_index not in self._cameras:
            self._cameras[ref.drive_index] = drive.camera()
        camera, mount = self._cameras[ref.drive_index], self._mount(drive)
        truth, prior = self.camera_truth_and_prior(index)
        image = drive.image(ref.frame)
        satellite = self._satellite(drive, ref.frame, *prior)
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1).float() / 255.0,
            "K": torch.tensor(camera.matrix(), dtype=torch.float32),
            "camera_height": torch.tensor(self.camera_height_m, dtype=torch.float32),
            "pitch": torch.tensor(oxts.pitch + mount.pitch_rad, dtype=torch.float32),
            "roll": torch.tensor(oxts.roll, dtype=torch.float32),
            "satellite": torch.from_numpy(satellite).permute(2, 0, 1).float() / 255.0,
            **prior_entries(prior), **truth_entries(truth, prior),
            "index": torch.tensor(index),
        }


def perturbed_prior(truth: tuple[float, float, float], config: ModelConfig, seed: int,
                    index: int) -> tuple[float, float, float]:
    """The evaluation protocol's prior: uniform offsets within the search window around the truth
    (lat, lon, ENU yaw), seeded per sample so every run sees the same priors."""
    rng = np.random.default_rng([seed, index])
    r, y = config.search_radius_m, math.radians(config.yaw_range_deg)
    fwd, left, dyaw = rng.uniform(-r, r), rng.uniform(-r, r), rng.uniform(-y, y)
    east, north = heading_frame_to_enu(fwd, left, truth[2])
    lat, lon, _ = EnuFrame(truth[0], truth[1]).to_geodetic(np.array([east, north, 0.0]))
    return float(lat), float(lon), float(wrap_angle(truth[2] + dyaw))


def prior_entries(prior: tuple[float, float, float]) -> dict[str, torch.Tensor]:
    """A sample's prior (lat, lon, ENU yaw): all weak training may know of where the camera is."""
    return {"prior_yaw": torch.tensor(prior[2], dtype=torch.float64),
            "prior_latlon": torch.tensor(prior[:2], dtype=torch.float64)}


def truth_entries(truth: tuple[float, float, float], prior: tuple[float, float, float]) -> dict[str, torch.Tensor]:
    """Labels: the truth, and as ``target`` (forward m, left m, yaw rad) relative to the prior in the
    prior's heading frame (what the model predicts)."""
    east, north, _ = EnuFrame(prior[0], prior[1]).to_enu(truth[0], truth[1])
    forward, left = heading_frame_to_enu(float(east), float(north), -prior[2])
    return {"true_latlon": torch.tensor(truth[:2], dtype=torch.float64),
            "true_yaw": torch.tensor(truth[2], dtype=torch.float64),
            "target": torch.tensor([forward, left, float(wrap_angle(truth[2] - prior[2]))], dtype=torch.float32)}
