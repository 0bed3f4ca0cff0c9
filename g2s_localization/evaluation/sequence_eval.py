"""What the node would publish on whole drives, scored at base_link.

The ROS-free pipeline (:class:`~g2s_localization.runtime.pipeline.Localizer`, the code under the
node) runs over a split's frames in drive order. Each frame's GNSS fix is the registration
dataset's protocol prior (uniform within the search window, seeded per frame, as
:func:`~g2s_localization.evaluation.registration_eval.evaluate` scores), moved from the camera to
base_link, with the covariance a receiver would report for that spread; odometry is the drive's
dead reckoning (OXTS speed and yaw rate, as the bags' ``/odom``); the camera's mount comes from the
drive's calibration. So these figures include the lever arm and, with tracking on, the fusion over
frames that single-frame figures cannot show.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.evaluation.metrics import frame_errors, publication_summary, summarize
from g2s_localization.evaluation.registration_eval import EvaluationRun
from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.registration.registrars import Registrar
from g2s_localization.runtime.pipeline import Attitude, Frame, GnssFix, Localizer, PipelineConfig, State


def evaluate_drives(registrar: Registrar, dataset: KittiRegistrationDataset, prior_covariance_en: np.ndarray,
                    config: PipelineConfig = PipelineConfig(), name: str | None = None,
                    limit: int | None = None) -> EvaluationRun:
    """Run the pipeline over ``dataset``'s frames (drive by drive, in order) and score base_link.

    ``dataset`` must be a synthetic KITTI-layout set with ``prior="perturbed"`` (its worlds' tile
    caches are what the pipeline crops from). Returns the same record as the single-frame
    evaluation; ``published`` marks frames the node would publish (state OK).
    """
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise ValueError("no frames to evaluate")
    datum = EnuFrame(dataset.truth(0).lat, dataset.truth(0).lon)
    true_en, true_yaw, est_en, est_yaw, covs, published = [], [], [], [], [], []
    localizer, drive_index, odometry, stamps, elapsed = None, None, [], [], 0.0
    for index in range(count):
        ref = dataset.frames[index]
        drive = dataset.drives[ref.drive_index]
        tiles = dataset.tile_cache(index)
        if tiles is None:
            raise ValueError(f"{drive.path}: no tile cache (real KITTI drives have per-frame satmaps only)")
        if ref.drive_index != drive_index:  # a new drive: a fresh pipeline, as a node started for it
            drive_index, mount, camera = ref.drive_index, dataset.camera_mount(index), drive.camera()
            localizer = Localizer(registrar, tiles, datum, config, camera_mount=mount)
            odometry, stamps = drive.dead_reckoning(), drive.timestamps_ns("image_02")
        truth = dataset.truth(index)
        # the protocol prior is the camera's: the fix and the IMU heading are base_link's
        _, (prior_lat, prior_lon, prior_yaw) = dataset.camera_truth_and_prior(index)
        fix_lat, fix_lon, base_yaw = mount.base_geodetic(prior_lat, prior_lon, prior_yaw)
        stamp = stamps[ref.frame] * 1e-9
        oxts = drive.oxts(ref.frame)
        frame = Frame(stamp, drive.image(ref.frame), camera,
                      GnssFix(stamp, fix_lat, fix_lon, True, prior_covariance_en),
                      Attitude(stamp, base_yaw, oxts.pitch, oxts.roll), odometry=odometry[ref.frame])
        start = time.perf_counter()
        outcome = localizer.process(frame)
        elapsed += time.perf_counter() - start
        fix_east, fix_north, _ = datum.to_enu(fix_lat, fix_lon)
        east, north, _ = datum.to_enu(truth.lat, truth.lon)
        true_en.append((float(east), float(north)))
        true_yaw.append(truth.yaw)
        has_estimate = math.isfinite(outcome.east_m) and outcome.covariance is not None
        # a frame with no estimate at all stands at its prior, with the prior's spread
        est_en.append((outcome.east_m, outcome.north_m) if has_estimate else (float(fix_east), float(fix_north)))
        est_yaw.append(outcome.yaw_rad if has_estimate else base_yaw)
        fallback = np.diag([*np.diag(prior_covariance_en), math.radians(10.0) ** 2])
        covs.append(outcome.covariance if has_estimate else fallback)
        published.append(outcome.state == State.OK)
    t_en, e_en, cov = np.array(true_en), np.array(est_en), np.array(covs)
    errors = frame_errors(t_en, np.array(true_yaw), e_en, np.array(est_yaw), cov)
    mask = np.array(published, dtype=bool)
    metrics = {**summarize(errors), **publication_summary(errors, mask)}
    run_name = name or f"{registrar.name} (node{', tracking' if config.track_max_age_s > 0 else ''})"
    return EvaluationRun(run_name, errors, metrics, elapsed / count, t_en, e_en, cov, mask)


def without_tracking(config: PipelineConfig) -> PipelineConfig:
    """The same gates with every frame searched around its own GNSS fix."""
    return replace(config, track_max_age_s=0.0)
