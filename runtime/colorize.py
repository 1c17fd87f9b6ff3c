"""Colorize photos and videos with an ONNX colorizer (no torch needed).

    python -m runtime.colorize old-photo.jpg                        # -> colorized/old-photo_color.jpg
    python -m runtime.colorize scans/ --recursive -o out/ --side-by-side
    python -m runtime.colorize "film/*.mp4" --model colorizer-int8 --provider cpu

The network predicts a*, b* at its own size (shorter side = the model's input_size); they are resized up and merged
with the input's own full-resolution L*, so the output keeps every detail of the input. Colour inputs are treated as
gray and recoloured. Alpha is kept, 16-bit PNG/TIFF stay 16-bit, EXIF orientation is applied, videos keep their fps,
size (odd sizes padded to even, with a note) and frame count (audio is not copied).

Nothing wrong is written silently: a truncated image or a video that ends before its declared frame count is an
error, every output is written to a temp file, read back (videos) and only then renamed into place, and an interrupt
removes what was half-written. Exit status: 0 all done, 1 some input failed or an output could not be written,
2 usage/model/provider error, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
"""

import argparse
import fnmatch
import glob
import logging
import os
import struct
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from runtime import cli, fileio
from runtime.model import ColorizerModel
from runtime.video import VideoFile

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov"}
SIXTEEN_BIT_EXTENSIONS = {".png", ".tif", ".tiff"}
OUTPUT_SUFFIX = "_color"
JPEG_QUALITY = 95
MAX_SCAN_ENTRIES = 200_000  # a folder scan or glob stops past this many directory entries


class InputError(Exception):
    """One input cannot be colorized; the message names the reason, the caller names the file."""


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Colorize images and videos (jpg, png, bmp, tiff, webp; mp4, avi, mov) with an ONNX colorizer.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    parser.add_argument("-o", "--output", default="colorized", help="output folder (default: ./colorized)")
    cli.add_model_options(parser)
    parser.add_argument("--side-by-side", action="store_true", help="write input and colorized result side by side")
    parser.add_argument("--recursive", action="store_true",
                        help="descend into sub-folders (and ** in globs); symlinked folders are followed, each real "
                             "folder is scanned once")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    return parser


# ---------------------------------------------------------------- finding inputs and naming outputs

def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def is_previous_output(path: Path, outdir: Path) -> bool:
    """Folder scans skip our own earlier outputs, so re-running on a folder does not colorize them again."""
    return path.stem.endswith(OUTPUT_SUFFIX) and path.resolve().is_relative_to(outdir)


class ScanLimit(Exception):
    pass


class Scanner:
    """Lists folders for one input (a folder or a glob pattern). Symlinked folders are followed, but each real folder
    is entered once, so links that point at each other cannot loop; past MAX_SCAN_ENTRIES entries it stops. Our own
    temp files are never inputs; stale ones (their writer is gone) are deleted on the way."""

    def __init__(self):
        self.entries = 0
        self.visited: set[tuple[int, int]] = set()
        self.repeats = 0  # folders reached a second time (through a symlink) and not entered again
        self.unreadable = 0
        self.stale_removed = 0

    def enter(self, folder: Path) -> bool:
        try:
            info = os.stat(folder)
        except OSError:
            return False
        key = (info.st_dev, info.st_ino)
        if key in self.visited:
            self.repeats += 1
            return False
        self.visited.add(key)
        return True

    def listing(self, folder: Path) -> list[os.DirEntry]:
        entries = []
        try:
            with os.scandir(folder) as iterator:
                for entry in iterator:
                    self.entries += 1
                    if self.entries > MAX_SCAN_ENTRIES:
                        raise ScanLimit
                    if fileio.PARTIAL_MARK in entry.name and fileio.is_partial(entry.name):
                        if fileio.is_stale_partial(entry.name):
                            try:
                                os.unlink(entry.path)
                                self.stale_removed += 1
                            except OSError:
                                pass
                        continue
                    entries.append(entry)
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            self.unreadable += 1
        return sorted(entries, key=lambda entry: entry.name)

    def walk(self, top: Path, recursive: bool, hidden: bool = True):
        """-> (folder, its entries) for `top` and, when recursive, every real folder below it (hidden ones too unless
        hidden=False), each once."""
        if not self.enter(top):
            return
        stack = [top]
        while stack:
            folder = stack.pop()
            entries = self.listing(folder)
            yield folder, entries
            if recursive:
                below = [folder / entry.name for entry in entries
                         if (hidden or not entry.name.startswith(".")) and _is_dir(entry)]
                stack += [path for path in reversed(below) if self.enter(path)]

    def folder_files(self, top: Path, recursive: bool) -> list[Path]:
        return sorted(folder / entry.name for folder, entries in self.walk(top, recursive) for entry in entries
                      if _is_file(entry))

    def glob(self, pattern: str, recursive: bool) -> list[Path]:
        """glob.glob's matches (hidden names only for parts that start with a dot; ** only when recursive), found
        with this scanner's loop-safe walk."""
        path = Path(pattern)
        parts = path.parts[1:] if path.anchor else path.parts
        current = [Path(path.anchor) if path.anchor else Path()]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            found = []
            if recursive and part == "**":
                for base in current:
                    for folder, entries in self.walk(base, recursive=True, hidden=False):
                        found.append(folder)
                        if last:
                            found += [folder / entry.name for entry in entries
                                      if _is_file(entry) and not entry.name.startswith(".")]
            elif glob.has_magic(part):
                for base in current:
                    if not base.is_dir():
                        continue
                    for entry in self.listing(base):
                        if (entry.name.startswith(".") and not part.startswith(".")) or \
                                not fnmatch.fnmatch(entry.name, part):
                            continue
                        if last or _is_dir(entry):
                            found.append(base / entry.name)
            else:
                found = [base / part for base in current]
            current = found
        return sorted({p for p in current if p.is_file() and not fileio.is_partial(p)})

    def notes(self, pattern: str) -> list[str]:
        notes = []
        if self.repeats:
            notes.append(f"{pattern}: {self.repeats} symlinked folder(s) lead to folders already scanned (a loop or "
                         "a second link); each real folder was scanned once")
        if self.unreadable:
            notes.append(f"{pattern}: {self.unreadable} folder(s) could not be read (permission denied?), skipped")
        if self.stale_removed:
            notes.append(f"{pattern}: removed {self.stale_removed} temp file(s) left by an interrupted run")
        return notes


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def expand_inputs(patterns, outdir: Path, recursive: bool, notes: list | None = None):
    """-> ([(input path, output path relative to outdir)], [(pattern, error message)]); notes (one line each, for
    the user) are appended to `notes`."""
    found, errors = [], []
    notes = [] if notes is None else notes
    for pattern in patterns:
        path = Path(pattern)
        scanner = Scanner()
        try:
            if path.is_dir():
                files = [p for p in scanner.folder_files(path, recursive)
                         if media_kind(p) and not is_previous_output(p, outdir)]
                if not files:
                    errors.append((pattern, "no images or videos in this folder" + ("" if recursive else
                                                                                     " (use --recursive?)")))
                found += [(p, p.relative_to(path).parent) for p in files]
            elif path.exists():
                if fileio.is_partial(path):
                    errors.append((pattern, "a temp file of an unfinished run, not an input"))
                else:
                    found.append((path, Path()))
            elif glob.has_magic(pattern):
                files = scanner.glob(pattern, recursive)
                if not files:
                    errors.append((pattern, "no files match this pattern"))
                found += [(p, Path()) for p in files]
            else:
                errors.append((pattern, "no such file or folder"))
        except ScanLimit:
            errors.append((pattern, f"scan stopped after {MAX_SCAN_ENTRIES} entries, nothing taken from it "
                                    "(give a narrower folder or pattern)"))
        notes += scanner.notes(pattern)
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


def _jpeg_complete(handle, size: int) -> bool:
    """Walk the JPEG's marker segments to its (first) start of scan, then look for the end-of-image marker after it.
    In the entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so FF D9 there is the EOI.
    (EXIF thumbnails, with EOIs of their own, sit in segments before the scan and are skipped by their lengths.)"""
    handle.seek(2)
    while True:
        byte = handle.read(1)
        if not byte:
            return False
        if byte != b"\xff":
            return True  # not a marker where one belongs: leave the verdict to the decoder
        while byte == b"\xff":  # fill bytes
            byte = handle.read(1)
        if not byte:
            return False
        marker = byte[0]
        if marker == 0xD9:
            return True
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        length = handle.read(2)
        if len(length) < 2:
            return False
        segment = int.from_bytes(length, "big")
        if segment < 2:
            return True
        if handle.tell() + segment - 2 > size:
            return False
        handle.seek(segment - 2, os.SEEK_CUR)
        if marker == 0xDA:  # start of scan: the EOI must follow somewhere after it
            scan = handle.tell()
            handle.seek(max(scan, size - 65536))
            if b"\xff\xd9" in handle.read():  # the usual case: EOI at or near the end
                return True
            handle.seek(scan)
            carry = b""
            while chunk := handle.read(1 << 20):  # data appended after the EOI (motion photos): search from the scan
                if b"\xff\xd9" in carry + chunk:
                    return True
                carry = chunk[-1:]
            return False


def _png_complete(handle, size: int) -> bool:
    """Walk the PNG's chunks (length, type, data, CRC) to IEND."""
    position = 8
    while True:
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            return False
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            return True
        position += 12 + length
        if position > size:
            return False


def image_complete(path: Path) -> bool:
    """False when a JPEG, PNG, WebP or BMP file (told by its first bytes, as OpenCV tells it) ends before its data
    does. OpenCV decodes a truncated JPEG without an error (the missing part comes out as a flat block), so this is
    checked before decoding. Other formats, and files this cannot judge, pass (their decoders fail on truncation)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg_complete(handle, size)
        if head[:8] == b"\x89PNG\r\n\x1a\n":
            return _png_complete(handle, size)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return size >= struct.unpack("<I", head[4:8])[0] + 8
        if head[:2] == b"BM" and len(head) >= 6:
            declared = struct.unpack("<I", head[2:6])[0]
            return declared == 0 or size >= declared
    return True


def read_image(path: Path) -> np.ndarray:
    """-> upright image as stored: gray HxW, BGR HxWx3 or BGRA HxWx4; uint8 or uint16 (CMYK arrives as BGR).
    IMREAD_UNCHANGED is the only mode that keeps alpha and 16 bits, and it ignores EXIF orientation, so the
    orientation is applied here."""
    if path.stat().st_size == 0:
        raise InputError("empty file")
    if not image_complete(path):
        raise InputError("truncated or damaged image")
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
    original = as_bgr(base, out_dtype) if side_by_side else None
    if base.ndim == 3 and base.dtype == out_dtype and not side_by_side:
        out = base  # merge in place, strip by strip: a huge image never needs a second full-size copy
    else:
        out = np.empty((height, width, 3), out_dtype)
    out = model.colorize_bgr(base, out=out)
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

    fileio.write_atomic(target, write)


# ---------------------------------------------------------------- videos

def colorize_video(model: ColorizerModel, path: Path, target: Path, side_by_side: bool) -> None:
    if path.stat().st_size == 0:
        raise InputError("empty file")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError("not a readable video (corrupt or unsupported format)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if not fps or not np.isfinite(fps) or fps <= 0:
            raise InputError("video has no frame rate")
        # sized from the first decoded frame: rotated phone videos arrive upright
        output = VideoFile(target, fps, note=lambda message: tqdm.write(f"note: {path}: {message}", file=sys.stderr))
        try:
            with tqdm(total=max(declared, 0) or None, unit="frame", desc=path.name, leave=False) as progress:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    result = model.colorize_bgr(frame)
                    if side_by_side:
                        result = np.concatenate([frame, result], axis=1)
                    output.write(result)
                    progress.update()
            if output.frames == 0:
                raise InputError("no frames could be decoded")
            if output.frames < declared:  # damaged or truncated: the decoder gave up early
                raise InputError(f"read {output.frames} of {declared} declared frames")
            output.finish()  # read back and counted, then renamed into place
        except BaseException:
            output.discard()
            raise
    finally:
        capture.release()


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli.quiet_opencv()
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        parser.error(f"output {outdir} exists and is not a folder")
    tally = {"done": 0, "total": len(args.inputs)}
    with cli.interruptible():
        try:
            return run(args, outdir, tally)
        except KeyboardInterrupt as interrupt:  # SIGINT or SIGTERM: half-written temp files are already gone
            print(f"interrupted: {tally['done']} done, {tally['total'] - tally['done']} left", file=sys.stderr,
                  flush=True)
            return cli.interrupt_code(interrupt)


def run(args, outdir: Path, tally: dict) -> int:
    try:
        model = cli.load_model(args)
    except cli.MODEL_ERRORS as error:
        fileio.fail(str(error), cli.EXIT_USAGE)

    start = time.perf_counter()
    notes = []
    inputs, failures = expand_inputs(args.inputs, outdir.resolve(), args.recursive, notes)
    tally["total"] = len(inputs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for pattern, reason in failures:
        print(f"error: {pattern}: {reason}", file=sys.stderr)
    input_paths = {path.resolve() for path, _ in inputs}
    planned, cleaned, ok, skipped, failed = {}, set(), 0, 0, len(failures)
    for index, (path, subfolder) in enumerate(tqdm(inputs, unit="file", desc="colorize")):
        tally["done"] = index  # inputs finished (ok, skipped or failed) before this one
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
            if key.parent not in cleaned:  # temp files a killed run left where we are about to write
                cleaned.add(key.parent)
                if removed := fileio.remove_stale_partials(key.parent):
                    tqdm.write(f"note: removed {len(removed)} temp file(s) left in {target.parent} by an "
                               "interrupted run", file=sys.stderr)
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
        except Exception as error:  # decoder, encoder, disk or ONNX Runtime failure on this input: report it, go on
            tqdm.write(f"error: {path}: {fileio.first_line(error)}", file=sys.stderr)
            failed += 1
    tally["done"] = len(inputs)
    seconds = time.perf_counter() - start
    print(f"{ok} ok, {skipped} skipped, {failed} failed in {seconds:.1f} s (outputs in {outdir})")
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
