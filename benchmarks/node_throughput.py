"""The node at camera rate: ``g2s_node`` as its own process, fed a bag over DDS at 10 Hz.

Prints frames processed per second, end-to-end latency (image arrival at the node to pose
publication) p50 / p95, where the time goes (decode, wait for GNSS/IMU pairing, crop, BEV,
features, search, publish; means per frame), the node's CPU use and peak memory, and how many
frames were dropped because the registrar was busy. ``--json FILE`` writes the same figures.
Without ``--bag`` a SYNTHETIC 10 s drive (100 frames, town 0) is generated first.

Targets (issue 17): on the 2-core machine, with the replay on the same machine, at least 8 of 10
frames per second processed and p95 latency under 150 ms.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from g2s_localization.data.bag_io import TOPICS, read_bag_datum
from g2s_localization.ros.recorder import run_node_on_bag
from g2s_localization.runtime.bag_files import open_bag, resolve_bag
from g2s_localization.runtime.timing import STAGES


def g2s(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "g2s_localization", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def ensure_bag(out: Path) -> tuple[Path, Path]:
    """A SYNTHETIC 10 s drive's bag and its world's tiles under ``out`` (made when missing)."""
    world, dataset, bag = out / "world", out / "dataset", out / "bag"
    if not (world / "area.mbtiles").is_file():
        print(f"generating a SYNTHETIC world and a 10 s drive under {out}")
        g2s("make-world", str(world), "--seed", "0")
    drive = dataset / "raw_data" / "2026_01_01" / "2026_01_01_drive_0001_sync"
    if not drive.is_dir():
        g2s("make-drive", str(dataset), "--world", str(world), "--seed", "0", "--duration", "10")
    if not (bag / "metadata.yaml").is_file():
        g2s("kitti-to-bag", str(drive), str(bag))
    return bag, world / "area.mbtiles"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", type=Path, default=None, help="a g2s bag (default: generate one)")
    parser.add_argument("--tiles", type=Path, default=None, help="its tile cache (with --bag)")
    parser.add_argument("--weights", default="", help="'' = shipped weights, 'baseline', or a path")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed (1.0 = the camera's 10 Hz)")
    parser.add_argument("--out", type=Path, default=Path("out/node_throughput"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.bag is None:
        bag, tiles = ensure_bag(args.out)
    elif args.tiles is None:
        parser.error("--bag needs --tiles")
    else:
        bag, tiles = resolve_bag(args.bag), args.tiles
    datum = read_bag_datum(bag)
    if datum is None:
        raise SystemExit(f"{bag} carries no map datum (write it with g2s kitti-to-bag)")
    node_topics = {f"{k}_topic": TOPICS[k] for k in ("image", "camera_info", "fix", "imu")}
    with open_bag(bag) as reader:
        images = sum(c.msgcount for c in reader.connections if c.topic == TOPICS["image"])
        present = {c.topic for c in reader.connections}
    recording = run_node_on_bag(bag, tiles, args.weights, args.rate, datum,
                                [t for t in node_topics.values() if t in present], args.out / "node.log", node_topics)
    diag = {k: float(v) for k, v in recording.diagnostics.items() if _is_number(v)}
    processed = int(diag.get("processed", 0))
    figures = {"images": images, "processed": processed, "dropped": int(diag.get("dropped", 0)),
               "published": len(recording.poses), "replay_s": recording.replay_s,
               "frames_per_second": processed / recording.replay_s if recording.replay_s else 0.0,
               "latency_p50_ms": diag.get("latency_p50_ms", float("nan")),
               "latency_p95_ms": diag.get("latency_p95_ms", float("nan")),
               "node_cpu_percent": 100.0 * recording.node_cpu_s / recording.replay_s if recording.replay_s else 0.0,
               "node_peak_rss_mib": recording.node_peak_rss_mib,
               **{f"{stage}_ms": diag[f"{stage}_ms"] for stage in STAGES if f"{stage}_ms" in diag}}
    print(f"{images} images replayed in {recording.replay_s:.1f} s at rate {args.rate:g} "
          f"(weights: {args.weights or 'shipped'}); the node processed {processed} "
          f"({figures['frames_per_second']:.1f} per second), dropped {figures['dropped']} while busy, "
          f"published {figures['published']} poses")
    print(f"latency, image arrival -> pose published: p50 {figures['latency_p50_ms']:.0f} ms, "
          f"p95 {figures['latency_p95_ms']:.0f} ms (last 200 frames)")
    print("where the time goes (mean ms per processed frame): " + ", ".join(
        f"{stage} {figures[f'{stage}_ms']:.1f}" for stage in STAGES if f"{stage}_ms" in figures))
    print(f"node process: {figures['node_cpu_percent']:.0f} % CPU (100 % = one core) during the replay, "
          f"peak resident memory {figures['node_peak_rss_mib']:.0f} MiB")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
