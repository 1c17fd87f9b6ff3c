"""The base class every colorizer derives from: it owns what export, evaluation and the runtime's metadata need to
know about a model (richzhang/colorization's BaseColor owns L normalisation the same way)."""

import torch
from torch import nn

from runtime import contract
from train.models.classifier import ENCODER_STRIDE


class Colorizer(nn.Module):
    """forward(normalised L) is what training's loss sees; forward_ab(L* in [0, 100]) -> a*, b* is the exported
    contract. Subclasses set `preset`; those with an annealed mean keep their temperature in a buffer named
    `temperature` (part of the state dict, so a checkpoint carries it)."""

    preset = ""
    size_multiple = ENCODER_STRIDE  # the runtime feeds sides that are multiples of this (the encoder's stride)

    @property
    def has_temperature(self) -> bool:
        return isinstance(getattr(self, "temperature", None), torch.Tensor)

    def annealing_temperature(self) -> float | None:
        """The annealed-mean temperature the weights hold (a fp16 checkpoint rounds 0.38 to 0.3799), or None."""
        return float(self.temperature) if self.has_temperature else None

    def set_temperature(self, value: float) -> None:
        if not self.has_temperature:
            raise ValueError(f"the {self.preset} colorizer has no temperature")
        self.temperature.fill_(contract.check_temperature(value))

    def forward_ab(self, lightness: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def info(self, meta: dict, precision: str = "fp32", source_sha256: str = "") -> contract.ModelInfo:
        """This model with its checkpoint's meta -> the ModelInfo its export carries and evaluation feeds it by
        (one builder for both; overrides go through ModelInfo.resolve)."""
        metrics = meta.get("metrics") or ({"valid": meta["valid"]} if "valid" in meta else {})
        return contract.ModelInfo(
            input_size=max(self.size_multiple, int(meta.get("input_size", 256))),
            size_multiple=self.size_multiple,
            precision=precision,
            preset=self.preset,
            domain=str(meta.get("domain", "flowers")),
            version=str(meta.get("version", "0")),
            training_data=str(meta.get("training_data", "")),
            temperature=self.annealing_temperature(),
            metrics=metrics,
            source_sha256=source_sha256,
        )
