"""Map building past one process: shards built apart and merged equal the map built whole."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from g2s_localization.cli import main
from g2s_localization.relocalization.feature_map import SatelliteFeatureMap, build_feature_map, merge_feature_maps
from g2s_localization.relocalization.sharding import parse_shard, shard_path


@pytest.fixture(scope="module")
def area(small_world_dir: Path) -> dict:
    from g2s_localization.geo.tile_sources import open_tile_source
    from g2s_localization.geo.tiles import TileCache
    from g2s_localization.registration.registrars import BaselineRegistrar
    from g2s_localization.synthetic.generate import load_world

    world = load_world(small_world_dir)
    return {"tiles": TileCache(open_tile_source(small_world_dir / "tiles")), "registrar": BaselineRegistrar(device="cpu"),
            "origin": (world.config.anchor_lat_deg, world.config.anchor_lon_deg), "dir": small_world_dir}


def build(area: dict, shard: tuple[int, int] = (0, 1)) -> SatelliteFeatureMap:
    return build_feature_map(area["tiles"], area["registrar"], area["origin"], 30.0, progress=False, shard=shard)


def test_parse_shard() -> None:
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "a/b", "2"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)
    assert shard_path(Path("/m/area.safetensors"), 1, 4) == Path("/m/area.shard1of4.safetensors")


def test_feature_map_shards_merge_to_the_whole(area: dict) -> None:
    whole = build(area)
    parts = [build(area, (k, 3)) for k in range(3)]
    assert all(0 < float(p.valid.float().mean()) < 1 for p in parts)  # each shard built only its blocks
    merged = merge_feature_maps(parts)
    assert torch.equal(merged.valid, whole.valid) and torch.equal(merged.features, whole.features)
    with pytest.raises(ValueError, match="overlap"):
        merge_feature_maps([parts[0], parts[0]])
    with pytest.raises(ValueError, match="different builds"):
        merge_feature_maps([parts[0], build_feature_map(area["tiles"], area["registrar"], area["origin"], 20.0,
                                                        progress=False, shard=(1, 3))])


def test_shard_files_hold_their_part_and_old_files_still_load(area: dict, tmp_path: Path) -> None:
    """A file keeps only the valid cells' features, so a shard's file is about its share of the
    map; the first format (the whole grid) still loads."""
    from safetensors.torch import save_file

    from g2s_localization.relocalization.relocalizer import load_place_map

    whole, part = build(area), build(area, (1, 4))
    sizes = [m.save(tmp_path / f"{name}.safetensors").stat().st_size for name, m in (("whole", whole), ("part", part))]
    assert sizes[1] < 0.5 * sizes[0]  # a quarter of the blocks, plus the (whole) valid mask
    loaded = SatelliteFeatureMap.load(tmp_path / "part.safetensors")
    assert torch.equal(loaded.valid, part.valid) and torch.equal(loaded.features, part.features.half().float())
    save_file({"features": whole.features.half(), "valid": whole.valid.to(torch.uint8), "headings": whole.headings},
              str(tmp_path / "old.safetensors"), metadata={"format": "g2s-feature-map-1", "origin": "[49.0, 8.4]",
                                                           "cell_m": "1.6", "registrar": "edge-ncc baseline"})
    old = load_place_map(tmp_path / "old.safetensors")
    assert isinstance(old, SatelliteFeatureMap) and torch.equal(old.features, whole.features.half().float())


def test_place_index_shards_merge_to_the_whole(area: dict) -> None:
    from g2s_localization.relocalization.place_head import RingPartHead, part_kernels
    from g2s_localization.relocalization.place_index import build_place_index, merge_place_indexes

    feature_map = build(area)
    torch.manual_seed(0)
    head = RingPartHead(feature_map.features.shape[1], part_kernels(torch.ones(12, 12, dtype=torch.bool), 2, 2))
    whole = build_place_index(feature_map, head, progress=False)
    merged = merge_place_indexes([build_place_index(feature_map, head, progress=False, shard=(k, 2)) for k in (0, 1)])
    assert torch.equal(merged.descriptors, whole.descriptors) and torch.equal(merged.valid, whole.valid)


def test_two_worker_processes_build_the_same_map(area: dict, tmp_path: Path, capsys) -> None:
    """`--workers 2` (two processes, one thread each) writes the map one process writes, bit for bit,
    and leaves no shard files behind; a shard built alone merges with `g2s merge-maps`."""
    lat, lon = area["origin"]
    args = ["build-feature-map", str(area["dir"] / "tiles"), "--lat", repr(lat), "--lon", repr(lon), "--half-extent",
            "30", "--weights", "baseline", "--device", "cpu"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, "-m", "g2s_localization", *args, "--threads", "1", "--out", str(one)], check=True,
                   capture_output=True)
    assert main([*args, "--workers", "2", "--out", str(two)]) == 0
    a, b = SatelliteFeatureMap.load(one), SatelliteFeatureMap.load(two)
    assert torch.equal(a.features, b.features) and torch.equal(a.valid, b.valid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.safetensors", "two.safetensors"]
    shards = [tmp_path / f"s{k}.safetensors" for k in range(2)]
    for k, path in enumerate(shards):
        subprocess.run([sys.executable, "-m", "g2s_localization", *args, "--threads", "1", "--shard", f"{k}/2", "--out",
                        str(path)], check=True, capture_output=True)
    assert main(["merge-maps", *map(str, shards), "--out", str(tmp_path / "merged.safetensors")]) == 0
    merged = SatelliteFeatureMap.load(tmp_path / "merged.safetensors")
    assert torch.equal(merged.features, a.features)
    capsys.readouterr()
    assert main(["merge-maps", str(shards[0]), str(shards[0]), "--out", str(tmp_path / "bad.safetensors")]) == 2
    assert "overlap" in capsys.readouterr().err


def test_torchrun_ranks_build_and_rank_0_merges(area: dict, tmp_path: Path) -> None:
    """The cluster route on one machine: two torchrun ranks each build their shard beside --out, and
    rank 0 merges after the barrier into the map one process builds, leaving no shard files."""
    lat, lon = area["origin"]
    args = ["build-feature-map", str(area["dir"] / "tiles"), "--lat", repr(lat), "--lon", repr(lon), "--half-extent",
            "30", "--weights", "baseline", "--device", "cpu", "--threads", "1"]
    ranked, whole = tmp_path / "ranked.safetensors", tmp_path / "whole.safetensors"
    torchrun = Path(sys.executable).with_name("torchrun")
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "g2s_localization", *args, "--out",
                    str(ranked)], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "g2s_localization", *args, "--out", str(whole)], check=True,
                   capture_output=True)
    a, b = SatelliteFeatureMap.load(ranked), SatelliteFeatureMap.load(whole)
    assert torch.equal(a.features, b.features) and torch.equal(a.valid, b.valid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranked.safetensors", "whole.safetensors"]
