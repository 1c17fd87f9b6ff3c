"""Flowers-102 (torchvision layout), the general photo set (general/index.csv) and plain image folders,
decoded once into a uint8 array cache.

Decoding ~6.5k JPEGs every epoch costs as much CPU as a small model's forward pass, so images are
resized (shorter side) and centre-cropped to a square once, kept in memory and cached as .npy.
"""

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from runtime import color
from runtime.fileio import write_atomic
from train import degrade

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
PACKAGED_SEED_SPLIT = Path(__file__).with_name("seed_split.csv")
SUBSETS = ("train", "valid", "test")


class DataError(Exception):
    """A data folder or file that cannot be used; the message is shown to the user as one line."""


def flowers_dir(data_root) -> Path:
    """Accept torchvision's root (the folder holding flowers-102/) or flowers-102/ itself."""
    root = Path(data_root).expanduser()
    if (root / "flowers-102").is_dir():
        return root / "flowers-102"
    if root.name == "flowers-102" and root.is_dir():
        return root
    raise DataError(f"no flowers-102/ folder in {root} (pass the folder that holds flowers-102/, or use --download)")


def download_flowers(data_root) -> None:
    """Opt-in: fetch the original dataset with torchvision (needs internet)."""
    import torchvision

    for split in ("train", "val", "test"):
        torchvision.datasets.Flowers102(root=str(data_root), split=split, download=True)


def has_general(data_root) -> bool:
    return data_root is not None and (Path(data_root).expanduser() / "general" / "index.csv").is_file()


def general_dir(data_root) -> Path:
    """Accept the data root (the folder holding general/) or general/ itself."""
    root = Path(data_root).expanduser()
    for folder in (root / "general", root):
        if (folder / "index.csv").is_file() and (folder / "jpg").is_dir():
            return folder
    raise DataError(f"no general/index.csv in {root} (pass the folder that holds general/)")


def general_subset(data_root, subset: str, sources=None, limit: int | None = None):
    """-> (image paths, source of each, label of each) for one subset of the general set's fixed split,
    in index order; sources=None keeps every source."""
    return indexed_subset(general_dir(data_root), subset, sources, limit)


def photos_dir(folder) -> Path:
    """A staged photo folder (../shared/tools/stage_photos.py OUT): index.csv + jpg/, the general set's layout."""
    folder = Path(folder).expanduser()
    if not ((folder / "index.csv").is_file() and (folder / "jpg").is_dir()):
        raise DataError(f"no index.csv and jpg/ in {folder} (pass the folder stage_photos.py wrote)")
    return folder


def indexed_subset(folder: Path, subset: str, sources=None, limit: int | None = None):
    """-> (image paths, source of each, label of each) for one subset of a folder with index.csv (image, source,
    label, split) and jpg/: the general set and staged photos alike."""
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}; choose from {', '.join(SUBSETS)}")
    with open(folder / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == subset and (sources is None or r["source"] in sources)]
    if limit:
        rows = _spread(rows, limit)
    paths = [folder / "jpg" / r["image"] for r in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(paths)} {subset} images in {folder} are missing (first: {missing[0]})")
    return paths, [r["source"] for r in rows], [r["label"] for r in rows]


# The general sources whose labels name a class (people, faces and imagenet-sample have one label each).
LABELLED_SOURCES = ("caltech101", "intel-scenes", "houses")
FLOWER_CLASSES = 102


def general_classes(data_root) -> list[str]:
    """'source/label' of every class of the labelled general sources, in a fixed (sorted) order."""
    with open(general_dir(data_root) / "index.csv", newline="") as f:
        return sorted({f"{r['source']}/{r['label']}" for r in csv.DictReader(f) if r["source"] in LABELLED_SOURCES})


def labelled_subset(data_root, subset: str, split: str = "seed", limit: int | None = None, general: bool = True):
    """The classifier's data: Flowers-102 (classes 0-101) and, when general/ is there and general is true, the
    labelled general sources (classes 102 on, in general_classes order).
    -> (paths, labels, source of each image, class names)."""
    paths, labels = flowers_subset(data_root, subset, split, limit=limit)
    groups = ["flowers"] * len(paths)
    names = [f"flowers/{i + 1:03d}" for i in range(FLOWER_CLASSES)]
    if general and has_general(data_root):
        extra = general_classes(data_root)
        index = {name: FLOWER_CLASSES + i for i, name in enumerate(extra)}
        g_paths, g_sources, g_labels = general_subset(data_root, subset, LABELLED_SOURCES, limit=limit)
        paths += g_paths
        labels += [index[f"{s}/{label}"] for s, label in zip(g_sources, g_labels)]
        groups += g_sources
        names += extra
    return paths, labels, groups, names


def _seed_split_rows(folder: Path):
    path = folder / "seed_split.csv"
    if not path.is_file():
        path = PACKAGED_SEED_SPLIT
    with open(path, newline="") as f:
        return [(row["image"], int(row["label"]) - 1, row["split"]) for row in csv.DictReader(f)]


def _official_split_rows(folder: Path):
    from scipy.io import loadmat

    for name in ("imagelabels.mat", "setid.mat"):
        if not (folder / name).is_file():
            raise DataError(f"missing {folder / name} (needed for --split official)")
    labels = loadmat(folder / "imagelabels.mat")["labels"].ravel()
    setid = loadmat(folder / "setid.mat")
    rows = []
    for key, subset in (("trnid", "train"), ("valid", "valid"), ("tstid", "test")):
        for image_id in setid[key].ravel():
            rows.append((f"image_{int(image_id):05d}.jpg", int(labels[image_id - 1]) - 1, subset))
    return rows


def flowers_subset(data_root, subset: str, split: str = "seed", limit: int | None = None):
    """-> (list of image paths, list of 0-based labels) for one subset of the seed or official split."""
    if subset not in SUBSETS:
        raise DataError(f"unknown subset {subset!r}; choose from {', '.join(SUBSETS)}")
    folder = flowers_dir(data_root)
    if split == "seed":
        rows = _seed_split_rows(folder)
    elif split == "official":
        rows = _official_split_rows(folder)
    else:
        raise DataError(f"unknown split {split!r}; choose seed or official")
    rows = [r for r in rows if r[2] == subset]
    if limit:
        rows = _spread(rows, limit)
    paths = [folder / "jpg" / name for name, _, _ in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(paths)} {subset} images are missing under {folder / 'jpg'} "
            f"(first: {missing[0].name})"
        )
    return paths, [label for _, label, _ in rows]


def _spread(rows, limit):
    """An evenly spaced subset, so a small limit still covers many classes."""
    if limit >= len(rows):
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


def find_images(folder, limit: int | None = None):
    """All images under a folder, recursively, sorted (for training on a user's own photos)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    if limit:
        paths = [paths[int(i * len(paths) / limit)] for i in range(min(limit, len(paths)))]
    return paths


def load_square_rgb(path, size: int) -> np.ndarray:
    """Decode one image (EXIF-rotated, any mode) -> uint8 RGB, shorter side resized to size, centre crop."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FLOWERCOLOR_CACHE", Path.home() / ".cache" / "flower-colorization"))


def load_image_array(paths, size: int, cache_dir=None, desc: str = "decoding") -> np.ndarray:
    """uint8 [N, size, size, 3]; cached under cache_dir keyed by the file list, sizes, mtimes and size."""
    paths = [Path(p) for p in paths]
    key = hashlib.sha256()
    for p in paths:
        stat = p.stat()
        key.update(f"{p.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    key.update(f"size={size}".encode())
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{size}-{len(paths)}-{key.hexdigest()[:16]}.npy"
        if cache_file.is_file():
            return np.load(cache_file, mmap_mode="r")
    array = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", leave=False, mininterval=2.0, disable=None)):
        try:
            array[i] = load_square_rgb(path, size)
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc}") from exc
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file, lambda tmp: np.save(tmp, array))
    return array


class ImageArrayDataset(Dataset):
    """uint8 HWC images in memory -> (uint8 CHW tensor after the transform, label or 0)."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1)
        return self.transform(image), (self.labels[i] if self.labels is not None else 0)


class ConcatImages:
    """Several uint8 [N, S, S, 3] arrays (memory-mapped caches) indexed as one, without copying them together."""

    def __init__(self, arrays):
        self.arrays = list(arrays)
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, i):
        which = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.arrays[which][i - self.offsets[which]]


class DamagedCrops(Dataset):
    """Images -> (uint8 RGB CHW crop after the transform, damaged L* [1,H,W] float32): with probability damage the
    crop's L* as an old print would show it (train.degrade), else NaN, meaning "use the clean L*"."""

    def __init__(self, images, transform, damage: float):
        self.images, self.transform, self.damage = images, transform, damage

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        crop = self.transform(torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1))
        lightness = torch.full((1, *crop.shape[-2:]), float("nan"))
        # torch's generator, which the DataLoader seeds per worker and epoch, so a run is reproducible
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        if rng.random() < self.damage:
            clean = color.lightness(np.ascontiguousarray(crop.permute(1, 2, 0).numpy()[..., ::-1]))
            lightness[0] = torch.from_numpy(degrade.damaged_lightness(clean, rng))
        return crop, lightness


class MixtureSampler(Sampler):
    """An epoch of a mixture of sets laid end to end in one dataset (ConcatImages): `passes` per set (0.5: a random
    half of it, 2: every image twice), shuffled together; under torchrun each process takes its share."""

    def __init__(self, sizes, passes, seed: int = 0):
        self.sizes, self.passes, self.seed, self.epoch = list(sizes), list(passes), seed, 0
        ready = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank, self.world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if ready else (0, 1)
        total = sum(int(round(p * n)) for p, n in zip(self.passes, self.sizes))
        if total < self.world:
            raise DataError("the training mix is empty (every --mix weight is 0 or every set is empty)")
        self.per_rank = total // self.world

    def per_rank_batch(self, batch_size: int) -> int:
        return max(1, batch_size // self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.per_rank

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        parts, offset = [], 0
        for size, passes in zip(self.sizes, self.passes):
            whole, extra = int(passes), int(round((passes - int(passes)) * size))
            parts += [torch.randperm(size, generator=generator) + offset for _ in range(whole)]
            parts.append(torch.randperm(size, generator=generator)[:extra] + offset)
            offset += size
        order = torch.cat(parts)[torch.randperm(sum(len(p) for p in parts), generator=generator)]
        return iter(order[: self.per_rank * self.world][self.rank :: self.world].tolist())
