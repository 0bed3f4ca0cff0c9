"""How good are a teacher's pseudo labels? (SYNTHETIC: the ground truth is read here only to score them.)

Self-training (``g2s train --set teacher=...``) turns a teacher's confident estimates of the
training frames into pose targets. This prints, for each confidence threshold, the fraction of
training frames the teacher labels and how many of those labels lie within 1 m / 2 m and 2 deg of
the truth, around the same noisy GNSS priors the training sees; then the same for the labels carried
by odometry to the frames around confident ones (``pseudo_label_track_s``). A setting is worth
training with when its labels are almost all right and still cover many frames.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from g2s_localization.data.registration_dataset import KittiRegistrationDataset, truth_entries
from g2s_localization.registration.registrars import registrar_from_weights
from g2s_localization.training.self_training import PseudoLabeller, carry_labels, run_teacher

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5)


def truth_targets(dataset) -> np.ndarray:
    """The true pose of every frame in its prior's frame (forward, left, yaw): for scoring only."""
    return np.stack([truth_entries(*dataset.camera_truth_and_prior(i))["target"].numpy() for i in range(len(dataset))])


def score(label: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Within 1 m %, within 2 m %, yaw within 2 deg %."""
    metres = np.hypot(*(label[:, :2] - truth[:, :2]).T)
    degrees = np.degrees(np.abs(label[:, 2] - truth[:, 2]))
    return 100 * np.mean(metres < 1), 100 * np.mean(metres < 2), 100 * np.mean(degrees < 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/g2s_hard"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--teacher", default="baseline", help="a safetensors checkpoint or 'baseline'")
    parser.add_argument("--min-confidence", type=float, default=0.3, help="for the carried labels")
    parser.add_argument("--track-s", type=float, default=1.5, help="carry labels this far by odometry")
    parser.add_argument("--agree-m", type=float, default=1.0, help="confident frames before and after must carry ...")
    parser.add_argument("--agree-deg", type=float, default=1.0, help="... to poses this close for frames between")
    args = parser.parse_args()
    teacher = registrar_from_weights(args.teacher)  # 'baseline': the edge baseline on the default grid
    dataset = KittiRegistrationDataset(args.root, args.split, teacher.config, prior="gnss", only_with_fix=True)
    labeller = PseudoLabeller(teacher, teacher.config, args.min_confidence)
    teacher_pass = run_teacher(labeller, dataset)
    truth = truth_targets(dataset)
    print(f"teacher {args.teacher} on the {len(dataset)} frames of '{args.split}' in {args.root} (SYNTHETIC), "
          f"noisy GNSS priors; its estimates: {score(teacher_pass.target, truth)[0]:.1f} % within 1 m")
    print("\n| min confidence | labelled % | labels within 1 m % | within 2 m % | yaw within 2 deg % |")
    print("|---|---|---|---|---|")
    for threshold in THRESHOLDS:
        keep = teacher_pass.confidence >= threshold
        figures = " | ".join(f"{v:.1f}" for v in score(teacher_pass.target[keep], truth[keep])) if keep.any() \
            else "- | - | -"
        print(f"| {threshold} | {100 * keep.mean():.1f} | {figures} |")
    table = carry_labels(teacher_pass, dataset, args.min_confidence, args.track_s, args.agree_m,
                         math.radians(args.agree_deg))
    keep, moved = table.keep.numpy(), table.carried.numpy()
    target = table.target.numpy()
    print(f"\ncarried by odometry up to {args.track_s} s from frames of confidence >= {args.min_confidence}, "
          f"between confident frames that agree within {args.agree_m} m and {args.agree_deg} deg:")
    print("| labels | frames % | within 1 m % | within 2 m % | yaw within 2 deg % |")
    print("|---|---|---|---|---|")
    for name, mask in (("teacher's own", keep & ~moved), ("carried", moved), ("all", keep)):
        figures = " | ".join(f"{v:.1f}" for v in score(target[mask], truth[mask])) if mask.any() else "- | - | -"
        print(f"| {name} | {100 * mask.mean():.1f} | {figures} |")


if __name__ == "__main__":
    main()
