"""CIE Lab conversion in torch, and the normalisation constants shared by every model.

The constants are the one place where L and ab are scaled for the networks; the exported ONNX graph
applies them itself, so the runtime only ever sees L* in [0, 100] and a*, b* in CIE units.
The conversion follows skimage.color.rgb2lab (sRGB, D65, 2 degree observer) so that training,
evaluation (skimage) and the runtime (OpenCV float32) agree.
"""

import torch

L_CENTER = 50.0  # network input = (L - L_CENTER) / L_SCALE, i.e. [-1, 1]
L_SCALE = 50.0
AB_SCALE = 110.0  # regression heads predict ab / AB_SCALE; sRGB's gamut lies within about +-110

_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape [..., 3, H, W] -> Lab [..., 3, H, W] (L in [0, 100])."""
    rgb = rgb.float().clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = _RGB_TO_XYZ.to(rgb.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear)
    xyz = xyz / _D65_WHITE.to(rgb.device)[:, None, None]
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(dim=-3)
    lab = torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)
    return lab


def uint8_rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB batch [N, 3, H, W] -> float32 Lab."""
    return rgb_to_lab(images.float() / 255.0)


def normalize_l(lightness: torch.Tensor) -> torch.Tensor:
    return (lightness - L_CENTER) / L_SCALE
