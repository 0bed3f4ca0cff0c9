"""Weak training from rosbag2 recordings: the bag path gives the samples the KITTI-layout path gives
for the same drive, reads no ground truth, caches once, trains and calibrates, and says why it
cannot use a frame or a bag."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from g2s_localization.cameras.bev import pixels_to_grid
from g2s_localization.config import to_dict
from g2s_localization.data.bag_dataset import BagRegistrationDataset, BagSetConfig, BagSource, cache_bag
from g2s_localization.data.bag_io import TOPICS, kitti_to_bag, typestore
from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.registration.checkpoints import read_checkpoint
from g2s_localization.registration.model import camera_bev_pixels
from test_bag_io import drive_dir
from test_training import TINY


@pytest.fixture(scope="module")
def drive_bag(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kitti_to_bag(drive_dir(small_dataset), tmp_path_factory.mktemp("bags") / "drive7", progress=False)


def bag_set(bag: Path, tiles: Path, cache: Path, **kw) -> BagSetConfig:
    return BagSetConfig(sources=(BagSource(str(bag), str(tiles)),), cache_dir=str(cache), **kw)


def rewrite(bag: Path, out: Path, change: Callable[[str, object], object | None]) -> Path:
    """A copy of ``bag`` with each message passed through ``change(topic, msg)`` (None drops it); an
    Image returned as a CompressedImage changes the topic's type."""
    ts = typestore()
    with Reader(bag) as reader, Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns: dict[str, object] = {}
        for conn, stamp, raw in reader.messages():
            msg = change(conn.topic, ts.deserialize_cdr(raw, conn.msgtype))
            if msg is None:
                continue
            if conn.topic not in conns:
                conns[conn.topic] = writer.add_connection(conn.topic, msg.__msgtype__, typestore=ts)
            writer.write(conns[conn.topic], stamp, ts.serialize_cdr(msg, msg.__msgtype__))
    return out


class TestSamplesMatchTheKittiLayout:
    def test_same_prior_crop_and_bev_as_the_folder(self, small_dataset: Path, small_world_dir: Path,
                                                   drive_bag: Path, tmp_path: Path) -> None:
        bags = BagRegistrationDataset(bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path), TINY,
                                      progress=False)
        folder = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")
        assert len(bags) == len(folder) == 10
        for i in (0, 6):
            a, b = bags[i], folder[i]
            np.testing.assert_allclose(a["prior_latlon"].numpy(), b["prior_latlon"].numpy(), atol=1e-9)
            assert float(a["prior_yaw"]) == pytest.approx(float(b["prior_yaw"]), abs=1e-9)
            assert float(a["pitch"]) == pytest.approx(float(b["pitch"]), abs=1e-6)
            assert float(a["roll"]) == pytest.approx(float(b["roll"]), abs=1e-6)
            assert torch.equal(a["image"], b["image"])
            assert (a["satellite"] - b["satellite"]).abs().max() <= 1 / 255 + 1e-6
            # the camera reaches the BEV through its CameraInfo model, not K: the same ground cells
            pa, sa = camera_bev_pixels({k: v[None] for k, v in a.items()}, TINY)
            pb, sb = camera_bev_pixels({k: v[None] for k, v in b.items()}, TINY)
            _, inside_a = pixels_to_grid(pa, sa, (1242, 375))
            _, inside_b = pixels_to_grid(pb, sb, (1242, 375))
            assert torch.equal(inside_a, inside_b) and inside_a.any()
            assert (pa - pb)[inside_a].abs().max() < 1e-2

    def test_weak_samples_carry_no_ground_truth(self, small_world_dir: Path, drive_bag: Path, tmp_path: Path) -> None:
        sample = BagRegistrationDataset(bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path), TINY,
                                        progress=False)[3]
        assert not {"target", "true_latlon", "true_yaw"} & set(sample)

    def test_labelled_bag_gives_the_folders_evaluation_targets(self, small_dataset: Path, small_world_dir: Path,
                                                               drive_bag: Path, tmp_path: Path) -> None:
        bags = BagRegistrationDataset(bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path), TINY,
                                      prior="perturbed", seed=3, progress=False)
        folder = KittiRegistrationDataset(small_dataset, "train", TINY, prior="perturbed", seed=3)
        for i in (2, 9):
            np.testing.assert_allclose(bags[i]["target"].numpy(), folder[i]["target"].numpy(), atol=2e-3)


class TestNoFixNoLabel:
    def test_both_paths_drop_a_frame_without_a_fix(self, small_dataset: Path, small_world_dir: Path,
                                                   tmp_path: Path) -> None:
        """Weak training never sees a prior drawn around the truth: a frame whose GNSS has no fix is
        left out, by the folder reader as by the bag reader (and the node)."""
        import shutil
        from dataclasses import replace

        from g2s_localization.data.kitti_raw import KittiRawDrive
        from g2s_localization.data.registration_sets import open_registration_dataset

        root = tmp_path / "root"
        shutil.copytree(small_dataset, root)
        drive = KittiRawDrive(drive_dir(root))
        packet = replace(drive.oxts(4), posmode=0, numsats=0)
        (drive.path / "oxts" / "data" / f"{4:010d}.txt").write_text(packet.to_line() + "\n")
        folder = open_registration_dataset("kitti", root, "train", TINY, "gnss")
        assert len(folder) == 9 and 4 not in [ref.frame for ref in folder.frames]
        assert len(open_registration_dataset("kitti", root, "train", TINY, "perturbed")) == 10  # evaluation: all
        bag = kitti_to_bag(drive.path, tmp_path / "bag", progress=False)
        bags = BagRegistrationDataset(bag_set(bag, small_world_dir / "area.mbtiles", tmp_path), TINY, progress=False)
        assert len(bags) == 9 and "1 GNSS reports no fix or a non-finite position" in bags.reports[0]


class TestCache:
    def test_read_once_then_reused(self, small_world_dir: Path, drive_bag: Path, tmp_path: Path) -> None:
        config = bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path)
        folder = cache_bag(config.sources[0], config, TINY, labelled=False)
        stamp = (folder / "index.yaml").stat().st_mtime_ns
        assert cache_bag(config.sources[0], config, TINY, labelled=False) == folder
        assert (folder / "index.yaml").stat().st_mtime_ns == stamp
        other = cache_bag(config.sources[0], bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path, every=2),
                          TINY, labelled=False)
        assert other != folder  # other settings, another cache
        assert len(BagRegistrationDataset(bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path, every=2),
                                          TINY, progress=False)) == 5


class TestBagsFromElsewhere:
    def test_compressed_images_decode_to_the_same_pixels(self, small_world_dir: Path, drive_bag: Path,
                                                         tmp_path: Path) -> None:
        T = typestore().types

        def compress(topic: str, msg):
            if topic != TOPICS["image"]:
                return msg
            rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            return T["sensor_msgs/msg/CompressedImage"](header=msg.header, format="png",
                                                        data=np.frombuffer(png.tobytes(), np.uint8))

        bag = rewrite(drive_bag, tmp_path / "compressed", compress)
        tiles = small_world_dir / "area.mbtiles"
        a = BagRegistrationDataset(bag_set(bag, tiles, tmp_path / "c1"), TINY, progress=False)[4]
        b = BagRegistrationDataset(bag_set(drive_bag, tiles, tmp_path / "c2"), TINY, progress=False)[4]
        assert torch.equal(a["image"], b["image"])

    def test_frames_without_a_fix_are_skipped_and_counted(self, small_world_dir: Path, drive_bag: Path,
                                                          tmp_path: Path) -> None:
        count = {"n": 0}

        def lose_fixes(topic: str, msg):
            if topic == TOPICS["fix"]:
                count["n"] += 1
                if count["n"] in (2, 3):
                    msg.latitude = float("nan")
            return msg

        bag = rewrite(drive_bag, tmp_path / "nofix", lose_fixes)
        dataset = BagRegistrationDataset(bag_set(bag, small_world_dir / "area.mbtiles", tmp_path), TINY,
                                         progress=False)
        assert len(dataset) == 8
        assert "8 of 10 images used" in dataset.reports[0] and "2 GNSS reports no fix or a non-finite position" in dataset.reports[0]

    def test_no_camera_mount_is_an_error_not_a_guess(self, small_world_dir: Path, drive_bag: Path,
                                                     tmp_path: Path) -> None:
        bag = rewrite(drive_bag, tmp_path / "notf", lambda topic, msg: None if topic == "/tf_static" else msg)
        with pytest.raises(ValueError, match="/tf_static has no chain base_link -> 'camera_optical_frame'"):
            BagRegistrationDataset(bag_set(bag, small_world_dir / "area.mbtiles", tmp_path), TINY, progress=False)

    def test_missing_topic_and_missing_labels_say_so(self, small_world_dir: Path, drive_bag: Path,
                                                     tmp_path: Path) -> None:
        tiles = small_world_dir / "area.mbtiles"
        bag = rewrite(drive_bag, tmp_path / "noimu", lambda topic, msg: None if topic == TOPICS["imu"] else msg)
        with pytest.raises(ValueError, match=r"lacks topic\(s\) \['/imu/data'\]"):
            BagRegistrationDataset(bag_set(bag, tiles, tmp_path), TINY, progress=False)
        unlabelled = rewrite(drive_bag, tmp_path / "nogt",
                             lambda topic, msg: None if topic.startswith("/ground_truth") else msg)
        assert len(BagRegistrationDataset(bag_set(unlabelled, tiles, tmp_path), TINY, progress=False)) == 10
        with pytest.raises(ValueError, match="/ground_truth/fix"):
            BagRegistrationDataset(bag_set(unlabelled, tiles, tmp_path), TINY, prior="perturbed", progress=False)

    def test_drive_outside_the_tile_cache_has_no_frames(self, coordinate_tiles: dict, drive_bag: Path,
                                                        tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="no usable frames .*outside the tile cache"):
            BagRegistrationDataset(bag_set(drive_bag, coordinate_tiles["mbtiles"], tmp_path), TINY, progress=False)


class TestCommandLine:
    def test_train_then_calibrate_on_bags(self, small_world_dir: Path, drive_bag: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
        from g2s_localization.cli import main

        monkeypatch.chdir(tmp_path)  # the default bag cache (runs/bag_cache) lands here
        tiles = small_world_dir / "area.mbtiles"
        out = tmp_path / "run"
        config = tmp_path / "train.yaml"
        config.write_text(yaml.safe_dump({"model": to_dict(TINY), "max_steps": 2, "batch_size": 2, "num_workers": 0,
                                          "out_dir": str(out), "negative_min_distance_m": 0.0}))
        assert main(["train", "--config", str(config), "--bag", str(drive_bag), "--tiles", str(tiles)]) == 0
        _, meta = read_checkpoint(out / "model.safetensors")
        assert meta["step"] == 2 and meta["config"]["dataset"] == "bag"
        assert meta["config"]["bags"]["sources"] == [{"bag": str(drive_bag), "tiles": str(tiles)}]
        calibrated = tmp_path / "calibrated.safetensors"
        assert main(["calibrate", str(out / "model.safetensors"), "--dataset", "bag", "--root", str(drive_bag),
                     "--tiles", str(tiles), "--limit", "4", "--out", str(calibrated)]) == 0
        _, meta = read_checkpoint(calibrated)
        assert 0.0 < meta["extra"]["calibrated_temperature"] < 1.0

    def test_bag_without_tiles_is_a_usage_error(self, drive_bag: Path, capsys: pytest.CaptureFixture) -> None:
        from g2s_localization.cli import main

        assert main(["train", "--bag", str(drive_bag)]) == 2
        assert "--bag needs --tiles" in capsys.readouterr().err


class TestSelfTrainingFromBags:
    def test_a_teacher_labels_bag_frames(self, small_world_dir: Path, drive_bag: Path, tmp_path: Path) -> None:
        from torch.utils.data import DataLoader

        from g2s_localization.training.self_training import PseudoLabeller

        dataset = BagRegistrationDataset(bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path), TINY,
                                         progress=False)
        batch = next(iter(DataLoader(dataset, batch_size=3)))
        labels = PseudoLabeller.from_weights("baseline", TINY, 0.05, torch.device("cpu"))(batch)
        assert labels.target.shape == (3, 3) and bool(torch.isfinite(labels.target).all())

    def test_the_bags_odometry_carries_labels_as_the_folders_does(self, small_dataset: Path, small_world_dir: Path,
                                                                 drive_bag: Path, tmp_path: Path) -> None:
        from g2s_localization.training.self_training import carry_labels
        from test_self_training import truth_pass

        bags = BagRegistrationDataset(bag_set(drive_bag, small_world_dir / "area.mbtiles", tmp_path), TINY,
                                      progress=False)
        folder = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")
        teacher, truth = truth_pass(folder, [0, 9])  # the bag's frames and priors are the folder's
        assert bags.camera_mount(0) == folder.camera_mount(0)
        from_bag = carry_labels(teacher, bags, 0.5, track_s=1.0)
        from_folder = carry_labels(teacher, folder, 0.5, track_s=1.0)
        assert from_bag.keep.tolist() == from_folder.keep.tolist() == [True] * 10
        assert from_bag.carried.tolist() == [False] + [True] * 8 + [False]
        # the bag's /odom integrates each interval at its end rate (the folder: trapezoidal): close, not equal
        error = np.hypot(*(from_bag.target.numpy()[:, :2] - truth[:, :2]).T)
        assert float(error.max()) < 0.3
        assert float(np.abs(from_bag.target.numpy()[:, 2] - truth[:, 2]).max()) < np.radians(1.0)

    def test_a_bag_without_odometry_cannot_carry_labels(self, small_world_dir: Path, drive_bag: Path,
                                                        tmp_path: Path) -> None:
        from g2s_localization.training.self_training import TeacherPass, carry_labels

        no_odom = rewrite(drive_bag, tmp_path / "no_odom", lambda topic, msg: None if topic == "/odom" else msg)
        dataset = BagRegistrationDataset(bag_set(no_odom, small_world_dir / "area.mbtiles", tmp_path), TINY,
                                         progress=False)
        nothing = TeacherPass(np.zeros((len(dataset), 3)), np.zeros(len(dataset)), np.zeros((len(dataset), 2)),
                              np.zeros(len(dataset)))
        with pytest.raises(ValueError, match="has no odometry"):
            carry_labels(nothing, dataset, 0.3, 1.5)
