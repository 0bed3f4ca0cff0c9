"""KITTI raw layout: read real or synthetic drives, write synthetic ones.

Layout (as the KITTI raw "sync" release and the cross-view KITTI benchmarks use it)::

    <root>/raw_data/<date>/calib_cam_to_cam.txt
    <root>/raw_data/<date>/<date>_drive_<NNNN>_sync/image_02/{timestamps.txt,data/<frame:010d>.png}
    <root>/raw_data/<date>/<date>_drive_<NNNN>_sync/oxts/{timestamps.txt,dataformat.txt,data/<frame:010d>.txt}
    <root>/satmap/<date>/<date>_drive_<NNNN>_sync/image_02/data/<frame:010d>.png

Synthetic drives add ``ground_truth/poses.csv`` inside the drive folder, because there the
OXTS files hold what the noisy GNSS/IMU measured. Real KITTI OXTS is RTK-grade, so a drive
without that file uses its OXTS as ground truth.
"""
from __future__ import annotations

import csv
import math
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import yaml
from numpy.typing import NDArray

from g2s_localization.cameras.pinhole import PinholeCamera

OXTS_FIELDS = (
    "lat lon alt roll pitch yaw vn ve vf vl vu ax ay az af al au wx wy wz wf wl wu "
    "pos_accuracy vel_accuracy navstat numsats posmode velmode orimode"
).split()
OXTS_DATAFORMAT = "\n".join(f"{name}:" for name in OXTS_FIELDS) + "\n"


@dataclass(frozen=True)
class OxtsPacket:
    """One OXTS RT3003 record (30 fields). ``yaw``: 0 = east, counter-clockwise (ENU), rad."""

    lat: float
    lon: float
    alt: float
    roll: float
    pitch: float
    yaw: float
    vn: float
    ve: float
    vf: float
    vl: float
    vu: float
    ax: float
    ay: float
    az: float
    af: float
    al: float
    au: float
    wx: float
    wy: float
    wz: float
    wf: float
    wl: float
    wu: float
    pos_accuracy: float
    vel_accuracy: float
    navstat: int
    numsats: int
    posmode: int
    velmode: int
    orimode: int

    @property
    def has_fix(self) -> bool:
        """A usable position: finite, a position solution (posmode > 0) from at least one satellite."""
        return math.isfinite(self.lat) and math.isfinite(self.lon) and self.posmode > 0 and self.numsats > 0

    def to_line(self) -> str:
        return " ".join(repr(float(v)) if isinstance(v, float) else str(int(v)) for v in astuple(self))


def parse_oxts_line(line: str, source: str = "oxts") -> OxtsPacket:
    """Parse a KITTI OXTS text line; a wrong field count or non-number raises ``ValueError``."""
    parts = line.split()
    if len(parts) != len(OXTS_FIELDS):
        raise ValueError(f"{source}: expected {len(OXTS_FIELDS)} OXTS fields, got {len(parts)}")
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"{source}: non-numeric OXTS field ({exc})") from exc
    kinds = [f.type for f in fields(OxtsPacket)]
    return OxtsPacket(*(int(v) if k in (int, "int") else v for v, k in zip(values, kinds)))


def parse_timestamp_ns(text: str) -> int:
    """KITTI ``YYYY-MM-DD HH:MM:SS.fffffffff`` (UTC) to integer nanoseconds since the epoch."""
    from datetime import datetime, timezone

    date_part, _, frac = text.strip().partition(".")
    base = datetime.strptime(date_part, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(base.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def format_timestamp_ns(stamp_ns: int) -> str:
    from datetime import datetime, timezone

    seconds, nanos = divmod(stamp_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + f".{nanos:09d}"


@dataclass(frozen=True)
class GroundTruthPose:
    """Exact pose of base_link at a frame, geodetic so it is independent of any map origin."""

    frame: int
    stamp_ns: int
    lat: float
    lon: float
    alt: float
    yaw: float
    pitch: float
    roll: float


GROUND_TRUTH_HEADER = ["frame", "stamp_ns", "lat_deg", "lon_deg", "alt_m", "yaw_rad", "pitch_rad", "roll_rad"]


class KittiRawDrive:
    """Read access to one ``<date>_drive_<NNNN>_sync`` folder."""

    def __init__(self, drive_dir: str | Path) -> None:
        self.path = Path(drive_dir)
        if not (self.path / "image_02" / "data").is_dir() or not (self.path / "oxts" / "data").is_dir():
            raise FileNotFoundError(f"{self.path} is not a KITTI raw drive (image_02/data and oxts/data needed)")
        self.date = self.path.parent.name
        self.name = self.path.name
        self.frames = sorted(int(p.stem) for p in (self.path / "image_02" / "data").glob("*.png"))
        if not self.frames:
            raise FileNotFoundError(f"{self.path}: no images in image_02/data")

    @property
    def calib_path(self) -> Path:
        return self.path.parent / "calib_cam_to_cam.txt"

    def camera(self) -> PinholeCamera:
        return kitti_camera(read_kitti_calib(self.calib_path), 2)

    def image_path(self, frame: int) -> Path:
        return self.path / "image_02" / "data" / f"{frame:010d}.png"

    def image(self, frame: int) -> NDArray[np.uint8]:
        """RGB image; an unreadable file raises ``ValueError``."""
        bgr = cv2.imread(str(self.image_path(frame)), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode {self.image_path(frame)}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def oxts(self, frame: int) -> OxtsPacket:
        path = self.path / "oxts" / "data" / f"{frame:010d}.txt"
        return parse_oxts_line(path.read_text().strip(), str(path))

    def timestamps_ns(self, sensor: str = "image_02") -> list[int]:
        lines = (self.path / sensor / "timestamps.txt").read_text().splitlines()
        return [parse_timestamp_ns(line) for line in lines if line.strip()]

    def ground_truth(self) -> list[GroundTruthPose]:
        """Synthetic truth where present, else the OXTS poses (real KITTI: RTK-grade)."""
        path = self.path / "ground_truth" / "poses.csv"
        if path.is_file():
            with path.open() as f:
                rows = list(csv.DictReader(f))
            return [GroundTruthPose(int(r["frame"]), int(r["stamp_ns"]), float(r["lat_deg"]), float(r["lon_deg"]),
                                    float(r["alt_m"]), float(r["yaw_rad"]), float(r["pitch_rad"]),
                                    float(r["roll_rad"])) for r in rows]
        stamps = self.timestamps_ns("oxts")
        poses = []
        for frame, stamp in zip(self.frames, stamps):
            o = self.oxts(frame)
            poses.append(GroundTruthPose(frame, stamp, o.lat, o.lon, o.alt, o.yaw, o.pitch, o.roll))
        return poses

    def dead_reckoning(self, trapezoid: bool = False) -> list[tuple[float, float, float]]:
        """``T_odom_base`` (x, y, yaw) per frame, integrated from the OXTS forward speed and yaw rate: a
        wheel/IMU odometry stand-in, drifting as such odometry does (the bags' ``/odom``). By default
        each interval uses the rates at its end; ``trapezoid`` uses the mean of both ends, which at
        10 Hz keeps the heading through a turn's onset within a tenth of a degree instead of a degree
        or two (self-training carries labels with it; the bags keep the default)."""
        stamps = self.timestamps_ns("oxts")
        pose, track, last, last_rates = [0.0, 0.0, 0.0], [], None, (0.0, 0.0)
        for frame, stamp in zip(self.frames, stamps):
            o = self.oxts(frame)
            if last is not None:
                dt = (stamp - last) * 1e-9
                speed, yaw_rate = ((o.vf + last_rates[0]) / 2, (o.wu + last_rates[1]) / 2) if trapezoid \
                    else (o.vf, o.wu)
                heading = pose[2] + yaw_rate * dt / 2 if trapezoid else pose[2]
                pose[0] += speed * math.cos(heading) * dt
                pose[1] += speed * math.sin(heading) * dt
                pose[2] = math.atan2(math.sin(pose[2] + yaw_rate * dt), math.cos(pose[2] + yaw_rate * dt))
            last, last_rates = stamp, (o.vf, o.wu)
            track.append((pose[0], pose[1], pose[2]))
        return track

    def datum(self) -> tuple[float, float, float] | None:
        """The synthetic world's map origin (``ground_truth/datum.yaml``), if the drive has one."""
        path = self.path / "ground_truth" / "datum.yaml"
        if not path.is_file():
            return None
        data = yaml.safe_load(path.read_text())
        return float(data["lat_deg"]), float(data["lon_deg"]), float(data["alt_m"])

    def satmap_path(self, dataset_root: str | Path, frame: int) -> Path:
        return Path(dataset_root) / "satmap" / self.date / self.name / "image_02" / "data" / f"{frame:010d}.png"


def find_drives(dataset_root: str | Path) -> list[KittiRawDrive]:
    """Every drive under ``<root>/raw_data`` (or ``<root>`` itself when it is the raw folder)."""
    root = Path(dataset_root)
    raw = root / "raw_data" if (root / "raw_data").is_dir() else root
    return [KittiRawDrive(p) for p in sorted(raw.glob("*/*_drive_*_sync")) if p.is_dir()]


def drive_folder_name(date: str, number: int) -> str:
    return f"{date}_drive_{number:04d}_sync"


def write_ground_truth(path: str | Path, poses: list[GroundTruthPose]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(GROUND_TRUTH_HEADER)
        for p in poses:
            writer.writerow([p.frame, p.stamp_ns, f"{p.lat:.10f}", f"{p.lon:.10f}", f"{p.alt:.4f}",
                             f"{p.yaw:.8f}", f"{p.pitch:.8f}", f"{p.roll:.8f}"])


def read_kitti_calib(path: str | Path) -> dict[str, NDArray[np.float64] | str]:
    """Parse a KITTI ``calib_*.txt`` (``key: v1 v2 ...``); non-numeric values stay strings."""
    entries: dict[str, NDArray[np.float64] | str] = {}
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}:{line_no}: expected 'key: values', got {line!r}")
        try:
            entries[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            entries[key.strip()] = value.strip()
    return entries


def kitti_camera(calib: dict[str, NDArray[np.float64] | str], camera_index: int = 2) -> PinholeCamera:
    """Rectified intrinsics of KITTI camera ``camera_index`` (2 = left colour) from calib_cam_to_cam."""
    key_p, key_s = f"P_rect_{camera_index:02d}", f"S_rect_{camera_index:02d}"
    projection, size = calib.get(key_p), calib.get(key_s)
    if not isinstance(projection, np.ndarray) or projection.size != 12:
        raise ValueError(f"calibration lacks a 3x4 {key_p}")
    if not isinstance(size, np.ndarray) or size.size != 2:
        raise ValueError(f"calibration lacks {key_s} (image width and height)")
    return PinholeCamera.from_projection(projection, int(round(size[0])), int(round(size[1])))
