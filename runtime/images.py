"""Reading images for runtime.colorize, with every check that keeps a wrong picture from being called a success,
and colorizing one image file into another.

Refused (fileio.InputError, the caller names the file): empty, truncated or undecodable files; files whose first
bytes are not JPEG, PNG, BMP, TIFF or WebP (whatever their name, so no other OpenCV decoder is reached); JPEGs
whose data libjpeg reports corrupt (it decodes on and leaves a garbled band, so its warning is a failure here);
float images with NaN or infinite values or values outside 0-1 and 0-255 (0-255 is rescaled, with a note); shapes
whose long side is more than MAX_ASPECT times the short side or longer than MAX_LONG_SIDE (the model works at the
short side's scale, so a 1x20000 strip would need gigabytes). Alpha is kept, 16-bit PNG/TIFF stay 16-bit, EXIF
orientation is applied.
"""

import contextlib
import os
import re
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from runtime import fileio
from runtime.fileio import InputError
from runtime.model import ColorizerModel

SIXTEEN_BIT_EXTENSIONS = {".png", ".tif", ".tiff"}
JPEG_QUALITY = 95
MAX_ASPECT = 20  # long side / short side
MAX_LONG_SIDE = 30_000  # px
FLOAT_SLACK = 1e-3  # float pixels this far outside 0-1 (rounding in the file's writer) are clipped, not refused
# libjpeg's warnings about the data of a JPEG it decodes on anyway (jerror.h); junk after the image's last byte
# (before the end marker, 0xd9) leaves every pixel intact, so that one is only a note
CORRUPT_DATA_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters")
HARMLESS_JPEG_WARNING = re.compile(r"extraneous bytes before marker 0xd9$")


def _note_to_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


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


def image_format(path: Path) -> str | None:
    """The format a file's first bytes announce, among the five we read; None for anything else. OpenCV picks its
    decoder by these bytes whatever the name says, so without this check a file named .png could reach any of its
    decoders (EXR, JPEG 2000, HDR, GIF, ...): each one more native parser a hostile file may crash."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 6:
        return "bmp"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):  # TIFF, BigTIFF
        return "tiff"
    return None


def image_complete(path: Path, kind: str) -> bool:
    """False when a JPEG, PNG, WebP or BMP file (`kind` from image_format) ends before its data does. OpenCV decodes
    a truncated JPEG without an error (the missing part comes out as a flat block), so this is checked before
    decoding. TIFF passes (its decoder fails on truncation)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if kind == "jpeg":
            return _jpeg_complete(handle, size)
        if kind == "png":
            return _png_complete(handle, size)
        if kind == "webp":
            return size >= struct.unpack("<I", head[4:8])[0] + 8
        if kind == "bmp":
            declared = struct.unpack("<I", head[2:6])[0]
            return declared == 0 or size >= declared
    return True


def check_shape(height: int, width: int) -> None:
    """Refuse shapes the model cannot take at a bounded cost (see MAX_ASPECT, MAX_LONG_SIDE)."""
    long, short = max(height, width), max(min(height, width), 1)
    if long > MAX_LONG_SIDE:
        raise InputError(f"{width}x{height} is too large (the long side may be at most {MAX_LONG_SIDE} px)")
    if long > MAX_ASPECT * short:
        raise InputError(f"{width}x{height} is too narrow (the long side may be at most {MAX_ASPECT} times the "
                         "short side)")


@contextlib.contextmanager
def _decoder_messages():
    """Collects what native decoders print straight to the process's stderr while the block runs (libjpeg reports
    corrupt data there and decodes on). -> the list the lines are added to when the block ends."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to take over (a closed descriptor): nothing to collect
        yield lines
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode("utf-8", "replace").splitlines()


def _decode(path: Path, note: Callable[[str], None]) -> np.ndarray:
    with _decoder_messages() as messages:
        image, kinds, blocks = cv2.imreadWithMetadata(str(path), cv2.IMREAD_UNCHANGED)
    for line in (line.strip() for line in messages if line.startswith(CORRUPT_DATA_WARNINGS)):
        if HARMLESS_JPEG_WARNING.search(line):
            note(f"the decoder reports: {line}")
        else:
            raise InputError(f"damaged image data (the decoder reports: {line})")
    if image is None or image.size == 0:
        raise InputError("not a readable image (corrupt, truncated or unsupported format)")
    for kind, block in zip(kinds, blocks):
        if kind == cv2.IMAGE_METADATA_EXIF:
            image = apply_orientation(image, exif_orientation(bytes(np.asarray(block).ravel())))
    return image


def _checked_float(image: np.ndarray, note: Callable[[str], None]) -> np.ndarray:
    """Float pixels as 0-1: NaN / infinity refused, 0-255 rescaled with a note, anything else refused."""
    if not np.isfinite(image).all():
        raise InputError("float image with NaN or infinite pixel values")
    low, high = float(image.min()), float(image.max())
    if low >= -FLOAT_SLACK and high <= 1 + FLOAT_SLACK:
        return np.clip(image, 0.0, 1.0)
    if low >= -FLOAT_SLACK and high <= 255 + FLOAT_SLACK:
        note(f"float pixel values run to {high:g}, not 1: read as 0-255")
        return np.clip(image / np.float32(255), 0.0, 1.0)
    raise InputError(f"float pixel values from {low:g} to {high:g} (neither 0-1 nor 0-255)")


def read_image(path: Path, note: Callable[[str], None] = _note_to_stderr) -> np.ndarray:
    """-> upright image as stored: gray HxW, BGR HxWx3 or BGRA HxWx4; uint8, uint16 or float32 in 0-1 (CMYK arrives
    as BGR). IMREAD_UNCHANGED is the only mode that keeps alpha and 16 bits, and it ignores EXIF orientation, so the
    orientation is applied here. Raises InputError for everything the module docstring lists."""
    if path.stat().st_size == 0:
        raise InputError("empty file")
    kind = image_format(path)
    if kind is None:
        raise InputError("not a readable image (not JPEG, PNG, BMP, TIFF or WebP data)")
    if not image_complete(path, kind):
        raise InputError("truncated or damaged image")
    image = _decode(path, note)
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputError(f"unsupported pixel type {image.dtype}")
    check_shape(*image.shape[:2])
    if image.dtype == np.float32:
        image = _checked_float(image, note)
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


def colorize_image(model: ColorizerModel, path: Path, target: Path, side_by_side: bool,
                   note: Callable[[str], None] = _note_to_stderr) -> None:
    """Colorize the image file `path` into `target`, written atomically (nothing under its name on failure)."""
    image = read_image(path, lambda message: note(f"{fileio.shown(path)}: {message}"))
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
            raise InputError(f"could not write {fileio.shown(target)}")

    fileio.write_atomic(target, write, mark=True)
