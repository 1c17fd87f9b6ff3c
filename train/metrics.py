"""Colorization metrics on numpy arrays: PSNR and SSIM on 8-bit RGB, Hasler-Suesstrunk colourfulness,
the raw-accuracy AuC of Zhang et al. (share of pixels whose ab error is within t, t = 0..150) and the share of
pixels in a confident wrong colour (false colour)."""

import numpy as np
from skimage.metrics import structural_similarity

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; cap so that means stay finite
AUC_THRESHOLDS = np.arange(0, 151)


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """uint8 RGB images -> PSNR in dB, capped at PSNR_CAP_DB."""
    mse = np.mean((prediction.astype(np.float64) - target.astype(np.float64)) ** 2)
    if mse == 0:
        return PSNR_CAP_DB
    return float(min(PSNR_CAP_DB, 10.0 * np.log10(255.0**2 / mse)))


def ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(structural_similarity(prediction, target, channel_axis=-1, data_range=255))


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003): sigma_rgyb + 0.3 * mu_rgyb on 8-bit RGB; 0 for any gray image."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def ab_accuracy_curve(pred_ab: np.ndarray, true_ab: np.ndarray) -> np.ndarray:
    """[2, H, W] or [H, W, 2] pairs -> share of pixels with Euclidean ab error <= t for each t in AUC_THRESHOLDS."""
    axis = 0 if pred_ab.shape[0] == 2 else -1
    error = np.sqrt(((pred_ab.astype(np.float64) - true_ab) ** 2).sum(axis=axis)).ravel()
    counts = np.bincount(np.minimum(np.ceil(error - 1e-6).astype(np.int64), len(AUC_THRESHOLDS)), minlength=len(AUC_THRESHOLDS) + 1)
    return np.cumsum(counts)[: len(AUC_THRESHOLDS)] / error.size


def auc(curve: np.ndarray) -> float:
    """Normalised area under the accuracy-vs-threshold curve, in [0, 1]."""
    return float(np.trapezoid(curve, AUC_THRESHOLDS) / AUC_THRESHOLDS[-1])


def false_colour(pred_ab: np.ndarray, true_ab: np.ndarray, margin: float = 20.0) -> float:
    """Share of pixels painted with a confident wrong colour: predicted chroma above the truth's by more than margin
    and ab error above margin ([H, W, 2] each). Gray (a = b = 0) scores 0 by construction."""
    pred, true = pred_ab.astype(np.float64), true_ab.astype(np.float64)
    too_vivid = np.hypot(pred[..., 0], pred[..., 1]) > np.hypot(true[..., 0], true[..., 1]) + margin
    wrong = np.hypot(*(pred - true).transpose(2, 0, 1)) > margin
    return float(np.mean(too_vivid & wrong))
