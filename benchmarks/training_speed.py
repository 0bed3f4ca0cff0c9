"""Training speed of each backbone: steps per second and peak memory, with and without mixed precision.

One weak-supervision training step as ``g2s train`` runs it (``LossModule``: both encoders, BEV,
score volume, contrastive, rotation pseudo-pair and GNSS losses; backward; AdamW) on a batch of
KITTI-sized frames (1242x375, KITTI's left colour camera) with random pixels: speed and memory do
not depend on the content. Each backbone and precision runs in its own process so that the peak
memory is its own: on CUDA ``torch.cuda.max_memory_allocated``, on the CPU the process's peak
resident set. Precisions: ``off`` (float32), ``bf16`` (CPU and CUDA), ``fp16`` (CUDA, loss scaling).

    .venv/bin/python benchmarks/training_speed.py [--batch 8] [--steps 3] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from g2s_localization.registration.backbones import BACKBONES
from g2s_localization.registration.model import G2SRegistrationNet, ModelConfig
from g2s_localization.training.trainer import LossModule, TrainConfig, apply_gradients, set_precision

KITTI_K = [[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]]


def random_batch(config: ModelConfig, size: int) -> dict[str, torch.Tensor]:
    """``size`` frames 60 m apart along a street (the contrastive loss needs far negatives)."""
    generator = torch.Generator().manual_seed(0)
    sat = config.satellite_input_px
    return {"image": torch.rand(size, 3, 375, 1242, generator=generator),
            "satellite": torch.rand(size, 3, sat, sat, generator=generator),
            "K": torch.tensor(KITTI_K).expand(size, 3, 3).clone(),
            "camera_height": torch.full((size,), 1.65), "pitch": torch.zeros(size), "roll": torch.zeros(size),
            "prior_latlon": torch.stack([49.0 + torch.arange(size, dtype=torch.float64) * 60.0 / 111_132.0,
                                         torch.full((size,), 8.4, dtype=torch.float64)], -1)}


def measure(backbone: str, precision: str, batch_size: int, steps: int, device: torch.device) -> dict[str, float]:
    config = TrainConfig(model=ModelConfig(backbone=backbone), batch_size=batch_size, mixed_precision=precision,
                         negative_min_distance_m=30.0)
    torch.manual_seed(0)
    net = G2SRegistrationNet(config.model).to(device)
    scaler = set_precision(net, precision, device)
    module = LossModule(net, config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    batch = random_batch(config.model, batch_size)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        apply_gradients(module(batch, generator)["total"], net, optimizer, scaler)

    step()  # warm-up: allocator, kernels, cuDNN autotuning
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB (Linux)
    return {"steps_per_s": steps / (time.perf_counter() - start), "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="frames per step (the paper's recipe: 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--backbones", nargs="*", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: BACKBONE:PRECISION
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.one:
        backbone, precision = args.one.split(":")
        print(json.dumps(measure(backbone, precision, args.batch, args.steps, device)))
        return
    precisions = ["off", "bf16", "fp16"] if device.type == "cuda" else ["off", "bf16"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    memory = "peak GPU memory" if device.type == "cuda" else "peak process RSS"
    print(f"weak training step, batch {args.batch} of 1242x375 frames, {where}, {args.steps} timed steps")
    print(f"{'backbone':<10} {'precision':<10} {'steps/s':>8} {'frames/s':>9} {memory + ' (GiB)':>24}")
    for backbone in args.backbones:
        for precision in precisions:
            child = subprocess.run([sys.executable, __file__, "--one", f"{backbone}:{precision}", "--batch",
                                    str(args.batch), "--steps", str(args.steps), "--device", args.device,
                                    "--threads", str(args.threads)], capture_output=True, text=True)
            if child.returncode != 0:
                reason = (child.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"{backbone:<10} {precision:<10} failed: {reason}")
                continue
            m = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{backbone:<10} {precision:<10} {m['steps_per_s']:>8.3f} {m['steps_per_s'] * args.batch:>9.2f} "
                  f"{m['peak_gib']:>24.2f}")


if __name__ == "__main__":
    main()
