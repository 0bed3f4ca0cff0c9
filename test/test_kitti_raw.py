"""KITTI raw reading (official formats) and the synthetic writer's layout."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from g2s_localization.data.kitti_raw import (
    OXTS_FIELDS,
    KittiRawDrive,
    find_drives,
    format_timestamp_ns,
    parse_oxts_line,
    parse_timestamp_ns,
)

# An OXTS record in the official 30-field text format (values typical of KITTI raw, Karlsruhe).
OFFICIAL_OXTS = ("49.015003823272 8.4342971002335 116.43032836914 0.035752 0.00903 -1.2960113 "
                 "-3.3379401 11.036503 11.536312 -0.028838137 0.14253484 0.29209214 -0.45113328 9.6975913 "
                 "0.24651052 -0.40617535 9.7278004 0.019004409 0.044305712 -0.0073085609 0.018849913 "
                 "0.044393022 -0.0074209014 0.21319314 0.023086239 4 11 4 4 0")


class TestParseOxts:
    def test_official_line(self) -> None:
        o = parse_oxts_line(OFFICIAL_OXTS)
        assert (o.lat, o.lon, o.alt) == (49.015003823272, 8.4342971002335, 116.43032836914)
        assert o.yaw == -1.2960113 and o.vf == 11.536312
        assert (o.navstat, o.numsats, o.posmode, o.velmode, o.orimode) == (4, 11, 4, 4, 0)
        assert isinstance(o.numsats, int) and o.has_fix
        assert parse_oxts_line(o.to_line()) == o

    def test_wrong_count_and_garbage(self) -> None:
        with pytest.raises(ValueError, match="30 OXTS fields"):
            parse_oxts_line("49.0 8.4 100")
        with pytest.raises(ValueError, match="non-numeric"):
            parse_oxts_line(" ".join(["x"] * len(OXTS_FIELDS)))

    def test_no_fix(self) -> None:
        fields = OFFICIAL_OXTS.split()
        fields[27] = "0"  # posmode
        assert not parse_oxts_line(" ".join(fields)).has_fix
        fields[0] = "nan"
        assert not parse_oxts_line(" ".join(fields)).has_fix


class TestTimestamps:
    def test_nanosecond_format(self) -> None:
        ns = parse_timestamp_ns("2011-09-26 13:02:25.964389445")
        assert ns == 1317042145_964389445  # 2011-09-26T13:02:25Z = 1317042145 s
        assert format_timestamp_ns(ns) == "2011-09-26 13:02:25.964389445"


class TestSyntheticDrive:
    def test_layout(self, small_dataset: Path) -> None:
        drive_dir = small_dataset / "raw_data" / "2026_01_01" / "2026_01_01_drive_0007_sync"
        for rel in ("image_02/timestamps.txt", "oxts/timestamps.txt", "oxts/dataformat.txt",
                    "image_02/data/0000000000.png", "oxts/data/0000000009.txt", "ground_truth/poses.csv"):
            assert (drive_dir / rel).is_file(), rel
        assert (small_dataset / "raw_data" / "2026_01_01" / "calib_cam_to_cam.txt").is_file()
        split = (small_dataset / "train_files.txt").read_text().split()
        assert split[0] == "2026_01_01/2026_01_01_drive_0007_sync/image_02/data/0000000000.png" and len(split) == 10

    def test_reader(self, small_dataset: Path) -> None:
        (drive,) = find_drives(small_dataset)
        assert drive.frames == list(range(10))
        cam = drive.camera()
        assert (cam.width, cam.height, cam.fx) == (1242, 375, pytest.approx(721.5377))
        stamps = drive.timestamps_ns()
        assert [b - a for a, b in zip(stamps, stamps[1:])] == [100_000_000] * 9
        truth = drive.ground_truth()
        assert len(truth) == 10 and truth[3].frame == 3
        assert drive.datum() is not None
        image = drive.image(0)
        assert image.shape == (375, 1242, 3)
        satmap = cv2.imread(str(drive.satmap_path(small_dataset, 4)))
        assert satmap.shape == (512, 512, 3)

    def test_oxts_is_the_noisy_sensor(self, small_dataset: Path) -> None:
        from g2s_localization.geo.geodesy import EnuFrame

        (drive,) = find_drives(small_dataset)
        gaps = []
        for gt in drive.ground_truth():
            o = drive.oxts(gt.frame)
            if o.has_fix:
                gaps.append(float(abs(EnuFrame(gt.lat, gt.lon).to_enu(o.lat, o.lon)[:2]).max()))
        assert gaps and max(gaps) > 0.05  # the OXTS fix is not the truth

    def test_real_drive_without_ground_truth_uses_oxts(self, tmp_path: Path) -> None:
        drive_dir = tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync"
        (drive_dir / "image_02" / "data").mkdir(parents=True)
        (drive_dir / "oxts" / "data").mkdir(parents=True)
        cv2.imwrite(str(drive_dir / "image_02" / "data" / "0000000000.png"), np.zeros((4, 4, 3), np.uint8))
        (drive_dir / "oxts" / "data" / "0000000000.txt").write_text(OFFICIAL_OXTS + "\n")
        (drive_dir / "oxts" / "timestamps.txt").write_text("2011-09-26 13:02:25.964389445\n")
        drive = KittiRawDrive(drive_dir)
        (truth,) = drive.ground_truth()
        assert (truth.lat, truth.yaw) == (49.015003823272, -1.2960113)
        assert drive.datum() is None

    def test_not_a_drive(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="not a KITTI raw drive"):
            KittiRawDrive(tmp_path)

    def test_corrupt_image(self, small_dataset: Path, tmp_path: Path) -> None:
        import shutil

        src = small_dataset / "raw_data" / "2026_01_01" / "2026_01_01_drive_0007_sync"
        dst = tmp_path / "2026_01_01" / src.name
        shutil.copytree(src, dst)
        (dst / "image_02" / "data" / "0000000002.png").write_bytes(b"\x89PNG broken")
        with pytest.raises(ValueError, match="cannot decode"):
            KittiRawDrive(dst).image(2)
