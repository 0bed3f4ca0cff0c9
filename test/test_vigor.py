"""VIGOR layout reader on a fixture written in the release's layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from g2s_localization.data.vigor import VIGOR_METRES_PER_PX, localization_errors_m, parse_panorama_name, read_vigor


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
