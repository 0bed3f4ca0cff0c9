"""Relocalization without GNSS on the SYNTHETIC cross-area town: retrieval recall and time.

Builds (or reuses) the descriptor index over the unseen town's whole tile cache (8 m grid, 30 deg
headings), embeds the camera frames of its drive, and prints Recall@1/5/10 and AP (a gallery
entry is a true match when within 8 m and 15 deg of the truth, as University-1652 counts the
matching satellite images), the place-only Recall@1 (top-1 within 10 m: inside the registration's
+-20 m window), then full relocalizations (retrieve 3 places, register at each, keep the best)
with their error and wall time. No GNSS and no heading are used.

Targets (issue 6): Recall@1 above 80 %, relocalization under 2 s on CPU.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from g2s_localization.datasets import KittiRegistrationDataset
from g2s_localization.geodesy import EnuFrame, wrap_angle
from g2s_localization.registration import LearnedRegistrar
from g2s_localization.relocalization import DescriptorIndex, Relocalizer, build_index, camera_footprint, query_input
from g2s_localization.retrieval import average_precision, recall_at_k
from g2s_localization.retrieval_training import DEFAULT_RETRIEVAL_WEIGHTS, load_embedder
from g2s_localization.synthetic import load_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/g2s_synth"))
    parser.add_argument("--split", default="test2")
    parser.add_argument("--world", default="town20", help="the split's world under <root>/worlds")
    parser.add_argument("--weights", type=Path, default=DEFAULT_RETRIEVAL_WEIGHTS)
    parser.add_argument("--index", type=Path, default=Path("out/relocalization/index_town20.safetensors"))
    parser.add_argument("--every", type=int, default=4, help="use every n-th frame as a query")
    parser.add_argument("--relocalize", type=int, default=20, help="full relocalizations to time")
    args = parser.parse_args()

    embedder, config = load_embedder(args.weights)
    world_dir = args.root / "worlds" / args.world
    world = load_world(world_dir)
    dataset = KittiRegistrationDataset(args.root, args.split)
    tiles = dataset.tile_cache(0)
    drive = dataset.drives[dataset.frames[0].drive_index]
    camera = drive.camera()
    footprint = camera_footprint(camera, dataset.camera_height_m, config)
    if args.index.is_file():
        index = DescriptorIndex.load(args.index)
    else:
        start = time.perf_counter()
        half = world.config.size_m / 2 - config.patch_px * config.metres_per_px / 2
        anchor = (world.config.anchor_lat_deg, world.config.anchor_lon_deg)
        index = build_index(tiles, embedder, footprint, anchor, half, config)
        args.index.parent.mkdir(parents=True, exist_ok=True)
        index.save(args.index)
        print(f"index built in {time.perf_counter() - start:.0f} s")
    extent = np.ptp(index.positions_en, 0) + config.stride_m
    print(f"gallery: {len(index)} patches over {extent[0]:.0f} m x {extent[1]:.0f} m of {args.world} (SYNTHETIC), "
          f"{config.stride_m:g} m grid, {config.heading_step_deg:g} deg headings")

    frame = EnuFrame(*index.origin)
    rows = list(range(0, len(dataset), args.every))
    descriptors, truth = [], []
    with torch.no_grad():
        for i in rows:
            item = {k: v[None] for k, v in dataset[i].items()}
            x = query_input(item["image"], item["K"], item["camera_height"], item["pitch"], item["roll"], footprint, config)
            descriptors.append(embedder(x).numpy()[0])
            e, n, _ = frame.to_enu(*(float(v) for v in item["true_latlon"][0]))
            truth.append((e, n, float(item["true_yaw"][0])))
    q, t = np.stack(descriptors), np.array(truth)
    similarity = q @ index.descriptors.T
    distance = np.hypot(index.positions_en[None, :, 0] - t[:, None, 0], index.positions_en[None, :, 1] - t[:, None, 1])
    heading_error = np.abs(wrap_angle(index.headings[None, :] - t[:, None, 2]))
    positives = (distance <= config.stride_m) & (heading_error <= np.radians(config.heading_step_deg / 2) + 1e-6)
    recalls = recall_at_k(similarity, positives, (1, 5, 10))
    place_r1 = 100.0 * float((distance[np.arange(len(q)), similarity.argmax(1)] <= 10.0).mean())
    print(f"{len(q)} queries: Recall@1 {recalls[1]:.1f} %, Recall@5 {recalls[5]:.1f} %, Recall@10 {recalls[10]:.1f} %, "
          f"AP {average_precision(similarity, positives):.1f} %; top-1 within 10 m: {place_r1:.1f} %")

    relocalizer = Relocalizer(embedder, index, LearnedRegistrar.from_checkpoint(device="cpu"), tiles)
    errors, times = [], []
    for i in rows[:: max(1, len(rows) // args.relocalize)][: args.relocalize]:
        ref = dataset.frames[i]
        image = dataset.drives[ref.drive_index].image(ref.frame)
        item = dataset[i]
        start = time.perf_counter()
        result = relocalizer.relocalize(image, camera, dataset.camera_height_m, float(item["pitch"]), float(item["roll"]))
        times.append(time.perf_counter() - start)
        e, n, _ = EnuFrame(*(float(v) for v in item["true_latlon"])).to_enu(result.result.lat_deg, result.result.lon_deg)
        errors.append(float(np.hypot(e, n)))
    errors_a, times_a = np.array(errors), np.array(times)
    print(f"relocalization ({len(errors)} frames, no GNSS, no heading): median error {np.median(errors_a):.2f} m, "
          f"within 1 m {100 * (errors_a <= 1).mean():.0f} %, within 5 m {100 * (errors_a <= 5).mean():.0f} %; "
          f"time median {np.median(times_a):.2f} s, max {times_a.max():.2f} s (CPU, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
