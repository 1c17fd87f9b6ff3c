"""One file per model: the L-channel ResNet-18 classifier, the seed colorizer and ours.

A colorizer checkpoint is {"model": state_dict, "meta": {"preset": ..., "model_kwargs": {...}, ...}};
every colorizer has forward_ab(L in [0, 100]) -> ab, which is what export traces."""

import torch

from runtime.fileio import first_line
from train.engine import CheckpointError, load_checkpoint
from train.models.bin_colorizer import BinColorizer
from train.models.colorizer import Colorizer
from train.models.seed_colorizer import SeedColorizer

PRESETS = {"default": BinColorizer, "seed": SeedColorizer}


def build_colorizer(preset: str, encoder_state: dict | None = None, **model_kwargs) -> Colorizer:
    return PRESETS[preset](encoder_state=encoder_state, **model_kwargs)


def load_colorizer(path) -> tuple[Colorizer, dict]:
    """-> (model in eval mode, fp32, on CPU; its meta dict) from a colorizer checkpoint; CheckpointError (one line)
    for a missing or damaged file, another kind of checkpoint (a classifier, a training state) or weights that do
    not fit the preset."""
    checkpoint = load_checkpoint(path)
    meta = checkpoint.get("meta")
    if not isinstance(meta, dict) or "preset" not in meta:
        kind = " (it is a classifier checkpoint)" if "fc.weight" in checkpoint["model"] else ""
        raise CheckpointError(f"{path} is not a colorizer checkpoint: no meta.preset{kind}")
    if meta["preset"] not in PRESETS:
        raise CheckpointError(f"{path}: unknown colorizer preset {meta['preset']!r} (this version knows "
                              f"{', '.join(sorted(PRESETS))})")
    try:
        model = build_colorizer(meta["preset"], **meta.get("model_kwargs", {}))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint["model"].items()})
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its weights do not fit the {meta['preset']} colorizer "
                              f"({first_line(exc)})") from None
    return model.eval(), meta
