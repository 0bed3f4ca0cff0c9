"""Checkpoints as safetensors: tensors only, metadata as JSON strings. Never unpickles.

A checkpoint stores the model weights (``model.<name>``), optionally the optimizer state
(``optim.<param index>.<name>``), and in the metadata the resolved configuration, the step and
the format tag, so a file is self-describing and a mismatch is reported in words.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "g2s-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any], step: int = 0, epoch: int = 0,
                    optimizer: torch.optim.Optimizer | None = None, extra: dict[str, Any] | None = None) -> Path:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"format": FORMAT, "config": config, "step": step, "epoch": epoch, "extra": extra or {}}
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, entries in state["state"].items():
            for name, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
        meta["optimizer_param_groups"] = state["param_groups"]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"g2s": json.dumps(meta)})
    tmp.replace(out)  # never leave a half-written checkpoint under the final name
    return out


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint; any defect raises :class:`CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        tensors = load_file(str(p))
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get("g2s")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p} is not a readable safetensors checkpoint: {exc}") from exc
    if raw is None:
        raise CheckpointError(f"{p} has no g2s metadata; not a g2s_localization checkpoint")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: metadata is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return tensors, meta


def load_model_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strict load with a readable account of missing, unexpected or mis-shaped tensors."""
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{source} does not fit this model: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}, shape mismatches {shapes[:5]}")
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source} holds non-finite values in {bad[:5]}")
    model.load_state_dict(weights, strict=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         meta: dict[str, Any]) -> None:
    groups = meta.get("optimizer_param_groups")
    if groups is None:
        return
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
