"""What the node does with one synchronised frame, without ROS: checks, registration, decision.

Every frame ends in exactly one :class:`Outcome`: a pose with an honest covariance, or a state
saying why there is none (bad image, no/NaN/stale GNSS, stale IMU, clock jump, outside the
tile cache, low confidence). Nothing here raises on bad input; the node turns outcomes into
``RegistrationStatus`` and diagnostics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from g2s_localization.cameras.model import CameraModel
from g2s_localization.geo.geodesy import EnuFrame, heading_frame_to_enu
from g2s_localization.geo.tile_sources import TileError
from g2s_localization.geo.tiles import TileCache
from g2s_localization.registration.registrars import Registrar, RegistrationResult
from g2s_localization.registration.reliability import (
    NOT_FINITE, UNRELIABLE, position_std_m, publish_verdict, search_radius_m,
)
from g2s_localization.relocalization.relocalizer import Relocalizer
from g2s_localization.runtime.mount import PlanarMount
from g2s_localization.runtime.tracking import Tracker, TrackedPose


class State(IntEnum):
    """Mirrors the constants of ``g2s_localization_msgs/RegistrationStatus``."""

    OK = 0
    LOW_CONFIDENCE = 1
    NO_GNSS = 2
    OUTSIDE_COVERAGE = 3
    BAD_INPUT = 4
    STALE_IMU = 5
    RELOCALIZED = 6
    INITIALIZING = 7
    UNRELIABLE = 8  # registered, but not to be trusted: competing places, or where the GNSS says it cannot be


@dataclass(frozen=True)
class GnssFix:
    stamp_s: float
    lat_deg: float
    lon_deg: float
    has_fix: bool
    covariance_en: NDArray[np.float64] | None = None  # (2, 2) east/north m^2 as reported; None = unknown


@dataclass(frozen=True)
class Attitude:
    """From the IMU orientation (REP-145): ENU yaw, and pitch/roll of base_link."""

    stamp_s: float
    yaw_rad: float
    pitch_rad: float
    roll_rad: float


@dataclass(frozen=True)
class Frame:
    stamp_s: float
    image: NDArray[np.uint8] | None  # RGB (H, W, 3); None when the message could not be decoded
    camera: CameraModel | None  # pinhole, raw with lens distortion, or a panorama
    gnss: GnssFix | None
    attitude: Attitude | None
    image_error: str = ""
    stamp_ns: int = 0  # the exact header stamp, echoed on every output
    odometry: tuple[float, float, float] | None = None  # T_odom_base as (x, y, yaw); dead reckoning when relocalizing
    received_s: float = 0.0  # monotonic clock when the image arrived, and its decoding time (latency diagnostics)
    decode_s: float = 0.0


@dataclass(frozen=True)
class Outcome:
    state: State
    message: str
    stamp_s: float
    confidence: float = 0.0
    east_m: float = math.nan  # base_link in map (ENU metres from the datum)
    north_m: float = math.nan
    yaw_rad: float = math.nan
    covariance: NDArray[np.float64] | None = None  # (3, 3) east, north, yaw
    satellite: NDArray[np.uint8] | None = None  # heading-aligned patch around the prior
    stamp_ns: int = 0

    @property
    def has_pose(self) -> bool:
        return self.state in (State.OK, State.RELOCALIZED)


@dataclass(frozen=True)
class PipelineConfig:
    camera_height_m: float = 1.65
    min_confidence: float = 0.05
    max_gnss_age_s: float = 0.5
    max_imu_age_s: float = 0.5
    clock_jump_back_s: float = 0.5
    covariance_inflation: float = 1.0  # scales the registrar's covariance (fit by calibration)
    relocalization_gate_m: float = 15.0  # registration this far from GNSS means GNSS is not to be trusted
    relocalization_max_std_m: float = 5.0  # a relocalization less sure than this is withheld
    max_position_std_m: float = 1.0  # a registration less sure than this is withheld (competing places)
    min_search_radius_m: float = 4.0  # the window an RTK-grade fix's covariance shrinks the search to, at least
    track_max_age_s: float = 2.0  # a confirmed pose carried by odometry is the next prior this long; 0 = never
    odometry_drift_ratio: float = 0.05  # odometry position error per metre travelled (1 sigma)


@dataclass
class Localizer:
    """Stateful per-stream processor: remembers the last stamp to notice clock jumps."""

    registrar: Registrar
    tiles: TileCache
    datum: EnuFrame
    config: PipelineConfig = field(default_factory=PipelineConfig)
    relocalizer: Relocalizer | None = None  # without it, frames with no usable GNSS publish nothing
    camera_mount: PlanarMount = field(default_factory=PlanarMount)  # camera in base_link (/tf_static or parameters)
    gnss_mount: PlanarMount = field(default_factory=PlanarMount)  # GNSS antenna in base_link
    last_stamp_s: float | None = None
    tracker: Tracker = field(init=False, repr=False)  # fusion over frames
    _tracked: bool = field(default=False, init=False, repr=False)  # this frame searched the track's window

    def __post_init__(self) -> None:
        self.tracker = Tracker(self.config.track_max_age_s, self.config.odometry_drift_ratio)

    def reset(self) -> None:
        self.last_stamp_s = None
        self.tracker.reset()
        if self.relocalizer is not None:
            self.relocalizer.reset()

    def process(self, frame: Frame) -> Outcome:
        self._tracked = False
        outcome = self._process(frame)
        if outcome.state != State.INITIALIZING:
            published, withheld = None, None
            if outcome.state == State.OK:
                published = TrackedPose(frame.stamp_s, frame.odometry, (outcome.east_m, outcome.north_m,
                                                                        outcome.yaw_rad), outcome.covariance)
            elif math.isfinite(outcome.east_m) and math.isfinite(outcome.north_m):
                withheld = (outcome.east_m, outcome.north_m)
            self.tracker.update(frame.stamp_s, frame.odometry, published, self._tracked, withheld)
        return replace(outcome, stamp_ns=frame.stamp_ns or int(round(frame.stamp_s * 1e9)))

    def _process(self, frame: Frame) -> Outcome:
        cfg = self.config
        stamp = frame.stamp_s
        if self.last_stamp_s is not None and stamp < self.last_stamp_s - cfg.clock_jump_back_s:
            jumped = self.last_stamp_s - stamp
            self.reset()
            self.last_stamp_s = stamp
            return Outcome(State.INITIALIZING, f"clock jumped back by {jumped:.2f} s (bag loop?); state reset", stamp)
        self.last_stamp_s = stamp if self.last_stamp_s is None else max(stamp, self.last_stamp_s)
        if frame.image is None or frame.camera is None:
            return Outcome(State.BAD_INPUT, frame.image_error or "no usable image / camera info", stamp)
        if frame.image.ndim != 3 or frame.image.shape[:2] != (frame.camera.height, frame.camera.width):
            return Outcome(State.BAD_INPUT, f"image {frame.image.shape} does not match camera "
                                            f"{frame.camera.width}x{frame.camera.height}", stamp)
        gnss, att = frame.gnss, frame.attitude
        gnss_problem = gnss_prior_problem(gnss, stamp, cfg.max_gnss_age_s)
        if gnss_problem and self.relocalizer is None:
            return Outcome(State.NO_GNSS, gnss_problem, stamp)
        imu_problem = attitude_problem(att, stamp, cfg.max_imu_age_s)
        if imu_problem:
            return Outcome(State.STALE_IMU, imu_problem, stamp)
        if gnss_problem:
            return self._relocalize(frame, gnss_problem)
        # the fix is the antenna's; registration looks for the camera's ground point and heading
        fix_frame = EnuFrame(gnss.lat_deg, gnss.lon_deg)
        base_prior = self.gnss_mount.base_pose((0.0, 0.0, att.yaw_rad))
        max_radius = self.registrar.config.search_radius_m
        radius = search_radius_m(gnss.covariance_en, max_radius, cfg.min_search_radius_m)
        search_from, how = base_prior, ""
        tracked = self.tracker.prior(frame.stamp_s, frame.odometry)
        if tracked is not None:  # tracking: odometry from the last published pose narrows the window further
            (east, north, _), covariance = tracked
            tracked_radius = search_radius_m(covariance, max_radius, cfg.min_search_radius_m)
            if tracked_radius < radius:
                lat, lon, _ = self.datum.to_geodetic(np.array([east, north, 0.0]))
                track_east, track_north, _ = fix_frame.to_enu(float(lat), float(lon))
                search_from, radius = (float(track_east), float(track_north), att.yaw_rad), tracked_radius
                how = f"tracked: searched within {radius:.1f} m of the last pose carried by odometry"
                self._tracked = True
        cam_east, cam_north, cam_yaw = self.camera_mount.sensor_pose(search_from)
        cam_lat, cam_lon, _ = fix_frame.to_geodetic(np.array([cam_east, cam_north, 0.0]))
        try:
            result = self.registrar.localize(frame.image, frame.camera, self.tiles, float(cam_lat), float(cam_lon),
                                             cam_yaw, cfg.camera_height_m, att.pitch_rad + self.camera_mount.pitch_rad,
                                             att.roll_rad, radius)
        except TileError as exc:
            return Outcome(State.OUTSIDE_COVERAGE, f"satellite tiles: {exc}", stamp)
        except ValueError as exc:
            return Outcome(State.BAD_INPUT, str(exc), stamp)
        result = self._camera_to_base(result, fix_frame)
        base_lat, base_lon, _ = fix_frame.to_geodetic(np.array([base_prior[0], base_prior[1], 0.0]))
        prior = replace(gnss, lat_deg=float(base_lat), lon_deg=float(base_lon))
        if self.relocalizer is not None:
            offset = math.hypot(*EnuFrame(prior.lat_deg, prior.lon_deg).to_enu(result.lat_deg, result.lon_deg)[:2])
            if offset > cfg.relocalization_gate_m:
                return self._relocalize(frame, f"registration is {offset:.1f} m from the GNSS fix")
            self.relocalizer.reset()  # GNSS and camera agree: a later relocalization starts afresh
        return self._outcome(result, stamp, State.OK, how, prior)

    def _camera_to_base(self, result: RegistrationResult, frame: EnuFrame) -> RegistrationResult:
        """The camera's registered ground pose as base_link's (east/north in ``frame``, any nearby frame)."""
        east, north, _ = frame.to_enu(result.lat_deg, result.lon_deg)
        base = self.camera_mount.base_pose((float(east), float(north), result.yaw_rad))
        lat, lon, _ = frame.to_geodetic(np.array([base[0], base[1], 0.0]))
        return replace(result, lat_deg=float(lat), lon_deg=float(lon), yaw_rad=base[2],
                       covariance=self.camera_mount.base_covariance(result.covariance, base[2]))

    def _outcome(self, result: RegistrationResult, stamp: float, state: State, message: str,
                 prior: GnssFix | None = None, max_std_m: float | None = None) -> Outcome:
        """Pose outcome in the map frame; withheld as LOW_CONFIDENCE when not finite or not confident,
        as UNRELIABLE when wider than ``max_std_m`` (default: the registration's bound) or where the
        ``prior`` fix's covariance says it cannot be."""
        cfg = self.config
        east, north, _ = self.datum.to_enu(result.lat_deg, result.lon_deg)
        covariance = result.covariance * cfg.covariance_inflation
        from_prior = None
        if prior is not None and prior.covariance_en is not None:
            from_prior = np.array(EnuFrame(prior.lat_deg, prior.lon_deg).to_enu(result.lat_deg, result.lon_deg)[:2])
        verdict = publish_verdict(result.yaw_rad, covariance, result.confidence, cfg.min_confidence,
                                  cfg.max_position_std_m if max_std_m is None else max_std_m, from_prior,
                                  None if prior is None else prior.covariance_en, result.reference_support)
        if verdict.kind == NOT_FINITE:
            return Outcome(State.LOW_CONFIDENCE, verdict.reason, stamp)
        if not verdict.publish:
            state = State.UNRELIABLE if verdict.kind == UNRELIABLE else State.LOW_CONFIDENCE
            message = "; ".join(filter(None, [message, f"{verdict.reason}; pose withheld"]))
        return Outcome(state, message, stamp, result.confidence, float(east), float(north), result.yaw_rad,
                       covariance, result.satellite)

    def _relocalize(self, frame: Frame, reason: str) -> Outcome:
        """Map-wide search along the dead-reckoned track; published only once it is unambiguous."""
        cfg, att, stamp = self.config, frame.attitude, frame.stamp_s
        position = None
        cam_yaw = att.yaw_rad + self.camera_mount.yaw_rad
        if frame.odometry is not None:  # odom is ENU-aligned up to a yaw offset: the IMU heading fixes it
            x, y, odom_yaw = frame.odometry
            turn = att.yaw_rad - odom_yaw
            base_en = heading_frame_to_enu(x, y, turn)
            position = self.camera_mount.sensor_pose((*base_en, att.yaw_rad))[:2]
        try:
            found = self.relocalizer.update(frame.image, frame.camera, cam_yaw, position, cfg.camera_height_m,
                                            att.pitch_rad + self.camera_mount.pitch_rad, att.roll_rad)
        except TileError as exc:
            return Outcome(State.OUTSIDE_COVERAGE, f"{reason}; relocalization: {exc}", stamp)
        except ValueError as exc:
            return Outcome(State.LOW_CONFIDENCE, f"{reason}; relocalization failed: {exc}", stamp)
        result = self._camera_to_base(found.result, self.datum)
        std = position_std_m(result.covariance * cfg.covariance_inflation)
        retrieval = f"{found.retrieved} places retrieved and verified, " if found.retrieved else ""
        message = (f"{reason}; relocalized without GNSS from {found.frames} frame(s), {retrieval}"
                   f"{len(found.candidates)} candidate places, position std {std:.1f} m")
        if std > cfg.relocalization_max_std_m:
            return Outcome(State.LOW_CONFIDENCE, f"{message}; ambiguous, pose withheld", stamp, result.confidence)
        # a relocalization has its own, wider bound (the track pins it down, not one frame's window)
        return self._outcome(result, stamp, State.RELOCALIZED, message, max_std_m=cfg.relocalization_max_std_m)


def attitude_problem(att: Attitude | None, stamp: float, max_age_s: float) -> str:
    """Why this IMU attitude cannot give the yaw prior ('' when it can)."""
    if att is None or abs(stamp - att.stamp_s) > max_age_s:
        age = "missing" if att is None else f"{abs(stamp - att.stamp_s):.2f} s old"
        return f"IMU heading {age}; no yaw prior"
    if not all(math.isfinite(v) for v in (att.yaw_rad, att.pitch_rad, att.roll_rad)):
        return "IMU orientation is not finite"
    return ""


def gnss_prior_problem(gnss: GnssFix | None, stamp: float, max_age_s: float) -> str:
    """Why this fix cannot serve as the prior ('' when it can)."""
    if gnss is None:
        return "no GNSS fix received"
    if not gnss.has_fix or not (math.isfinite(gnss.lat_deg) and math.isfinite(gnss.lon_deg)):
        return "GNSS reports no fix or a non-finite position"
    if abs(stamp - gnss.stamp_s) > max_age_s:
        return f"GNSS fix is {abs(stamp - gnss.stamp_s):.2f} s from the image"
    return ""
