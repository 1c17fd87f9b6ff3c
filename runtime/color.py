"""Colour helpers: CIE L* from images, resizing, and the full-resolution Lab merge back to BGR.

Lab is CIE Lab (sRGB, D65, 2 degree observer) as in skimage.color.rgb2lab, which training uses. L* is computed
here directly (8-bit lookup table for the sRGB curve, then Y, then L*): it matches skimage to 1e-4 and is about three
times faster than OpenCV's float BGR2Lab, which quantises L* by up to 0.2. The way back, OpenCV's float32
COLOR_Lab2BGR, agrees with skimage.color.lab2rgb to 1e-3. OpenCV's 8-bit Lab conversions are not CIE Lab at all.
"""

import cv2
import numpy as np

STRIP_PIXELS = 1 << 22  # the merge works on horizontal strips of about this many pixels, so huge images stay in memory
_Y_FROM_BGR = np.array([[0.072169, 0.715160, 0.212671]], np.float32)  # skimage's sRGB->XYZ row for Y, BGR order


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0.04045, ((values + 0.055) / 1.055) ** 2.4, values / 12.92)


_LINEAR_FROM_8BIT = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)


def to_float_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float image, gray HxW or BGR HxWx3 -> float32 BGR in [0, 1]."""
    if image.dtype == np.uint8:
        image = image.astype(np.float32) * (1.0 / 255.0)
    elif image.dtype == np.uint16:
        image = image.astype(np.float32) * (1.0 / 65535.0)
    else:
        image = np.clip(image.astype(np.float32, copy=False), 0.0, 1.0)
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def _strip_lightness(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        linear = cv2.LUT(image, _LINEAR_FROM_8BIT)
    else:
        linear = srgb_to_linear(to_float_bgr(image)).astype(np.float32)
    luminance = cv2.transform(linear, _Y_FROM_BGR) if linear.ndim == 3 else linear  # gray: R = G = B, Y = linear
    return np.where(luminance > 0.008856, 116.0 * np.cbrt(luminance) - 16.0, 903.3 * luminance).astype(np.float32)


def lightness(image: np.ndarray) -> np.ndarray:
    """Gray HxW or BGR HxWx3 (uint8, uint16 or float in [0, 1]) -> CIE L* float32 HxW in [0, 100]."""
    height, width = image.shape[:2]
    if height * width <= STRIP_PIXELS:
        return _strip_lightness(image)
    out = np.empty((height, width), np.float32)
    for y0, y1 in strips(height, width):
        out[y0:y1] = _strip_lightness(image[y0:y1])
    return out


def lab_to_bgr(lab: np.ndarray) -> np.ndarray:
    """float32 Lab HxWx3 -> float32 BGR, not clipped (out-of-gamut colours fall outside [0, 1])."""
    return cv2.cvtColor(lab.astype(np.float32, copy=False), cv2.COLOR_Lab2BGR)


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with INTER_AREA when shrinking (no aliasing) and bilinear when enlarging."""
    if (height, width) == image.shape[:2]:
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def strips(height: int, width: int):
    """(y0, y1) row ranges of about STRIP_PIXELS pixels each."""
    rows = max(1, STRIP_PIXELS // max(1, width))
    for y0 in range(0, height, rows):
        yield y0, min(height, y0 + rows)


def upsample_rows(plane: np.ndarray, height: int, width: int, y0: int, y1: int) -> np.ndarray:
    """Rows y0:y1 of the 2-D `plane` bilinearly resized to height x width, without building the whole resized
    plane (cv2.resize's pixel-centre mapping; warpAffine interpolates at 1/32 px, so it differs by a hair)."""
    if (y0, y1) == (0, height):
        return cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)
    small_h, small_w = plane.shape
    sx, sy = small_w / width, small_h / height
    # dst (x, y) -> src (sx * (x + 0.5) - 0.5, sy * (y + y0 + 0.5) - 0.5)
    inverse = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, sy * (y0 + 0.5) - 0.5]], np.float64)
    return cv2.warpAffine(plane, inverse, (width, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def merge_lab(source: np.ndarray, ab_small: np.ndarray, out: np.ndarray | None = None,
              out_dtype=np.uint8, source_is_lightness: bool = False) -> np.ndarray:
    """Full-resolution colour image from the full-res L* of `source` and the model's a*, b* [2, h, w].

    source: the original image (see lightness) or, with source_is_lightness, its L* HxW float32.
    out: optional HxWx3 uint8/uint16 array to write into; it may be `source` itself (each strip is read first).
    """
    height, width = source.shape[:2]
    if out is None:
        out = np.empty((height, width, 3), out_dtype)
    peak = float(np.iinfo(out.dtype).max)
    depth = cv2.CV_8U if out.dtype == np.uint8 else cv2.CV_16U
    a_small, b_small = (np.ascontiguousarray(plane, dtype=np.float32) for plane in ab_small)
    for y0, y1 in strips(height, width):
        strip_l = source[y0:y1] if source_is_lightness else _strip_lightness(source[y0:y1])
        lab = cv2.merge([np.asarray(strip_l, np.float32), upsample_rows(a_small, height, width, y0, y1),
                         upsample_rows(b_small, height, width, y0, y1)])
        # scale, round and saturate (clips out-of-gamut values) in one OpenCV pass
        out[y0:y1] = cv2.multiply(lab_to_bgr(lab), (peak, peak, peak, 0.0), dtype=depth)
    return out


def __getattr__(name: str):
    """color.model_size still works for older callers; its one home is runtime.contract (imported lazily, as
    contract imports this module)."""
    if name == "model_size":
        from runtime.contract import model_size

        return model_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
