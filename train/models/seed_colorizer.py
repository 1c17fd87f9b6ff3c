"""The seed project's model #1: ResNet-18 encoder -> five Upsample-Conv-BN-ReLU stages -> a, b.

One deliberate change: the seed's Sigmoid head could not produce negative a/b (greens, blues);
here tanh * AB_SCALE spans the whole range, so a comparison measures the loss and decoder, not that bug.
"""

import torch
import torch.nn.functional as F
from torch import nn

from train.lab import AB_SCALE, normalize_l
from train.models.classifier import encoder_from_classifier
from train.models.colorizer import Colorizer


class SeedColorizer(Colorizer):
    preset = "seed"

    def __init__(self, encoder_state: dict | None = None, channels=(512, 256, 128, 64, 32, 16)):
        super().__init__()
        self.encoder = encoder_from_classifier(encoder_state)
        layers = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(channels[-1], 2, 3, padding=1))
        self.decoder = nn.Sequential(*layers)

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        """normalised L -> ab / AB_SCALE in [-1, 1], at the input's size."""
        out = torch.tanh(self.decoder(self.encoder(l_norm)[-1]))
        if out.shape[-2:] != l_norm.shape[-2:]:
            out = F.interpolate(out, size=l_norm.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def forward_ab(self, lightness: torch.Tensor) -> torch.Tensor:
        """The exported contract: L* in [0, 100], [N, 1, H, W] -> a*, b* [N, 2, H, W]."""
        return self.forward(normalize_l(lightness)) * AB_SCALE
