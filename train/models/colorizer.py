"""Our colorizer: ResNet-18 encoder with a skip-connected decoder that classifies every pixel (at
1/4 resolution) into quantised ab bins, decoded by the annealed mean (Zhang et al., "Colorful Image
Colorization", ECCV 2016). Classification with class rebalancing keeps rare, saturated colours that
MSE averages into grey; the skips from the stride-4/8/16 stages put colour edges on object edges.
"""

import torch
import torch.nn.functional as F
from torch import nn

from train.lab import normalize_l, rgb_to_lab
from train.models.classifier import encoder_from_classifier

BIN_STEP = 10.0


def gamut_ab_bins(step: float = BIN_STEP) -> torch.Tensor:
    """Centres (multiples of step) of the ab grid cells that some sRGB colour falls into: [Q, 2].
    With step 10 this gives Zhang et al.'s ~313 in-gamut bins."""
    levels = torch.linspace(0.0, 1.0, 64)
    rgb = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1, 1)
    ab = rgb_to_lab(rgb)[1:].reshape(2, -1).T
    cells = torch.unique(torch.round(ab / step), dim=0)
    return cells * step


def conv_bn_relu(cin, cout, kernel=3):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BinColorizer(nn.Module):
    preset = "default"

    def __init__(self, encoder_state: dict | None = None, temperature: float = 0.38, num_bins: int | None = None):
        super().__init__()
        self.encoder = encoder_from_classifier(encoder_state)
        bins = gamut_ab_bins()
        if num_bins is not None and num_bins != len(bins):  # a checkpoint's own bins arrive via load_state_dict
            bins = torch.zeros(num_bins, 2)
        self.register_buffer("bins", bins)
        self.register_buffer("bin_weights", torch.ones(len(bins)))  # class rebalancing, set from training data
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.reduce = conv_bn_relu(512, 256, kernel=1)
        self.up16 = conv_bn_relu(256 + 256, 128)
        self.up8 = conv_bn_relu(128 + 128, 128)
        self.up4 = conv_bn_relu(128 + 64, 64)
        self.head = nn.Conv2d(64, len(bins), 1)

    @staticmethod
    def _merge(x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, skip], dim=1)

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        """normalised L -> bin logits [N, Q, H/4, W/4]."""
        _, s4, s8, s16, s32 = self.encoder(l_norm)
        x = self.reduce(s32)
        x = self.up16(self._merge(x, s16))
        x = self.up8(self._merge(x, s8))
        x = self.up4(self._merge(x, s4))
        return self.head(x)

    def decode(self, logits: torch.Tensor, size) -> torch.Tensor:
        """Annealed mean: the softmax(logits / T)-weighted sum of bin centres, upsampled to size.
        Written as exp, then one 1x1 convolution whose rows are the a centres, the b centres and ones
        (numerator and denominator together): the same numbers as softmax + einsum, but ONNX Runtime runs
        a channel-axis Softmax and an Einsum several times slower than Exp and Conv."""
        scaled = logits.float() / self.temperature
        weights = torch.exp(scaled - scaled.amax(dim=1, keepdim=True))
        projection = torch.cat([self.bins.T, torch.ones_like(self.bins[:, :1]).T], dim=0)[:, :, None, None]
        sums = F.conv2d(weights, projection)
        ab = sums[:, :2] / sums[:, 2:]
        return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)

    def forward_ab(self, lightness: torch.Tensor) -> torch.Tensor:
        """The exported contract: L* in [0, 100], [N, 1, H, W] -> a*, b* [N, 2, H, W]."""
        return self.decode(self.forward(normalize_l(lightness)), lightness.shape[-2:])
