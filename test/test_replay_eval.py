"""g2s replay + g2s evaluate end to end: node process, bag over DDS with /clock, report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from g2s_localization.cli import main
from g2s_localization.data.bag_io import kitti_to_bag, read_bag_datum


def test_evaluate_a_bag_through_the_node(small_dataset: Path, small_world_dir: Path, tmp_path: Path) -> None:
    """As a bag from another tool arrives: a folder holding only the .mcap (no metadata.yaml), so
    the map datum is given on the command line."""
    drive = small_dataset / "raw_data" / "2026_01_01" / "2026_01_01_drive_0007_sync"
    bag = kitti_to_bag(drive, tmp_path / "bag", progress=False)
    datum = read_bag_datum(bag)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(next(bag.glob("*.mcap")), foreign / "drive.mcap")
    out = tmp_path / "eval"
    assert main(["evaluate", str(foreign), "--tiles", str(small_world_dir / "area.mbtiles"), "--weights", "baseline",
                 "--out", str(out), "--rate", "0.25", "--datum", ",".join(map(repr, datum))]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 10
    assert metrics["poses"] >= 6, metrics  # a queue of one may drop a frame while the registrar is busy
    assert metrics["registration"]["g2s node"]["position_m_median"] < 1.5, metrics
    assert metrics["registration"]["GNSS + compass"]["position_m_median"] > 1.0
    assert set(metrics["ekf"]) == {"EKF odometry + g2s", "EKF odometry + GNSS"}
    for name in ("report.md", "trajectory.png", "error_over_time.png", "error_cdf.png", "node.log"):
        assert (out / name).is_file(), name
    assert "SYNTHETIC" in (out / "report.md").read_text()


def test_replay_refuses_to_wait_for_a_topic_the_bag_lacks(small_dataset: Path, tmp_path: Path) -> None:
    import pytest

    from g2s_localization.ros.replay import replay

    drive = small_dataset / "raw_data" / "2026_01_01" / "2026_01_01_drive_0007_sync"
    bag = kitti_to_bag(drive, tmp_path / "bag", progress=False)
    with pytest.raises(ValueError, match="no topic"):
        replay(bag, wait_topics=["/not/in/the/bag"], wait_for_subscribers_s=0.1)
    with pytest.raises(ValueError, match="rate"):
        replay(bag, rate=0.0)


def test_camera_mounted_off_base_link_is_evaluated_for_base_link(small_world_dir: Path, tmp_path: Path) -> None:
    """A drive whose camera sits 1.2 m ahead, 0.3 m left, turned 1 deg: its calibration chain goes
    into the bag's /tf_static, the node takes the mount from there, and base_link's pose is scored."""
    from g2s_localization.data.registration_dataset import KittiRegistrationDataset
    from g2s_localization.registration.registrars import BaselineRegistrar

    root = tmp_path / "mounted"
    assert main(["make-drive", str(root), "--world", str(small_world_dir), "--seed", "9", "--duration", "1.0",
                 "--date", "2026_02_02", "--camera-mount", "1.2,0.3,1.0", "--split", "test"]) == 0
    # the dataset's samples are the camera's: registering one recovers the camera's pose
    registrar = BaselineRegistrar(device="cpu")
    item = KittiRegistrationDataset(root, "test", registrar.config, prior="perturbed", seed=1)[4]
    estimate = registrar.estimate({k: v.unsqueeze(0) for k, v in item.items()})
    assert abs(float(estimate.forward_m[0]) - float(item["target"][0])) < 1.0
    assert abs(float(estimate.left_m[0]) - float(item["target"][1])) < 1.0
    bag = kitti_to_bag(root / "raw_data" / "2026_02_02" / "2026_02_02_drive_0001_sync", tmp_path / "bag",
                       progress=False)
    out = tmp_path / "eval"
    assert main(["evaluate", str(bag), "--tiles", str(small_world_dir / "area.mbtiles"), "--weights", "baseline",
                 "--out", str(out), "--rate", "0.25"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["poses"] >= 5, metrics
    assert metrics["registration"]["g2s node"]["position_m_median"] < 0.6, metrics  # the lever arm is 1.24 m
    assert "camera mount from /tf_static" in (out / "node.log").read_text()
