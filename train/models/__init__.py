"""One file per model: the L-channel ResNet-18 classifier, the seed colorizer and ours.

A colorizer checkpoint is {"model": state_dict, "meta": {"preset": ..., "model_kwargs": {...}, ...}};
every colorizer has forward_ab(L in [0, 100]) -> ab, which is what export traces."""

import torch

from train.engine import load_checkpoint
from train.models.colorizer import BinColorizer
from train.models.seed_colorizer import SeedColorizer

PRESETS = {"default": BinColorizer, "seed": SeedColorizer}


def build_colorizer(preset: str, encoder_state: dict | None = None, **model_kwargs) -> torch.nn.Module:
    return PRESETS[preset](encoder_state=encoder_state, **model_kwargs)


def load_colorizer(path) -> tuple[torch.nn.Module, dict]:
    """-> (model in eval mode, fp32, on CPU; its meta dict) from a colorizer checkpoint."""
    checkpoint = load_checkpoint(path)
    if "meta" not in checkpoint or "preset" not in checkpoint["meta"]:
        raise ValueError(f"{path} is not a colorizer checkpoint (no meta.preset)")
    meta = checkpoint["meta"]
    model = build_colorizer(meta["preset"], **meta.get("model_kwargs", {}))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint["model"].items()})
    return model.eval(), meta
