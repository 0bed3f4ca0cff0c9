"""Feature extractors: shapes, frozen statistics, ImageNet weights from local files, checkpoints."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from g2s_localization.registration.backbones import (
    FrozenBatchNorm2d,
    ResNetTrunk,
    ResNetUNetEncoder,
    SmallEncoder,
    load_pretrained_trunk,
    make_encoder,
    read_state_dict,
)
from g2s_localization.registration.checkpoints import save_checkpoint
from g2s_localization.registration.model import G2SRegistrationNet, ModelConfig
from g2s_localization.registration.registrars import LearnedRegistrar


def torchvision_like_state(blocks: tuple[int, int, int] = (2, 2, 2), seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's ResNet naming, with the layers the trunk does not use."""
    torch.manual_seed(seed)
    trunk = ResNetTrunk(blocks)
    state = {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else 0.1 * torch.randn_like(v))
             if v.is_floating_point() else v for k, v in trunk.state_dict().items()}
    state["layer4.0.conv1.weight"] = torch.randn(512, 256, 3, 3)
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    return state


class TestMakeEncoder:
    @pytest.mark.parametrize("backbone", ["small", "resnet18", "resnet34"])
    def test_half_resolution_features(self, backbone: str) -> None:
        encoder = make_encoder(backbone, feature_dim=8, width=16)
        out = encoder(torch.rand(2, 3, 66, 130))
        assert out.shape == (2, 8, 33, 65)
        assert torch.isfinite(out).all()

    def test_unknown_backbone_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown backbone"):
            make_encoder("vgg99", 8, 16)
        with pytest.raises(ValueError, match="unknown backbone"):
            ModelConfig(backbone="vgg99")

    def test_gradients_reach_the_trunk(self) -> None:
        encoder = make_encoder("resnet18", 4, 16)
        encoder(torch.rand(1, 3, 64, 64)).square().mean().backward()
        assert encoder.trunk.conv1.weight.grad is not None and encoder.trunk.conv1.weight.grad.abs().sum() > 0


class TestFrozenBatchNorm:
    def test_uses_stored_statistics_in_training(self) -> None:
        bn = FrozenBatchNorm2d(3)
        bn.running_mean.fill_(2.0)
        bn.running_var.fill_(4.0)
        bn.train()
        x = torch.full((2, 3, 4, 4), 6.0)
        torch.testing.assert_close(bn(x), torch.full_like(x, 2.0), atol=1e-3, rtol=0)
        assert torch.all(bn.running_mean == 2.0)  # never updated


class TestPretrainedWeights:
    def test_torchvision_pth_loads_into_trunk(self, tmp_path: Path) -> None:
        state = torchvision_like_state()
        path = tmp_path / "resnet18.pth"
        torch.save(state, path)
        encoder = ResNetUNetEncoder(8, "resnet18")
        loaded = load_pretrained_trunk(encoder, read_state_dict(path))
        assert loaded == len(encoder.trunk.state_dict())
        torch.testing.assert_close(encoder.trunk.layer2[1].conv2.weight, state["layer2.1.conv2.weight"])

    def test_safetensors_file_loads(self, tmp_path: Path) -> None:
        state = torchvision_like_state(seed=1)
        path = tmp_path / "resnet18.safetensors"
        save_file(state, str(path))
        encoder = ResNetUNetEncoder(8, "resnet18")
        load_pretrained_trunk(encoder, read_state_dict(path))
        torch.testing.assert_close(encoder.trunk.conv1.weight, state["conv1.weight"])

    def test_missing_file_says_nothing_is_downloaded(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
            read_state_dict(tmp_path / "absent.pth")

    def test_wrong_architecture_is_refused(self) -> None:
        encoder = ResNetUNetEncoder(8, "resnet34")
        with pytest.raises(ValueError, match="do not fit"):
            load_pretrained_trunk(encoder, torchvision_like_state((2, 2, 2)))

    def test_small_backbone_takes_no_imagenet_weights(self) -> None:
        with pytest.raises(ValueError, match="only ResNet"):
            load_pretrained_trunk(SmallEncoder(8), torchvision_like_state())

    def test_pickled_code_is_not_run(self, tmp_path: Path) -> None:
        class Payload:
            def __reduce__(self):  # what a malicious checkpoint would carry
                return (Path.touch, (tmp_path / "pwned",))

        path = tmp_path / "evil.pth"
        path.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
        with pytest.raises(ValueError, match="not a readable torch state dict"):
            read_state_dict(path)
        assert not (tmp_path / "pwned").exists()


class TestBackboneCheckpoints:
    def test_resnet_checkpoint_round_trip(self, tmp_path: Path) -> None:
        config = ModelConfig(backbone="resnet18", bev_size=40, search_radius_m=4.0)
        net = G2SRegistrationNet(config)
        path = save_checkpoint(tmp_path / "m.safetensors", net, {"model": {"backbone": "resnet18", "bev_size": 40,
                                                                           "search_radius_m": 4.0}})
        loaded = LearnedRegistrar.from_checkpoint(path, device="cpu")
        assert loaded.config.backbone == "resnet18"
        for (name, a), (_, b) in zip(net.state_dict().items(), loaded.net.state_dict().items()):
            torch.testing.assert_close(a, b, msg=name)

    def test_shipped_small_weights_still_load(self) -> None:
        assert LearnedRegistrar.from_checkpoint(device="cpu").config.backbone == "small"


class TestEncoderAutocast:
    @pytest.mark.parametrize("backbone", ["small", "resnet18"])
    def test_bf16_features_are_float32_and_close(self, backbone: str) -> None:
        from g2s_localization.registration.model import G2SRegistrationNet, ModelConfig

        torch.manual_seed(0)
        net = G2SRegistrationNet(ModelConfig(backbone=backbone)).eval()
        satellite = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            full = net.satellite_features(satellite)
            net.encoder_autocast = torch.bfloat16
            mixed = net.satellite_features(satellite)
        assert mixed.dtype == torch.float32 and mixed.shape == full.shape
        cosine = torch.nn.functional.cosine_similarity(mixed.flatten(1), full.flatten(1)).min()
        assert cosine > 0.98  # bf16 keeps 8 mantissa bits: close, not equal
        assert not torch.equal(mixed, full)
