"""Evaluation loop: run a registrar over a dataset, collect per-frame results, write a report.

Kept apart from the metrics (:mod:`.metrics`) and the plots (:mod:`.plots`) so each can be
reused: the replay evaluation scores node output with the same functions.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from g2s_localization.evaluation.metrics import (
    CHI2_95_3DOF, FrameErrors, format_table, frame_errors, publication_summary, summarize,
)
from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.registration.registrars import Registrar, to_map_frame
from g2s_localization.registration.reliability import publish_verdict
from g2s_localization.runtime.pipeline import PipelineConfig


@dataclass
class EvaluationRun:
    name: str
    errors: FrameErrors
    metrics: dict[str, float]
    seconds_per_frame: float
    true_en: np.ndarray  # (N, 2) relative to each prior
    est_en: np.ndarray
    covariance: np.ndarray
    published: np.ndarray  # (N,) passes the node's publish gate


def evaluate(registrar: Registrar, dataset, limit: int | None = None, batch_size: int = 4,
             progress: bool = True, gate: PipelineConfig = PipelineConfig(),
             prior_covariance_en: np.ndarray | None = None) -> EvaluationRun:
    """Score ``registrar`` on ``dataset`` (a
    :class:`~g2s_localization.data.registration_dataset.KittiRegistrationDataset`); each frame also
    goes through the node's publish gate (``gate``'s thresholds, ``prior_covariance_en`` standing
    for the GNSS fix's covariance, as in the node)."""
    if limit is not None:
        dataset = Subset(dataset, list(range(min(limit, len(dataset)))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    true_en, est_en, true_yaw, est_yaw, covs, published, elapsed, frames = [], [], [], [], [], [], 0.0, 0
    for batch in tqdm(loader, desc=registrar.name, disable=not progress, unit="batch"):
        start = time.perf_counter()
        estimate = registrar.estimate(batch)
        elapsed += time.perf_counter() - start
        frames += len(batch["index"])
        offset, yaw, cov = to_map_frame(estimate, batch["prior_yaw"].to(estimate.forward_m.device))
        for i in range(len(batch["index"])):
            prior_lat, prior_lon = (float(v) for v in batch["prior_latlon"][i])
            e, n, _ = EnuFrame(prior_lat, prior_lon).to_enu(*(float(v) for v in batch["true_latlon"][i]))
            true_en.append((e, n))
            published.append(publish_verdict(
                float(yaw[i]), cov[i].cpu().numpy(), float(estimate.confidence[i]), gate.min_confidence,
                gate.max_position_std_m, offset[i].cpu().numpy(), prior_covariance_en,
                estimate.support_at(i)).publish)
        est_en.append(offset.cpu().numpy())
        est_yaw.append(yaw.cpu().numpy())
        true_yaw.append(batch["true_yaw"].numpy())
        covs.append(cov.cpu().numpy())
    t_en, e_en = np.array(true_en), np.concatenate(est_en)
    cov = np.concatenate(covs)
    errors = frame_errors(t_en, np.concatenate(true_yaw), e_en, np.concatenate(est_yaw), cov)
    mask = np.array(published, dtype=bool)
    metrics = {**summarize(errors), **publication_summary(errors, mask)}
    return EvaluationRun(registrar.name, errors, metrics, elapsed / max(frames, 1), t_en, e_en, cov, mask)


def write_report(runs: list[EvaluationRun], out_dir: str | Path, title: str) -> Path:
    """Markdown + JSON + CDF plot for several runs on the same data."""
    from g2s_localization.evaluation.plots import plot_error_cdfs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table({r.name: r.metrics for r in runs})
    cdf = plot_error_cdfs({r.name: r.errors for r in runs}, out / "error_cdf.png")
    timing = "\n".join(f"- {r.name}: {1000 * r.seconds_per_frame:.1f} ms per frame" for r in runs)
    text = f"# {title}\n\nAll data SYNTHETIC unless stated otherwise.\n\n{table}\n\n{timing}\n\n![CDF]({cdf.name})\n"
    (out / "report.md").write_text(text)
    (out / "metrics.json").write_text(json.dumps({r.name: r.metrics for r in runs}, indent=2))
    return out / "report.md"


def calibrate_temperature(registrar: Registrar, dataset, limit: int = 120,
                          candidates: np.ndarray | None = None, progress: bool = False) -> tuple[float, float]:
    """The softmax temperature whose 95 % ellipsoids hold 95 % of the truths on ``dataset``.

    One scalar fitted on labelled validation frames (synthetic ground truth); the registrar's
    searches (coarse volume + refined peak) run once and the temperature is swept over ``candidates``.
    Returns ``(temperature, coverage)``.
    """
    import torch

    from g2s_localization.registration.correlation import Peak, ScoreVolume, pose_from_scores

    candidates = np.geomspace(0.002, 0.3, 40) if candidates is None else candidates
    subset = Subset(dataset, list(range(min(limit, len(dataset)))))
    searches, targets = [], []
    for batch in tqdm(DataLoader(subset, batch_size=4), desc="calibration", disable=not progress):
        searches.append(registrar.search(batch))
        targets.append(batch["target"])
    first = searches[0]
    volume = ScoreVolume(torch.cat([r.volume.scores.cpu() for r in searches]), first.volume.yaw_offsets.cpu(),
                         first.volume.cell_m)
    peak = Peak(*(torch.cat([getattr(r.peak, f).cpu() for r in searches])
                  for f in ("forward_m", "left_m", "yaw_offset")))
    target = torch.cat(targets).double()
    best = (float("inf"), float(candidates[0]), 0.0)
    for t in candidates:
        est = pose_from_scores(volume, float(t), peak, first.resolution)
        residual = torch.stack([est.forward_m.double(), est.left_m.double(), est.yaw_offset.double()], -1) - target
        nees = torch.einsum("ni,nij,nj->n", residual, torch.linalg.inv(est.covariance.double()), residual)
        coverage = float((nees <= CHI2_95_3DOF).double().mean())
        gap = abs(coverage - 0.95)
        if gap < best[0] - 1e-9:
            best = (gap, float(t), coverage)
    return best[1], best[2]
