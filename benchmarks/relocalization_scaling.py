"""Per-frame place-search time against cache size: map-wide correlation vs LPN index + verification.

Timing only, on random feature grids (no accuracy is measured here; see relocalization.py): one
frame scored against a square cache of each side, by FFT correlation with the feature map, and by
the LPN index (descriptor scores, the track sum's top ``retrieved`` places) plus verification of
those places with ``frames`` kept frames. Learned registrar shapes: 10 channels, 1.6 m cells,
40-cell camera template, the shipped head's parts. CPU, the threads torch is given.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from g2s_localization.relocalization.feature_map import NORTH_UP_YAW, MapSearchConfig, SatelliteFeatureMap
from g2s_localization.relocalization.map_search import ScoreMap, SequenceSearch, frame_template, score_map
from g2s_localization.relocalization.place_head import DEFAULT_PLACE_WEIGHTS, load_place_head
from g2s_localization.relocalization.place_index import build_place_index
from g2s_localization.relocalization.relocalizer import verify_places


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides-m", type=float, nargs="+", default=[1000.0, 2000.0, 3000.0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = MapSearchConfig(frames=args.frames)
    head = load_place_head(DEFAULT_PLACE_WEIGHTS)
    channels, window = head.config["in_channels"], head.window
    generator = torch.Generator().manual_seed(0)
    bev = torch.randn(channels, window * config.pool, window * config.pool, generator=generator)
    mask = torch.ones(bev.shape[1:], dtype=torch.bool)
    print(f"per frame, CPU, {torch.get_num_threads()} threads; {args.frames} frames verified, "
          f"{config.retrieved} places retrieved")
    for side in args.sides_m:
        cells = int(math.ceil(side / 1.6 / 64)) * 64
        features = torch.randn(1, channels, cells, cells, generator=generator)
        fmap = SatelliteFeatureMap((49.0, 8.4), 1.6, features, torch.ones(1, cells, cells, dtype=torch.bool),
                                   torch.tensor([NORTH_UP_YAW]))
        fmap.prepare()
        correlation = median_time(lambda: score_map(fmap, bev, mask, NORTH_UP_YAW, config), args.repeats)
        index = build_place_index(fmap, head, progress=False)
        descriptor, layer = index.describe(bev, mask, NORTH_UP_YAW, 1.6 / config.pool)
        search = SequenceSearch(index, config)
        for k in range(args.frames):
            scores = index.scores(descriptor, layer)
            template = frame_template(fmap, bev, mask, NORTH_UP_YAW, config)
            search.add(ScoreMap(scores.scores, layer, template), (8.0 * k, 0.0))

        def lpn() -> None:
            index.scores(*index.describe(bev, mask, NORTH_UP_YAW, 1.6 / config.pool))
            verify_places(fmap, search.history, search.candidates(config.retrieved, config.retrieval_separation_m),
                          config.verify_radius_m)

        print(f"  {cells * 1.6 / 1000:.1f} km x {cells * 1.6 / 1000:.1f} km: map-wide correlation {correlation:.2f} s, "
              f"LPN index + verification {median_time(lpn, args.repeats):.2f} s")


if __name__ == "__main__":
    main()
