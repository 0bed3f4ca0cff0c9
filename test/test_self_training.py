"""Self-training: a teacher's confident estimates as pose targets, on real data and real torch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from g2s_localization.config import to_dict
from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.registration.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from g2s_localization.registration.correlation import ScoreVolume
from g2s_localization.registration.model import G2SRegistrationNet, ModelConfig
from g2s_localization.registration.registrars import BaselineRegistrar
from g2s_localization.training.losses import supervised_volume_loss
from g2s_localization.data.kitti_raw import find_drives
from g2s_localization.data.registration_dataset import truth_entries
from g2s_localization.training.self_training import (
    LabelTable, PseudoLabeller, TeacherPass, carry_labels, labels_from_rank_zero,
)
from g2s_localization.training.trainer import LABELLED, LossModule, TrainConfig, train

TINY = ModelConfig(ground_width=128, ground_height=40, feature_dim=4, width=8, bev_size=24, bev_metres_per_px=1.0,
                   search_radius_m=6.0, yaw_range_deg=4.0, yaw_step_deg=2.0)


def gnss_batch(root: Path, config: ModelConfig, size: int = 4) -> dict[str, torch.Tensor]:
    """The first frames of the fixture drive around their noisy GNSS fixes (what weak training sees)."""
    dataset = KittiRegistrationDataset(root, "train", config, prior="gnss")
    return next(iter(DataLoader(dataset, batch_size=size, shuffle=False)))


class TestPseudoLabeller:
    def test_confident_labels_lie_near_the_truth(self, small_dataset: Path) -> None:
        config = ModelConfig()
        batch = gnss_batch(small_dataset, config)
        labels = PseudoLabeller(BaselineRegistrar(config, device="cpu"), config, 0.3)(batch)
        assert labels.target.shape == (4, 3) and labels.keep.dtype == torch.bool
        assert bool(labels.keep.any()), "the edge baseline should be sure of some frames of a default town"
        # ground truth is read here only to check the teacher; training never reads it
        error = torch.hypot(*(labels.target[:, :2] - batch["target"][:, :2]).T)
        assert float(error[labels.keep].max()) < 1.0

    def test_a_higher_threshold_keeps_fewer(self, small_dataset: Path) -> None:
        config = ModelConfig()
        batch = gnss_batch(small_dataset, config)
        teacher = BaselineRegistrar(config, device="cpu")
        loose, strict = PseudoLabeller(teacher, config, 0.05)(batch), PseudoLabeller(teacher, config, 0.99)(batch)
        assert torch.equal(loose.target, strict.target)
        assert int(strict.keep.sum()) <= int(loose.keep.sum()) and not bool((strict.keep & ~loose.keep).any())

    def test_teacher_on_another_grid_is_refused(self) -> None:
        with pytest.raises(ValueError, match="bev_size .* differs"):
            PseudoLabeller(BaselineRegistrar(ModelConfig(), device="cpu"), TINY, 0.3)

    @pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2])
    def test_threshold_outside_zero_one_is_refused(self, threshold: float) -> None:
        with pytest.raises(ValueError, match="pseudo_label_min_confidence"):
            PseudoLabeller(BaselineRegistrar(TINY, device="cpu"), TINY, threshold)

    def test_baseline_teacher_uses_the_models_grid(self) -> None:
        labeller = PseudoLabeller.from_weights("baseline", TINY, 0.3, torch.device("cpu"))
        assert labeller.teacher.config == TINY

    def test_corrupt_teacher_file_raises_checkpoint_error(self, tmp_path: Path) -> None:
        bad = tmp_path / "teacher.safetensors"
        bad.write_bytes(b"not a checkpoint")
        with pytest.raises(CheckpointError):
            PseudoLabeller.from_weights(str(bad), TINY, 0.3, torch.device("cpu"))


class TestSupervisedVolumeLossKeep:
    @staticmethod
    def volume() -> ScoreVolume:
        scores = torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
        return ScoreVolume(scores, torch.tensor([-0.035, 0.0, 0.035]), 1.0)

    def test_keep_selects_frames(self) -> None:
        volume, target = self.volume(), torch.tensor([[1.0, 0.0, 0.0], [0.0, -2.0, 0.035], [-1.0, 1.0, -0.035]])
        keep = torch.tensor([True, False, True])
        kept = supervised_volume_loss(volume, torch.tensor(0.1), target, keep)
        subset = ScoreVolume(volume.scores[keep], volume.yaw_offsets, volume.cell_m)
        assert torch.allclose(kept, supervised_volume_loss(subset, torch.tensor(0.1), target[keep]))

    def test_nothing_kept_is_zero_with_a_graph(self) -> None:
        volume = self.volume()
        loss = supervised_volume_loss(volume, torch.tensor(0.1), torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool))
        loss.backward()
        assert float(loss.detach()) == 0.0 and volume.scores.grad is not None and float(volume.scores.grad.abs().sum()) == 0.0


class TestTrainConfig:
    def test_teacher_needs_weak_supervision(self) -> None:
        with pytest.raises(ValueError, match="teacher"):
            TrainConfig(supervision="full", teacher="baseline")

    def test_track_needs_a_teacher(self) -> None:
        with pytest.raises(ValueError, match="pseudo_label_track_s"):
            TrainConfig(pseudo_label_track_s=1.0)

    @pytest.mark.parametrize("key", ["pseudo_label_agree_m", "pseudo_label_agree_deg"])
    def test_agreement_tolerances_must_be_positive(self, key: str) -> None:
        with pytest.raises(ValueError, match=key):
            TrainConfig(teacher="baseline", **{key: 0.0})

    def test_init_weights_and_pretrained_conflict(self) -> None:
        with pytest.raises(ValueError, match="init_weights"):
            TrainConfig(init_weights="a.safetensors", pretrained="b.pth", model=ModelConfig(backbone="resnet18"))


def test_loss_module_adds_the_pseudo_pose_loss(small_dataset: Path) -> None:
    torch.manual_seed(0)
    net = G2SRegistrationNet(TINY)
    config = TrainConfig(model=TINY, negative_min_distance_m=0.0, teacher="baseline", pseudo_label_min_confidence=0.01)
    module = LossModule(net, config, PseudoLabeller.from_weights("baseline", TINY, 0.01, torch.device("cpu")))
    losses = module(gnss_batch(small_dataset, TINY), torch.Generator().manual_seed(0))
    assert 0.0 <= float(losses[LABELLED]) <= 1.0
    parts = sum(v for k, v in losses.items() if k not in ("total", LABELLED))
    assert torch.allclose(losses["total"], parts)  # the labelled fraction is a statistic, not a loss
    if float(losses[LABELLED]) > 0:
        losses["total"].backward()
        assert net.ground_encoder.head.weight.grad is not None


def test_training_with_a_teacher_from_a_checkpoint(small_dataset: Path, tmp_path: Path) -> None:
    """A fresh run fine-tunes ``init_weights`` (learning rate 0 keeps them bit for bit) with a teacher."""
    start = save_checkpoint(tmp_path / "start.safetensors", G2SRegistrationNet(TINY), {"model": to_dict(TINY)})
    config = TrainConfig(dataset_root=str(small_dataset), epochs=1, max_steps=2, batch_size=2, num_workers=0,
                         out_dir=str(tmp_path / "run"), model=TINY, negative_min_distance_m=0.0, learning_rate=0.0,
                         teacher=str(start), init_weights=str(start), pseudo_label_min_confidence=0.01)
    tensors, meta = read_checkpoint(train(config, progress=False))
    assert meta["step"] == 2 and meta["config"]["teacher"] == str(start)
    initial, _ = read_checkpoint(start)
    assert all(torch.equal(tensors[name], initial[name]) for name in initial)


def truth_pass(dataset: KittiRegistrationDataset, anchors: list[int]) -> tuple[TeacherPass, np.ndarray]:
    """A 'teacher' that knows the truth at ``anchors`` only, and the true targets of every frame."""
    truth = np.stack([truth_entries(*dataset.camera_truth_and_prior(i))["target"].numpy() for i in range(len(dataset))])
    priors = [dataset.camera_truth_and_prior(i)[1] for i in range(len(dataset))]
    confidence = np.zeros(len(dataset))
    confidence[anchors] = 1.0
    return TeacherPass(truth.astype(np.float64), confidence, np.array([p[:2] for p in priors]),
                       np.array([p[2] for p in priors])), truth


class TestCarryLabels:
    def test_odometry_carries_true_anchors_to_the_truth(self, small_dataset: Path) -> None:
        dataset = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")
        teacher, truth = truth_pass(dataset, [0, 9])
        table = carry_labels(teacher, dataset, 0.5, track_s=1.0)
        assert bool(table.keep.all()) and table.carried.tolist() == [False] + [True] * 8 + [False]
        error = np.hypot(*(table.target.numpy()[:, :2] - truth[:, :2]).T)
        assert float(error.max()) < 0.1
        assert float(np.abs(table.target.numpy()[:, 2] - truth[:, 2]).max()) < np.radians(0.3)

    def test_frames_beyond_the_track_stay_unlabelled(self, small_dataset: Path) -> None:
        dataset = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")
        table = carry_labels(truth_pass(dataset, [0])[0], dataset, 0.5, track_s=0.25)
        assert table.keep.tolist() == [True, True, True] + [False] * 7

    def test_anchors_that_disagree_label_nothing_between_them(self, small_dataset: Path) -> None:
        dataset = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")
        teacher, _ = truth_pass(dataset, [0, 9])
        teacher.target[9, 0] += 5.0  # a confident but wrong anchor: 5 m too far forward
        table = carry_labels(teacher, dataset, 0.5, track_s=1.0)
        assert table.keep.tolist() == [True] + [False] * 8 + [True]

    def test_the_yaw_tolerance_decides_whether_anchors_agree(self, small_dataset: Path) -> None:
        dataset = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")
        teacher, _ = truth_pass(dataset, [0, 9])
        teacher.target[9, 2] += np.radians(2.0)  # the later anchor's yaw 2 deg off, its position right
        strict = carry_labels(teacher, dataset, 0.5, track_s=1.0, agree_rad=np.radians(1.0))
        loose = carry_labels(teacher, dataset, 0.5, track_s=1.0, agree_rad=np.radians(3.0))
        assert strict.keep.tolist() == [True] + [False] * 8 + [True]
        assert bool(loose.keep.all()) and int(loose.carried.sum()) == 8

    def test_a_dataset_without_odometry_is_refused(self, small_dataset: Path) -> None:
        dataset = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")
        with pytest.raises(ValueError, match="odometry"):
            carry_labels(truth_pass(dataset, [0])[0], Subset(dataset, range(len(dataset))), 0.5, 1.0)

    def test_table_looks_labels_up_by_index(self) -> None:
        table = LabelTable(torch.arange(12.0).view(4, 3), torch.tensor([True, False, True, False]),
                           torch.zeros(4, dtype=torch.bool))
        labels = table({"index": torch.tensor([2, 1])})
        assert labels.target.tolist() == [[6.0, 7.0, 8.0], [3.0, 4.0, 5.0]] and labels.keep.tolist() == [True, False]


def test_trapezoidal_dead_reckoning_follows_the_true_heading(small_dataset: Path) -> None:
    drive = find_drives(small_dataset)[0]
    true_yaw = np.unwrap([pose.yaw for pose in drive.ground_truth()])
    for trapezoid in (False, True):
        track = drive.dead_reckoning(trapezoid=trapezoid)
        assert track[0] == (0.0, 0.0, 0.0)
    heading = np.unwrap([pose[2] for pose in drive.dead_reckoning(trapezoid=True)])
    assert float(np.abs((heading - heading[0]) - (true_yaw - true_yaw[0])).max()) < np.radians(0.3)


def test_training_carries_labels_before_the_first_step(small_dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(dataset_root=str(small_dataset), epochs=1, max_steps=1, batch_size=2, num_workers=0,
                         out_dir=str(tmp_path / "run"), model=TINY, negative_min_distance_m=0.0, teacher="baseline",
                         pseudo_label_min_confidence=0.05, pseudo_label_track_s=1.0)
    _, meta = read_checkpoint(train(config, progress=False))
    assert meta["step"] == 1 and meta["config"]["pseudo_label_track_s"] == 1.0


def _label_on_two_ranks(rank: int, store: str, out: str, fail_on_rank_zero: bool) -> None:
    """One gloo rank of :func:`test_rank_zero_labels_for_every_rank` (spawned)."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)

    def make() -> LabelTable:
        if rank != 0:
            raise AssertionError("only rank 0 may run the teacher")
        if fail_on_rank_zero:
            raise ValueError("teacher file is corrupt")
        return LabelTable(torch.arange(15.0).view(5, 3) / 7.0, torch.tensor([True, False, True, True, False]),
                          torch.tensor([False, False, True, False, False]))

    try:
        table = labels_from_rank_zero(make, 2, rank)
        result = {"target": table.target.tolist(), "keep": table.keep.tolist(), "carried": table.carried.tolist()}
    except Exception as error:  # noqa: BLE001 - the test compares what each rank raised
        result = {"error": f"{type(error).__name__}: {error}"}
    Path(f"{out}.{rank}").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("fail_on_rank_zero", [False, True])
def test_rank_zero_labels_for_every_rank(tmp_path: Path, fail_on_rank_zero: bool) -> None:
    out = tmp_path / "result"
    torch.multiprocessing.spawn(_label_on_two_ranks, args=(str(tmp_path / "store"), str(out), fail_on_rank_zero),
                                nprocs=2)
    first, second = (json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1))
    if fail_on_rank_zero:
        assert first["error"] == "ValueError: teacher file is corrupt"
        assert second["error"].startswith("RuntimeError: rank 0 failed")
    else:
        assert first["target"] == second["target"]
        assert second["target"][4] == (torch.arange(12.0, 15.0) / 7.0).tolist()  # float32, bit for bit
        assert first["keep"] == second["keep"] == [True, False, True, True, False]
        assert second["carried"] == [False, False, True, False, False]
