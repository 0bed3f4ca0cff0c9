"""Training loop: weakly supervised (default) or fully supervised, single process or torchrun/DDP.

``g2s train --config cfg.yaml`` (or ``torchrun --nproc_per_node N -m g2s_localization train``)
runs on CUDA when present, else CPU (gloo). Rank 0 shows progress, writes TensorBoard logs and
checkpoints (safetensors + resolved config) and resumes from ``<out_dir>/last.safetensors``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from g2s_localization.cameras.bev import pixels_to_grid
from g2s_localization.config import to_dict
from g2s_localization.data.bag_dataset import BagSetConfig
from g2s_localization.data.registration_sets import open_registration_dataset
from g2s_localization.registration.checkpoints import (
    load_model_weights,
    load_optimizer_state,
    read_checkpoint,
    save_checkpoint,
)
from g2s_localization.registration.backbones import load_pretrained_trunk, read_state_dict
from g2s_localization.registration.model import G2SRegistrationNet, ModelConfig, camera_bev_pixels
from g2s_localization.training.losses import (
    contrastive_translation_loss,
    gps_prior_loss,
    prior_positions_m,
    rotation_pseudo_pair_loss,
    supervised_volume_loss,
)
from g2s_localization.training.self_training import (
    PseudoLabeller, PseudoLabels, carry_labels, labels_from_rank_zero, run_teacher,
)


LABELLED = "pseudo_labelled"  # the fraction of a batch the teacher labelled (TensorBoard: stats/)
MIXED_PRECISION = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "kitti"  # "kitti" (KITTI raw layout, real or synthetic), "vigor" or "bag" (rosbag2 + tiles)
    dataset_root: str = "data/g2s_synth"
    split: str = "train"
    vigor_area: str = "same"  # VIGOR: "same" or "cross" area protocol
    vigor_cities: tuple[str, ...] = ()  # VIGOR: narrow the protocol's cities; () = all of them
    bags: BagSetConfig = field(default_factory=BagSetConfig)  # dataset "bag": recordings and their tile caches
    supervision: str = "weak"  # "weak": noisy GNSS/compass only; "full": ground-truth poses
    epochs: int = 3
    max_steps: int = 0  # 0 = no limit
    batch_size: int = 6
    learning_rate: float = 2e-3
    rotation_loss_weight: float = 1.0
    contrastive_loss_weight: float = 1.0
    gps_loss_weight: float = 0.1
    gps_radius_m: float = 15.0
    negative_min_distance_m: float = 30.0
    num_workers: int = 1
    seed: int = 0
    out_dir: str = "runs/g2s"
    checkpoint_every: int = 100
    teacher: str = ""  # self-training: a checkpoint (or "baseline") whose confident estimates become pose targets
    pseudo_label_weight: float = 1.0
    pseudo_label_min_confidence: float = 0.3  # the teacher's probability within 1 m and 1 deg of its estimate
    pseudo_label_track_s: float = 0.0  # > 0: label the set once, carrying confident labels this far by odometry
    pseudo_label_agree_m: float = 1.0  # a frame between two confident ones is labelled only when both carry ...
    pseudo_label_agree_deg: float = 1.0  # ... to places this close (the teacher's yaw is often 0.5-1 deg off)
    init_weights: str = ""  # a fresh run starts from this checkpoint's weights (fine-tuning); "" = initialisation
    pretrained: str = ""  # ResNet backbones: local torchvision ImageNet state dict for both trunks; "" = scratch
    mixed_precision: str = "off"  # encoders under autocast: "off", "bf16" (CPU or CUDA) or "fp16" (CUDA, loss scaling)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.supervision not in ("weak", "full"):
            raise ValueError(f"supervision must be 'weak' or 'full', got {self.supervision!r}")
        if self.dataset == "bag" and self.supervision != "weak":
            raise ValueError("bags train weakly (their GNSS and IMU are the labels): supervision must be 'weak'")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        if self.teacher and self.supervision != "weak":
            raise ValueError("a teacher labels weakly supervised training; full supervision has true poses")
        if self.pseudo_label_track_s < 0 or (self.pseudo_label_track_s and not self.teacher):
            raise ValueError("pseudo_label_track_s must be >= 0 and needs a teacher")
        if self.pseudo_label_agree_m <= 0 or self.pseudo_label_agree_deg <= 0:
            raise ValueError("pseudo_label_agree_m and pseudo_label_agree_deg must be positive")
        if self.init_weights and self.pretrained:
            raise ValueError("init_weights and pretrained both set the starting weights: choose one")
        if self.pretrained and self.model.backbone == "small":
            raise ValueError("ImageNet weights need a ResNet backbone (model.backbone: resnet18 or resnet34)")


def _distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun process group when launched by it; else a single process."""
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


def fov_mask(net: G2SRegistrationNet, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The camera's ground footprint on the BEV grid, used to shape pseudo-pair queries."""
    cfg = net.config
    image = batch["image"]
    h, w = image.shape[-2:]
    _, valid = pixels_to_grid(*camera_bev_pixels(batch, cfg, device), (w, h))
    return valid


class LossModule(torch.nn.Module):
    """All of a training step's forward passes in one ``forward`` (what DDP needs to sync)."""

    def __init__(self, net: G2SRegistrationNet, config: TrainConfig,
                 labeller: Callable[[dict[str, torch.Tensor]], PseudoLabels] | None = None) -> None:
        super().__init__()
        self.net, self.config, self.labeller = net, config, labeller

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        net, config = self.net, self.config
        device = net.log_temperature.device
        image, satellite = batch["image"].to(device), batch["satellite"].to(device)
        bev, mask = net.ground_bev(image, *camera_bev_pixels(batch, net.config, device))
        sat_features = net.satellite_features(satellite)
        volume = net.score_volume(bev, mask, sat_features)
        losses: dict[str, torch.Tensor] = {}
        if config.supervision == "full":
            losses["supervised"] = supervised_volume_loss(volume, net.temperature, batch["target"].to(device))
        else:
            if config.contrastive_loss_weight > 0 and len(image) > 1:
                losses["contrastive"] = config.contrastive_loss_weight * contrastive_translation_loss(
                    bev, mask, sat_features, net, prior_positions_m(batch["prior_latlon"]).to(device),
                    config.negative_min_distance_m)
            if config.rotation_loss_weight > 0:
                losses["rotation"] = config.rotation_loss_weight * rotation_pseudo_pair_loss(
                    net, satellite, sat_features, fov_mask(net, batch, device), generator)
            if config.gps_loss_weight > 0:
                losses["gps"] = config.gps_loss_weight * gps_prior_loss(volume, net.temperature, config.gps_radius_m)
            if self.labeller is not None:
                labels = self.labeller(batch)
                losses["pseudo_pose"] = config.pseudo_label_weight * supervised_volume_loss(
                    volume, net.temperature, labels.target.to(device), labels.keep)
        losses["total"] = sum(losses.values())  # type: ignore[assignment]
        if self.labeller is not None:  # a statistic, not a loss: left out of the total
            losses[LABELLED] = labels.keep.float().mean()
        return losses


def _check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("mixed_precision fp16 needs CUDA (its loss scaling is CUDA's); use bf16 on the CPU")


def set_precision(net: G2SRegistrationNet, precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Put the encoders under ``precision``'s autocast; the gradient scaler that precision needs."""
    _check_precision(precision, device)
    net.encoder_autocast = MIXED_PRECISION[precision]
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def apply_gradients(loss: torch.Tensor, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler) -> None:
    """Backward (scaled under fp16), clip the true gradients to norm 5, step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    scaler.step(optimizer)
    scaler.update()


def _labeller(config: TrainConfig, dataset, device: torch.device, progress: bool, world: int = 1, rank: int = 0
              ) -> Callable[[dict[str, torch.Tensor]], PseudoLabels] | None:
    """The teacher per batch, or (``pseudo_label_track_s`` > 0) a table of the whole set's labels,
    made once before the first step (by rank 0 under torchrun); None without a teacher."""
    if not config.teacher:
        return None
    labeller = PseudoLabeller.from_weights(config.teacher, config.model, config.pseudo_label_min_confidence, device)
    if config.pseudo_label_track_s <= 0:
        return labeller
    table = labels_from_rank_zero(lambda: carry_labels(
        run_teacher(labeller, dataset, progress=progress), dataset, config.pseudo_label_min_confidence,
        config.pseudo_label_track_s, config.pseudo_label_agree_m, math.radians(config.pseudo_label_agree_deg)),
        world, rank, device)
    if progress:
        print(f"pseudo labels: {100 * float(table.keep.float().mean()):.1f} % of {len(dataset)} frames "
              f"({100 * float(table.carried.float().mean()):.1f} % carried by odometry)")
    return table


def train(config: TrainConfig, progress: bool = True) -> Path:
    """Train, checkpointing to ``<out_dir>``; returns the final checkpoint path."""
    rank, world, device = _distributed()
    _check_precision(config.mixed_precision, device)  # before any data is read
    torch.manual_seed(config.seed + rank)
    out = Path(config.out_dir)
    prior = "gnss" if config.supervision == "weak" else "perturbed"
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 reads bags into their cache first; the others then find it there
    try:
        dataset = open_registration_dataset(config.dataset, config.dataset_root, config.split, config.model, prior,
                                            config.seed, config.vigor_area, config.vigor_cities, config.bags)
    finally:
        if world > 1 and rank == 0:
            dist.barrier()  # also when it failed: the others then fail the same way instead of waiting
    sampler = DistributedSampler(dataset, world, rank, seed=config.seed) if world > 1 else \
        RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed))
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        drop_last=True, persistent_workers=config.num_workers > 0)
    net = G2SRegistrationNet(config.model).to(device)
    scaler = set_precision(net, config.mixed_precision, device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    step, start_epoch = 0, 0
    last = out / "last.safetensors"
    if last.is_file():
        tensors, meta = read_checkpoint(last)
        load_model_weights(net, tensors, str(last))
        load_optimizer_state(optimizer, tensors, meta)
        step, start_epoch = int(meta["step"]), int(meta["epoch"])
    elif config.init_weights:  # a fresh run fine-tunes a checkpoint (its model configuration must match)
        load_model_weights(net, read_checkpoint(config.init_weights)[0], config.init_weights)
    elif config.pretrained:  # a fresh run starts both trunks from ImageNet
        state = read_state_dict(config.pretrained)
        for encoder in (net.ground_encoder, net.satellite_encoder):
            load_pretrained_trunk(encoder, state)
    module = LossModule(net, config, _labeller(config, dataset, device, progress and rank == 0, world, rank))
    if world > 1:
        module = DistributedDataParallel(module, find_unused_parameters=True)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
    generator = torch.Generator().manual_seed(config.seed * 1000 + rank)
    resolved = to_dict(config)
    for epoch in range(start_epoch, config.epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress or rank != 0)
        for batch in bar:
            losses = module(batch, generator)
            if not torch.isfinite(losses["total"]):
                values = {k: float(v) for k, v in losses.items()}
                raise FloatingPointError(f"loss is not finite at step {step + 1} ({values}); lower learning_rate "
                                         f"or check the data and the pretrained weights")
            apply_gradients(losses["total"], net, optimizer, scaler)
            step += 1
            if writer is not None:
                for name, value in losses.items():
                    writer.add_scalar(f"{'stats' if name == LABELLED else 'loss'}/{name}", float(value.detach()), step)
                writer.add_scalar("temperature", float(net.temperature.detach()), step)
                bar.set_postfix({k: f"{float(v.detach()):.3f}" for k, v in losses.items()})
                if step % config.checkpoint_every == 0:
                    save_checkpoint(last, net, resolved, step, epoch, optimizer)
            if config.max_steps and step >= config.max_steps:
                break
        if rank == 0:
            save_checkpoint(last, net, resolved, step, epoch + 1, optimizer)
        if config.max_steps and step >= config.max_steps:
            break
    final = out / "model.safetensors"
    if rank == 0:
        save_checkpoint(final, net, resolved, step, config.epochs)
        writer.close()  # type: ignore[union-attr]
    if dist.is_initialized():
        dist.barrier()
    return final

