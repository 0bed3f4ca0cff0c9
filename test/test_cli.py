"""The g2s command line on real files."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from g2s_localization.cli import main


def test_crop_writes_a_patch(coordinate_tiles: dict, tmp_path: Path, capsys) -> None:
    from test_tiles import world_latlon

    lat, lon = world_latlon(coordinate_tiles, 2, 2, 10, 20)
    out = tmp_path / "p.png"
    assert main(["crop", str(coordinate_tiles["mbtiles"]), "--lat", str(lat), "--lon", str(lon),
                 "--yaw-deg", "30", "--size", "64", "--mpp", "0.25", "-o", str(out)]) == 0
    assert cv2.imread(str(out)).shape == (64, 64, 3)
    assert "written" in capsys.readouterr().out


def test_errors_are_messages_not_tracebacks(tmp_path: Path, capsys) -> None:
    assert main(["crop", str(tmp_path / "missing.mbtiles"), "--lat", "49", "--lon", "8.4"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["kitti-to-bag", str(tmp_path), str(tmp_path / "bag")]) == 2
    assert "not a KITTI raw drive" in capsys.readouterr().err


def test_make_drive_and_bag(small_world_dir: Path, tmp_path: Path) -> None:
    assert main(["make-drive", str(tmp_path / "ds"), "--world", str(small_world_dir), "--duration", "0.3",
                 "--number", "2"]) == 0
    drive = tmp_path / "ds" / "raw_data" / "2026_01_01" / "2026_01_01_drive_0002_sync"
    assert len(list((drive / "image_02" / "data").glob("*.png"))) == 3
    assert main(["kitti-to-bag", str(drive), str(tmp_path / "bag"), "--storage", "sqlite3"]) == 0
    assert (tmp_path / "bag" / "metadata.yaml").is_file()


def test_build_feature_map_for_the_node(small_world_dir: Path, tmp_path: Path, capsys) -> None:
    from g2s_localization.relocalization.feature_map import SatelliteFeatureMap
    from g2s_localization.synthetic.generate import load_world

    world = load_world(small_world_dir)
    out = tmp_path / "features.safetensors"
    assert main(["build-feature-map", str(small_world_dir / "tiles"), "--lat", str(world.config.anchor_lat_deg),
                 "--lon", str(world.config.anchor_lon_deg), "--half-extent", "30", "--weights", "baseline",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert "edge-ncc baseline" in capsys.readouterr().out
    loaded = SatelliteFeatureMap.load(out)
    assert loaded.registrar_name == "edge-ncc baseline" and len(loaded.headings) == 16 and loaded.valid.all()
    assert main(["build-feature-map", str(small_world_dir / "tiles"), "--lat", "10", "--lon", "10",
                 "--weights", "baseline", "--out", str(out)]) == 2
    assert "inside the tile cache" in capsys.readouterr().err


def test_train_place_head_and_build_place_index(small_world_dir: Path, small_dataset: Path, tmp_path: Path,
                                               capsys) -> None:
    from g2s_localization.relocalization.feature_map import SatelliteFeatureMap
    from g2s_localization.relocalization.place_index import PlaceIndex
    from g2s_localization.relocalization.relocalizer import load_place_map
    from g2s_localization.synthetic.generate import load_world

    head = tmp_path / "head.safetensors"
    assert main(["train-place-head", "--root", str(small_dataset), "--split", "train", "--every", "1", "--steps", "3",
                 "--weights", "baseline", "--device", "cpu", "--out", str(head)]) == 0
    assert "place head (10 frames)" in capsys.readouterr().out
    world = load_world(small_world_dir)
    area = [str(small_world_dir / "tiles"), "--lat", str(world.config.anchor_lat_deg), "--lon",
            str(world.config.anchor_lon_deg), "--half-extent", "50", "--weights", "baseline", "--device", "cpu"]
    out = tmp_path / "places.safetensors"
    features = tmp_path / "features.safetensors"
    assert main(["build-place-index", *area, "--head", str(head), "--out", str(out), "--features-out",
                 str(features)]) == 0
    assert "edge-ncc baseline" in capsys.readouterr().out
    index, feature_map = load_place_map(out), load_place_map(features)
    assert isinstance(index, PlaceIndex) and index.registrar_name == "edge-ncc baseline"
    assert len(index.headings) == 16 and index.cell_m == pytest.approx(4.8) and len(index) > 0
    assert isinstance(feature_map, SatelliteFeatureMap) and feature_map.origin == index.origin
    assert feature_map.cell_m * 3 == pytest.approx(index.cell_m)
    # the shipped head reads the learned registrar's channels, not the baseline's
    assert main(["build-place-index", *area, "--out", str(tmp_path / "other.safetensors")]) == 2
    assert "trained for another registrar" in capsys.readouterr().err
    with pytest.raises(ValueError, match="neither a place index nor a feature map"):
        load_place_map(head)
