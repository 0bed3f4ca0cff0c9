"""Cost of each feature backbone per frame: parameters, forward GFLOPs and CPU latency.

One KITTI-sized frame (1242x375, KITTI's left colour camera intrinsics) registered with untrained
weights of each backbone (cost does not depend on the weights) through the registrar's own
``estimate``: both encoders, the BEV projection, the coarse and fine search, and the training-free
cross-check. FLOPs are counted by ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs).
The paper model's figures (5.1 M parameters, 607 GFLOP, 13.1 s per frame on this CPU) are the
reference from the issue's side-by-side measurement.

    .venv/bin/python benchmarks/backbones.py [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from g2s_localization.cameras.pinhole import PinholeCamera
from g2s_localization.registration.backbones import BACKBONES
from g2s_localization.registration.model import G2SRegistrationNet, ModelConfig
from g2s_localization.registration.registrars import LearnedRegistrar, live_batch

PAPER = {"params_m": 5.1, "gflop": 607.0, "cpu_s": 13.1}
KITTI_CAMERA = PinholeCamera(721.5377, 721.5377, 609.5593, 172.854, 1242, 375)


def frame_batch(config: ModelConfig) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = (torch.rand(375, 1242, 3, generator=generator) * 255).to(torch.uint8).numpy()
    batch = live_batch(image, KITTI_CAMERA, 1.65, 0.0, 0.0, config)
    size = config.satellite_input_px
    batch["satellite"] = torch.rand(1, 3, size, size, generator=generator)
    return batch


def measure(backbone: str, repeats: int) -> dict[str, float]:
    config = ModelConfig(backbone=backbone)
    torch.manual_seed(0)
    registrar = LearnedRegistrar(G2SRegistrationNet(config).eval(), device="cpu")
    batch = frame_batch(config)
    params = sum(p.numel() for p in registrar.net.parameters())
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            registrar.estimate(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            registrar.estimate(batch)
            times.append(time.perf_counter() - start)
    return {"params_m": params / 1e6, "gflop": counter.get_total_flops() / 1e9, "cpu_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed frames per backbone (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"one 1242x375 frame, CPU, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'backbone':<10} {'params (M)':>10} {'GFLOP':>8} {'CPU s':>7} {'FLOPs / paper':>14}")
    for backbone in BACKBONES:
        m = measure(backbone, args.repeats)
        print(f"{backbone:<10} {m['params_m']:>10.2f} {m['gflop']:>8.1f} {m['cpu_s']:>7.2f} "
              f"{m['gflop'] / PAPER['gflop']:>13.1%}")
    print(f"{'paper':<10} {PAPER['params_m']:>10.2f} {PAPER['gflop']:>8.1f} {PAPER['cpu_s']:>7.2f} {1:>13.1%}")


if __name__ == "__main__":
    main()
