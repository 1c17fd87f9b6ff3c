"""The old-print damage model: what a scanned, aged, cracked print does to the lightness a colorizer sees.

Training shows the network damaged L* while the target stays the clean photo's a*, b* (so it learns to keep
damage neutral instead of painting it), and `train.colorizer evaluate --damage` feeds damaged L* (a fixed seed per
file) while colour is judged with the clean L*. Damage works on an 8-bit gray "scan" of the photo (what a scanner
gives), at any size: lengths are relative to the shorter side. Each step below happens with its own probability:

* fading: contrast squeezed to 45-90 % around a mid tone (blacks lifted, whites dulled), a mild gamma change;
* uneven exposure: a smooth low-frequency light/dark field (vignetting, stains of developer, sun fading);
* blur: Gaussian, sigma up to 1 % of the shorter side (soft lenses, scanning through glass);
* grain: Gaussian noise of 2-12 gray levels, partly coarse (film grain, paper texture);
* scratches: 1-6 long thin lines, mostly bright (emulsion scraped to the paper), at any angle;
* cracks: 1-4 branching random-walk polylines, bright or dark, 1-2 px (a cracked emulsion network);
* spots: dust and mould, up to 40 small bright or dark dots, and a few soft larger stains;
* halftone: a printed photo's dot screen (newspapers, books), rarely;
* JPEG: quality 30-85 at the end (how scans travel).
"""

import hashlib

import cv2
import numpy as np

from runtime import color

def gray_from_lightness(lightness: np.ndarray) -> np.ndarray:
    """CIE L* in [0, 100] -> the 8-bit sRGB gray whose L* it is (lightness() of the result gives it back to within
    8-bit quantisation)."""
    y = np.where(lightness > 8.0, ((lightness + 16.0) / 116.0) ** 3, lightness / 903.3)
    encoded = np.where(y > 0.0031308, 1.055 * np.power(np.clip(y, 0, 1), 1 / 2.4) - 0.055, 12.92 * y)
    return np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)


def _fade(gray, rng, side):
    contrast, middle = rng.uniform(0.45, 0.9), rng.uniform(110, 160)
    faded = middle + contrast * (gray - 128.0)
    return 255.0 * (np.clip(faded, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)


def _uneven(gray, rng, side):
    h, w = gray.shape
    field = cv2.resize(rng.normal(0, 1, (3, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return gray * (1.0 + rng.uniform(0.05, 0.25) * field)


def _blur(gray, rng, side):
    return cv2.GaussianBlur(gray, (0, 0), rng.uniform(0.3, max(0.4, 0.01 * side)))


def _grain(gray, rng, side):
    noise = rng.normal(0, rng.uniform(2, 12), gray.shape).astype(np.float32)
    coarse = cv2.resize(rng.normal(0, 1, (max(2, gray.shape[0] // 3), max(2, gray.shape[1] // 3))).astype(np.float32),
                        gray.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return gray + noise + rng.uniform(0, 6) * coarse


def _lines(gray, rng, points_list, bright_share: float, thickness_max: int):
    for points in points_list:
        tone = rng.uniform(200, 255) if rng.random() < bright_share else rng.uniform(0, 60)
        thickness = int(rng.integers(1, thickness_max + 1))
        cv2.polylines(gray, [np.round(points).astype(np.int32)], False, float(tone), thickness, cv2.LINE_AA)
    return gray


def _scratches(gray, rng, side):
    h, w = gray.shape
    lines = []
    for _ in range(int(rng.integers(1, 7))):
        start = rng.uniform((0, 0), (w, h))
        angle, length = rng.uniform(0, np.pi), rng.uniform(0.3, 1.2) * side
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        lines.append(np.stack([start, end]))
    return _lines(gray, rng, lines, bright_share=0.8, thickness_max=1)


def _crack_path(rng, start, side, steps: int):
    direction, points = rng.uniform(0, 2 * np.pi), [start]
    for _ in range(steps):
        direction += rng.normal(0, 0.5)
        points.append(points[-1] + rng.uniform(0.02, 0.06) * side * np.array([np.cos(direction), np.sin(direction)]))
    return np.array(points)


def _cracks(gray, rng, side):
    h, w = gray.shape
    paths = []
    for _ in range(int(rng.integers(1, 5))):
        trunk = _crack_path(rng, rng.uniform((0, 0), (w, h)), side, int(rng.integers(8, 30)))
        paths.append(trunk)
        for _ in range(int(rng.integers(0, 4))):  # branches leave the trunk at random points
            paths.append(_crack_path(rng, trunk[rng.integers(len(trunk))], side, int(rng.integers(3, 10))))
    return _lines(gray, rng, paths, bright_share=0.6, thickness_max=2)


def _spots(gray, rng, side):
    h, w = gray.shape
    for _ in range(int(rng.integers(1, 41))):
        centre = tuple(int(v) for v in rng.uniform((0, 0), (w, h)))
        tone = float(rng.uniform(210, 255) if rng.random() < 0.6 else rng.uniform(0, 50))
        cv2.circle(gray, centre, int(rng.integers(1, max(2, side // 90) + 1)), tone, -1, cv2.LINE_AA)
    stains = np.zeros_like(gray)
    for _ in range(int(rng.integers(0, 3))):
        centre = tuple(int(v) for v in rng.uniform((0, 0), (w, h)))
        axes = tuple(int(v) for v in rng.uniform(0.03, 0.15, 2) * side)
        cv2.ellipse(stains, centre, axes, rng.uniform(0, 180), 0, 360, rng.uniform(-60, 40), -1)
    return gray + cv2.GaussianBlur(stains, (0, 0), max(1.0, 0.02 * side))


def _halftone(gray, rng, side):
    period = rng.uniform(3, 5)
    y, x = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]].astype(np.float32)
    screen = 0.5 + 0.25 * (np.cos(2 * np.pi * x / period) + np.cos(2 * np.pi * y / period))
    return np.where(gray / 255.0 > screen, 255.0, 0.0) * 0.3 + gray * 0.7


def _jpeg(gray, rng, side):
    ok, encoded = cv2.imencode(".jpg", np.clip(gray, 0, 255).astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 86))])
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32)


_STEPS = (  # (probability, step) in the order a print ages, then is scanned and saved
    (0.8, _fade), (0.5, _uneven), (0.6, _blur), (0.8, _grain), (0.5, _scratches), (0.45, _cracks), (0.6, _spots),
    (0.04, _halftone), (0.7, _jpeg),
)


def damage_gray(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 gray HxW -> the same photo as a damaged old print, uint8 HxW (each step with its probability)."""
    side = min(gray.shape)
    work = gray.astype(np.float32)
    for probability, step in _STEPS:
        if rng.random() < probability:
            work = step(np.ascontiguousarray(work, np.float32), rng, side)
    return np.clip(np.rint(work), 0, 255).astype(np.uint8)


def damaged_lightness(lightness: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CIE L* HxW float32 -> the L* of the same photo printed, aged and scanned (see damage_gray)."""
    return color.lightness(damage_gray(gray_from_lightness(lightness), rng))


def file_rng(name: str, seed: int = 0) -> np.random.Generator:
    """A generator fixed by the file's name, so that every run damages a test photo the same way."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
