"""VIGOR layout reader on a fixture written in the release's layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from g2s_localization.data.vigor import VIGOR_METRES_PER_PX, localization_errors_m, parse_panorama_name, read_vigor
from flat_ground import panorama_on_ground, random_patches  # noqa: E402


def write_fixture(root: Path) -> None:
    city = root / "Chicago"
    (city / "panorama").mkdir(parents=True)
    (city / "satellite").mkdir(parents=True)
    labels = root / "splits__corrected" / "Chicago"
    labels.mkdir(parents=True)
    pano_a = "abcDEF-_123,41.883760,-87.628230,.jpg"
    pano_b = "zzz,41.884000,-87.628000,.jpg"
    sat = "satellite_41.883760_-87.628230.png"
    for name in (pano_a, pano_b):
        (city / "panorama" / name).write_bytes(b"")
    (city / "satellite" / sat).write_bytes(b"")
    others = " satellite_41.8838_-87.6283.png 10 10" * 3
    (labels / "pano_label_balanced.txt").write_text(f"{pano_a} {sat} 0.0 0.0{others}\n{pano_b} {sat} 5 5{others}\n")
    (labels / "same_area_balanced_test.txt").write_text(f"{pano_b}\n")


def test_reader_and_ground_truth_pixels(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    (sample,) = read_vigor(tmp_path, ("Chicago",), "test", "same")
    assert sample.panorama.name.startswith("zzz") and sample.satellite.name.startswith("satellite_")
    east, north = sample.offset_m
    # 0.00024 deg of latitude = 26.65 m north; 0.00023 deg of longitude at 41.88 deg = 19.07 m east
    assert north == pytest.approx(26.65, abs=0.05) and east == pytest.approx(19.07, abs=0.05)
    u, v = sample.pixel
    assert u == pytest.approx(319.5 + east / 0.111262) and v == pytest.approx(319.5 - north / 0.111262)
    both = read_vigor(tmp_path, ("Chicago",), area="cross")
    assert len(both) == 2 and both[0].pixel == pytest.approx((319.5, 319.5))


def test_errors_in_metres(tmp_path: Path) -> None:
    write_fixture(tmp_path)
    samples = read_vigor(tmp_path, ("Chicago",), area="cross")
    predicted = np.array([s.pixel for s in samples]) + np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(localization_errors_m(samples, predicted), [5 * VIGOR_METRES_PER_PX["Chicago"], 0.0])


def test_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_panorama_name("nocommas.jpg")
    with pytest.raises(ValueError, match="unknown VIGOR city"):
        read_vigor(tmp_path, ("Atlantis",))


def write_image_fixture(root: Path, city: str = "Chicago") -> tuple[str, float]:
    """A VIGOR-layout city whose one panorama (north at the centre column, 2.5 m up) sees the flat
    ground of its satellite image: random patches, so every position is distinct."""
    import cv2

    from g2s_localization.cameras.equirectangular import EquirectangularCamera

    mpp = VIGOR_METRES_PER_PX[city]
    (root / city / "panorama").mkdir(parents=True)
    (root / city / "satellite").mkdir(parents=True)
    labels = root / "splits__corrected" / city
    labels.mkdir(parents=True)
    satellite = random_patches(640, 700, seed=5, background=90)
    sat_name = "satellite_41.883760_-87.628230.png"
    cv2.imwrite(str(root / city / "satellite" / sat_name), satellite)
    pano_name = "pano,41.883790,-87.628200,.jpg"  # 3.3 m north, 2.5 m east of the satellite centre
    u0, v0 = read_vigor_sample(root, city, pano_name, sat_name).pixel
    panorama = panorama_on_ground(satellite, (u0, v0), mpp, EquirectangularCamera.full_sphere(1024, 512, -180.0),
                                  2.5)
    cv2.imwrite(str(root / city / "panorama" / pano_name), panorama, [cv2.IMWRITE_JPEG_QUALITY, 98])
    (labels / "pano_label_balanced.txt").write_text(f"{pano_name} {sat_name} 0 0" + " x.png 0 0" * 3 + "\n")
    for split in ("train", "test"):
        (labels / f"same_area_balanced_{split}.txt").write_text(pano_name + "\n")
    return city, mpp


def read_vigor_sample(root: Path, city: str, pano: str, sat: str):
    from g2s_localization.data.vigor import VigorSample, parse_satellite_name

    return VigorSample(city, root / city / "panorama" / pano, root / city / "satellite" / sat,
                       *parse_panorama_name(pano), *parse_satellite_name(sat))


SMALL = dict(bev_size=80, bev_metres_per_px=0.4, search_radius_m=8.0, yaw_range_deg=4.0, yaw_step_deg=2.0)


def test_panorama_sample_is_registered(tmp_path: Path) -> None:
    """The VIGOR path end to end: panorama -> panorama camera model -> BEV -> registration."""
    import torch

    from g2s_localization.data.registration_sets import open_registration_dataset
    from g2s_localization.registration.model import ModelConfig
    from g2s_localization.registration.registrars import BaselineRegistrar, to_map_frame

    write_image_fixture(tmp_path)
    config = ModelConfig(**SMALL)
    dataset = open_registration_dataset("vigor", tmp_path, "test", config, "perturbed", seed=3,
                                        vigor_cities=("Chicago",))
    item = dataset[0]
    assert item["bev_pixels"].shape == (80, 80, 2) and bool(item["bev_seen"].all())
    batch = {k: v.unsqueeze(0) for k, v in item.items()}
    registrar = BaselineRegistrar(config, device="cpu")
    estimate = registrar.estimate(batch)
    found = torch.stack([estimate.forward_m, estimate.left_m], -1)[0]
    assert float(torch.linalg.norm(found - item["target"][:2])) < 1.0, (found, item["target"])
    gnss = open_registration_dataset("vigor", tmp_path, "test", config, "gnss", vigor_cities=("Chicago",))[0]  # prior: the image centre
    assert gnss["prior_latlon"].tolist() == pytest.approx([41.883760, -87.628230])
    offset, _, _ = to_map_frame(registrar.estimate({k: v.unsqueeze(0) for k, v in gnss.items()}),
                                gnss["prior_yaw"][None])
    assert offset[0].tolist() == pytest.approx([2.5, 3.3], abs=1.0)  # east, north of the satellite centre


def test_train_runs_on_vigor_layout(tmp_path: Path) -> None:
    import yaml

    from g2s_localization.cli import main
    from g2s_localization.registration.checkpoints import read_checkpoint

    write_image_fixture(tmp_path / "VIGOR")
    model = {**SMALL, "ground_width": 128, "ground_height": 64, "feature_dim": 4, "width": 8}
    config = {"dataset": "vigor", "dataset_root": str(tmp_path / "VIGOR"), "split": "train", "epochs": 1,
              "vigor_cities": ["Chicago"], "max_steps": 2, "batch_size": 1, "num_workers": 0, "contrastive_loss_weight": 0.0,
              "out_dir": str(tmp_path / "run"), "model": model}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 0
    _, meta = read_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 1  # one panorama, batch 1, one epoch


def test_registration_benchmark_runs_on_vigor(tmp_path: Path) -> None:
    import subprocess
    import sys

    for city in VIGOR_METRES_PER_PX:
        write_image_fixture(tmp_path / "VIGOR", city)
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "registration.py"
    result = subprocess.run([sys.executable, str(bench), "--dataset", "vigor", "--root", str(tmp_path / "VIGOR"),
                             "--split", "test", "--vigor-area", "cross", "--repeats", "1", "--report",
                             str(tmp_path / "report")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 frames, split 'test'" in result.stdout and "VIGOR cross-area" in result.stdout  # SF + Chicago
    assert (tmp_path / "report" / "metrics.json").is_file()
