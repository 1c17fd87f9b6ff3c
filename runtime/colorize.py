"""Colorize photos and videos with an ONNX colorizer (no torch needed).

    python -m runtime.colorize old-photo.jpg                        # -> colorized/old-photo_color.jpg
    python -m runtime.colorize scans/ --recursive -o out/ --side-by-side
    python -m runtime.colorize "film/*.mp4" --model colorizer-int8 --provider cpu

The network predicts a*, b* at its own size (shorter side = the model's input_size); they are resized up and merged
with the input's own full-resolution L*, so the output keeps every detail of the input. Colour inputs are treated as
gray and recoloured. Alpha is kept, 16-bit PNG/TIFF stay 16-bit, EXIF orientation is applied, videos keep their fps,
size and frame count (audio is not copied). Exit status: 0 all done, 1 some input failed, 2 usage/model/provider error.
"""

import argparse
import glob
import logging
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from runtime import color
from runtime.model import PROVIDERS, ColorizerModel, ModelError, ProviderError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov"}
SIXTEEN_BIT_EXTENSIONS = {".png", ".tif", ".tiff"}
OUTPUT_SUFFIX = "_color"
JPEG_QUALITY = 95


class InputError(Exception):
    """One input cannot be colorized; the message names the reason, the caller names the file."""


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Colorize images and videos (jpg, png, bmp, tiff, webp; mp4, avi, mov) with an ONNX colorizer.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    parser.add_argument("-o", "--output", default="colorized", help="output folder (default: ./colorized)")
    parser.add_argument("--model", default=None,
                        help="shipped model name (colorizer, colorizer-int8, seed-colorizer) or .onnx path "
                             "(default: colorizer)")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS,
                        help="auto = CUDA when available, else CPU; cuda/tensorrt fail rather than fall back")
    parser.add_argument("--size", type=int, default=None, help="model input size (shorter side, px); default from "
                                                               "the model's metadata")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--side-by-side", action="store_true", help="write input and colorized result side by side")
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders (and ** in globs)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    return parser


# ---------------------------------------------------------------- finding inputs and naming outputs

def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def is_previous_output(path: Path, outdir: Path) -> bool:
    """Folder scans skip our own earlier outputs, so re-running on a folder does not colorize them again."""
    return path.stem.endswith(OUTPUT_SUFFIX) and path.resolve().is_relative_to(outdir)


def expand_inputs(patterns, outdir: Path, recursive: bool):
    """-> ([(input path, output path relative to outdir)], [(pattern, error message)])."""
    found, errors = [], []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            walker = path.rglob("*") if recursive else path.glob("*")
            files = sorted(p for p in walker
                           if p.is_file() and media_kind(p) and not is_previous_output(p, outdir))
            if not files:
                errors.append((pattern, "no images or videos in this folder" + ("" if recursive else
                                                                                 " (use --recursive?)")))
            found += [(p, p.relative_to(path).parent) for p in files]
        elif path.exists():
            found.append((path, Path()))
        elif glob.has_magic(pattern):
            files = sorted(Path(p) for p in glob.glob(pattern, recursive=recursive) if Path(p).is_file())
            if not files:
                errors.append((pattern, "no files match this pattern"))
            found += [(p, Path()) for p in files]
        else:
            errors.append((pattern, "no such file or folder"))
    unique, seen = [], set()
    for item in found:
        key = item[0].resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique, errors


def output_path(path: Path, subfolder: Path, outdir: Path) -> Path:
    suffix = ".mp4" if media_kind(path) == "video" else path.suffix
    return outdir / subfolder / f"{path.stem}{OUTPUT_SUFFIX}{suffix}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(target: Path, write) -> None:
    """write(temp_path) into a temp file beside target (same extension, so encoders pick the format), then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- images

def exif_orientation(exif: bytes) -> int:
    """The EXIF Orientation tag (1..8) from raw EXIF (a TIFF block), 1 when absent or unreadable."""
    if exif[:6] == b"Exif\x00\x00":
        exif = exif[6:]
    order = {b"II": "<", b"MM": ">"}.get(exif[:2])
    if order is None:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", exif, 4)
        (count,) = struct.unpack_from(order + "H", exif, ifd)
        for i in range(count):
            tag, kind, _ = struct.unpack_from(order + "HHI", exif, ifd + 2 + 12 * i)
            if tag == 0x0112 and kind == 3:  # Orientation, SHORT
                (value,) = struct.unpack_from(order + "H", exif, ifd + 2 + 12 * i + 8)
                return value if 1 <= value <= 8 else 1
    except struct.error:
        pass
    return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF orientation 1..8 upright (as OpenCV's own imread does for 3-channel reads)."""
    if orientation in (5, 6, 7, 8):
        image = image.swapaxes(0, 1)  # transpose; the remaining flips finish each rotation
    flips = {2: (False, True), 3: (True, True), 4: (True, False), 6: (False, True), 7: (True, True),
             8: (True, False)}
    flip_rows, flip_cols = flips.get(orientation, (False, False))
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def read_image(path: Path) -> np.ndarray:
    """-> upright image as stored: gray HxW, BGR HxWx3 or BGRA HxWx4; uint8 or uint16 (CMYK arrives as BGR).
    IMREAD_UNCHANGED is the only mode that keeps alpha and 16 bits, and it ignores EXIF orientation, so the
    orientation is applied here."""
    if path.stat().st_size == 0:
        raise InputError("empty file")
    image, kinds, blocks = cv2.imreadWithMetadata(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError("not a readable image (corrupt, truncated or unsupported format)")
    for kind, block in zip(kinds, blocks):
        if kind == cv2.IMAGE_METADATA_EXIF:
            image = apply_orientation(image, exif_orientation(bytes(np.asarray(block).ravel())))
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 2:  # gray + alpha
        image = np.dstack([image[..., 0], image[..., 0], image[..., 0], image[..., 1]])
    return image


def rescale(image: np.ndarray, dtype) -> np.ndarray:
    """Pixel values to another integer depth (float inputs are taken as [0, 1])."""
    if image.dtype == dtype:
        return image
    top = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1.0
    return np.clip(image.astype(np.float32) * (np.iinfo(dtype).max / top) + 0.5, 0, np.iinfo(dtype).max).astype(dtype)


def as_bgr(image: np.ndarray, dtype) -> np.ndarray:
    """The input's own pixels as 3-channel `dtype` (for the side-by-side view)."""
    return rescale(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image, dtype)


def colorize_image(model: ColorizerModel, path: Path, target: Path, side_by_side: bool) -> None:
    image = read_image(path)
    height, width = image.shape[:2]
    base = image[..., :3] if image.ndim == 3 else image
    alpha = image[..., 3:4] if image.ndim == 3 and image.shape[2] == 4 else None
    out_dtype = np.uint16 if image.dtype != np.uint8 and target.suffix.lower() in SIXTEEN_BIT_EXTENSIONS else np.uint8
    ab = model.predict_ab(model.small_lightness(base))[0]
    original = as_bgr(base, out_dtype) if side_by_side else None
    if base.ndim == 3 and base.dtype == out_dtype and not side_by_side:
        out = base  # merge in place, strip by strip: a huge image never needs a second full-size copy
    else:
        out = np.empty((height, width, 3), out_dtype)
    out = color.merge_lab(base, ab, out=out)
    if alpha is not None:
        alpha = rescale(alpha, out_dtype)
        if out is base:
            out = image  # alpha is still in place beside the colorized channels
        else:
            out = np.concatenate([out, alpha], axis=2)
            original = np.concatenate([original, alpha], axis=2) if original is not None else None
    if original is not None:
        out = np.concatenate([original, out], axis=1)
    params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
              ".webp": [cv2.IMWRITE_WEBP_QUALITY, JPEG_QUALITY]}.get(target.suffix.lower(), [])

    def write(temp):
        if not cv2.imwrite(temp, out, params):
            raise InputError(f"could not write {target}")

    write_atomic(target, write)


# ---------------------------------------------------------------- videos

def colorize_video(model: ColorizerModel, path: Path, target: Path, side_by_side: bool) -> None:
    if path.stat().st_size == 0:
        raise InputError("empty file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError("not a readable video (corrupt or unsupported format)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise InputError("video has no frame rate")

    def write(temp):
        writer, frames = None, 0
        try:
            with tqdm(total=expected or None, unit="frame", desc=path.name, leave=False) as progress:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    result = model.colorize_bgr(frame)
                    if side_by_side:
                        result = np.concatenate([frame, result], axis=1)
                    if writer is None:  # sized from the first decoded frame: rotated phone videos arrive upright
                        writer = cv2.VideoWriter(temp, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                 (result.shape[1], result.shape[0]))
                        if not writer.isOpened():
                            raise InputError(f"cannot open a video writer for {target}")
                    writer.write(result)
                    frames += 1
                    progress.update()
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if frames == 0:
            raise InputError("no frames could be decoded")

    write_atomic(target, write)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # we report unreadable files ourselves
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        parser.error(f"output {outdir} exists and is not a folder")
    if args.size is not None and args.size < 1:
        parser.error("--size must be positive")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")
    try:
        model = ColorizerModel(args.model, provider=args.provider, size=args.size, threads=args.threads)
    except (ModelError, ProviderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    inputs, failures = expand_inputs(args.inputs, outdir.resolve(), args.recursive)
    for pattern, reason in failures:
        print(f"error: {pattern}: {reason}", file=sys.stderr)
    input_paths = {path.resolve() for path, _ in inputs}
    planned, ok, skipped, failed = {}, 0, 0, len(failures)
    for path, subfolder in tqdm(inputs, unit="file", desc="colorize"):
        target = output_path(path, subfolder, outdir)
        key = target.resolve()
        try:
            if media_kind(path) is None:
                raise InputError(f"not an image or video ({', '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))})")
            if key in input_paths:
                raise InputError(f"output {target} would overwrite an input; choose another -o")
            if key in planned:
                raise InputError(f"output {target} is also the output of {planned[key]}; rename one of them")
            planned[key] = path
            if target.exists() and not args.overwrite:
                tqdm.write(f"skip: {path}: {target} exists (use --overwrite to replace it)", file=sys.stderr)
                skipped += 1
                continue
            if media_kind(path) == "video":
                colorize_video(model, path, target, args.side_by_side)
            else:
                colorize_image(model, path, target, args.side_by_side)
            ok += 1
        except InputError as error:
            tqdm.write(f"error: {path}: {error}", file=sys.stderr)
            failed += 1
        except Exception as error:  # decoder, encoder or ONNX Runtime failure on this input: report it, go on
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            tqdm.write(f"error: {path}: {reason}", file=sys.stderr)
            failed += 1
    seconds = time.perf_counter() - start
    print(f"{ok} ok, {skipped} skipped, {failed} failed in {seconds:.1f} s (outputs in {outdir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
