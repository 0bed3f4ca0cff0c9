"""``g2s``: the command line. Thin: parse arguments, call the library, print where output went."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from g2s_localization import cli_maps
from g2s_localization.geo.tile_sources import TileError
from g2s_localization.relocalization.sharding import WorkerFailed


def _make_world(args: argparse.Namespace) -> None:
    from g2s_localization.synthetic.generate import make_world
    from g2s_localization.synthetic.presets import world_config

    make_world(args.out, world_config(args.preset, seed=args.seed, style=args.style, size_m=args.size,
                                      tree_density=args.trees, car_change_fraction=args.car_change,
                                      shadow_strength=args.shadows, colour_shift=args.colour_shift,
                                      ground_texture=args.ground_texture, roof_texture=args.roof_texture,
                                      street_regularity=args.street_regularity))
    print(f"world (SYNTHETIC) written to {args.out}: tiles/, area.mbtiles, satellite_overview.png")


def _make_drive(args: argparse.Namespace) -> None:
    from g2s_localization.synthetic.camera_render import CameraRig
    from g2s_localization.synthetic.drive import DriveConfig
    from g2s_localization.synthetic.generate import make_drive
    from g2s_localization.synthetic.presets import camera_effects

    try:
        forward, left, yaw_deg = (float(v) for v in args.camera_mount.split(","))
    except ValueError as exc:
        raise ValueError(f"--camera-mount takes FORWARD,LEFT,YAW_DEG, got {args.camera_mount!r}") from exc
    rig = CameraRig(forward_m=forward, left_m=left, yaw_rad=math.radians(yaw_deg))
    out = make_drive(args.root, args.world, DriveConfig(seed=args.seed, duration_s=args.duration),
                     date=args.date, number=args.number, split=args.split, rig=rig,
                     effects=camera_effects(args.preset))
    print(f"drive (SYNTHETIC, KITTI raw layout) with {out.frames} frames written to {out.drive_dir}")


def _kitti_to_bag(args: argparse.Namespace) -> None:
    from g2s_localization.data.bag_io import kitti_to_bag

    datum = tuple(float(v) for v in args.datum.split(",")) if args.datum else None
    if datum is not None and len(datum) != 3:
        raise SystemExit("--datum takes lat,lon,alt")
    path = kitti_to_bag(args.drive, args.bag, storage=args.storage, datum=datum)  # type: ignore[arg-type]
    print(f"rosbag2 ({args.storage}) written to {path}")


def _crop(args: argparse.Namespace) -> None:
    import cv2

    from g2s_localization.geo.tile_sources import open_tile_source
    from g2s_localization.geo.tiles import TileCache

    yaw = None if args.yaw_deg is None else math.radians(args.yaw_deg)
    patch = TileCache(open_tile_source(args.tiles)).crop(args.lat, args.lon, yaw, args.size, args.mpp)
    cv2.imwrite(str(args.out), cv2.cvtColor(patch.image, cv2.COLOR_RGB2BGR))
    print(f"{args.size}x{args.size} px patch at {args.mpp} m/px written to {args.out}")


def _train(args: argparse.Namespace) -> None:
    import yaml

    from g2s_localization.config import from_dict, load_yaml, to_dict
    from g2s_localization.training.trainer import TrainConfig, train

    base = to_dict(load_yaml(TrainConfig, args.config)) if args.config else {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        base[key] = yaml.safe_load(value)
    if args.pretrained is not None:
        base["pretrained"] = str(args.pretrained)
    if args.bag:
        if args.tiles is None:
            raise ValueError("--bag needs --tiles (the tile cache the drives are in)")
        base["dataset"] = "bag"
        base["bags"] = {**base.get("bags", {}), "sources": [{"bag": str(b), "tiles": str(args.tiles)} for b in args.bag]}
    print(f"weights written to {train(from_dict(TrainConfig, base))}")


def _calibrate(args: argparse.Namespace) -> None:
    import yaml

    from g2s_localization.config import from_dict, to_dict
    from g2s_localization.data.registration_sets import open_registration_dataset
    from g2s_localization.evaluation.registration_eval import calibrate_temperature
    from g2s_localization.registration.checkpoints import read_checkpoint, save_checkpoint
    from g2s_localization.registration.model import ModelConfig
    from g2s_localization.registration.registrars import LearnedRegistrar

    registrar = LearnedRegistrar.from_checkpoint(args.checkpoint, device="cpu")
    _, meta = read_checkpoint(args.checkpoint)
    if args.search:
        # search window / resolution only: the network is fully convolutional, its weights do not change
        overrides = dict(item.split("=", 1) for item in args.search)
        model_dict = {**to_dict(registrar.config), **{k: yaml.safe_load(v) for k, v in overrides.items()}}
        registrar.config = registrar.net.config = from_dict(ModelConfig, model_dict, "search")
        meta["config"] = {**meta["config"], "model": model_dict}
    bags = None
    if args.dataset == "bag":
        from g2s_localization.data.bag_dataset import BagSetConfig, BagSource

        if args.tiles is None:
            raise ValueError("--dataset bag needs --tiles (the tile cache the labelled bag --root is in)")
        bags = BagSetConfig(sources=(BagSource(str(args.root), str(args.tiles)),), cache_dir=str(args.bag_cache))
    dataset = open_registration_dataset(args.dataset, args.root, args.split, registrar.config, "perturbed", args.seed,
                                        args.vigor_area, bags=bags)
    temperature, coverage = calibrate_temperature(registrar, dataset, limit=args.limit, progress=True)
    extra = {**meta.get("extra", {}), "calibrated_temperature": temperature, "calibration_split": args.split,
             "calibration_coverage_95": coverage, "note": "trained and calibrated on SYNTHETIC data"}
    save_checkpoint(args.out, registrar.net, meta["config"], meta.get("step", 0), meta.get("epoch", 0), extra=extra)
    print(f"temperature {temperature:.4f} (95 % ellipse coverage {100 * coverage:.1f} % on {args.split}); "
          f"weights written to {args.out}")


def _train_place_head(args: argparse.Namespace) -> None:
    from g2s_localization.data.registration_dataset import KittiRegistrationDataset
    from g2s_localization.registration.registrars import registrar_from_weights
    from g2s_localization.relocalization.place_head import save_place_head
    from g2s_localization.training.place_training import PlaceHeadConfig, prepare_place_samples, train_place_head

    config, registrar = PlaceHeadConfig(), registrar_from_weights(args.weights, args.device)
    samples = prepare_place_samples(KittiRegistrationDataset(args.root, args.split), registrar, config, every=args.every)
    head = train_place_head(samples, config, steps=args.steps)
    path = save_place_head(args.out, head, {"split": args.split, "registrar": registrar.name, "labels": "GNSS only",
                                            "note": "trained on SYNTHETIC data"})
    print(f"place head ({len(samples.queries)} frames) written to {path}")


def _replay(args: argparse.Namespace) -> None:
    from g2s_localization.ros.replay import replay

    sent = replay(args.bag, rate=args.rate, loops=args.loops, wait_topics=args.wait_for or None,
                  wait_for_subscribers_s=args.wait_timeout)
    print(f"replayed {sent} messages from {args.bag}")


def _evaluate(args: argparse.Namespace) -> None:
    from g2s_localization.evaluation.replay_eval import evaluate_bag

    datum = None
    if args.datum:
        try:
            datum = tuple(float(v) for v in (args.datum.split(",") + ["0"])[:3])
        except ValueError as exc:
            raise ValueError(f"--datum must be LAT,LON[,ALT], got {args.datum!r}") from exc
    topics = {key: value for key in ("image", "camera_info", "fix", "imu", "odom")
              if (value := getattr(args, f"{key}_topic"))}
    truth_tf = tuple(args.truth_tf.split(","))
    if len(truth_tf) != 2:
        raise ValueError(f"--truth-tf takes PARENT,CHILD, got {args.truth_tf!r}")
    report = evaluate_bag(args.bag, args.tiles, args.out, weights=args.weights, rate=args.rate, datum=datum,
                          topics=topics, truth_tf=truth_tf)
    print(report.read_text())
    print(f"report and plots in {report.parent}")


def _demo(args: argparse.Namespace) -> None:
    from g2s_localization.demo import run_demo

    run_demo(Path(args.out), duration_s=args.duration)


def _add_area_arguments(p: argparse.ArgumentParser) -> None:
    """The tile cache and the square of it that an offline relocalization index covers."""
    p.add_argument("tiles", type=Path, help="XYZ folder or .mbtiles")
    p.add_argument("--lat", type=float, required=True, help="centre of the square (WGS84)")
    p.add_argument("--lon", type=float, required=True)
    p.add_argument("--half-extent", type=float, default=500.0, help="metres from the centre to each side")


def _add_registrar_arguments(p: argparse.ArgumentParser) -> None:
    """The registrar whose features a relocalization map or place head is made from."""
    p.add_argument("--weights", default="", help="as the node's weights parameter: '', 'baseline' or a path")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")


def build_parser() -> argparse.ArgumentParser:
    from g2s_localization.synthetic.presets import PRESETS

    parser = argparse.ArgumentParser(prog="g2s", description="Ground-to-satellite camera localization tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-world", help="generate a synthetic town and its satellite tile cache")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=PRESETS, default="default", help="difficulty (synthetic/presets.py)")
    p.add_argument("--style", choices=("suburb", "downtown"), default=None, help="default: suburb")
    p.add_argument("--size", type=float, default=None, help="side length in metres (default 600)")
    for flag, what in (("--trees", "tree density (0 = none)"), ("--car-change", "share of cars differing between "
                       "captures"), ("--shadows", "satellite shadow strength"), ("--colour-shift", "camera/satellite "
                       "colour gap"), ("--ground-texture", "road wear and lawn stripes, 0..1"),
                      ("--roof-texture", "pitched, furnished roofs in the satellite, 0..1"),
                      ("--street-regularity", "look-alike streets, 0..1")):
        p.add_argument(flag, type=float, default=None, help=f"{what} (default: the preset's)")
    p.set_defaults(func=_make_world)

    p = sub.add_parser("make-drive", help="render a drive of a world in KITTI raw layout")
    p.add_argument("root", type=Path, help="dataset root (raw_data/ and satmap/ go here)")
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=30.0, help="seconds at 10 Hz")
    p.add_argument("--date", default="2026_01_01")
    p.add_argument("--number", type=int, default=1)
    p.add_argument("--split", default=None, help="append frames to <root>/<split>_files.txt")
    p.add_argument("--preset", choices=PRESETS, default="default", help="camera effects (presets.py)")
    p.add_argument("--camera-mount", default="1.2,0.3,1", metavar="FORWARD,LEFT,YAW_DEG",
                   help="camera place on base_link (metres, degrees left; 0,0,0 = at base_link); one per "
                        "--date (its calibration)")
    p.set_defaults(func=_make_drive)

    p = sub.add_parser("kitti-to-bag", help="convert a KITTI raw drive to a rosbag2")
    p.add_argument("drive", type=Path, help="<date>_drive_<NNNN>_sync folder")
    p.add_argument("bag", type=Path)
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--datum", default=None, help="map origin lat,lon,alt (default: the drive's own)")
    p.set_defaults(func=_kitti_to_bag)

    p = sub.add_parser("crop", help="cut a metric satellite patch out of a tile cache")
    p.add_argument("tiles", type=Path, help="z/x/y folder or .mbtiles")
    p.add_argument("--lat", type=float, required=True)
    p.add_argument("--lon", type=float, required=True)
    p.add_argument("--yaw-deg", type=float, default=None, help="ENU yaw of 'up' (omit for north-up)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--mpp", type=float, default=0.2, help="metres per pixel")
    p.add_argument("-o", "--out", type=Path, default=Path("patch.png"))
    p.set_defaults(func=_crop)

    p = sub.add_parser("train", help="train the registration network (weak supervision by default)")
    p.add_argument("--config", type=Path, default=None, help="YAML overriding the TrainConfig defaults")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="top-level overrides")
    p.add_argument("--pretrained", type=Path, default=None,
                   help="ResNet backbones: a local torchvision ImageNet state dict (.pth, .safetensors)")
    p.add_argument("--bag", type=Path, action="append", default=[],
                   help="train weakly on this rosbag2 (repeatable; camera, CameraInfo, NavSatFix, Imu, /tf_static)")
    p.add_argument("--tiles", type=Path, default=None, help="with --bag: the tile cache (folder or .mbtiles)")
    p.set_defaults(func=_train)

    p = sub.add_parser("calibrate", help="fit the covariance temperature and export inference weights")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--root", type=Path, default=Path("data/g2s_synth"))
    p.add_argument("--split", default="val2", help="labelled validation split (an unseen town; VIGOR: train/test)")
    p.add_argument("--dataset", choices=("kitti", "vigor", "bag"), default="kitti",
                   help="layout under --root ('bag': --root is a rosbag2 with /ground_truth/fix and /ground_truth/pose)")
    p.add_argument("--vigor-area", choices=("same", "cross"), default="same")
    p.add_argument("--tiles", type=Path, default=None, help="--dataset bag: the tile cache")
    p.add_argument("--bag-cache", type=Path, default=Path("runs/bag_cache"), help="--dataset bag: cache folder")
    p.add_argument("--limit", type=int, default=120)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--search", nargs="*", default=[], metavar="KEY=VALUE",
                   help="change search settings of the model config (e.g. bev_size=160 yaw_step_deg=2.0)")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("train-place-head", help="train the LPN place head on synthetic drives (GNSS labels only)")
    p.add_argument("--root", type=Path, default=Path("data/g2s_synth"))
    p.add_argument("--split", default="train")
    p.add_argument("--every", type=int, default=2, help="use every n-th frame")
    p.add_argument("--steps", type=int, default=800)
    _add_registrar_arguments(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_train_place_head)

    p = sub.add_parser("build-place-index", help="LPN place index of a tile cache, for relocalization without GNSS")
    _add_area_arguments(p)
    _add_registrar_arguments(p)
    p.add_argument("--head", type=Path, default=None, help="place head weights (default: shipped)")
    p.add_argument("--lattice-cells", type=int, default=3, help="index spacing in 1.6 m map cells")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--features-out", type=Path, default=None,
                   help="also write the feature map the index is built from, to verify its retrievals")
    p.add_argument("--features", type=Path, default=None, help="build from this feature map instead of the tiles")
    cli_maps.add_shard_arguments(p, "heading layers of the index")
    p.set_defaults(func=cli_maps.build_place_index)

    p = sub.add_parser("build-feature-map", help="satellite feature map of a tile cache, for relocalization")
    _add_area_arguments(p)
    _add_registrar_arguments(p)
    p.add_argument("--out", type=Path, required=True)
    cli_maps.add_shard_arguments(p, "blocks of the map")
    p.set_defaults(func=cli_maps.build_feature_map)

    p = sub.add_parser("merge-maps", help="join the --shard K/N parts of one feature map or place index")
    p.add_argument("shards", type=Path, nargs="+", help="the shard files, in order 0..N-1")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cli_maps.merge_maps)

    p = sub.add_parser("replay", help="publish a rosbag2 over DDS with /clock")
    p.add_argument("bag", type=Path, help="rosbag2 folder, bare .mcap / .db3, or a folder holding one")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--loops", type=int, default=1, help="play the bag this many times (clock jumps back)")
    p.add_argument("--wait-for", nargs="*", default=[], metavar="TOPIC",
                   help="start only when each of these topics has a subscriber")
    p.add_argument("--wait-timeout", type=float, default=10.0, help="seconds to wait for subscribers")
    p.set_defaults(func=_replay)

    p = sub.add_parser("evaluate", help="replay a bag through g2s_node and score it against ground truth")
    p.add_argument("bag", type=Path, help="rosbag2 folder, bare .mcap / .db3, or a folder holding one")
    p.add_argument("--tiles", type=Path, required=True, help="tile folder or .mbtiles")
    p.add_argument("--out", type=Path, default=Path("out/evaluation"))
    p.add_argument("--weights", default="", help="'' = shipped weights, 'baseline', or a .safetensors path")
    p.add_argument("--rate", type=float, default=1.0)
    p.add_argument("--datum", default=None, help="LAT,LON[,ALT] of the bag's map origin, when its metadata lacks it")
    for key, default in (("image", "/camera/image_raw"), ("camera-info", "/camera/camera_info"),
                         ("fix", "/gnss/fix"), ("imu", "/imu/data"), ("odom", "/odom")):
        p.add_argument(f"--{key}-topic", default=None, help=f"the bag's topic for the node's {default}")
    p.add_argument("--truth-tf", default="map,base_link", help="PARENT,CHILD on /tf that is the ground truth, "
                                                                 "when the bag has no /ground_truth/pose")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("demo", help="build the default synthetic world and drive and show the pipeline")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--duration", type=float, default=10.0)
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (TileError, ValueError, FileNotFoundError, FileExistsError, WorkerFailed) as exc:
        print(f"g2s {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
