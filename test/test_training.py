"""Training runs on real data and real torch: a few steps, checkpoint, resume, torchrun."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from g2s_localization.config import to_dict
from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.registration.checkpoints import read_checkpoint
from g2s_localization.registration.model import ModelConfig
from g2s_localization.registration.registrars import LearnedRegistrar
from g2s_localization.training.trainer import TrainConfig, train

TINY = ModelConfig(ground_width=128, ground_height=40, feature_dim=4, width=8, bev_size=24, bev_metres_per_px=1.0,
                   search_radius_m=6.0, yaw_range_deg=4.0, yaw_step_deg=2.0)


def test_dataset_samples(small_dataset: Path) -> None:
    ds = KittiRegistrationDataset(small_dataset, "train", TINY, prior="perturbed", seed=3)
    sample = ds[4]
    assert sample["satellite"].shape == (3, TINY.satellite_input_px, TINY.satellite_input_px)
    forward, left, dyaw = sample["target"].tolist()
    assert abs(forward) <= 6.0 + 1e-3 and abs(left) <= 6.0 + 1e-3 and abs(dyaw) <= 0.07 + 1e-4
    again = KittiRegistrationDataset(small_dataset, "train", TINY, prior="perturbed", seed=3)[4]
    assert torch.equal(again["target"], sample["target"])  # the evaluation priors are reproducible
    gnss = KittiRegistrationDataset(small_dataset, "train", TINY, prior="gnss")[4]
    assert not torch.equal(gnss["target"], sample["target"])


def test_split_joins_lists_with_a_plus(small_dataset: Path, tmp_path: Path) -> None:
    for entry in small_dataset.iterdir():  # the same drives, the train list cut in two
        if entry.is_dir():
            (tmp_path / entry.name).symlink_to(entry)
    lines = (small_dataset / "train_files.txt").read_text().splitlines()
    (tmp_path / "first_files.txt").write_text("\n".join(lines[:4]) + "\n")
    (tmp_path / "rest_files.txt").write_text("\n".join(lines[4:]) + "\n")
    joined = KittiRegistrationDataset(tmp_path, "first+rest", TINY)
    assert joined.frames == KittiRegistrationDataset(small_dataset, "train", TINY).frames and len(joined) == 10
    assert len(KittiRegistrationDataset(tmp_path, "rest", TINY)) == 6
    with pytest.raises(FileNotFoundError, match="'more'"):
        KittiRegistrationDataset(tmp_path, "first+more", TINY)


def test_weak_training_checkpoints_and_resumes(small_dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(dataset_root=str(small_dataset), split="train", epochs=1, max_steps=2, batch_size=2,
                         num_workers=0, out_dir=str(tmp_path / "run"), model=TINY, negative_min_distance_m=0.0)
    final = train(config, progress=False)
    tensors, meta = read_checkpoint(final)
    assert meta["step"] == 2 and meta["config"]["supervision"] == "weak"
    assert meta["config"]["model"] == to_dict(TINY)
    assert (tmp_path / "run" / "tensorboard").is_dir()
    registrar = LearnedRegistrar.from_checkpoint(final, device="cpu")
    assert registrar.config == TINY
    # resume: the step counter continues from last.safetensors
    resumed = TrainConfig(**{**config.__dict__, "epochs": 2, "max_steps": 3})
    _, meta2 = read_checkpoint(train(resumed, progress=False))
    assert meta2["step"] == 3


def test_full_supervision_step(small_dataset: Path, tmp_path: Path) -> None:
    config = TrainConfig(dataset_root=str(small_dataset), split="train", supervision="full", epochs=1, max_steps=1,
                         batch_size=2, num_workers=0, out_dir=str(tmp_path / "full"), model=TINY)
    _, meta = read_checkpoint(train(config, progress=False))
    assert meta["config"]["supervision"] == "full" and meta["step"] == 1


def test_torchrun_single_process_cpu(small_dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    import yaml

    cfg = to_dict(TrainConfig(dataset_root=str(small_dataset), split="train", epochs=1, max_steps=1, batch_size=2,
                              num_workers=0, out_dir=str(tmp_path / "ddp"), model=TINY))
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                             str(29500 + os.getpid() % 1000), "-m", "g2s_localization", "train", "--config",
                             str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    _, meta = read_checkpoint(tmp_path / "ddp" / "model.safetensors")
    assert meta["step"] == 1


def test_calibrate_exports_weights_with_temperature(small_dataset: Path, tmp_path: Path) -> None:
    from g2s_localization.cli import main
    from g2s_localization.registration.checkpoints import save_checkpoint
    from g2s_localization.registration.model import G2SRegistrationNet

    source = save_checkpoint(tmp_path / "trained.safetensors", G2SRegistrationNet(TINY), {"model": to_dict(TINY)},
                             step=5)
    out = tmp_path / "shipped.safetensors"
    assert main(["calibrate", str(source), "--root", str(small_dataset), "--split", "train", "--limit", "8",
                 "--out", str(out)]) == 0
    _, meta = read_checkpoint(out)
    temperature = meta["extra"]["calibrated_temperature"]
    assert 0.0 < temperature < 1.0 and "SYNTHETIC" in meta["extra"]["note"]
    assert LearnedRegistrar.from_checkpoint(out, device="cpu").temperature == temperature


def test_resnet_backbone_trains_from_local_imagenet_weights(small_dataset: Path, tmp_path: Path) -> None:
    """`g2s train --pretrained FILE`: both trunks start from the file, then train; the checkpoint loads."""
    from test_backbones import torchvision_like_state

    import yaml

    imagenet = tmp_path / "resnet18.pth"
    state = torchvision_like_state()
    torch.save(state, imagenet)
    model = {**to_dict(TINY), "backbone": "resnet18"}
    cfg = to_dict(TrainConfig(dataset_root=str(small_dataset), split="train", epochs=1, max_steps=1, batch_size=2,
                              num_workers=0, out_dir=str(tmp_path / "resnet"), negative_min_distance_m=0.0))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**cfg, "model": model}))
    result = subprocess.run([sys.executable, "-m", "g2s_localization", "train", "--config", str(config),
                             "--pretrained", str(imagenet)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    registrar = LearnedRegistrar.from_checkpoint(tmp_path / "resnet" / "model.safetensors", device="cpu")
    assert registrar.config.backbone == "resnet18"
    for branch in (registrar.net.ground_encoder, registrar.net.satellite_encoder):
        moved = (branch.trunk.layer3[1].conv2.weight - state["layer3.1.conv2.weight"]).abs().max()
        assert 0 < moved < 0.05  # started from the file, changed by one small step
    missing = subprocess.run([sys.executable, "-m", "g2s_localization", "train", "--config", str(config),
                              "--pretrained", str(tmp_path / "absent.pth"), "--set", f"out_dir={tmp_path / 'x'}"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "nothing is downloaded" in missing.stderr


def test_bf16_mixed_precision_trains_and_fp16_needs_cuda(small_dataset: Path, tmp_path: Path) -> None:
    """Encoders under bf16 autocast (the CPU's mixed precision): a step trains, the checkpoint stays float32."""
    config = TrainConfig(dataset_root=str(small_dataset), split="train", epochs=1, max_steps=1, batch_size=2,
                         num_workers=0, out_dir=str(tmp_path / "bf16"), model=TINY, negative_min_distance_m=0.0,
                         mixed_precision="bf16")
    tensors, meta = read_checkpoint(train(config, progress=False))
    assert meta["step"] == 1 and meta["config"]["mixed_precision"] == "bf16"
    assert all(t.dtype == torch.float32 for t in tensors.values() if t.is_floating_point())
    assert LearnedRegistrar.from_checkpoint(tmp_path / "bf16" / "model.safetensors", device="cpu").config == TINY
    if not torch.cuda.is_available():
        fp16 = TrainConfig(**{**config.__dict__, "mixed_precision": "fp16", "out_dir": str(tmp_path / "fp16")})
        with pytest.raises(ValueError, match="fp16 needs CUDA"):
            train(fp16, progress=False)
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        TrainConfig(mixed_precision="int8")
