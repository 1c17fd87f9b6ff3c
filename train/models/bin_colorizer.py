"""Our colorizer: ResNet-18 encoder with a skip-connected decoder that classifies every pixel (at
1/4 resolution) into quantised ab bins, decoded by the annealed mean (Zhang et al., "Colorful Image
Colorization", ECCV 2016). Classification with class rebalancing keeps rare, saturated colours that
MSE averages into grey; the skips from the stride-4/8/16 stages put colour edges on object edges.
"""

import torch
import torch.nn.functional as F
from torch import nn

from train.lab import normalize_l, rgb_to_lab
from train.models.classifier import ENCODER_STRIDE, encoder_from_classifier
from train.models.colorizer import Colorizer

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


class BinColorizer(Colorizer):
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
    def _merge(x, skip, exact: bool):
        """Upsample x to skip's size and stack them. exact: the input's sides are multiples of 32, so every stage
        is exactly twice the one below; a constant scale of 2 (the same numbers as the size) lets ONNX Runtime
        keep the resize and the concatenation in its blocked (NCHWc) layout instead of converting around them."""
        if exact:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, skip], dim=1)

    def features(self, l_norm: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """normalised L -> the decoder's last features [N, 64, H/4, W/4] (what the head classifies); exact: see
        _merge (training's crops need not be multiples of 32)."""
        _, s4, s8, s16, s32 = self.encoder(l_norm)
        x = self.reduce(s32)
        x = self.up16(self._merge(x, s16, exact))
        x = self.up8(self._merge(x, s8, exact))
        return self.up4(self._merge(x, s4, exact))

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        """normalised L -> bin logits [N, Q, H/4, W/4] (training's cross-entropy)."""
        return self.head(self.features(l_norm))

    def annealed_mean(self, scaled_logits: torch.Tensor) -> torch.Tensor:
        """Bin logits / T, bins on the LAST axis [..., Q] -> the annealed mean a*, b* [..., 2]: the
        softmax-weighted sum of bin centres. Channels-last because ONNX Runtime's Softmax is fast over the
        last axis and a MatMul projects onto the centres. Over the channel axis of NCHW (ReduceMax, Exp, 1x1 Conv),
        head and decoding took 2.5 of the int8 model's 11.7 ms at 256x256; channels-last, with forward_ab's
        MatMul head, 1.3 ms."""
        return torch.softmax(scaled_logits.float(), dim=-1) @ self.bins

    def decode(self, logits: torch.Tensor, size) -> torch.Tensor:
        """Bin logits [N, Q, h, w] -> annealed mean [N, 2, *size] (training's regression loss)."""
        ab = self.annealed_mean(logits.float().movedim(1, -1) / self.temperature).movedim(-1, 1)
        return F.interpolate(ab, size=size, mode="bilinear", align_corners=False)

    def forward_ab(self, lightness: torch.Tensor) -> torch.Tensor:
        """The exported contract: L* in [0, 100], [N, 1, H, W] -> a*, b* [N, 2, H, W]. The same numbers as
        decode(forward(.)) for sides that are multiples of 32 (what the runtime feeds), arranged for inference:
        other sides are padded up to a multiple of ENCODER_STRIDE (edge values) and cropped back, so every decoder stage is
        exactly twice the one below (see _merge); the 1x1 head is one MatMul of the features as a [pixels, 64 + 1]
        matrix (a column of ones carries the bias: ONNX Runtime's separate bias Add, or Gemm's, rereads every
        logit); the temperature divides the head's Q x 65 weights rather than its logits."""
        height, width = lightness.shape[-2:]
        padded = F.pad(lightness, (0, (-width) % ENCODER_STRIDE, 0, (-height) % ENCODER_STRIDE), mode="replicate")
        features = self.features(normalize_l(padded), exact=True)
        n, c, h, w = features.shape
        pixels = features.movedim(1, -1).reshape(n * h * w, c)
        pixels = torch.cat([pixels, torch.ones_like(pixels[:, :1])], dim=1)
        head = torch.cat([self.head.weight.flatten(1), self.head.bias[:, None]], dim=1) / self.temperature
        ab = self.annealed_mean(pixels @ head.T).reshape(n, h, w, 2).movedim(-1, 1)
        ab = F.interpolate(ab, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return ab[..., :height, :width]
