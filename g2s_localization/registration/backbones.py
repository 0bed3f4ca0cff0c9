"""Feature extractors for the registration network: the small CPU net and a paper-class ResNet-UNet.

Every backbone maps an image ``(B, 3, H, W)`` in 0..1 to features ``(B, C, H/2, W/2)`` (raw, not
normalised), so the BEV projection and the correlation do not care which one runs.

The ResNet trunk keeps torchvision's parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...),
so an ImageNet state dict saved by torchvision loads into it directly from a local file
(:func:`load_pretrained_trunk`); nothing is ever downloaded. Its batch-norm layers keep their
statistics frozen: batches here are a few frames, whose statistics are noise, and fine-tuning from
ImageNet keeps ImageNet's. The decoder brings the stride-16 features back to stride 2 with skip
connections (a UNet, as the ECCV 2024 paper's VGG16-UNet encoders do).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_BLOCKS = {"resnet18": (2, 2, 2), "resnet34": (3, 4, 6)}  # BasicBlocks in layer1..layer3
BACKBONES = ("small", *RESNET_BLOCKS)


def conv_block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(4, cout),
        nn.ReLU(inplace=True),
    )


class _Normalise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        return (image - self.mean) / self.std


class SmallEncoder(nn.Module):
    """Image ``(B, 3, H, W)`` in 0..1 -> features ``(B, C, H/2, W/2)``; about 10 k parameters, the CPU default."""

    def __init__(self, feature_dim: int, width: int = 16) -> None:
        super().__init__()
        self.normalise = _Normalise()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 5, 2, 2, bias=False), nn.GroupNorm(4, width),
                                  nn.ReLU(inplace=True))
        self.body = nn.Sequential(conv_block(width, width), conv_block(width, width, dilation=2),
                                  conv_block(width, width, dilation=4))
        self.head = nn.Conv2d(2 * width, feature_dim, 1)

    def forward(self, image: Tensor) -> Tensor:
        x = self.stem(self.normalise(image))
        return self.head(torch.cat([self.body(x), x], 1))


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that always normalises with its stored statistics (affine still learned)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block, same parameter names."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = FrozenBatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), FrozenBatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + identity, inplace=True)


def _layer(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), *[BasicBlock(cout, cout) for _ in range(blocks - 1)])


class ResNetTrunk(nn.Module):
    """ResNet-18/34 up to ``layer3``: image -> features at strides 2, 4, 8, 16 (64, 64, 128, 256 channels)."""

    def __init__(self, blocks: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.layer1 = _layer(64, 64, blocks[0], 1)
        self.layer2 = _layer(64, 128, blocks[1], 2)
        self.layer3 = _layer(128, 256, blocks[2], 2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, BasicBlock):  # from scratch every block starts as the identity
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: Tensor) -> list[Tensor]:
        s2 = F.relu(self.bn1(self.conv1(x)), inplace=True)
        s4 = self.layer1(F.max_pool2d(s2, 3, 2, 1))
        s8 = self.layer2(s4)
        return [s2, s4, s8, self.layer3(s8)]


class _Up(nn.Module):
    """Upsample ``x`` to ``skip``'s size, concatenate, two 3x3 convolutions."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(conv_block(cin + cskip, cout), conv_block(cout, cout))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip], 1))


class ResNetUNetEncoder(nn.Module):
    """Image ``(B, 3, H, W)`` in 0..1 -> features ``(B, C, H/2, W/2)`` from a ResNet trunk and a UNet decoder."""

    def __init__(self, feature_dim: int, name: str = "resnet18", decoder_width: int = 64) -> None:
        super().__init__()
        self.normalise = _Normalise()
        self.trunk = ResNetTrunk(RESNET_BLOCKS[name])
        w = decoder_width
        self.up8 = _Up(256, 128, 2 * w)
        self.up4 = _Up(2 * w, 64, w)
        self.up2 = _Up(w, 64, w)
        self.head = nn.Conv2d(w, feature_dim, 1)

    def forward(self, image: Tensor) -> Tensor:
        s2, s4, s8, s16 = self.trunk(self.normalise(image))
        return self.head(self.up2(self.up4(self.up8(s16, s8), s4), s2))


def make_encoder(backbone: str, feature_dim: int, width: int) -> nn.Module:
    if backbone == "small":
        return SmallEncoder(feature_dim, width)
    if backbone in RESNET_BLOCKS:
        return ResNetUNetEncoder(feature_dim, backbone)
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A torchvision-format state dict from a local ``.safetensors`` or ``.pth`` file, never unpickling code."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ImageNet weights {p} not found: nothing is downloaded at run time; pass a local "
                                f"torchvision state dict (e.g. resnet18-f37072fd.pth) or train without --pretrained")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corruption is a bad file
        raise ValueError(f"{p} is not a readable torch state dict: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{p} does not hold a state dict of tensors")
    return state


def load_pretrained_trunk(encoder: nn.Module, state: dict[str, Tensor]) -> int:
    """Copy ImageNet weights into a :class:`ResNetUNetEncoder`'s trunk; returns how many tensors were loaded.

    Keys of layers the trunk does not have (``layer4``, ``fc``) are ignored; a trunk tensor the
    file lacks or holds in another shape is an error, so a wrong file (e.g. ResNet-50) is refused.
    """
    if not isinstance(encoder, ResNetUNetEncoder):
        raise ValueError("only ResNet backbones take ImageNet weights")
    trunk = encoder.trunk.state_dict()
    missing = [k for k in trunk if k not in state]
    shapes = [k for k in trunk if k in state and state[k].shape != trunk[k].shape]
    if missing or shapes:
        raise ValueError(f"ImageNet weights do not fit the {type(encoder.trunk).__name__}: missing {missing[:4]}, "
                         f"shape mismatches {shapes[:4]}")
    encoder.trunk.load_state_dict({k: state[k].to(trunk[k].dtype) for k in trunk}, strict=True)
    return len(trunk)
