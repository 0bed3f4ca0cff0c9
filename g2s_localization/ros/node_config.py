"""The node's parameters, their validation, and the resources they name (tile cache, registrar,
relocalizer, per-frame pipeline), opened at configure time.

Kept apart from :mod:`.node` so that what a parameter means is read in one place; the functions
take a parameter getter, not the node, and raise :class:`ConfigurationError` with a message a
user can act on.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.geo.tile_sources import TileError, open_tile_source
from g2s_localization.geo.tiles import TileCache
from g2s_localization.registration.registrars import Registrar, registrar_from_weights
from g2s_localization.relocalization.feature_map import SatelliteFeatureMap
from g2s_localization.relocalization.relocalizer import Relocalizer, load_place_map
from g2s_localization.runtime.mount import PlanarMount
from g2s_localization.runtime.pipeline import Localizer, PipelineConfig

Parameters = Callable[[str], Any]  # name -> value

PARAMETERS: dict[str, tuple[object, str]] = {
    "tiles_path": ("", "XYZ tile folder (z/x/y.png) or .mbtiles file of the satellite cache"),
    "weights": ("", "safetensors weights; '' = shipped synthetic weights, 'baseline' = training-free registrar"),
    "device": ("auto", "'auto' (CUDA when present), 'cpu' or 'cuda'"),
    "datum_lat_deg": (float("nan"), "WGS84 latitude of the map origin; NaN = first valid GNSS fix"),
    "datum_lon_deg": (float("nan"), "WGS84 longitude of the map origin; NaN = first valid GNSS fix"),
    "camera_height_m": (1.65, "camera optical centre above the road, metres"),
    "min_confidence": (0.05, "registrations below this confidence publish no pose"),
    "max_position_std_m": (1.0, "registrations whose position std exceeds this publish no pose (competing "
                                "places: a look-alike street, a featureless road, imagery not understood), metres"),
    "covariance_inflation": (1.0, "factor applied to the registration covariance"),
    "track_max_age_s": (2.0, "a published pose carried forward by odometry narrows the next frames' search this "
                             "long, seconds; 0 = search around each GNSS fix"),
    "odometry_drift_ratio": (0.05, "odometry position error per metre travelled, for the tracked prior"),
    "sync_slop_s": (0.06, "max time difference when pairing image with GNSS and IMU, seconds"),
    "max_gnss_age_s": (0.5, "GNSS older than this relative to the image counts as missing"),
    "max_imu_age_s": (0.5, "IMU older than this relative to the image counts as stale"),
    "image_topic": ("/camera/image_raw", "camera image topic"),
    "camera_info_topic": ("/camera/camera_info", "camera info topic"),
    "fix_topic": ("/gnss/fix", "NavSatFix topic"),
    "imu_topic": ("/imu/data", "IMU topic (orientation in ENU)"),
    "odometry_topic": ("", "nav_msgs/Odometry topic for dead reckoning; '' = the odom_frame->base_frame "
                           "transform on /tf"),
    "tf_static_wait_s": (2.0, "with no camera_mount_* parameter set, frames wait this long (wall time) for /tf_static "
                              "to give the camera's mount, then the parameters (camera at base_link) stand"),
    "camera_mount_x_m": (0.0, "camera ahead of base_link, metres; used until /tf_static links base_frame to the "
                              "CameraInfo frame"),
    "camera_mount_y_m": (0.0, "camera left of base_link, metres (fallback for /tf_static)"),
    "camera_mount_yaw_deg": (0.0, "camera optical axis left of base_link's x, degrees (fallback for /tf_static)"),
    "camera_mount_pitch_deg": (0.0, "camera optical axis below the horizontal, degrees (fallback for /tf_static)"),
    "gnss_mount_x_m": (0.0, "GNSS antenna ahead of base_link, metres (fallback for /tf_static)"),
    "gnss_mount_y_m": (0.0, "GNSS antenna left of base_link, metres (fallback for /tf_static)"),
    "map_frame": ("map", "REP-105 map frame"),
    "odom_frame": ("odom", "REP-105 odom frame"),
    "base_frame": ("base_link", "vehicle body frame"),
    "publish_tf": (True, "publish the map transform on /tf"),
    "tf_mode": ("auto", "'auto', 'map_odom' or 'map_base'"),
    "relocalization_map": ("", "place index (g2s build-place-index) or feature map (g2s build-feature-map) of the "
                               "cache, for relocalization without GNSS; '' = off"),
    "relocalization_features": ("", "with a place index (required then): the feature map it was built from, "
                                    "which verifies its retrieved places"),
    "relocalization_gate_m": (15.0, "registration this far from the GNSS fix means relocalize instead, metres"),
    "relocalization_max_std_m": (5.0, "relocalizations with a larger position std are withheld, metres"),
}


class ConfigurationError(RuntimeError):
    """A parameter is invalid or a resource (tiles, weights) cannot be opened."""


def open_localizer(p: Parameters, warn: Callable[[str], None]) -> tuple[Localizer, bool]:
    """Validate the parameters and open everything the pipeline needs; also whether the map datum is
    already fixed (by parameters or the relocalization map) rather than left to the first GNSS fix."""
    if p("tf_mode") not in ("auto", "map_odom", "map_base"):
        raise ConfigurationError(f"tf_mode must be auto, map_odom or map_base, got {p('tf_mode')!r}")
    for name in ("min_confidence", "sync_slop_s", "max_gnss_age_s", "max_imu_age_s", "camera_height_m",
                 "covariance_inflation", "relocalization_gate_m", "relocalization_max_std_m", "max_position_std_m",
                 "track_max_age_s", "odometry_drift_ratio", "tf_static_wait_s"):
        value = p(name)
        if not (isinstance(value, float) and math.isfinite(value) and value >= 0):
            raise ConfigurationError(f"parameter {name} must be a finite non-negative number, got {value!r}")
    if not p("tiles_path"):
        raise ConfigurationError("parameter tiles_path is required (XYZ folder or .mbtiles)")
    try:
        tiles = TileCache(open_tile_source(p("tiles_path")))
    except TileError as exc:
        raise ConfigurationError(f"cannot open tiles: {exc}") from exc
    device = None if p("device") == "auto" else p("device")
    try:
        registrar = registrar_from_weights(p("weights"), device)
    except ValueError as exc:
        raise ConfigurationError(f"cannot load weights: {exc}") from exc
    relocalizer = open_relocalizer(p, registrar, tiles, warn) if p("relocalization_map") else None
    datum = None
    if math.isfinite(p("datum_lat_deg")) and math.isfinite(p("datum_lon_deg")):
        datum = EnuFrame(p("datum_lat_deg"), p("datum_lon_deg"))
    elif relocalizer is not None:  # GNSS may never come: the map's own origin is the datum
        datum = EnuFrame(*relocalizer.map.origin)
    config = PipelineConfig(p("camera_height_m"), p("min_confidence"), p("max_gnss_age_s"),
                            p("max_imu_age_s"), covariance_inflation=p("covariance_inflation"),
                            relocalization_gate_m=p("relocalization_gate_m"),
                            relocalization_max_std_m=p("relocalization_max_std_m"),
                            max_position_std_m=p("max_position_std_m"), track_max_age_s=p("track_max_age_s"),
                            odometry_drift_ratio=p("odometry_drift_ratio"))
    try:
        camera_mount = PlanarMount(p("camera_mount_x_m"), p("camera_mount_y_m"),
                                   math.radians(p("camera_mount_yaw_deg")), math.radians(p("camera_mount_pitch_deg")))
        gnss_mount = PlanarMount(p("gnss_mount_x_m"), p("gnss_mount_y_m"))
    except ValueError as exc:
        raise ConfigurationError(f"camera / GNSS mount parameters: {exc}") from exc
    return Localizer(registrar, tiles, datum or EnuFrame(0.0, 0.0), config, relocalizer, camera_mount,
                     gnss_mount), datum is not None


def open_relocalizer(p: Parameters, registrar: Registrar, tiles: TileCache, warn: Callable[[str], None]
                     ) -> Relocalizer:
    """The relocalizer over ``relocalization_map`` (a place index or a feature map), which must
    have been built from this registrar's features."""
    try:
        place_map = load_place_map(p("relocalization_map"))
    except ValueError as exc:
        raise ConfigurationError(f"cannot load the relocalization map: {exc}") from exc
    if place_map.registrar_name != registrar.name:
        raise ConfigurationError(f"relocalization map was built with the {place_map.registrar_name!r} "
                                 f"registrar, the node runs {registrar.name!r}; rebuild it (g2s build-place-index)")
    verify_map = None
    if isinstance(place_map, SatelliteFeatureMap):
        if p("relocalization_features"):
            warn("relocalization_features is ignored: relocalization_map is already a feature map, searched "
                 "map-wide")
    elif not p("relocalization_features"):
        # its own ranking put 28 % of the published relocalizations on a 1 km synthetic cache > 5 m off
        raise ConfigurationError("relocalization_map is an LPN place index: set relocalization_features to the "
                                 "feature map it was built from (g2s build-place-index --features-out), which "
                                 "verifies its retrievals; the index alone is not sure enough to publish")
    else:
        try:
            verify_map = SatelliteFeatureMap.load(p("relocalization_features"))
        except ValueError as exc:
            raise ConfigurationError(f"cannot load relocalization_features: {exc}") from exc
    try:
        return Relocalizer(registrar, tiles, place_map, verify_map=verify_map)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
