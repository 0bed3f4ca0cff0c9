"""Feature-map building across worker processes: wall time with 1 and with N workers, one thread
each, and whether the maps are identical (SYNTHETIC 1 km x 1 km town, generated when missing).

Target (issue 17): on a 2-core machine, 2 workers at least 1.7x faster than 1, identical output.
Prints the figures; ``--json FILE`` writes them too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from g2s_localization.relocalization.feature_map import SatelliteFeatureMap
from g2s_localization.synthetic.generate import load_world


def g2s(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "g2s_localization", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("out/map_building/world"))
    parser.add_argument("--half-extent", type=float, default=500.0, help="metres: the map is twice this across")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--weights", default="", help="'' = shipped learned registrar, 'baseline', or a path")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not (args.world / "world.yaml").is_file():
        print(f"no world at {args.world}: generating one (SYNTHETIC, seed 40, 1 km x 1 km)")
        g2s("make-world", str(args.world), "--seed", "40", "--size", "1000")
    world = load_world(args.world)
    lat, lon = world.config.anchor_lat_deg, world.config.anchor_lon_deg
    out = args.world.parent
    common = ["build-feature-map", str(args.world / "tiles"), "--lat", repr(lat), "--lon", repr(lon),
              "--half-extent", repr(args.half_extent), "--weights", args.weights, "--device", "cpu"]
    times = {}
    for workers in (1, args.workers):
        path = out / f"features_{workers}w.safetensors"
        extra = ["--threads", "1"] if workers == 1 else ["--workers", str(workers)]
        start = time.perf_counter()
        g2s(*common, *extra, "--out", str(path))
        times[workers] = time.perf_counter() - start
    one = SatelliteFeatureMap.load(out / "features_1w.safetensors")
    many = SatelliteFeatureMap.load(out / f"features_{args.workers}w.safetensors")
    identical = torch.equal(one.features, many.features) and torch.equal(one.valid, many.valid)
    area_km2 = (2 * args.half_extent / 1000) ** 2
    figures = {"area_km2": area_km2, "seconds_1_worker": times[1], f"seconds_{args.workers}_workers": times[args.workers],
               "speedup": times[1] / times[args.workers], "identical": identical,
               "seconds_per_km2_1_worker": times[1] / area_km2}
    print(f"feature map of {area_km2:.3f} km^2 ({one.shape[1]}x{one.shape[0]} cells x {len(one.headings)} headings, "
          f"registrar {one.registrar_name}), SYNTHETIC town, process start-up included:")
    print(f"  1 worker (1 thread):            {times[1]:6.1f} s  ({figures['seconds_per_km2_1_worker'] / 60:.1f} min "
          f"per km^2)")
    print(f"  {args.workers} workers (1 thread each):    {times[args.workers]:6.1f} s  speed-up "
          f"{figures['speedup']:.2f}x (target >= 1.7x with 2 on 2 cores)")
    print(f"  identical maps: {identical}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
