"""Self-training: a teacher's confident registrations of the training frames become pose targets.

Still weak supervision: the teacher (a trained checkpoint, or the training-free edge baseline) sees
the same noisy-GNSS prior patch the student does, and no ground truth is read. What it adds is a
cross-view signal at the right place: the contrastive loss only says *which* patch a view belongs
to, and the rotation pseudo pairs are satellite-against-satellite, so nothing else tells the ground
branch where in the patch its view lies. The teacher's confidence is its calibrated probability
within 1 m and 1 deg of its estimate; only frames above ``min_confidence`` are labelled (on the
hard synthetic training towns, the shipped hard network labels 40 % of the frames at 0.3, and 99 %
of those labels lie within 1 m of the truth: ``benchmarks/pseudo_labels.py``).

Those are the frames the teacher already gets right. :func:`carry_labels` reaches the others: a
confident frame's pose, moved by the drive's odometry (wheel speed and yaw rate, :mod:`runtime.tracking`'s
:func:`carried`, as the node's tracker does), labels the frames around it where the teacher was
unsure; where the anchors before and after disagree, one of them is wrong and the frame stays unlabelled.
How far apart is "disagree" matters more than it looks: the teacher's yaw is often 0.5-1 deg off, so
a 1 deg tolerance drops many frames between two right anchors (on the hard towns, a 3 deg tolerance
labels 94 % of the frames instead of 80 %, the labels as often within 1 m; a student trained on
them did not do better on an unseen town, though: see the README).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from g2s_localization.geo.geodesy import EnuFrame, heading_frame_to_enu, wrap_angle
from g2s_localization.registration.correlation import PoseEstimate
from g2s_localization.registration.model import ModelConfig
from g2s_localization.registration.registrars import BaselineRegistrar, Registrar, registrar_from_weights
from g2s_localization.runtime.mount import PlanarMount, Pose2
from g2s_localization.runtime.tracking import TrackedPose, carried

GEOMETRY_FIELDS = ("bev_size", "bev_metres_per_px", "search_radius_m", "yaw_range_deg")


@dataclass(frozen=True)
class PseudoLabels:
    target: Tensor  # (B, 3) forward m, left m, yaw offset rad: the teacher's estimate in the prior's frame
    keep: Tensor  # (B,) bool: the teacher is confident enough to use it


def estimate_target(estimate: PoseEstimate) -> Tensor:
    """``(B, 3)`` forward m, left m, yaw offset rad: an estimate in the training target's layout."""
    return torch.stack([estimate.forward_m, estimate.left_m, estimate.yaw_offset], -1)


class PseudoLabeller:
    """Labels a training batch with a teacher registrar's confident estimates."""

    def __init__(self, teacher: Registrar, student: ModelConfig, min_confidence: float) -> None:
        for name in GEOMETRY_FIELDS:
            if getattr(teacher.config, name) != getattr(student, name):
                raise ValueError(f"the teacher's {name} ({getattr(teacher.config, name)}) differs from the model's "
                                 f"({getattr(student, name)}): its estimates would not be in the model's window")
        if not 0.0 < min_confidence < 1.0:
            raise ValueError(f"pseudo_label_min_confidence must lie in (0, 1), got {min_confidence}")
        self.teacher, self.min_confidence = teacher, min_confidence

    @classmethod
    def from_weights(cls, weights: str, student: ModelConfig, min_confidence: float,
                     device: torch.device) -> "PseudoLabeller":
        """``weights``: a safetensors checkpoint, or ``baseline`` (the edge baseline on the model's own
        grid); a bad file raises CheckpointError."""
        teacher = BaselineRegistrar(student, device=device) if weights == "baseline" \
            else registrar_from_weights(weights, device)
        return cls(teacher, student, min_confidence)

    @torch.no_grad()
    def __call__(self, batch: dict[str, Tensor]) -> PseudoLabels:
        estimate = self.teacher.estimate(batch)
        target = estimate_target(estimate).float()
        keep = (estimate.confidence >= self.min_confidence) & torch.isfinite(target).all(-1)
        return PseudoLabels(target, keep)


@dataclass(frozen=True)
class TeacherPass:
    """The teacher's estimate of every frame of a dataset, in dataset order, and each frame's prior."""

    target: np.ndarray  # (N, 3) forward m, left m, yaw offset rad, in the prior's frame
    confidence: np.ndarray  # (N,)
    prior_latlon: np.ndarray  # (N, 2) degrees
    prior_yaw: np.ndarray  # (N,) ENU rad


@torch.no_grad()
def run_teacher(labeller: PseudoLabeller, dataset, batch_size: int = 4, progress: bool = True) -> TeacherPass:
    """One pass of the teacher over ``dataset`` (it must yield ``index``, as the registration datasets do)."""
    n = len(dataset)
    target, confidence = np.full((n, 3), np.nan), np.zeros(n)
    prior_latlon, prior_yaw = np.full((n, 2), np.nan), np.full(n, np.nan)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for batch in tqdm(loader, desc="teacher", unit="batch", disable=not progress):
        estimate = labeller.teacher.estimate(batch)
        index = batch["index"].numpy()
        target[index] = estimate_target(estimate).cpu().numpy()
        confidence[index] = estimate.confidence.cpu().numpy()
        prior_latlon[index], prior_yaw[index] = batch["prior_latlon"].numpy(), batch["prior_yaw"].numpy()
    return TeacherPass(target, confidence, prior_latlon, prior_yaw)


def _camera_pose(target: np.ndarray, prior_en: np.ndarray, prior_yaw: float) -> Pose2:
    forward, left, yaw_offset = (float(v) for v in target)
    east, north = heading_frame_to_enu(forward, left, prior_yaw)
    return float(prior_en[0]) + east, float(prior_en[1]) + north, float(wrap_angle(prior_yaw + yaw_offset))


def _target(camera: Pose2, prior_en: np.ndarray, prior_yaw: float) -> np.ndarray:
    forward, left = heading_frame_to_enu(camera[0] - float(prior_en[0]), camera[1] - float(prior_en[1]), -prior_yaw)
    return np.array([forward, left, float(wrap_angle(camera[2] - prior_yaw))])


@dataclass(frozen=True)
class LabelTable:
    """Pseudo labels of a whole dataset, looked up by each batch's ``index``."""

    target: Tensor  # (N, 3)
    keep: Tensor  # (N,) bool
    carried: Tensor  # (N,) bool: labelled by odometry from a confident frame, not by the teacher itself

    def __call__(self, batch: dict[str, Tensor]) -> PseudoLabels:
        index = batch["index"].long()
        return PseudoLabels(self.target[index], self.keep[index])


def carry_labels(teacher: TeacherPass, dataset, min_confidence: float, track_s: float,
                 agree_m: float = 1.0, agree_rad: float = math.radians(1.0)) -> LabelTable:
    """Confident frames keep the teacher's estimate; every other frame within ``track_s`` seconds of
    one (same drive) gets that frame's pose carried there by odometry (``dataset.odometry(i)``:
    drive, time s, ``T_odom_base`` or None where the drive has none; ``dataset.camera_mount(i)``),
    unless the nearest confident frames before and after it carry to places more than ``agree_m`` /
    ``agree_rad`` apart."""
    if not (hasattr(dataset, "odometry") and hasattr(dataset, "camera_mount")):
        raise ValueError(f"carrying pseudo labels needs the drives' odometry, which {type(dataset).__name__} "
                         f"does not give; set pseudo_label_track_s to 0")
    n = len(dataset)
    anchor = (teacher.confidence >= min_confidence) & np.isfinite(teacher.target).all(1)
    target, keep, moved = teacher.target.copy(), anchor.copy(), np.zeros(n, dtype=bool)
    drives: dict[int, list[tuple[float, int, tuple[float, float, float]]]] = {}
    for i in range(n):
        drive, stamp_s, odometry = dataset.odometry(i)
        if odometry is not None:  # a frame without odometry keeps only the teacher's own label
            drives.setdefault(drive, []).append((stamp_s, i, odometry))
    for frames in drives.values():
        frames.sort()
        first = frames[0][1]
        enu = EnuFrame(*teacher.prior_latlon[first])
        prior_en = {i: enu.to_enu(*teacher.prior_latlon[i])[:2] for _, i, _ in frames}
        mount: PlanarMount = dataset.camera_mount(first)
        anchors = [(stamp_s, odometry, mount.base_pose(_camera_pose(teacher.target[i], prior_en[i],
                                                                     teacher.prior_yaw[i])))
                   for stamp_s, i, odometry in frames if anchor[i]]
        stamps = np.array([a[0] for a in anchors])
        for stamp_s, i, odometry in frames:
            if anchor[i] or not len(anchors):
                continue
            after = int(np.searchsorted(stamps, stamp_s))
            candidates = [anchors[j] for j in (after - 1, after) if 0 <= j < len(anchors)
                          and abs(anchors[j][0] - stamp_s) <= track_s]
            poses = [(abs(a[0] - stamp_s), carried(TrackedPose(a[0], a[1], a[2], np.zeros((3, 3))), odometry, 0.0)[0])
                     for a in candidates]
            if not poses:
                continue
            if len(poses) == 2:
                (_, p), (_, q) = poses
                if math.hypot(p[0] - q[0], p[1] - q[1]) > agree_m or abs(wrap_angle(p[2] - q[2])) > agree_rad:
                    continue
            base = min(poses)[1]
            target[i] = _target(mount.sensor_pose(base), prior_en[i], teacher.prior_yaw[i])
            keep[i] = moved[i] = True
    return LabelTable(torch.from_numpy(target).float(), torch.from_numpy(keep), torch.from_numpy(moved))


def labels_from_rank_zero(make: Callable[[], LabelTable], world: int, rank: int,
                          device: torch.device | str = "cpu") -> LabelTable:
    """Under torchrun, rank 0 alone runs the teacher (``make``) and sends the table to the other ranks,
    instead of every rank labelling the whole set; a failure on rank 0 fails every rank, none waits."""
    if world <= 1:
        return make()
    packed, failure = None, None
    if rank == 0:
        try:
            table = make()
            packed = torch.cat([table.target.float(), table.keep[:, None].float(), table.carried[:, None].float()], 1)
        except Exception as error:  # noqa: BLE001 - re-raised below, after the others are told
            failure = error
    header = torch.tensor([-1 if packed is None else len(packed)], dtype=torch.long, device=device)
    dist.broadcast(header, 0)
    if int(header) < 0:
        if failure is not None:
            raise failure
        raise RuntimeError("rank 0 failed to label the training set with the teacher; its log says why")
    packed = packed.to(device) if packed is not None else torch.empty(int(header), 5, device=device)
    dist.broadcast(packed, 0)
    packed = packed.cpu()
    return LabelTable(packed[:, :3].contiguous(), packed[:, 3] > 0.5, packed[:, 4] > 0.5)
