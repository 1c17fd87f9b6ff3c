"""The colorizer evaluation protocol, shared by `train.colorizer evaluate`, `tune`, training's per-epoch check and
`export.verify`.

Every figure is measured on the runtime's own image path (runtime.contract.colorize: the photo's pixels resized
to the model's size, L*, the model, ab resized back up and merged with the full-resolution L*), so it is what a
user of `runtime.colorize` gets. Flowers-102 photos are first resized to size x size (256 by default); the general
set is scored at its own 144 px. PSNR, SSIM and colourfulness are computed on 8-bit RGB against the ground truth,
AuC on the ab of the 8-bit output; the gray baseline (the photo's own L*, a = b = 0) goes through the same merge.
"""

import json
from pathlib import Path

import cv2
import numpy as np
from skimage.color import rgb2lab
from tqdm import tqdm

from runtime import color, contract
from runtime.fileio import write_bytes_atomic
from train import data as datasets
from train import degrade, metrics

SETS = ("flowers", "general", "photos")
FALSE_COLOUR_MARGIN = 20.0  # ab units: chroma above the truth's by more than this, and ab error above it
FLOWERS_SIZE = 256  # Flowers-102 photos are scored at 256 x 256, the seed project's protocol


def torch_predictor(model, device="cpu"):
    """A PyTorch colorizer (with forward_ab) -> predict_ab(L [N,1,h,w] float32) -> ab [N,2,h,w]."""
    import torch

    model = model.to(device).eval()

    @torch.no_grad()
    def predict_ab(lightness: np.ndarray) -> np.ndarray:
        return model.forward_ab(torch.from_numpy(lightness).to(device)).float().cpu().numpy()

    return predict_ab


def load_bgr(path, size: int | None = None) -> np.ndarray:
    """uint8 BGR as cv2 reads it (what the runtime reads), resized to size x size when size is given."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise datasets.DataError(f"cannot read image {path}")
    if size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    return bgr


def available_sets(data_root, photos=None) -> list[str]:
    """The sets the given folders hold: flowers (always, under the data root), general, photos (--photos)."""
    return ["flowers"] + (["general"] if datasets.has_general(data_root) else []) + (["photos"] if photos else [])


def subset_images(data_root, which: str, subset: str, split: str = "seed", limit: int | None = None, photos=None):
    """-> (paths, group of each path, size to score at) for one data set's subset (photos: the staged folder)."""
    if which == "flowers":
        paths, _ = datasets.flowers_subset(data_root, subset, split, limit=limit)
        return paths, ["flowers"] * len(paths), FLOWERS_SIZE
    if which == "photos":
        paths, sources, _ = datasets.indexed_subset(datasets.photos_dir(photos), subset, limit=limit)
    else:
        paths, sources, _ = datasets.general_subset(data_root, subset, limit=limit)
    return paths, sources, None


def _scores(truth_bgr: np.ndarray, output_bgr: np.ndarray, true_ab: np.ndarray):
    truth, output = truth_bgr[..., ::-1], output_bgr[..., ::-1]
    ab = rgb2lab(output)[..., 1:]
    return (metrics.psnr(output, truth), metrics.ssim(output, truth), metrics.colorfulness(output),
            metrics.ab_accuracy_curve(ab, true_ab), metrics.false_colour(ab, true_ab, FALSE_COLOUR_MARGIN))


def _summary(rows: list, curves: list) -> dict:
    psnr, ssim, colour, colour_truth, psnr_gray, ssim_gray, false_colour = np.mean(rows, axis=0)
    model_curve, gray_curve = np.mean([c[0] for c in curves], axis=0), np.mean([c[1] for c in curves], axis=0)
    return {
        "images": len(rows),
        "psnr": float(psnr),
        "ssim": float(ssim),
        "colorfulness": float(colour),
        "colorfulness_truth": float(colour_truth),
        "colorfulness_ratio": float(colour / colour_truth) if colour_truth > 0 else 0.0,
        "auc": metrics.auc(model_curve),
        "false_colour": float(false_colour),
        "gray": {"psnr": float(psnr_gray), "ssim": float(ssim_gray), "colorfulness": 0.0, "colorfulness_ratio": 0.0,
                 "auc": metrics.auc(gray_curve), "false_colour": 0.0},
    }


def damaged_print(truth: np.ndarray, name: str) -> np.ndarray:
    """The photo as the old-print protocol shows it to a model: uint8 gray, damaged by train.degrade with a
    generator fixed by the file's name."""
    return degrade.damage_gray(degrade.gray_from_lightness(color.lightness(truth)), degrade.file_rng(name))


def colorize_damaged(predict_ab, truth: np.ndarray, info: contract.ModelInfo, name: str) -> np.ndarray:
    """The old-print protocol: the model sees the photo as a damaged print (damaged_print), and its ab is merged
    with the clean photo's L* (the image path's two halves), so only the colour is judged."""
    return color.merge_ab(truth, contract.image_ab(predict_ab, damaged_print(truth, name), info))


def _score_one(predict_ab, info, path, size, damage: bool):
    """-> (score row, (model curve, gray curve), truth, output) for one photo."""
    truth = load_bgr(path, size)
    true_ab = rgb2lab(truth[..., ::-1])[..., 1:]
    if damage:
        output = colorize_damaged(predict_ab, truth, info, Path(path).name)
    else:
        output = contract.colorize(predict_ab, truth, info)
    psnr, ssim, colour, curve, false_colour = _scores(truth, output, true_ab)
    psnr_gray, ssim_gray, _, curve_gray, _ = _scores(truth, contract.gray_baseline(truth), true_ab)
    row = (psnr, ssim, colour, metrics.colorfulness(truth[..., ::-1]), psnr_gray, ssim_gray, false_colour)
    return row, (curve, curve_gray), truth, output


def evaluate_colorizer(predict_ab, info: contract.ModelInfo, image_paths, groups=None, size: int | None = None,
                       progress: bool = True, keep: int = 0, damage: bool = False) -> dict:
    """Means over the images of PSNR, SSIM, colourfulness, AuC and false colour for the model and the gray baseline,
    through contract.colorize (damage: the old-print protocol, colorize_damaged). groups (one name per image) adds
    a per-group breakdown; keep > 0 also returns that many evenly spaced (name, truth, output) rows for a picture."""
    groups = groups or ["all"] * len(image_paths)
    by_group, kept = {}, []
    keep_at = set(np.linspace(0, len(image_paths) - 1, keep).round().astype(int).tolist()) if keep else set()
    for i, path in enumerate(tqdm(image_paths, desc="evaluate", unit="img", disable=None if progress else True,
                                           leave=False)):
        row, curves, truth, output = _score_one(predict_ab, info, path, size, damage)
        group = by_group.setdefault(groups[i], ([], []))
        group[0].append(row)
        group[1].append(curves)
        if i in keep_at:
            kept.append((Path(path).name, truth, output))
    everything = [sum((parts[k] for parts in by_group.values()), []) for k in (0, 1)]
    result = _summary(*everything)
    result.update(size=size, input_size=info.input_size, damaged=damage)
    if len(by_group) > 1:
        result["per_source"] = {name: _summary(*parts) for name, parts in sorted(by_group.items())}
    if keep:
        result["pairs"] = kept
    return result


def write_grid(path, columns: list[tuple[str, list[np.ndarray]]]) -> None:
    """Columns of BGR images with a title each -> one picture (format from the suffix), rows = images, written
    atomically. Images in a row are brought to the first column's height."""
    tiles = []
    height = [image.shape[0] for image in columns[0][1]]
    for title, images in columns:
        resized = [cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h), interpolation=cv2.INTER_AREA)
                   if im.shape[0] != h else im for im, h in zip(images, height)]
        width = max(im.shape[1] for im in resized)
        padded = [cv2.copyMakeBorder(im, 0, 0, 0, width - im.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
                  for im in resized]
        column = np.concatenate(padded, axis=0)
        header = np.full((28, column.shape[1], 3), 255, np.uint8)
        cv2.putText(header, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([header, column], axis=0))
    grid = np.concatenate(tiles, axis=1)
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", grid)
    if not ok:
        raise datasets.DataError(f"cannot encode {path}")
    write_bytes_atomic(Path(path), encoded.tobytes())


def format_table(result: dict, name: str = "model") -> str:
    """One table: the model, the gray baseline, the truth's colourfulness; then one row per source, if any."""
    g = result["gray"]
    lines = [
        f"{'':16s} {'PSNR':>7s} {'SSIM':>7s} {'colour':>7s} {'ratio':>6s} {'AuC':>6s} {'false %':>7s}",
        f"{name[:16]:16s} {result['psnr']:7.2f} {result['ssim']:7.4f} {result['colorfulness']:7.2f} "
        f"{result['colorfulness_ratio']:6.3f} {result['auc']:6.4f} {100 * result['false_colour']:7.2f}",
        f"{'gray':16s} {g['psnr']:7.2f} {g['ssim']:7.4f} {0.0:7.2f} {0.0:6.3f} {g['auc']:6.4f} {0.0:7.2f}",
        f"{'truth':16s} {'':7s} {'':7s} {result['colorfulness_truth']:7.2f} {1.0:6.3f}",
    ]
    if result.get("per_source"):
        lines.append(f"{'per source':16s} {'PSNR':>7s} {'gray':>7s} {'ratio':>7s} {'AuC':>6s} {'gray':>6s} "
                     f"{'false %':>7s} images")
        for source, r in result["per_source"].items():
            lines.append(f"{source[:16]:16s} {r['psnr']:7.2f} {r['gray']['psnr']:7.2f} {r['colorfulness_ratio']:7.3f} "
                         f"{r['auc']:6.4f} {r['gray']['auc']:6.4f} {100 * r['false_colour']:7.2f} {r['images']}")
    return "\n".join(lines)


def json_line(result: dict) -> str:
    return json.dumps(result, default=lambda value: None)
