"""The map-building commands of ``g2s`` (``build-feature-map``, ``build-place-index``, ``merge-maps``):
whole, across worker processes, as torchrun ranks or as scheduler shards (relocalization/sharding.py)."""
from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path


def add_shard_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """Map building past one process (relocalization/sharding.py; under torchrun, RANK/WORLD_SIZE)."""
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (one thread each)")
    p.add_argument("--shard", default=None, metavar="K/N", help=f"build only part K of N ({what}); join the parts "
                                                                "with g2s merge-maps")
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")


def _feature_map_worker_argv(args: argparse.Namespace) -> list[str]:
    """The arguments a feature-map worker of this build gets (it adds its own --shard, --out, --threads)."""
    argv = ["build-feature-map", str(args.tiles), "--lat", repr(args.lat), "--lon", repr(args.lon), "--half-extent",
            repr(args.half_extent), "--weights", args.weights]
    return argv + (["--device", args.device] if args.device else [])


def _area_feature_map(args: argparse.Namespace, registrar: Callable[[], object], out: Path):
    """The feature map of the area, whole or in shards (``registrar()`` is called only where a
    map is built: a parent of workers merely merges)."""
    from g2s_localization.geo.tile_sources import open_tile_source
    from g2s_localization.geo.tiles import TileCache
    from g2s_localization.relocalization.feature_map import (
        MapSearchConfig, SatelliteFeatureMap, build_feature_map, merge_feature_maps,
    )
    from g2s_localization.relocalization.sharding import build_in_shards

    tiles = TileCache(open_tile_source(args.tiles))
    build = lambda shard: build_feature_map(tiles, registrar(), (args.lat, args.lon), args.half_extent,  # noqa: E731
                                            MapSearchConfig.pool, shard=shard, progress=not args.shard)
    return build_in_shards(build, SatelliteFeatureMap.load, merge_feature_maps, out, _feature_map_worker_argv(args),
                           args.workers,
                           args.shard if args.command == "build-feature-map" else None)


def build_place_index(args: argparse.Namespace) -> None:
    from g2s_localization.registration.registrars import registrar_from_weights
    from g2s_localization.relocalization.feature_map import SatelliteFeatureMap
    from g2s_localization.relocalization.place_head import DEFAULT_PLACE_WEIGHTS, load_place_head
    from g2s_localization.relocalization.place_index import PlaceIndex, build_place_index, merge_place_indexes
    from g2s_localization.relocalization.sharding import build_in_shards, set_threads

    set_threads(args.threads)
    registrar = functools.cache(lambda: registrar_from_weights(args.weights, args.device))
    head = load_place_head(args.head or DEFAULT_PLACE_WEIGHTS)
    if args.features is not None:  # a feature map built before (perhaps across machines)
        feature_map = SatelliteFeatureMap.load(args.features)
    else:
        features_out = args.features_out or args.out.with_name(args.out.stem + ".features.safetensors")
        feature_map = _area_feature_map(args, registrar, features_out)
        if feature_map is None:  # a torchrun rank other than 0: rank 0 goes on alone
            return
        if args.features_out is None:
            features_out.unlink()
    build = lambda shard: build_place_index(feature_map, head, args.lattice_cells, shard=shard)  # noqa: E731
    index = build_in_shards(build, PlaceIndex.load, merge_place_indexes, args.out, [], 1, args.shard, distributed=False)
    h, w = index.shape
    print(f"{len(index)} descriptors ({w}x{h} lattice of {index.cell_m:g} m x {len(index.headings)} headings) for the "
          f"{index.registrar_name} registrar written to {args.out}")
    if args.features_out is not None:
        print(f"its feature map (the node's relocalization_features) written to {args.features_out}")


def build_feature_map(args: argparse.Namespace) -> None:
    from g2s_localization.registration.registrars import registrar_from_weights
    from g2s_localization.relocalization.sharding import set_threads

    set_threads(args.threads)
    registrar = functools.cache(lambda: registrar_from_weights(args.weights, args.device))
    feature_map = _area_feature_map(args, registrar, args.out)
    if feature_map is None:
        return
    h, w = feature_map.shape
    what = f"shard {args.shard} of the map" if args.shard else "the map"
    print(f"{what}: {w}x{h} cells of {feature_map.cell_m:g} m ({100 * float(feature_map.valid.float().mean()):.0f} % "
          f"built) for the {feature_map.registrar_name} registrar written to {args.out}")


def merge_maps(args: argparse.Namespace) -> None:
    from g2s_localization.relocalization.feature_map import SatelliteFeatureMap, merge_feature_maps
    from g2s_localization.relocalization.place_index import PlaceIndex, merge_place_indexes

    try:
        merged = merge_feature_maps([SatelliteFeatureMap.load(p) for p in args.shards])
    except ValueError as feature_error:
        try:
            merged = merge_place_indexes([PlaceIndex.load(p) for p in args.shards])
        except ValueError as index_error:
            raise ValueError(f"not shards of one feature map ({feature_error}) nor of one place index "
                             f"({index_error})") from None
    merged.save(args.out)
    print(f"{len(args.shards)} shards merged into {args.out}")
