"""runtime.smoothing through the real webcam pipeline (tiny ONNX model, real frames): noise is calmed, scene cuts
are followed at once, moving things take their new colours."""

import cv2
import numpy as np
import pytest

from runtime.model import ColorizerModel
from runtime import color, smoothing
from runtime.smoothing import CUT_THRESHOLD, DEFAULT_WEIGHT, AbSmoother, scene_change, thumbnail
from tests.conftest import make_tiny_colorizer

HEIGHT, WIDTH = 120, 160


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # The model runs at the frame's own size, so sensor noise reaches the colours undamped by downscaling (as it
    # does in a deep model, which turns small changes of L into visible colour flicker).
    path = make_tiny_colorizer(tmp_path_factory.mktemp("model") / "tiny.onnx")
    return ColorizerModel(path, provider="cpu", size=HEIGHT)


def scene(kind: str) -> np.ndarray:
    """Mid-tone scenes, so the tiny model's colours stay inside the sRGB gamut (clipping would hide them)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    if kind == "a":
        return np.stack([x / WIDTH, y / HEIGHT, 0.5 + 0.4 * np.sin(x / 10.0) * np.cos(y / 8.0)], axis=2) * 90 + 85
    # another shot: other gradients, and a shadow over its left third
    image = np.stack([1 - y / HEIGHT, 0.5 + 0.4 * np.cos(x / 6.0), 1 - x / WIDTH], axis=2) * 90 + 85
    image[:, :WIDTH // 3] *= 0.5
    return image


def noisy(image: np.ndarray, count: int, sigma: float = 6.0, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def ab_of(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)[..., 1:]


def mean_step(outputs: list) -> float:
    """Mean |delta ab| between consecutive output frames."""
    return float(np.mean([np.abs(ab_of(a) - ab_of(b)).mean() for a, b in zip(outputs, outputs[1:])]))


def test_static_noise_is_calmed_at_least_twice(model):
    frames = noisy(scene("a"), 24)
    raw = [model.colorize_bgr(f, ab_filter=AbSmoother(0.0)) for f in frames]
    smoother = AbSmoother()
    smoothed = [model.colorize_bgr(f, ab_filter=smoother) for f in frames]
    # skip the first frames, while the average settles
    off, on = mean_step(raw[6:]), mean_step(smoothed[6:])
    print(f"static scene, sensor noise sigma 6: mean |dab| per frame {off:.3f} off, {on:.3f} at "
          f"--smooth {DEFAULT_WEIGHT} ({off / on:.2f}x calmer)")
    assert off > 0.5  # the noise really does reach the colours
    assert off / on >= 2.0
    assert smoother.cuts == 0  # noise is not a scene cut


def test_scene_cut_is_followed_within_two_frames(model, monkeypatch):
    frames = noisy(scene("a"), 10, seed=1) + noisy(scene("b"), 4, seed=2)
    raw = [model.colorize_bgr(f, ab_filter=AbSmoother(0.0)) for f in frames]
    jump = np.abs(ab_of(raw[9]) - ab_of(raw[10])).mean()
    assert jump > 5.0  # the cut changes the colours a lot

    def lag_after_cut(smoother):
        out = [model.colorize_bgr(f, ab_filter=smoother) for f in frames]
        return [float(np.abs(ab_of(out[i]) - ab_of(raw[i])).mean()) for i in (10, 11)]

    smoother = AbSmoother()
    lag = lag_after_cut(smoother)
    print(f"scene cut: colours change by {jump:.2f}; smoothed output is off by {lag[0]:.2f}, {lag[1]:.2f} "
          "in the two frames after the cut")
    assert smoother.cuts == 1
    assert max(lag) < 0.1 * jump
    # without cut detection the average would still be dragging the old scene's colours along
    # the motion gate alone (cut detection off) already takes most of the new colours...
    assert max(lag_after_cut(AbSmoother(cut_threshold=np.inf))) < 0.1 * jump
    # ...while a plain moving average (no cut reset, no gate) would still drag the old scene's colours along
    monkeypatch.setattr(smoothing, "MOTION_LOW", 1e6)
    monkeypatch.setattr(smoothing, "MOTION_HIGH", 2e6)
    assert lag_after_cut(AbSmoother(cut_threshold=np.inf))[1] > 0.3 * jump


def test_moving_object_takes_its_new_colours(model):
    """A bright square jumps across a still background: where it arrives (and where it left) the output follows the
    new frame at once instead of ghosting; the still background stays smoothed."""
    background = scene("a")
    frames = []
    for step in range(8):
        image = background.copy()
        x0 = 10 + 16 * step
        image[40:80, x0:x0 + 24] = 240
        frames.append(noisy(image, 1, seed=step)[0])
    raw = [model.colorize_bgr(f, ab_filter=AbSmoother(0.0)) for f in frames]
    smoother = AbSmoother()
    smoothed = [model.colorize_bgr(f, ab_filter=smoother) for f in frames]
    moved = np.zeros((HEIGHT, WIDTH), bool)
    moved[44:76, 10 + 16 * 7 + 4:10 + 16 * 7 + 20] = True  # inside the square's last position, away from its edges
    ghost = np.abs(ab_of(smoothed[7]) - ab_of(raw[7]))[moved].mean()
    change = np.abs(ab_of(raw[6]) - ab_of(raw[7]))[moved].mean()
    assert change > 5.0
    assert ghost < 0.1 * change
    assert smoother.cuts == 0


def test_off_and_invalid_weights():
    ab = np.random.default_rng(0).normal(0, 20, (2, 8, 8)).astype(np.float32)
    lightness = np.full((8, 8), 50, np.float32)
    off = AbSmoother(0.0)
    assert off(lightness, ab) is ab and off(lightness, ab + 1) is not ab
    for weight in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            AbSmoother(weight)


def test_new_frame_size_restarts_the_average():
    smoother = AbSmoother(0.9)
    first = np.full((2, 8, 8), 30, np.float32)
    smoother(np.full((8, 8), 50, np.float32), first)
    other = np.full((2, 8, 12), -30, np.float32)
    assert np.array_equal(smoother(np.full((1, 1, 8, 12), 50, np.float32), other), other)
    assert smoother.cuts == 0


def test_cut_threshold_on_real_photos(flowers_root):
    """Cuts between random Flowers-102 photos (similar close-ups: a hard case) are seen; heavy sensor noise and a
    quick pan of the same photo are not cuts."""
    paths = sorted((flowers_root / "flowers-102" / "jpg").glob("*.jpg"))
    rng = np.random.default_rng(0)
    pick = [paths[i] for i in rng.choice(len(paths), size=120, replace=False)]
    lightness = [color.lightness(cv2.resize(cv2.imread(str(p)), (160, 120), interpolation=cv2.INTER_AREA))
                 for p in pick]
    cuts = [scene_change(thumbnail(a), thumbnail(b)) for a, b in zip(lightness, lightness[1:])]
    print(f"scene change between different photos: 1st percentile {np.percentile(cuts, 1):.1f}, "
          f"median {np.median(cuts):.1f} (threshold {CUT_THRESHOLD})")
    assert np.mean(np.array(cuts) > CUT_THRESHOLD) >= 0.97
    same = []
    for path in pick[:20]:
        image = cv2.resize(cv2.imread(str(path)), (160, 120), interpolation=cv2.INTER_AREA).astype(np.float32)
        first, second = (color.lightness(frame) for frame in noisy(image, 2, sigma=8.0))
        panned = color.lightness(np.roll(image, 4, axis=1).astype(np.uint8))  # 2.5% of the width in one frame
        same += [scene_change(thumbnail(first), thumbnail(second)),
                 scene_change(thumbnail(color.lightness(image.astype(np.uint8))), thumbnail(panned))]
    assert max(same) < CUT_THRESHOLD
