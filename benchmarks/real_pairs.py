"""Registration on REAL cross-view pairs (pairs.yaml format): accuracy, availability and the
confidently-wrong rate of every registrar the node can load.

    .venv/bin/python benchmarks/real_pairs.py                     # ../shared/real-pairs/pairs.yaml
    .venv/bin/python benchmarks/real_pairs.py --pairs other/pairs.yaml --json out/real_pairs.json

Exits 0 with a message when the pairs file is absent. Target (issue 14): confidently-wrong rate
<= 2 % of frames for every registrar. The images are read where they are, never copied.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import torch

from g2s_localization.data.real_pairs import read_pairs
from g2s_localization.evaluation.real_pairs import RealPairsConfig, RegistrarSummary, overlay, register_pair
from g2s_localization.registration.registrars import BaselineRegistrar, LearnedRegistrar

DEFAULT_PAIRS = Path(__file__).resolve().parents[1].parent / "shared" / "real-pairs" / "pairs.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--json", type=Path, default=None, help="write the figures per registrar here")
    parser.add_argument("--priors", type=int, default=RealPairsConfig.priors)
    parser.add_argument("--out", type=Path, default=Path("out/real_pairs"), help="overlays per pair and registrar")
    parser.add_argument("--dump", type=Path, default=None, help="per-frame records (JSON lines)")
    parser.add_argument("--weights", type=Path, action="append", default=[],
                        help="also run these learned weights (repeatable), zero-shot as the shipped ones")
    args = parser.parse_args()
    if not args.pairs.is_file():
        print(f"no real pairs at {args.pairs}: nothing to measure (pass --pairs FILE)")
        return 0
    torch.set_num_threads(2)
    pairs = read_pairs(args.pairs)
    config = RealPairsConfig(priors=args.priors)
    results = {}
    registrars = [(LearnedRegistrar.from_checkpoint(device="cpu"), "g2s-net"),
                  *((LearnedRegistrar.from_checkpoint(w, device="cpu"), f"g2s-net ({w.stem})") for w in args.weights),
                  (BaselineRegistrar(device="cpu"), BaselineRegistrar.name)]
    for registrar, label in registrars:
        summary = RegistrarSummary(label)
        for pair in pairs:
            records = register_pair(registrar, pair, config)
            summary.records += records
            args.out.mkdir(parents=True, exist_ok=True)
            name = f"overlay_{pair.id}_{label.split()[0]}{'_' + label.split('(')[1][:-1] if '(' in label else ''}.png"
            cv2.imwrite(str(args.out / name), cv2.cvtColor(overlay(pair, records), cv2.COLOR_RGB2BGR))
        results[label] = summary
    print(f"REAL pairs: {len(pairs)} from {args.pairs}; per pair: {' and '.join(config.views)} views at "
          f"{len(config.headings_deg)} headings x {config.priors} priors (+-{config.prior_offset_m:.0f} m; pinhole "
          f"cuts also +-{config.prior_yaw_deg:.0f} deg) x {config.scales} ground sample distances")
    print("| registrar | frames | availability | confidently wrong | median position (m) | within 1 m | within 3 m "
          "| median yaw (deg) |")
    print("|---|---|---|---|---|---|---|---|")
    for summary in results.values():
        for row in (summary, *summary.by_view().values()):
            f = row.figures()
            print(f"| {row.name} | {f['frames']} | {100 * f['availability']:.1f} % | "
                  f"{100 * f['confidently_wrong_rate']:.1f} % | {f['position_m_median']:.2f} | "
                  f"{100 * f['within_1m']:.1f} % | {100 * f['within_3m']:.1f} % | {f['yaw_deg_median']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({n: s.figures() for n, s in results.items()}, indent=2))
    if args.dump:
        with args.dump.open("w") as out:
            for name, summary in results.items():
                for r in summary.records:
                    out.write(json.dumps({"registrar": name, **r.__dict__}) + "\n")
    print(f"overlays: {args.out} (white: label; green: published within 3 m; red: confidently wrong; grey: withheld)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
