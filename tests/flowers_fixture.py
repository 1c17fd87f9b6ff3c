"""A tiny synthetic Flowers-102 folder in torchvision's layout (jpg/, imagelabels.mat, setid.mat,
seed_split.csv), so the training scripts' tests need neither the real dataset nor much time.
Each class has its own hue and stripe frequency, so it can be learnt a little."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

CLASSES = (1, 2, 3)  # 1-based labels, as in imagelabels.mat


def make_tiny_flowers(root, per_class=(12, 4, 4), size=(72, 88)) -> Path:
    """-> root, holding flowers-102/ with len(CLASSES) * sum(per_class) images."""
    folder = Path(root) / "flowers-102"
    (folder / "jpg").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, labels, ids = [], [], {"train": [], "valid": [], "test": []}
    image_id = 0
    for label in CLASSES:
        for subset, count in zip(("train", "valid", "test"), per_class):
            for _ in range(count):
                image_id += 1
                name = f"image_{image_id:05d}.jpg"
                Image.fromarray(_pattern(label, size, rng)).save(folder / "jpg" / name, quality=90)
                rows.append((name, label, subset))
                labels.append(label)
                ids[subset].append(image_id)
    with open(folder / "seed_split.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "split"])
        writer.writerows(rows)
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(
        folder / "setid.mat",
        {"trnid": np.array([ids["train"]]), "valid": np.array([ids["valid"]]), "tstid": np.array([ids["test"]])},
    )
    return Path(root)


def _pattern(label, size, rng):
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    stripes = 0.5 + 0.5 * np.sin(x * 0.15 * label + rng.uniform(0, 6.28))
    hue = np.array([[230, 40, 60], [40, 200, 70], [60, 80, 230]][(label - 1) % 3], dtype=np.float64)
    image = stripes[..., None] * hue + rng.normal(0, 8, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)
