"""Temporal smoothing of the model's a*, b* for live video.

Each frame is colorized on its own, so sensor noise in L makes the colours shimmer from frame to frame. An exponential
moving average of ab at the model's size (cheap: about 160x213 values) calms that. Two things keep it from smearing:
a hard scene cut (mean |dL*| of a small thumbnail over CUT_THRESHOLD) restarts the average, and pixels whose L*
changed a lot since the last frame (something moved there) take the new ab rather than the old.
"""

import cv2
import numpy as np

DEFAULT_WEIGHT = 0.6  # share of the previous average kept each frame; 0 turns smoothing off
THUMBNAIL = (32, 32)
# Mean |dL*| between 32x32 thumbnails: consecutive random Flowers-102 photos (all similar close-ups) score 14 or more
# (1st percentile; median 23), the same scene under heavy sensor noise (sigma 8 of 255) or panned by 2.5% of its width
# at most 10. A missed cut is no disaster: the motion gate below already takes new colours where L* changed.
CUT_THRESHOLD = 12.0
# Per-pixel |dL*| at model size (after a 3x3 box blur): at most MOTION_LOW is noise and gets the full weight, from
# MOTION_HIGH on the content moved and the new ab is taken as it is; in between the weight falls linearly.
MOTION_LOW, MOTION_HIGH = 3.0, 12.0


def thumbnail(lightness: np.ndarray) -> np.ndarray:
    """L* (h, w) -> a THUMBNAIL-sized float32 summary, for telling scene cuts from noise and motion."""
    return cv2.resize(np.asarray(lightness, np.float32), THUMBNAIL, interpolation=cv2.INTER_AREA)


def scene_change(before: np.ndarray, after: np.ndarray) -> float:
    """Mean |dL*| between two thumbnails; over CUT_THRESHOLD is a scene cut."""
    return float(np.abs(after - before).mean())


class AbSmoother:
    """Call once per frame with that frame's L* and raw ab at model size; returns the smoothed ab."""

    def __init__(self, weight: float = DEFAULT_WEIGHT, cut_threshold: float = CUT_THRESHOLD):
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
        self.weight = weight
        self.cut_threshold = cut_threshold
        self.cuts = 0  # scene cuts seen so far
        self.reset()

    def reset(self) -> None:
        self._ab = self._lightness = self._thumbnail = None

    def __call__(self, lightness: np.ndarray, ab: np.ndarray) -> np.ndarray:
        """lightness: L* at model size, (h, w) or [1, 1, h, w]; ab: the model's [2, h, w] for it."""
        if self.weight == 0.0:
            return ab
        lightness = np.asarray(lightness, np.float32).reshape(ab.shape[-2:])
        summary = thumbnail(lightness)
        if self._ab is None or self._ab.shape != ab.shape:
            state = ab.astype(np.float32, copy=True)
        elif scene_change(self._thumbnail, summary) > self.cut_threshold:
            self.cuts += 1
            state = ab.astype(np.float32, copy=True)
        else:
            change = cv2.blur(np.abs(lightness - self._lightness), (3, 3))
            keep = self.weight * np.clip((MOTION_HIGH - change) / (MOTION_HIGH - MOTION_LOW), 0.0, 1.0)
            state = ab + keep * (self._ab - ab)  # keep * previous + (1 - keep) * new
        self._ab, self._lightness, self._thumbnail = state, lightness.copy(), summary
        return state
