"""One entry point to the registration datasets, so training, calibration and benchmarks take
KITTI-layout drives (real KITTI or the synthetic set), VIGOR and rosbag2 recordings alike."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from g2s_localization.data.bag_dataset import BagRegistrationDataset, BagSetConfig
from g2s_localization.data.registration_dataset import KittiRegistrationDataset
from g2s_localization.data.vigor import VigorRegistrationDataset
from g2s_localization.registration.model import ModelConfig

KINDS = ("kitti", "vigor", "bag")


def open_registration_dataset(kind: str, root: str | Path, split: str, config: ModelConfig, prior: str,
                              seed: int = 0, vigor_area: str = "same", vigor_cities: tuple[str, ...] = (),
                              bags: BagSetConfig | None = None) -> Dataset:
    """``kind`` ``"kitti"``: ``<root>/<split>_files.txt`` of a KITTI raw layout; ``"vigor"``: VIGOR's
    ``same``/``cross`` area ``train``/``test`` split; ``"bag"``: the recordings in ``bags`` (``root``
    and ``split`` unused). ``prior`` ``"gnss"`` (weak labels) or ``"perturbed"``."""
    if kind == "kitti":
        return KittiRegistrationDataset(root, split, config, prior=prior, seed=seed, only_with_fix=prior == "gnss")
    if kind == "vigor":
        return VigorRegistrationDataset(root, split, vigor_area, config, prior=prior, seed=seed, cities=vigor_cities)
    if kind == "bag":
        return BagRegistrationDataset(bags or BagSetConfig(), config, prior=prior, seed=seed)
    raise ValueError(f"dataset must be one of {KINDS}, got {kind!r}")
