"""Colorize photos and videos with an ONNX colorizer (no torch needed).

    python -m runtime.colorize old-photo.jpg                        # -> colorized/old-photo_color.jpg
    python -m runtime.colorize scans/ --recursive -o out/ --side-by-side
    python -m runtime.colorize "film/*.mp4" --model colorizer-int8 --provider cpu

The network predicts a*, b* at its own size (shorter side = the model's input_size); they are resized up and merged
with the input's own full-resolution L*, so the output keeps every detail of the input. Colour inputs are treated as
gray and recoloured. Alpha is kept, 16-bit PNG/TIFF stay 16-bit, EXIF orientation is applied, videos keep their fps,
size (odd sizes padded to even, with a note) and frame count (audio is not copied).

Nothing wrong is written silently: a damaged image or a video that ends before its declared frame count is an
error, videos are decoded in a child process (a decoder crash fails that video only), every output is written to a
temp file, read back (videos) and only then renamed into place, an output never replaces an input, and an interrupt
removes what was half-written. Inputs: runtime.inputs; image checks: runtime.images. Exit status: 0 all done, 1 some
input failed or an output could not be written, 2 usage/model/provider error, 130 interrupted (SIGINT), 143
terminated (SIGTERM).
"""

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from runtime import cli, color, contract, fileio, images
from runtime.decoder import VideoDecoder
from runtime.fileio import InputError, shown
from runtime.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, expand_inputs, media_kind, output_path
from runtime.model import ColorizerModel
from runtime.video import VideoFile


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


def _note(message: str) -> None:
    tqdm.write(f"note: {message}", file=sys.stderr)


def colorized_frames(model: ColorizerModel, frames):
    """(frame, colorized frame) for each frame, in order: the image path of model.colorize_bgr in two halves that
    overlap. A worker thread runs the model's half (contract.image_ab: L* at the model's size, the model) on the
    next frame while this thread merges the current one (color.merge_ab) and the caller writes it; ONNX Runtime and
    OpenCV release the GIL, so both cores stay busy (which is why the merge keeps to one thread). The first frame's
    size is checked before the model sees it."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as pool:
        ahead = None
        for frame in frames:
            if ahead is None:
                images.check_shape(*frame.shape[:2])
            running = frame, pool.submit(contract.image_ab, model.predict_ab, frame, model.info)
            if ahead is not None:
                yield ahead[0], color.merge_ab(ahead[0], ahead[1].result(), threads=1)
            ahead = running
        if ahead is not None:
            yield ahead[0], color.merge_ab(ahead[0], ahead[1].result(), threads=1)


def colorize_video(model: ColorizerModel, path: Path, target: Path, side_by_side: bool) -> None:
    """Colorize the video file `path` into the mp4 `target`; frames are decoded in a child process."""
    if path.stat().st_size == 0:
        raise InputError("empty file")
    with VideoDecoder(path) as decoder:
        if not decoder.fps or not np.isfinite(decoder.fps) or decoder.fps <= 0:
            raise InputError("video has no frame rate")
        # sized from the first decoded frame: rotated phone videos arrive upright
        output = VideoFile(target, decoder.fps, note=lambda message: _note(f"{shown(path)}: {message}"))
        try:
            with tqdm(total=max(decoder.declared, 0) or None, unit="frame", desc=path.name, leave=False,
                      disable=None) as progress:
                for frame, result in colorized_frames(model, decoder.frames()):
                    output.write(np.concatenate([frame, result], axis=1) if side_by_side else result)
                    progress.update()
            if output.frames == 0:
                raise InputError("no frames could be decoded")
            if output.frames < decoder.declared:  # damaged or truncated: the decoder gave up early
                raise InputError(f"read {output.frames} of {decoder.declared} declared frames")
            output.finish()  # read back and counted, then renamed into place
        except BaseException:
            output.discard()
            raise


def clean_reason(error: Exception) -> str:
    """One line for an unexpected failure on one input, in words: OpenCV's and ONNX Runtime's messages carry source
    paths, assertion texts and node names that tell a user nothing."""
    if isinstance(error, cv2.error):
        return "OpenCV could not process this file"
    if type(error).__module__.startswith("onnxruntime"):
        return "the model failed on this input (ONNX Runtime error)"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}" + (f": {shown(error.filename)}" if error.filename else "")
    return fileio.first_line(error)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli.quiet_opencv()
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        parser.error(f"output {shown(outdir)} exists and is not a folder")
    tally = {"done": 0, "total": len(args.inputs)}
    with cli.interruptible():
        try:
            return run(args, outdir, tally)
        except KeyboardInterrupt as interrupt:  # SIGINT or SIGTERM
            fileio.remove_live_temps()  # each output removes its own; this catches one the signal hit mid-creation
            print(f"interrupted: {tally['done']} done, {tally['total'] - tally['done']} left", file=sys.stderr,
                  flush=True)
            return cli.interrupt_code(interrupt)


class Batch:
    """One run over its inputs: where each output goes, what may not be replaced, and the tally."""

    def __init__(self, args, outdir: Path, inputs: list, unsure: set[Path]):
        self.args, self.outdir = args, outdir
        self.input_paths = {path.resolve() for path, _ in inputs}
        self.unsure = unsure  # found by the scan, taken for earlier outputs by name alone: never replaced
        self.planned: dict[Path, Path] = {}
        self.cleaned: set[Path] = set()
        self.ok = self.skipped = self.failed = 0

    def target(self, path: Path, subfolder: Path) -> Path | None:
        """The output for `path`, or None when it is to be skipped; InputError when it may not be written."""
        target = output_path(path, subfolder, self.outdir)
        key = target.resolve()
        if media_kind(path) is None:
            raise InputError(f"not an image or video ({', '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))})")
        if not path.is_file():  # a FIFO would block the decoder, a device has no end
            raise InputError("not a regular file")
        if key in self.input_paths:
            raise InputError(f"output {shown(target)} would overwrite an input; choose another -o")
        if key in self.planned:
            raise InputError(f"output {shown(target)} is also the output of {shown(self.planned[key])}; rename one "
                             "of them")
        self.planned[key] = path
        if key.parent not in self.cleaned:  # temp files a killed run left where we are about to write
            self.cleaned.add(key.parent)
            if removed := fileio.remove_stale_partials(key.parent):
                _note(f"removed {len(removed)} temp file(s) left in {shown(target.parent)} by an interrupted run")
        if key in self.unsure and self.args.overwrite:
            raise InputError(f"output {shown(target)} would replace a file this run found among its inputs, and this "
                             "file system keeps no mark that tells our outputs from the user's files; choose "
                             "another -o")
        if target.exists() and not self.args.overwrite:
            tqdm.write(f"skip: {shown(path)}: {shown(target)} exists (use --overwrite to replace it)", file=sys.stderr)
            return None
        return target

    def colorize(self, model: ColorizerModel, path: Path, subfolder: Path) -> None:
        try:
            target = self.target(path, subfolder)
            if target is None:
                self.skipped += 1
                return
            if media_kind(path) == "video":
                colorize_video(model, path, target, self.args.side_by_side)
            else:
                images.colorize_image(model, path, target, self.args.side_by_side, note=_note)
            self.ok += 1
        except InputError as error:
            tqdm.write(f"error: {shown(path)}: {error}", file=sys.stderr)
            self.failed += 1
        except Exception as error:  # decoder, encoder, disk or ONNX Runtime failure on this input: report it, go on
            tqdm.write(f"error: {shown(path)}: {clean_reason(error)}", file=sys.stderr)
            self.failed += 1

    def summary(self, seconds: float) -> str:
        where = f" (outputs in {shown(self.outdir)})" if self.ok else ""
        return f"{self.ok} ok, {self.skipped} skipped, {self.failed} failed in {seconds:.1f} s{where}"


def run(args, outdir: Path, tally: dict) -> int:
    try:
        model = cli.load_model(args)
    except cli.MODEL_ERRORS as error:
        fileio.fail(str(error), cli.EXIT_USAGE)

    start = time.perf_counter()
    notes, unsure = [], set()
    inputs, failures = expand_inputs(args.inputs, outdir.resolve(), args.recursive, notes, unsure)
    tally["total"] = len(inputs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for pattern, reason in failures:
        print(f"error: {shown(pattern)}: {reason}", file=sys.stderr)
    batch = Batch(args, outdir, inputs, unsure)
    batch.failed = len(failures)
    for index, (path, subfolder) in enumerate(tqdm(inputs, unit="file", desc="colorize", disable=None)):
        tally["done"] = index  # inputs finished (ok, skipped or failed) before this one
        batch.colorize(model, path, subfolder)
    tally["done"] = len(inputs)
    print(batch.summary(time.perf_counter() - start))
    return cli.EXIT_FAILED if batch.failed else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
