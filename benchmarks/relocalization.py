"""Relocalization without GNSS on a SYNTHETIC unseen town: place recall, pose error and time.

For every ``--every``-th camera frame of the split (the query), the relocalizer is fed the
frames behind it on the same drive, ``frame_spacing_m`` apart (dead reckoning = true relative
motion with a 2 % odometry scale error; heading = the drive's IMU heading, which has its own
bias), then relocalizes the query. No GNSS is used. Printed:

* place Recall@1 / @3: the best (any of the 3) map-search candidate within 8 m of the truth;
* the relocalized pose (after fine registration): error, share within 1 m / 5 m, how many the node
  would publish (confidence >= 0.05 and position std <= 5 m) and how many of those are > 5 m off,
  and how often the truth lies outside the pose's 99 % covariance ellipse;
* time per frame (map search + fine registration of the candidates), CPU.

With ``--method lpn`` the places come from the LPN place index: its best ``--retrieved`` places
along the track are verified by correlation with the feature map (``--no-verify``: the index's
ranking is final). It also prints how often the truth is among the index's top 1/10/100 track
places, and the single-frame Recall@1/5/10 and AP of the descriptors (University-1652 style).

Targets (issue 6): Recall@1 above 80 % over a 1 km x 1 km cache, relocalization under 2 s on CPU.
The default data (a 1 km town and two 40 s drives in it) is made by the commands in the README's
"Relocalization without GNSS" section; ``--root data/g2s_synth --split test2 --world town20``
runs it on the 600 m cross-area town of the registration benchmark instead.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace
import time
from pathlib import Path

import numpy as np
import torch

from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.geo.geodesy import EnuFrame
from g2s_localization.registration.registrars import LearnedRegistrar
from g2s_localization.relocalization.feature_map import MapSearchConfig, SatelliteFeatureMap, build_feature_map
from g2s_localization.relocalization.place_head import DEFAULT_PLACE_WEIGHTS, load_place_head
from g2s_localization.relocalization.place_index import PlaceIndex, build_place_index
from g2s_localization.relocalization.relocalizer import Relocalizer
from g2s_localization.synthetic.generate import load_world


def single_frame_recall(relocalizer: Relocalizer, index: PlaceIndex, frames: list[tuple], truth: np.ndarray) -> str:
    """University-1652-style Recall@1/5/10 and AP of single frames against the index layer of their heading;
    a lattice point within 8 m of the truth is a true match."""
    from g2s_localization.evaluation.retrieval import average_precision, recall_at_k

    rows, cols = np.divmod(np.arange(index.shape[0] * index.shape[1]), index.shape[1])
    e, n = (v.numpy() for v in index.cell_to_en(torch.as_tensor(rows), torch.as_tensor(cols)))
    similarity, positives = [], []
    for (image, camera, yaw, height, pitch, roll), (east, north) in zip(frames, truth):
        scores = relocalizer.observe(image, camera, yaw, None, height, pitch, roll)
        valid = index.valid[scores.heading_index].flatten().numpy()
        similarity.append(np.where(valid, scores.scores.flatten().numpy(), -np.inf))
        positives.append(valid & (np.hypot(e - east, n - north) <= 8.0))
    similarity, positives = np.stack(similarity), np.stack(positives)
    r = recall_at_k(similarity, positives, (1, 5, 10))
    return (f"single frames vs the place index ({similarity.shape[1]} lattice points per heading, within 8 m is a "
            f"match): Recall@1 "
            f"{r[1]:.1f} %, R@5 {r[5]:.1f} %, R@10 {r[10]:.1f} %, AP {average_precision(similarity, positives):.1f} %")


def fit_temperature(evidence: list[tuple[list[float], int, list[float]]]) -> float:
    """Temperature whose candidate weights best predict which candidate is within 8 m (max likelihood)."""
    from g2s_localization.relocalization.relocalizer import candidate_weights

    grid = np.geomspace(1e-3, 1.0, 61)
    nll = []
    for temperature in grid:
        total = 0.0
        for scores, frames, place in evidence:
            p = candidate_weights(np.array(scores), frames, temperature)
            correct = np.array(place) <= 8.0
            if correct.any():  # a query with no right candidate says nothing about how to weigh them
                total -= math.log(max(float(p[correct].sum()), 1e-12))
        nll.append(total)
    return float(grid[int(np.argmin(nll))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/g2s_km"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--world", default="town40", help="the split's world under <root>/worlds")
    parser.add_argument("--map", type=Path, default=None, help="feature map file (built and cached when missing)")
    parser.add_argument("--every", type=int, default=8, help="use every n-th frame as a query")
    parser.add_argument("--frames", type=int, default=MapSearchConfig.frames)
    parser.add_argument("--method", choices=("correlation", "lpn"), default="correlation",
                        help="place search: map-wide feature correlation (default) or the LPN place index")
    parser.add_argument("--head", type=Path, default=None, help="LPN place head weights (default: shipped)")
    parser.add_argument("--retrieved", type=int, default=MapSearchConfig.retrieved,
                        help="LPN places verified by correlation with the feature map")
    parser.add_argument("--no-verify", action="store_true", help="LPN only: the index's ranking is final")
    parser.add_argument("--fit", action="store_true", help="print the candidate temperature that fits these queries")
    args = parser.parse_args()

    registrar = LearnedRegistrar.from_checkpoint(device="cpu")
    world = load_world(args.root / "worlds" / args.world)
    dataset = KittiRegistrationDataset(args.root, args.split)
    tiles = dataset.tile_cache(0)
    config = MapSearchConfig(frames=args.frames, retrieved=args.retrieved)
    map_path = args.map or Path(f"out/relocalization/features_{args.world}.safetensors")
    if map_path.is_file():
        feature_map = SatelliteFeatureMap.load(map_path)
    else:
        start = time.perf_counter()
        anchor = (world.config.anchor_lat_deg, world.config.anchor_lon_deg)
        feature_map = build_feature_map(tiles, registrar, anchor, world.config.size_m / 2, config.pool)
        map_path.parent.mkdir(parents=True, exist_ok=True)
        feature_map.save(map_path)
        print(f"feature map built in {time.perf_counter() - start:.0f} s")
    h, w = feature_map.shape
    print(f"cache: {args.world} (SYNTHETIC), searched area {w * feature_map.cell_m:.0f} m x {h * feature_map.cell_m:.0f} m "
          f"({100 * float(feature_map.valid.float().mean()):.0f} % covered), {feature_map.cell_m:g} m cells")

    frame = EnuFrame(*feature_map.origin)
    # the relocalizer finds the camera (drives mount it off base_link): score the camera's ground point
    cameras = [dataset.camera_truth_and_prior(i)[0] for i in range(len(dataset))]
    truth_a = np.array([frame.to_enu(lat, lon)[:2] for lat, lon, _ in cameras])
    place_map: PlaceIndex | SatelliteFeatureMap = feature_map
    if args.method == "lpn":
        index_path = Path(f"out/relocalization/places_{args.world}.safetensors")
        if index_path.is_file() and args.head is None:
            place_map = PlaceIndex.load(index_path)
        else:
            start = time.perf_counter()
            place_map = build_place_index(feature_map, load_place_head(args.head or DEFAULT_PLACE_WEIGHTS))
            print(f"place index built in {time.perf_counter() - start:.0f} s: {len(place_map)} descriptors "
                  f"({place_map.cell_m:g} m lattice, {len(place_map.headings)} headings)")
            if args.head is None:
                place_map.save(index_path)
    verify = isinstance(place_map, PlaceIndex) and not args.no_verify
    relocalizer = Relocalizer(registrar, tiles, place_map, config, feature_map if verify else None)
    shortlist_ranks = []
    singles = []
    rng = np.random.default_rng(0)
    hits1, hits3, errors, published_wrong, times, used_frames, evidence = [], [], [], [], [], [], []
    rows = list(range(0, len(dataset), args.every))
    for q in rows:
        drive = dataset.frames[q].drive_index
        sequence, last = [q], truth_a[q]
        for j in range(q - 1, -1, -1):  # walk back along the drive, keeping frames spacing apart
            if dataset.frames[j].drive_index != drive or len(sequence) == config.frames:
                break
            if np.hypot(*(truth_a[j] - last)) >= config.frame_spacing_m:
                sequence.append(j)
                last = truth_a[j]
        relocalizer.reset()
        scale = 1.0 + rng.normal(0.0, 0.02)
        for j in reversed(sequence):
            ref = dataset.frames[j]
            d = dataset.drives[ref.drive_index]
            oxts = replace(d.oxts(ref.frame), yaw=cameras[j][2])  # the camera's heading
            image, camera = d.image(ref.frame), d.camera()
            if j == q:
                singles.append((image, camera, oxts.yaw, dataset.camera_height_m, oxts.pitch, oxts.roll))
            position = tuple(float(v) for v in (truth_a[j] - truth_a[q]) * scale)
            start = time.perf_counter()
            if j != q:
                relocalizer.observe(image, camera, oxts.yaw, position, dataset.camera_height_m, oxts.pitch, oxts.roll)
                continue
            result = relocalizer.update(image, camera, oxts.yaw, position, dataset.camera_height_m, oxts.pitch,
                                        oxts.roll)
            times.append(time.perf_counter() - start)
        place = [math.hypot(c.east_m - truth_a[q, 0], c.north_m - truth_a[q, 1]) for c in result.candidates]
        if isinstance(place_map, PlaceIndex):
            shortlist = relocalizer.search.candidates(100, config.retrieval_separation_m)
            ranks = [k for k, (e, n, _) in enumerate(shortlist) if math.hypot(e - truth_a[q, 0], n - truth_a[q, 1]) <= 8]
            shortlist_ranks.append(ranks[0] + 1 if ranks else math.inf)
        hits1.append(place[0] <= 8.0)
        hits3.append(min(place) <= 8.0)
        e, n, _ = frame.to_enu(result.result.lat_deg, result.result.lon_deg)
        errors.append(math.hypot(e - truth_a[q, 0], n - truth_a[q, 1]))
        delta = np.array([e - truth_a[q, 0], n - truth_a[q, 1]])
        cov = result.result.covariance[:2, :2]
        published = result.result.confidence >= 0.05 and math.sqrt(np.linalg.eigvalsh(cov).max()) <= 5.0
        published_wrong.append((published, published and errors[-1] > 5.0,
                                float(delta @ np.linalg.solve(cov, delta)) > 9.21))
        used_frames.append(result.frames)
        evidence.append(([c.map_score for c in result.candidates], result.frames, place))
    err, t = np.array(errors), np.array(times)
    print(f"{len(rows)} queries, {np.mean(used_frames):.1f} frames each ({config.frame_spacing_m:g} m apart), "
          f"heading from the IMU, no GNSS:")
    print(f"  place Recall@1 {100 * np.mean(hits1):.1f} %, Recall@3 {100 * np.mean(hits3):.1f} %")
    print(f"  relocalized pose: median error {np.median(err):.2f} m, within 1 m {100 * (err <= 1).mean():.1f} %, "
          f"within 5 m {100 * (err <= 5).mean():.1f} %")
    pub = np.array(published_wrong)
    print(f"  published (confidence >= 0.05, std <= 5 m): {100 * pub[:, 0].mean():.1f} %, of which > 5 m off: "
          f"{100 * pub[:, 1].sum() / max(pub[:, 0].sum(), 1):.1f} %; truth outside the 99 % ellipse (all): "
          f"{100 * pub[:, 2].mean():.1f} %")
    print(f"  time per frame: median {np.median(t):.2f} s, max {t.max():.2f} s (CPU, {torch.get_num_threads()} threads)")
    full = np.array(used_frames) == config.frames
    if full.any():
        print(f"  queries with the full {config.frames}-frame window ({full.sum()}): place Recall@1 "
              f"{100 * np.mean(np.array(hits1)[full]):.1f} %, pose within 1 m {100 * (err[full] <= 1).mean():.1f} %")
    if args.fit:
        print(f"  candidate temperature fit: {fit_temperature(evidence):.4f}")
    if isinstance(place_map, PlaceIndex):
        r = np.array(shortlist_ranks)
        print(f"  LPN index along the track: truth (within 8 m) among its top 1 / 10 / 100 places "
              f"{100 * (r <= 1).mean():.1f} / {100 * (r <= 10).mean():.1f} / {100 * (r <= 100).mean():.1f} %"
              + (f"; the top {config.retrieved} verified by correlation with the feature map" if verify else
                 " (no verification)"))
        print(single_frame_recall(relocalizer, place_map, singles, truth_a[rows]))


if __name__ == "__main__":
    main()
