"""What the launch file and parameter file reference exists, and the node accepts the parameters."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

from g2s_localization.ros.node_config import PARAMETERS

ROOT = Path(__file__).resolve().parent.parent


def test_launch_file_references_real_things() -> None:
    tree = ast.parse((ROOT / "launch" / "kitti.launch.py").read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"g2s_localization", "g2s_node", "config", "kitti.yaml", "params_file", "use_sim_time",
            "namespace"} <= strings
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in ast.walk(tree))
    setup = (ROOT / "setup.py").read_text()
    assert "g2s_node = " in setup and '"launch/*.launch.py"' in setup and '"config/*.yaml"' in setup
    assert (ROOT / "config" / "kitti.yaml").is_file()


def test_params_file_keys_are_declared_parameters() -> None:
    params = yaml.safe_load((ROOT / "config" / "kitti.yaml").read_text())["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for key, value in params.items():
        default = PARAMETERS[key][0]
        assert type(value) is type(default), key


def test_node_starts_with_params_file_and_reports_bad_tiles(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "g2s_localization.ros.node", "--ros-args", "--params-file",
                             str(ROOT / "config" / "kitti.yaml"), "-p", f"tiles_path:={tmp_path / 'none.mbtiles'}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot open tiles" in result.stdout + result.stderr


def test_node_rejects_corrupt_weights(tmp_path: Path, small_world_dir: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"definitely not weights")
    result = subprocess.run([sys.executable, "-m", "g2s_localization.ros.node", "--ros-args", "-p",
                             f"tiles_path:={small_world_dir / 'area.mbtiles'}", "-p", f"weights:={bad}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "cannot load weights" in result.stdout + result.stderr


def test_node_rejects_a_corrupt_or_foreign_relocalization_map(tmp_path: Path, small_world_dir: Path,
                                                              baseline_relocalization_maps: dict[str, Path]) -> None:
    from g2s_localization.geo.tile_sources import open_tile_source
    from g2s_localization.geo.tiles import TileCache
    from g2s_localization.registration.registrars import DEFAULT_WEIGHTS, BaselineRegistrar
    from g2s_localization.relocalization.feature_map import build_feature_map
    from g2s_localization.synthetic.generate import load_world

    def run(map_path: Path, weights: str, features: Path | None = None) -> str:
        extra = ["-p", f"relocalization_features:={features}"] if features else []
        result = subprocess.run([sys.executable, "-m", "g2s_localization.ros.node", "--ros-args", "-p",
                                 f"tiles_path:={small_world_dir / 'area.mbtiles'}", "-p", f"weights:={weights}",
                                 "-p", f"relocalization_map:={map_path}", *extra],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1
        return result.stdout + result.stderr

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a map")
    assert "cannot load the relocalization map" in run(bad, "baseline")
    assert "cannot load relocalization_features" in run(baseline_relocalization_maps["places"], "baseline", bad)
    assert "set relocalization_features" in run(baseline_relocalization_maps["places"], "baseline")
    world = load_world(small_world_dir)
    tiles = TileCache(open_tile_source(small_world_dir / "tiles"))
    baseline_map = build_feature_map(tiles, BaselineRegistrar(device="cpu"), (world.config.anchor_lat_deg,
                                     world.config.anchor_lon_deg), 20.0, headings=1, progress=False)
    learned = str(DEFAULT_WEIGHTS)  # the node runs the learned net, the map holds baseline features
    assert "rebuild it" in run(baseline_map.save(tmp_path / "baseline.safetensors"), learned)
