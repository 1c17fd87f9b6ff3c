"""Colour helpers: CIE L* from images, resizing, and the full-resolution Lab merge back to BGR.

Lab is CIE Lab (sRGB, D65, 2 degree observer) as in skimage.color.rgb2lab, which training uses. L* is computed
here directly: the sRGB curve of 8-bit pixels is a 256-entry table and luminance Y one cv2.transform. What the model
sees (small) takes L* from Y exactly, as training did (an int8 model's input quantisation turns a 1e-6 change of L*
into a different colour now and then); the full-resolution L* of the merge takes it from a table of 65536 steps
(at most 0.007 L* off, 0.02 of an 8-bit unit in the output). Both are several times faster than OpenCV's float
BGR2Lab, which also quantises L* by up to 0.2. The way
back, OpenCV's float32 COLOR_Lab2BGR, agrees with skimage.color.lab2rgb to 1e-3. OpenCV's 8-bit Lab conversions
are not CIE Lab at all. Nothing here knows about models: runtime.contract chains these steps into the image path.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import cv2
import numpy as np

STRIP_PIXELS = 1 << 22  # the merge works on horizontal strips of about this many pixels, so huge images stay in memory
# ... and converts each in bands of about this many: a band's float Lab (0.4 MB) stays in the CPU's L2 cache. At
# 640x480 (2-core AMD EPYC, CPU time of the whole image path): 4.4 ms, against 7.0 ms with 1 << 16 and about 9 ms
# converting the whole frame at once
BAND_PIXELS = 1 << 15
# ... and the bands of a strip go to this many threads (OpenCV and numpy release the GIL). OpenCV's own threads do not
# help here: a band is too small for them. At 640x480, same CPU: 3.2 ms of wall time per merge in one thread, 2.05 ms
# in two, for the same CPU time (3.5-4.1 ms). Pipelines that keep the other core busy with the model pass threads=1
# (webcam 640x480: 90-94 fps with one merge thread, 83-90 with two)
MERGE_THREADS = 2  # at most; merge_threads() also keeps to OpenCV's thread count
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()
_Y_FROM_BGR = np.array([[0.072169, 0.715160, 0.212671]], np.float32)  # skimage's sRGB->XYZ row for Y, BGR order
_EPSILON, _KAPPA = 0.008856, 903.3  # CIE L*: linear below EPSILON (as skimage)
_LSTAR_STEPS = 65535  # Y in [0, 1] -> table index; the steepest slope of L*(Y) is 903 per unit, so 0.007 L* at most


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0.04045, ((values + 0.055) / 1.055) ** 2.4, values / 12.92)


def lightness_from_luminance(luminance: np.ndarray) -> np.ndarray:
    """Exact CIE L* of relative luminance Y in [0, 1], float32 (computed in the input's precision)."""
    return np.where(luminance > _EPSILON, 116.0 * np.cbrt(luminance) - 16.0, _KAPPA * luminance).astype(np.float32)


_LINEAR_FROM_8BIT = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)
_LSTAR_FROM_8BIT_GRAY = lightness_from_luminance(_LINEAR_FROM_8BIT)  # float32 math: the same bits as per pixel
_LSTAR_FROM_Y = lightness_from_luminance(np.arange(_LSTAR_STEPS + 1) / _LSTAR_STEPS)


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


def _strip_lightness(image: np.ndarray, tabulated: bool = False) -> np.ndarray:
    """L* of one strip; tabulated: L* from Y by table for 8-bit colour (the merge's full resolution)."""
    gray = image.ndim == 2 or image.shape[2] == 1
    if image.dtype != np.uint8:
        linear = srgb_to_linear(to_float_bgr(image)).astype(np.float32)
        return lightness_from_luminance(cv2.transform(linear, _Y_FROM_BGR))
    if gray:  # R = G = B, so L* is a function of the one 8-bit value
        return cv2.LUT(image.reshape(image.shape[:2]), _LSTAR_FROM_8BIT_GRAY)
    luminance = cv2.transform(cv2.LUT(image, _LINEAR_FROM_8BIT), _Y_FROM_BGR)
    if not tabulated:
        return lightness_from_luminance(luminance)
    # round(Y * steps), saturated to [0, steps], in one OpenCV pass, then one table look-up
    index = cv2.addWeighted(luminance, _LSTAR_STEPS, luminance, 0.0, 0.0, dtype=cv2.CV_16U)
    return np.take(_LSTAR_FROM_Y, index)


def lightness(image: np.ndarray) -> np.ndarray:
    """Gray HxW or BGR HxWx3 (uint8, uint16 or float in [0, 1]) -> CIE L* float32 HxW in [0, 100]."""
    height, width = image.shape[:2]
    if height * width <= STRIP_PIXELS:
        return _strip_lightness(image)
    out = np.empty((height, width), np.float32)
    for y0, y1 in strips(height, width):
        out[y0:y1] = _strip_lightness(image[y0:y1])
    return out


def resize_area(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with INTER_AREA when shrinking (no aliasing) and bilinear when enlarging."""
    if (height, width) == image.shape[:2]:
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def strips(height: int, width: int, pixels: int = STRIP_PIXELS):
    """(y0, y1) row ranges of about `pixels` pixels each."""
    rows = max(1, pixels // max(1, width))
    for y0 in range(0, height, rows):
        yield y0, min(height, y0 + rows)


def upsample_rows(plane: np.ndarray, height: int, width: int, y0: int, y1: int) -> np.ndarray:
    """Rows y0:y1 of `plane` (h x w, or h x w x 2) bilinearly resized to height x width, without building the whole
    resized plane (cv2.resize's pixel-centre mapping; warpAffine interpolates at 1/32 px, so it differs by a hair)."""
    if (y0, y1) == (0, height):
        return cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)
    small_h, small_w = plane.shape[:2]
    sx, sy = small_w / width, small_h / height
    # dst (x, y) -> src (sx * (x + 0.5) - 0.5, sy * (y + y0 + 0.5) - 0.5)
    inverse = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, sy * (y0 + 0.5) - 0.5]], np.float64)
    return cv2.warpAffine(plane, inverse, (width, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def lab_to_bgr(lab: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """float32 Lab HxWx3 -> float32 BGR, not clipped (out-of-gamut colours fall outside [0, 1]); dst may be lab."""
    return cv2.cvtColor(lab.astype(np.float32, copy=False), cv2.COLOR_Lab2BGR, dst=dst)


def merge_ab(source: np.ndarray, ab_small: np.ndarray, out: np.ndarray | None = None,
             out_dtype=np.uint8, threads: int | None = None) -> np.ndarray:
    """Full-resolution colour image from the L* of `source` at full resolution and a*, b* [2, h, w] at any size.

    source: the original image (see lightness), whose L* is computed here strip by strip, never as a whole.
    out: optional HxWx3 uint8/uint16 array to write into; it may be `source` itself (each strip is read first).
    Per strip, ab (both planes in one resize) is bilinearly upsampled; per band of it, the source's L* and that ab
    go through OpenCV's float Lab2BGR, then are scaled, rounded and saturated (which clips out-of-gamut colours)
    into `out` in one pass. The bands of a strip are shared among `threads` threads (default merge_threads(); each
    band's rows are read and written by one thread, so out may still be source). Pipelines that run the model on
    another thread meanwhile (the webcam, videos) pass 1: the model has the other core.
    """
    height, width = source.shape[:2]
    if out is None:
        out = np.empty((height, width, 3), out_dtype)
    peak = float(np.iinfo(out.dtype).max)
    depth = cv2.CV_8U if out.dtype == np.uint8 else cv2.CV_16U
    ab_hwc = np.ascontiguousarray(np.moveaxis(np.asarray(ab_small, np.float32), 0, -1))
    for y0, y1 in strips(height, width):
        ab_rows = upsample_rows(ab_hwc, height, width, y0, y1)

        def merge_bands(bands, y0=y0, ab_rows=ab_rows):
            for b0, b1 in bands:
                lab = cv2.merge([_strip_lightness(source[y0 + b0:y0 + b1], tabulated=True), ab_rows[b0:b1]])
                bgr = lab_to_bgr(lab, dst=lab)
                out[y0 + b0:y0 + b1] = cv2.addWeighted(bgr, peak, bgr, 0.0, 0.0, dtype=depth)

        _run_split(merge_bands, list(strips(y1 - y0, width, BAND_PIXELS)), threads or merge_threads())
    return out


def merge_threads() -> int:
    """MERGE_THREADS, or fewer where OpenCV was told to use fewer (cv2.setNumThreads: Ray actors set their share)."""
    return max(1, min(MERGE_THREADS, cv2.getNumThreads()))


def _run_split(work, items: list, threads: int) -> None:
    """work(items) with items split into `threads` contiguous parts run at once (this thread runs the first)."""
    parts = min(threads, len(items))
    if parts <= 1:
        work(items)
        return
    size = -(-len(items) // parts)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    futures = [_merge_pool().submit(work, chunk) for chunk in chunks[1:]]
    try:
        work(chunks[0])
    finally:
        wait(futures)  # every part done, even when this thread's failed, before the caller uses or frees out
    for future in futures:
        future.result()


def _merge_pool() -> ThreadPoolExecutor:
    """The merge's worker threads, made on first use; again in a forked child, which has the object but no threads."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="merge")
            _pool_pid = os.getpid()
        return _pool
