"""A tiny synthetic Flowers-102 folder in torchvision's layout (jpg/, imagelabels.mat, setid.mat,
seed_split.csv) and, beside it, a tiny synthetic general/ set (jpg/ + index.csv with the columns
image,source,label,split,origin), so the training scripts' tests need neither the real data nor much time.
Each class has its own hue and stripe frequency, so it can be learnt a little."""

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

CLASSES = (1, 2, 3)  # 1-based labels, as in imagelabels.mat
# (source, label) of the general set's classes: three labelled sources (classifier classes) and people, which
# has one label for everything and so is a colorizer-only source, as in the real set.
GENERAL_CLASSES = (("caltech101", "airplanes"), ("intel-scenes", "sea"), ("houses", "kitchen"),
                   ("people", "person"))
GENERAL_PER_CLASS = (3, 1, 1)  # train, valid, test images per (source, label)
GENERAL_SIZE = (48, 64)


def make_tiny_flowers(root, per_class=(12, 4, 4), size=(72, 88), general: bool = True) -> Path:
    """-> root, holding flowers-102/ with len(CLASSES) * sum(per_class) images and (general=True) general/ with
    len(GENERAL_CLASSES) * sum(GENERAL_PER_CLASS) images."""
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
    if general:
        make_tiny_general(root)
    return Path(root)


def make_tiny_general(root) -> Path:
    """root/general/ with jpg/ and index.csv (image,source,label,split,origin) -> that folder."""
    folder = Path(root) / "general"
    (folder / "jpg").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for k, (source, label) in enumerate(GENERAL_CLASSES):
        for subset, count in zip(("train", "valid", "test"), GENERAL_PER_CLASS):
            for i in range(count):
                name = f"{source}_{label}_{subset}_{i:02d}.jpg"
                Image.fromarray(_pattern(4 + k, GENERAL_SIZE, rng)).save(folder / "jpg" / name, quality=90)
                rows.append((name, source, label, subset, f"synthetic:{name}"))
    with open(folder / "index.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "source", "label", "split", "origin"])
        writer.writerows(rows)
    return folder


def _pattern(label, size, rng):
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    stripes = 0.5 + 0.5 * np.sin(x * 0.15 * label + rng.uniform(0, 6.28))
    hues = [[230, 40, 60], [40, 200, 70], [60, 80, 230], [220, 200, 40], [40, 190, 200], [200, 60, 200],
            [150, 110, 70]]
    hue = np.array(hues[(label - 1) % len(hues)], dtype=np.float64)
    image = stripes[..., None] * hue + rng.normal(0, 8, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)
