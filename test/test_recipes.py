"""The real-data recipes (config/train_kitti_weak.yaml, config/train_vigor_weak.yaml) run end to
end as shipped, on synthetic data written in KITTI's and VIGOR's layouts: a training step with the
recipe's backbone from a local ImageNet file, checkpoint, and weights the registrar loads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from g2s_localization.config import load_yaml, to_dict
from g2s_localization.registration.checkpoints import read_checkpoint
from g2s_localization.registration.registrars import LearnedRegistrar
from g2s_localization.training.trainer import TrainConfig
from test_backbones import torchvision_like_state
from test_vigor import write_image_fixture

CONFIG = Path(__file__).resolve().parents[1] / "config"


def run_recipe(name: str, root: Path, tmp_path: Path, **overrides) -> dict:
    from g2s_localization.cli import main

    recipe = to_dict(load_yaml(TrainConfig, CONFIG / name))
    imagenet = tmp_path / "resnet18.pth"
    torch.save(torchvision_like_state(), imagenet)
    recipe.update(dataset_root=str(root), out_dir=str(tmp_path / "run"), max_steps=1, num_workers=0, **overrides)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--pretrained", str(imagenet)]) == 0
    _, meta = read_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 1
    assert LearnedRegistrar.from_checkpoint(tmp_path / "run" / "model.safetensors", device="cpu").config.backbone \
        == "resnet18"
    return recipe


def test_kitti_recipe_follows_the_paper_protocol_and_runs(small_dataset: Path, tmp_path: Path) -> None:
    recipe = load_yaml(TrainConfig, CONFIG / "train_kitti_weak.yaml")
    assert (recipe.supervision, recipe.epochs, recipe.batch_size, recipe.learning_rate) == ("weak", 3, 8, 1e-4)
    assert (recipe.model.search_radius_m, recipe.model.yaw_range_deg) == (20.0, 10.0)
    run_recipe("train_kitti_weak.yaml", small_dataset, tmp_path, batch_size=2)


def test_vigor_recipe_is_two_dof_cross_area_and_runs(tmp_path: Path) -> None:
    recipe = load_yaml(TrainConfig, CONFIG / "train_vigor_weak.yaml")
    assert (recipe.dataset, recipe.vigor_area, recipe.model.yaw_range_deg) == ("vigor", "cross", 0.0)
    for city in ("NewYork", "Seattle"):  # the cross-area training cities
        write_image_fixture(tmp_path / "VIGOR", city)
    run_recipe("train_vigor_weak.yaml", tmp_path / "VIGOR", tmp_path, batch_size=2)


def test_recipe_without_its_imagenet_file_says_what_is_missing(small_dataset: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    from g2s_localization.cli import main

    recipe = to_dict(load_yaml(TrainConfig, CONFIG / "train_kitti_weak.yaml"))
    recipe.update(dataset_root=str(small_dataset), out_dir=str(tmp_path / "run"), num_workers=0)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 2
    assert "resnet18-f37072fd.pth" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bag_config_names_a_tile_cache_per_town() -> None:
    config = load_yaml(TrainConfig, CONFIG / "train_weak_hard_bags.yaml")
    assert config.dataset == "bag" and len(config.bags.sources) == 6
    assert {Path(s.tiles).parent.name for s in config.bags.sources} == {"town10", "town11"}
    hard = load_yaml(TrainConfig, CONFIG / "train_weak_hard.yaml")
    assert (config.batch_size, config.learning_rate, config.epochs) == (hard.batch_size, hard.learning_rate,
                                                                        hard.epochs)


@pytest.mark.parametrize("path", sorted(CONFIG.glob("train_*.yaml")), ids=lambda p: p.name)
def test_every_training_config_loads(path: Path) -> None:
    """A key misspelt in a shipped config raises here, not after a long data preparation."""
    config = load_yaml(TrainConfig, path)
    assert config.epochs > 0 and config.out_dir.startswith("runs/")
    for shipped in (config.teacher, config.init_weights):  # a shipped teacher or start must be in the repository
        if shipped.startswith("g2s_localization/"):
            assert (CONFIG.parent / shipped).is_file(), shipped
