"""The colorizer evaluation protocol, shared by `train.colorizer evaluate` and `export.verify`.

Every image is resized to size x size (256 by default) and converted to Lab with skimage. The model sees
L resized to its own input size, as the runtime does; its ab is resized back up and merged with the
full-size L. PSNR and SSIM are computed on 8-bit RGB against the ground truth, as is colourfulness;
the gray baseline (a = b = 0) is scored the same way.
"""

import json
from pathlib import Path

import cv2
import numpy as np
from skimage.color import lab2rgb, rgb2lab
from tqdm import tqdm

from train import data as flowers
from train import metrics


def torch_predictor(model, device="cpu"):
    """A PyTorch colorizer (with forward_ab) -> predict_ab(L [N,1,h,w] float32) -> ab [N,2,h,w]."""
    import torch

    model = model.to(device).eval()

    @torch.no_grad()
    def predict_ab(lightness: np.ndarray) -> np.ndarray:
        return model.forward_ab(torch.from_numpy(lightness).to(device)).float().cpu().numpy()

    return predict_ab


def onnx_predictor(path, provider: str = "cpu"):
    """-> (predict_ab, metadata dict) for an ONNX colorizer."""
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), providers=providers)
    metadata = dict(session.get_modelmeta().custom_metadata_map)

    def predict_ab(lightness: np.ndarray) -> np.ndarray:
        return session.run(["ab"], {"L": lightness.astype(np.float32)})[0]

    return predict_ab, metadata


def model_input_shape(height: int, width: int, input_size: int, multiple: int = 32) -> tuple[int, int]:
    """Shorter side -> input_size, aspect kept, both sides rounded to a multiple (as the runtime does)."""
    scale = input_size / min(height, width)
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (height, width))


def to_uint8_rgb(lab: np.ndarray) -> np.ndarray:
    return (np.clip(lab2rgb(lab), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def gray_rgb(lab: np.ndarray) -> np.ndarray:
    """The gray baseline: the image's own L with a = b = 0, as 8-bit RGB."""
    return to_uint8_rgb(np.concatenate([lab[..., :1], np.zeros_like(lab[..., 1:])], axis=-1))


def colorize_rgb(predict_ab, rgb: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth RGB uint8 (already at evaluation size) -> (predicted RGB uint8, predicted ab HxWx2)."""
    lab = rgb2lab(rgb)
    height, width = rgb.shape[:2]
    h, w = model_input_shape(height, width, input_size)
    small_l = cv2.resize(lab[..., 0].astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    ab_small = predict_ab(small_l[None, None])[0].transpose(1, 2, 0)
    ab = cv2.resize(ab_small, (width, height), interpolation=cv2.INTER_LINEAR)
    return to_uint8_rgb(np.concatenate([lab[..., :1], ab], axis=-1)), ab


def evaluate_colorizer(
    predict_ab, image_paths, input_size: int, size: int = 256, progress: bool = True, keep: int = 0
) -> dict:
    """Means over the images of PSNR, SSIM, colourfulness and AuC, for the model and the gray baseline.
    keep > 0 also returns the first `keep` (ground truth, prediction) pairs for a picture."""
    rows, kept = [], []
    keep_at = set(np.linspace(0, len(image_paths) - 1, keep).round().astype(int).tolist()) if keep else set()
    curve_model = np.zeros(len(metrics.AUC_THRESHOLDS))
    curve_gray = np.zeros(len(metrics.AUC_THRESHOLDS))
    for path in tqdm(image_paths, desc="evaluate", unit="img", disable=not progress, leave=False):
        truth = cv2.resize(load_rgb(path), (size, size), interpolation=cv2.INTER_AREA)
        true_lab = rgb2lab(truth)
        prediction, ab = colorize_rgb(predict_ab, truth, input_size)
        gray = gray_rgb(true_lab)
        curve_model += metrics.ab_accuracy_curve(ab, true_lab[..., 1:])
        curve_gray += metrics.ab_accuracy_curve(np.zeros_like(ab), true_lab[..., 1:])
        rows.append(
            (
                metrics.psnr(prediction, truth),
                metrics.ssim(prediction, truth),
                metrics.colorfulness(prediction),
                metrics.colorfulness(truth),
                metrics.psnr(gray, truth),
                metrics.ssim(gray, truth),
            )
        )
        if len(rows) - 1 in keep_at:
            kept.append((truth, prediction))
    psnr, ssim, colour_pred, colour_true, psnr_gray, ssim_gray = np.mean(rows, axis=0)
    n = len(rows)
    result = {
        "images": n,
        "size": size,
        "input_size": input_size,
        "psnr": float(psnr),
        "ssim": float(ssim),
        "colorfulness": float(colour_pred),
        "colorfulness_truth": float(colour_true),
        "colorfulness_ratio": float(colour_pred / colour_true) if colour_true > 0 else 0.0,
        "auc": metrics.auc(curve_model / n),
        "gray": {
            "psnr": float(psnr_gray),
            "ssim": float(ssim_gray),
            "colorfulness": 0.0,
            "colorfulness_ratio": 0.0,
            "auc": metrics.auc(curve_gray / n),
        },
    }
    if keep:
        result["pairs"] = kept
    return result


def load_rgb(path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise flowers.DataError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_grid(path, columns: list[tuple[str, list[np.ndarray]]]) -> None:
    """Columns of same-size RGB images with a title each -> one picture (format from the suffix), rows = images,
    written atomically."""
    tiles = []
    for title, images in columns:
        column = np.concatenate(images, axis=0)
        header = np.full((28, column.shape[1], 3), 255, np.uint8)
        cv2.putText(header, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([header, column], axis=0))
    grid = np.concatenate(tiles, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    tmp.replace(path)


def format_table(result: dict, name: str = "model") -> str:
    g = result["gray"]
    lines = [
        f"{'':10s} {'PSNR':>7s} {'SSIM':>7s} {'colour':>7s} {'ratio':>6s} {'AuC':>6s}",
        f"{name:10s} {result['psnr']:7.2f} {result['ssim']:7.4f} {result['colorfulness']:7.2f} "
        f"{result['colorfulness_ratio']:6.3f} {result['auc']:6.4f}",
        f"{'gray':10s} {g['psnr']:7.2f} {g['ssim']:7.4f} {0.0:7.2f} {0.0:6.3f} {g['auc']:6.4f}",
        f"{'truth':10s} {'':7s} {'':7s} {result['colorfulness_truth']:7.2f} {1.0:6.3f}",
    ]
    return "\n".join(lines)


def json_line(result: dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "pairs"})
