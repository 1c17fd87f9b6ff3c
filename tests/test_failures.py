"""No silent wrong output: every way an input, an output or a run can go wrong, one row each, for
python -m runtime.colorize and python -m runtime.webcam. Each row builds tiny fixtures, runs the command (in this
process, or in a subprocess where the point is what reaches the terminal, a file size limit or a signal) and states
the exit code, the lines that must appear and the files that must (not) be there. Every row also checks that no
traceback is printed and that no temp file (`.NAME.flowercolor-partial-PID-XXXX.EXT`) is left anywhere."""

import ctypes
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import colorize, fileio, inputs, webcam
from runtime.model import ModelError
from tests.conftest import REPO, make_tiny_colorizer

PHOTO = REPO / "examples" / "sunflower.jpg"  # a real photo (colour JPEG)


# ---------------------------------------------------------------- running the commands

@dataclass
class Result:
    code: int
    out: str
    err: str

    def lines(self, stream: str = "err") -> list[str]:
        """Lines as a terminal shows them (progress bars redraw with carriage returns)."""
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", getattr(self, stream))  # and move the cursor
        return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


@dataclass
class Ctx:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    capfd: pytest.CaptureFixture
    model: str
    cache: Path  # fixtures shared by the rows (read only)


def in_process(ctx: Ctx, main, *args, model: bool = True) -> Result:
    ctx.capfd.readouterr()
    argv = [*map(str, args), *(["--model", ctx.model, "--provider", "cpu"] if model else [])]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    captured = ctx.capfd.readouterr()
    return Result(code, captured.out, captured.err)


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def command(ctx: Ctx, module: str, *args) -> list[str]:
    return [sys.executable, "-m", f"runtime.{module}", *map(str, args), "--model", ctx.model, "--provider", "cpu"]


def environment() -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)  # the commands must quiet FFmpeg themselves
    return env


def subprocess_run(ctx: Ctx, module: str, *args, file_size_limit: int | None = None, timeout: float = 120) -> Result:
    result = subprocess.run(command(ctx, module, *args), cwd=ctx.tmp, env=environment(), capture_output=True,
                            text=True, timeout=timeout,
                            preexec_fn=_limit_file_size(file_size_limit) if file_size_limit else None)
    return Result(result.returncode, result.stdout, result.stderr)


def interrupted_run(ctx: Ctx, module: str, *args, watch: Path, signum: int, min_frames: int = 0) -> Result:
    """Start the command, wait until it writes into a temp file of `watch` (a target path) and its progress bar has
    passed `min_frames` frames, then send it `signum`."""
    process = subprocess.Popen(command(ctx, module, *args), cwd=ctx.tmp, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: process.stderr.read(1), "")), daemon=True)
    reader.start()

    def ready() -> bool:
        partials = list(watch.parent.glob(f".{watch.stem}.flowercolor-partial-*"))
        if not partials:
            return False
        done = [int(n) for n in re.findall(r"(\d+)/\d+ \[", "".join(err[-400:]))]
        if not done and min_frames:  # no bar (the webcam draws none off a terminal): 1 kB a frame of these clips
            done = [sum(path.stat().st_size for path in partials if path.exists()) // 1000]
        return max(done, default=0) >= min_frames

    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert process.poll() is None, f"finished before it could be interrupted: {''.join(err)}"
            assert time.monotonic() < deadline, "no temp file appeared"
            time.sleep(0.002)
        process.send_signal(signum)
        out = process.stdout.read()
        process.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        process.kill()
    return Result(process.returncode, out, "".join(err))


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if fileio.PARTIAL_MARK in p.name] if folder.exists() else []


# ---------------------------------------------------------------- fixtures

def picture(height=48, width=64, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin(x / 5.0)], axis=2) * 200 + 20
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def make_video(path: Path, frames: int, size=(160, 120), fps: float = 30.0, noise: float = 12.0) -> Path:
    """Moving, noisy frames (noise makes the file big enough for a damaged stretch to hit many frames)."""
    width, height = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        image = np.stack([x / width, y / height, 0.5 + 0.4 * np.sin((x + 3 * i) / 7.0)], axis=2) * 180 + 30
        writer.write(np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8))
    writer.release()
    return path


def make_odd_video(path: Path, frames: int = 5) -> Path:
    """641x481: OpenCV's FFmpeg writer crops odd sizes, its own MJPEG writer keeps them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (641, 481))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(picture(481, 641, seed=i))
    writer.release()
    assert video_facts(path) == (frames, (641, 481))
    return path


def long_video(ctx: Ctx, path: Path) -> Path:
    """300 frames of 320x240: a run takes long enough to be interrupted while it writes."""
    cached = ctx.cache / "long.mp4"
    if not cached.exists():
        make_video(cached, frames=300, size=(320, 240), noise=4.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, path)
    return path


def video_facts(path: Path) -> tuple[int, tuple[int, int]]:
    """(frames that decode, (width, height))."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count, shape = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, (frame.shape[1], frame.shape[0])
    capture.release()
    return count, shape


def good_image(ctx: Ctx, name: str = "good.png") -> Path:
    path = ctx.tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), picture())
    return path


def truncated(ctx: Ctx, name: str, data: bytes) -> Path:
    path = ctx.tmp / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


def damaged_video(ctx: Ctx) -> Path:
    path = make_video(ctx.tmp / "in" / "damaged.mp4", frames=90)
    data = bytearray(path.read_bytes())
    start, end = int(len(data) * 0.3), int(len(data) * 0.6)
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------- the rows

def truncated_jpeg(ctx):
    bad = truncated(ctx, "photo.jpg", PHOTO.read_bytes())
    return in_process(ctx, colorize.main, bad, good_image(ctx), "-o", ctx.tmp / "out")


def truncated_png(ctx):
    ok, png = cv2.imencode(".png", cv2.imread(str(PHOTO)))
    bad = truncated(ctx, "photo.png", png.tobytes())
    return in_process(ctx, colorize.main, bad, good_image(ctx), "-o", ctx.tmp / "out")


def damaged_video_colorize(ctx):
    return subprocess_run(ctx, "colorize", damaged_video(ctx), good_image(ctx), "-o", "out")


def damaged_video_webcam(ctx):
    return subprocess_run(ctx, "webcam", "--source", damaged_video(ctx), "--no-display")


def check_damaged(ctx, result):
    read, declared = map(int, re.search(r"read (\d+) of (\d+) declared frames", result.err).groups())
    assert 0 < read < declared == 90
    assert "@ 0x" not in result.err  # FFmpeg's decoder log ("[mpeg4 @ 0x...] ac-tex damaged") stays off
    progress = re.compile(r"\S+:\s+\d+%\||\[A$")  # progress-bar redraws: as many as the run takes tenths of a second
    assert len([line for line in result.lines() if not progress.match(line)]) < 10, result.err


def full_disk_colorize(ctx):
    make_video(ctx.tmp / "in" / "clip.mp4", frames=40)
    return subprocess_run(ctx, "colorize", "in/clip.mp4", "-o", "out", file_size_limit=64_000)


def rerun_redoes_it(ctx, result):
    again = subprocess_run(ctx, "colorize", "in/clip.mp4", "-o", "out")
    assert again.code == 0 and "1 ok, 0 skipped, 0 failed" in again.out, again.err
    assert video_facts(ctx.tmp / "out" / "clip_color.mp4") == (40, (160, 120))


def full_disk_webcam(ctx):
    make_video(ctx.tmp / "in" / "clip.mp4", frames=40)
    return subprocess_run(ctx, "webcam", "--source", "in/clip.mp4", "--no-display", "--record", "out/rec.mp4",
                          file_size_limit=64_000)


def interrupt_colorize(signum):
    def run(ctx):
        (ctx.tmp / "in" / "out").mkdir(parents=True)  # -o inside the input folder
        good_image(ctx, "a.png")
        good_image(ctx, "b.png")
        long_video(ctx, ctx.tmp / "in" / "long.mp4")
        return interrupted_run(ctx, "colorize", "in", "-o", "in/out", watch=ctx.tmp / "in" / "out" / "long_color.mp4",
                               signum=signum)
    return run


def check_interrupted(ctx, result):
    assert result.lines()[-1] == "interrupted: 2 done, 1 left"
    assert sorted(p.name for p in (ctx.tmp / "in" / "out").iterdir()) == ["a_color.png", "b_color.png"]


def killed_then_rerun(ctx):
    """SIGKILL leaves a temp file; the next run (its -o inside the scanned folder) removes it and never takes it as
    an input."""
    (ctx.tmp / "in" / "out").mkdir(parents=True)
    long_video(ctx, ctx.tmp / "in" / "long.mp4")
    killed = interrupted_run(ctx, "colorize", "in", "-o", "in/out", watch=ctx.tmp / "in" / "out" / "long_color.mp4",
                             signum=signal.SIGKILL)
    assert killed.code == -signal.SIGKILL and len(partials(ctx.tmp / "in")) == 1
    return in_process(ctx, colorize.main, ctx.tmp / "in", "--recursive", "-o", ctx.tmp / "in" / "out")


def check_rerun_after_kill(ctx, result):
    assert sorted(p.name for p in (ctx.tmp / "in" / "out").iterdir()) == ["long_color.mp4"]


def terminate_webcam(ctx):
    long_video(ctx, ctx.tmp / "in" / "long.mp4")
    return interrupted_run(ctx, "webcam", "--source", "in/long.mp4", "--no-display", "--view", "color",
                           "--record", "out/rec.mp4", watch=ctx.tmp / "out" / "rec.mp4", signum=signal.SIGTERM,
                           min_frames=5)


def check_recording_kept(ctx, result):
    """Stopping a headless recording with a signal is normal use: what was recorded is finished and complete."""
    found = re.search(r"recording: \S+ \((\d+) frames", result.out)
    assert found, (result.out, result.err)
    frames = int(found[1])
    assert 0 < frames < 300
    assert video_facts(ctx.tmp / "out" / "rec.mp4") == (frames, (320, 240))


def symlink_loops(ctx):
    """x and y each hold two links to the other: following links without remembering where one has been never ends
    (glob's ** would walk 2**40 paths)."""
    for here, there in (("x", "y"), ("y", "x")):
        (ctx.tmp / "photos" / here).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ctx.tmp / "photos" / here / f"{here}.png"), picture())
        for link in ("l1", "l2"):
            (ctx.tmp / "photos" / here / link).symlink_to(Path("..") / there, target_is_directory=True)
    return ctx.tmp / "photos"


def loop_folder(ctx):
    symlink_loops(ctx)
    return subprocess_run(ctx, "colorize", "photos", "--recursive", "-o", "out", timeout=60)


def loop_glob(ctx):
    symlink_loops(ctx)
    return subprocess_run(ctx, "colorize", "photos/**/*.png", "--recursive", "-o", "out", timeout=60)


def scan_limit(ctx):
    ctx.monkeypatch.setattr(inputs, "MAX_SCAN_ENTRIES", 50)
    folder = ctx.tmp / "many"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), picture())
    for i in range(60):
        (folder / f"note-{i:02d}.txt").touch()
    return in_process(ctx, colorize.main, folder, "-o", ctx.tmp / "out")


def odd_video_colorize(ctx):
    return in_process(ctx, colorize.main, make_odd_video(ctx.tmp / "in" / "odd.avi"), "-o", ctx.tmp / "out")


def odd_video_webcam(ctx):
    return in_process(ctx, webcam.main, "--source", make_odd_video(ctx.tmp / "in" / "odd.avi"), "--no-display",
                      "--view", "color",
                      "--record", ctx.tmp / "out" / "odd_color.mp4")


def check_padded(ctx, result):
    assert video_facts(ctx.tmp / "out" / "odd_color.mp4") == (5, (642, 482))


def usage(main, *args):
    def run(ctx):
        return in_process(ctx, main, *args, good_image(ctx), model=False) if main is colorize.main else \
            in_process(ctx, main, *args, "--source", make_video(ctx.tmp / "clip.mp4", frames=3), "--no-display",
                       model=False)
    return run


def help_text(main):
    """--help lists the models installed here: two in a stand-in model folder, not the repo's seed-colorizer."""
    def run(ctx):
        folder = ctx.tmp / "models"
        folder.mkdir()
        for name in ("colorizer", "colorizer-int8"):
            (folder / f"{name}.onnx").write_bytes(b"stand-in")
        ctx.monkeypatch.setattr("runtime.model.shipped_model_dirs", lambda: [folder])
        ctx.monkeypatch.setenv("COLUMNS", "400")  # no line wrapping inside names
        return in_process(ctx, main, "--help", model=False)
    return run


def check_help(ctx, result):
    assert "(colorizer, colorizer-int8)" in result.out and "seed-colorizer" not in result.out
    assert "annealed-mean temperature" in result.out


def temperature_is_passed(main):
    def run(ctx):
        seen = {}

        def fake_model(*args, **kwargs):
            seen.update(kwargs)
            raise ModelError("stand-in model")

        ctx.monkeypatch.setattr("runtime.cli.ColorizerModel", fake_model)
        ctx.monkeypatch.setattr(ctx, "seen", seen, raising=False)
        if main is colorize.main:
            return in_process(ctx, main, good_image(ctx), "--temperature", "0.7")
        return in_process(ctx, main, "--source", make_video(ctx.tmp / "clip.mp4", frames=3), "--no-display",
                          "--temperature", "0.7")
    return run


def check_temperature(ctx, result):
    assert ctx.seen.get("temperature") == 0.7


def multi_line_error(ctx):
    def fail(self, lightness):
        raise RuntimeError("the cause, on the first line\nsome context\nthe last line")

    ctx.monkeypatch.setattr("runtime.model.ColorizerModel.predict_ab", fail)
    return in_process(ctx, colorize.main, good_image(ctx), "-o", ctx.tmp / "out")


# ---------------------------------------------------------------- hostile inputs (issue 20)

def _riff(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def crashing_avi(path: Path, width: int = 32, height: int = 24, frames: int = 10) -> Path:
    """A 10-frame uncompressed ('DIB ', 24-bit) AVI, written by hand: OpenCV 5.1's FFmpeg backend aborts the process
    on it (heap corruption, SIGABRT or SIGSEGV) when it decodes the first frame."""
    rng = np.random.default_rng(0)
    chunks = [bytes(rng.integers(0, 255, width * height * 3, np.uint8)) for _ in range(frames)]
    size = len(chunks[0])
    avih = struct.pack("<14I", 40000, 0, 0, 0x10, frames, 0, 1, size, width, height, 0, 0, 0, 0)
    strh = b"vids" + b"DIB " + struct.pack("<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, 25, 0, frames, size, 0xFFFFFFFF, 0,
                                           0, 0, width, height)
    strf = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"\0\0\0\0", 0, 0, 0, 0, 0)
    strl = _riff(b"LIST", b"strl" + _riff(b"strh", strh) + _riff(b"strf", strf))
    hdrl = _riff(b"LIST", b"hdrl" + _riff(b"avih", avih) + strl)
    movi, index = b"", b""
    for chunk in chunks:
        index += b"00db" + struct.pack("<III", 0x10, 4 + len(movi), len(chunk))
        movi += _riff(b"00db", chunk)
    body = b"AVI " + hdrl + _riff(b"LIST", b"movi" + movi) + _riff(b"idx1", index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def opencv_crashes_on(path: Path) -> int:
    """Decode `path` with plain OpenCV in a child; its return code (negative: killed by that signal)."""
    script = "import sys, cv2\ncapture = cv2.VideoCapture(sys.argv[1])\nwhile capture.read()[0]:\n    pass\n"
    return subprocess.run([sys.executable, "-c", script, str(path)], env={**environment(),
                          "OPENCV_FFMPEG_LOGLEVEL": "-8"}, capture_output=True, timeout=60).returncode


def decoder_crash(ctx):
    crashing_avi(ctx.tmp / "in" / "crash.avi")
    return subprocess_run(ctx, "colorize", "in/crash.avi", good_image(ctx), "-o", "out")


def decoder_crash_webcam(ctx):
    crashing_avi(ctx.tmp / "in" / "crash.avi")
    return subprocess_run(ctx, "webcam", "--source", "in/crash.avi", "--no-display", "--model", "colorizer-int8")


def check_crash_is_real(ctx, result):
    assert opencv_crashes_on(ctx.tmp / "in" / "crash.avi") < 0  # without the child process the batch would die


def lookalike_temp_files(ctx):
    """User files whose names look like temp files (of this program's older naming): a scan never deletes them."""
    (ctx.tmp / "in" / "deep").mkdir(parents=True)
    (ctx.tmp / "in" / ".diary.partial-424242-draft.txt").write_text("dear diary")
    (ctx.tmp / "in" / "deep" / ".thesis.partial-2024-final.tex").write_text("\\chapter{}")
    cv2.imwrite(str(ctx.tmp / "in" / "deep" / "a.png"), picture())
    return in_process(ctx, colorize.main, ctx.tmp / "in", "--recursive", "-o", ctx.tmp / "in" / "out")


def check_lookalikes_kept(ctx, result):
    assert (ctx.tmp / "in" / ".diary.partial-424242-draft.txt").read_text() == "dear diary"
    assert (ctx.tmp / "in" / "deep" / ".thesis.partial-2024-final.tex").read_text() == "\\chapter{}"


def user_color_file_in_place(ctx):
    """`. -o . --overwrite` with the user's own x_color.jpg beside x.jpg: it is an input, never replaced."""
    cv2.imwrite(str(ctx.tmp / "x.jpg"), picture())
    cv2.imwrite(str(ctx.tmp / "x_color.jpg"), picture(seed=1))
    ctx.monkeypatch.setattr(ctx, "before", (ctx.tmp / "x_color.jpg").read_bytes(), raising=False)
    return in_process(ctx, colorize.main, ".", "-o", ".", "--overwrite")


def check_user_file_kept(ctx, result):
    assert (ctx.tmp / "x_color.jpg").read_bytes() == ctx.before


def own_output_in_place(ctx):
    """Our own earlier output (marked as ours) is no input, and --overwrite replaces it."""
    cv2.imwrite(str(ctx.tmp / "x.jpg"), picture())
    first = in_process(ctx, colorize.main, ".", "-o", ".")
    assert first.code == 0 and "1 ok" in first.out, first.err
    return in_process(ctx, colorize.main, ".", "-o", ".", "--overwrite")


def float_tiff(values: np.ndarray):
    def run(ctx):
        path = ctx.tmp / "in" / "float.tif"
        path.parent.mkdir(parents=True)
        assert cv2.imwrite(str(path), values)
        return in_process(ctx, colorize.main, path, good_image(ctx), "-o", ctx.tmp / "out")
    return run


def _float_picture(scale: float) -> np.ndarray:
    return picture().astype(np.float32) * np.float32(scale / 255)


def check_not_white(ctx, result):
    output = cv2.imread(str(ctx.tmp / "out" / "float_color.tif"), cv2.IMREAD_UNCHANGED)
    assert output.dtype == np.uint16 and 0.1 < output.mean() / 65535 < 0.9


def zeroed_photo() -> bytes:
    """A real photo with 2 kB zeroed in the middle: libjpeg warns and decodes on (a garbled band)."""
    data = bytearray(PHOTO.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2048] = bytes(2048)
    return bytes(data)


def zeroed_jpeg(ctx):
    path = ctx.tmp / "in" / "zeroed.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(zeroed_photo())
    return in_process(ctx, colorize.main, path, good_image(ctx), "-o", ctx.tmp / "out")


def junk_before_end(ctx):
    """Zero bytes between a JPEG's last data and its end marker (some cameras write them): every pixel is intact."""
    data = PHOTO.read_bytes()
    assert data.endswith(b"\xff\xd9")
    path = ctx.tmp / "in" / "junk.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(data[:-2] + bytes(7) + b"\xff\xd9")
    return in_process(ctx, colorize.main, path, "-o", ctx.tmp / "out")


def _without_root_file_access() -> None:
    """Root reads every folder: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set (prctl
    PR_CAPBSET_DROP) before exec, so the command obeys folder permissions as any user does."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def unreadable_subfolder(ctx):
    """A sub-folder the user cannot read: its photos are missing, so the run has failed."""
    for name in ("photos/a.png", "photos/locked/b.png"):
        (ctx.tmp / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ctx.tmp / name), picture())
    (ctx.tmp / "photos" / "locked").chmod(0)
    try:
        done = subprocess.run(command(ctx, "colorize", "photos", "--recursive", "-o", "out"), cwd=ctx.tmp,
                              env=environment(), capture_output=True, text=True, timeout=120,
                              preexec_fn=_without_root_file_access if os.geteuid() == 0 else None)
    finally:
        (ctx.tmp / "photos" / "locked").chmod(0o755)
    return Result(done.returncode, done.stdout, done.stderr)


def only_our_outputs(ctx):
    first = in_process(ctx, colorize.main, good_image(ctx), "-o", ctx.tmp / "out")
    assert first.code == 0, first.err
    return in_process(ctx, colorize.main, ctx.tmp / "out", "-o", ctx.tmp / "again")


def check_no_outputs_claimed(ctx, result):
    assert "outputs in" not in result.out


def fifo_input(ctx):
    os.mkfifo(ctx.tmp / "clip.mp4")
    return in_process(ctx, colorize.main, ctx.tmp / "clip.mp4", good_image(ctx), "-o", ctx.tmp / "out")


def fifo_model(ctx):
    os.mkfifo(ctx.tmp / "model.onnx")
    return in_process(ctx, colorize.main, good_image(ctx), "--model", ctx.tmp / "model.onnx", "--provider", "cpu",
                      model=False)


def other_format_named_png(ctx):
    """Portable-pixmap data under a .png name: OpenCV would pick its PPM decoder by the content."""
    ok, data = cv2.imencode(".ppm", picture())
    path = ctx.tmp / "in" / "pixmap.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(data.tobytes())
    assert cv2.imread(str(path)) is not None  # OpenCV itself reads it
    return in_process(ctx, colorize.main, path, good_image(ctx), "-o", ctx.tmp / "out")


def newline_in_name(ctx):
    path = ctx.tmp / "in" / "bad\nname.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(300))
    return in_process(ctx, colorize.main, path, "-o", ctx.tmp / "out")


def check_one_line(ctx, result):
    assert not any(line.startswith("name.png") for line in result.err.splitlines())


def narrow_png(height: int, width: int):
    def run(ctx):
        path = ctx.tmp / "in" / "narrow.png"
        path.parent.mkdir(parents=True)
        cv2.imwrite(str(path), np.zeros((height, width), np.uint8))
        assert path.stat().st_size < 3000  # a few bytes of PNG, gigabytes of model work
        return in_process(ctx, colorize.main, path, good_image(ctx), "-o", ctx.tmp / "out")
    return run


def hostile_batch(ctx):
    """100 inputs, 5 of them hostile: the other 95 are colorized."""
    folder = ctx.tmp / "in"
    folder.mkdir()
    for index in range(95):
        cv2.imwrite(str(folder / f"photo-{index:02d}.jpg"), picture(24, 32, seed=index))
    crashing_avi(folder / "crash.avi")
    (folder / "zeroed.jpg").write_bytes(zeroed_photo())
    cv2.imwrite(str(folder / "nan.tif"), np.full((24, 32, 3), np.nan, np.float32))
    cv2.imwrite(str(folder / "narrow.png"), np.zeros((1, 20000), np.uint8))
    (folder / "bad\nname.png").write_bytes(os.urandom(300))
    args = [sys.executable, "-m", "runtime.colorize", "in", "-o", "out", "--model", "colorizer-int8", "--provider",
            "cpu"]
    done = subprocess.run(args, cwd=ctx.tmp, env=environment(), capture_output=True, text=True, timeout=600)
    return Result(done.returncode, done.stdout, done.stderr)


def check_95_done(ctx, result):
    assert len(list((ctx.tmp / "out").iterdir())) == 95
    assert len([line for line in result.lines() if line.startswith("error: ")]) == 5, result.err


@dataclass
class Row:
    id: str
    run: Callable[[Ctx], Result]
    code: int
    err: list[str] = field(default_factory=list)  # regexes each matching a whole stderr line
    out: list[str] = field(default_factory=list)  # substrings of stdout
    present: list[str] = field(default_factory=list)  # paths under tmp that must exist
    absent: list[str] = field(default_factory=list)  # ... and must not
    check: Callable[[Ctx, Result], None] | None = None
    slow: bool = False  # starts heavy work (a batch of 100 through a real model)


ROWS = [
    # 1. truncated images: OpenCV decodes a truncated JPEG with a flat block and no error
    Row("truncated-jpeg", truncated_jpeg, 1, err=[r"error: .*photo\.jpg: truncated or damaged image"],
        out=["1 ok, 0 skipped, 1 failed"], present=["out/good_color.png"], absent=["out/photo_color.jpg"]),
    Row("truncated-png", truncated_png, 1, err=[r"error: .*photo\.png: truncated or damaged image"],
        out=["1 ok, 0 skipped, 1 failed"], present=["out/good_color.png"], absent=["out/photo_color.png"]),
    # 2. a damaged video: the decoder gives up early; its log stays off the terminal
    Row("damaged-video-colorize", damaged_video_colorize, 1,
        err=[r"error: \S*in/damaged\.mp4: read \d+ of 90 declared frames"], out=["1 ok, 0 skipped, 1 failed"],
        present=["out/good_color.png"], absent=["out/damaged_color.mp4"], check=check_damaged),
    Row("damaged-video-webcam", damaged_video_webcam, 1,
        err=[r"error: \S*in/damaged\.mp4: read \d+ of 90 declared frames"], check=check_damaged),
    # 3. a full disk (a file size limit) while a video is written: an error, nothing under the name, rerun redoes it
    Row("full-disk-colorize", full_disk_colorize, 1,
        err=[r"error: in/clip\.mp4: the written video .*\(disk full or file size limit\?\)"],
        out=["0 ok, 0 skipped, 1 failed"], absent=["out/clip_color.mp4"], check=rerun_redoes_it),
    Row("full-disk-webcam-record", full_disk_webcam, 1,
        err=[r"error: recording out/rec\.mp4 failed, not written: .*\(disk full or file size limit\?\)"],
        absent=["out/rec.mp4"]),
    # 4. interrupted runs: temp files removed, one line, 130 / 143; a killed run's temp file is stale next time
    Row("sigint-colorize", interrupt_colorize(signal.SIGINT), 130, absent=["in/out/long_color.mp4"],
        check=check_interrupted),
    Row("sigterm-colorize", interrupt_colorize(signal.SIGTERM), 143, absent=["in/out/long_color.mp4"],
        check=check_interrupted),
    Row("sigkill-then-rerun", killed_then_rerun, 0,
        err=[r"note: .*in: removed 1 temp file\(s\) left by an interrupted run"], out=["1 ok, 0 skipped, 0 failed"],
        check=check_rerun_after_kill),
    Row("sigterm-webcam-record", terminate_webcam, 143, out=["stopped (interrupted)"], check=check_recording_kept),
    # 5. loops and limits
    Row("symlink-loop-folder", loop_folder, 0,
        err=[r"note: photos: 4 symlinked folder\(s\) lead to folders already scanned .*scanned once"],
        out=["2 ok, 0 skipped, 0 failed"], present=["out/x/x_color.png", "out/y/y_color.png"]),
    Row("symlink-loop-glob", loop_glob, 0, err=[r"note: photos/\*\*/\*\.png: \d+ symlinked folder\(s\) .*"],
        out=["2 ok, 0 skipped, 0 failed"], present=["out/x_color.png", "out/y_color.png"]),
    Row("scan-limit", scan_limit, 1, err=[r"error: .*many: scan stopped after 50 entries, nothing taken from it .*"],
        out=["0 ok, 0 skipped, 1 failed"], absent=["out/a_color.png"]),
    Row("size-too-big-colorize", usage(colorize.main, "--size", "100000"), 2, err=[r".*--size.*1 to 2048.*"]),
    Row("size-zero-webcam", usage(webcam.main, "--size", "0"), 2, err=[r".*--size.*1 to 2048.*"]),
    Row("odd-size-video-colorize", odd_video_colorize, 0,
        err=[r"note: \S*odd\.avi: 641x481 is padded to 642x482 \(the mp4 codec needs even sizes\)"],
        check=check_padded),
    Row("odd-size-video-webcam-record", odd_video_webcam, 0,
        err=[r"note: \S*odd_color\.mp4: 641x481 is padded to 642x482 \(the mp4 codec needs even sizes\)"],
        check=check_padded),
    # 6. --help lists the models installed here
    Row("help-colorize", help_text(colorize.main), 0, check=check_help),
    Row("help-webcam", help_text(webcam.main), 0, check=check_help),
    # 7. --temperature: checked, and handed to the model
    Row("temperature-zero", usage(colorize.main, "--temperature", "0"), 2,
        err=[r".*--temperature: temperature must be in \[0.01, 5\].*"]),
    Row("temperature-too-high-webcam", usage(webcam.main, "--temperature", "5.5"), 2,
        err=[r".*--temperature: temperature must be in \[0.01, 5\].*"]),
    Row("temperature-passed-colorize", temperature_is_passed(colorize.main), 2, err=[r"error: stand-in model"],
        check=check_temperature),
    Row("temperature-passed-webcam", temperature_is_passed(webcam.main), 2, err=[r"error: stand-in model"],
        check=check_temperature),
    # 8. an error's first line is the one shown (its cause), not its last
    Row("first-line-of-error", multi_line_error, 1, err=[r"error: .*good\.png: the cause, on the first line"]),
    # 9. hostile inputs (issue 20): a decoder crash is one input's failure
    Row("decoder-crash-colorize", decoder_crash, 1,
        err=[r"error: in/crash\.avi: the video decoder crashed \(signal \d+\)"], out=["1 ok, 0 skipped, 1 failed"],
        present=["out/good_color.png"], absent=["out/crash_color.mp4"], check=check_crash_is_real),
    Row("decoder-crash-webcam", decoder_crash_webcam, 1,
        err=[r"error: in/crash\.avi: the video decoder crashed \(signal \d+\)"], check=check_crash_is_real),
    # 10. nothing that is not ours is deleted or replaced
    Row("lookalike-temp-files-kept", lookalike_temp_files, 0, out=["1 ok, 0 skipped, 0 failed"],
        present=["in/out/deep/a_color.png"], check=check_lookalikes_kept),
    Row("user-color-file-in-place", user_color_file_in_place, 1,
        err=[r"error: x\.jpg: output x_color\.jpg would overwrite an input; choose another -o"],
        out=["1 ok, 0 skipped, 1 failed"], present=["x_color_color.jpg"], check=check_user_file_kept),
    Row("own-output-replaced-in-place", own_output_in_place, 0, out=["1 ok, 0 skipped, 0 failed"],
        absent=["x_color_color.jpg"]),
    # 11. no silent wrong result
    Row("float-tiff-nan", float_tiff(np.full((48, 64, 3), np.nan, np.float32)), 1,
        err=[r"error: .*float\.tif: float image with NaN or infinite pixel values"], out=["1 ok, 0 skipped, 1 failed"],
        absent=["out/float_color.tif"]),
    Row("float-tiff-0-255", float_tiff(_float_picture(255)), 0,
        err=[r"note: .*float\.tif: float pixel values run to [\d.]+, not 1: read as 0-255"],
        out=["2 ok, 0 skipped, 0 failed"], check=check_not_white),
    Row("float-tiff-out-of-range", float_tiff(_float_picture(1000)), 1,
        err=[r"error: .*float\.tif: float pixel values from [\d.]+ to [\d.]+ \(neither 0-1 nor 0-255\)"]),
    Row("jpeg-zeroed-mid-file", zeroed_jpeg, 1,
        err=[r"error: .*zeroed\.jpg: damaged image data \(the decoder reports: Corrupt JPEG data.*\)"],
        out=["1 ok, 0 skipped, 1 failed"], absent=["out/zeroed_color.jpg"]),
    Row("jpeg-junk-before-end-marker", junk_before_end, 0,
        err=[r"note: .*junk\.jpg: the decoder reports: Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9"],
        out=["1 ok, 0 skipped, 0 failed"], present=["out/junk_color.jpg"]),
    Row("unreadable-subfolder", unreadable_subfolder, 1,
        err=[r"error: photos/locked: folder cannot be read \(Permission denied\); its files were not colorized"],
        out=["1 ok, 0 skipped, 1 failed"], present=["out/a_color.png"], absent=["out/locked"]),
    Row("only-our-outputs", only_our_outputs, 1,
        err=[r"error: .*out: nothing to colorize in this folder: it only holds 1 colorized output\(s\) of ours"],
        out=["0 ok, 0 skipped, 1 failed"], check=check_no_outputs_claimed),
    Row("fifo-input", fifo_input, 1, err=[r"error: .*clip\.mp4: not a regular file"],
        out=["1 ok, 0 skipped, 1 failed"]),
    Row("fifo-model", fifo_model, 2, err=[r"error: model .*model\.onnx is a FIFO \(named pipe\), not a regular file"]),
    Row("other-format-named-png", other_format_named_png, 1,
        err=[r"error: .*pixmap\.png: not a readable image \(not JPEG, PNG, BMP, TIFF or WebP data\)"],
        out=["1 ok, 0 skipped, 1 failed"], absent=["out/pixmap_color.png"]),
    Row("newline-in-file-name", newline_in_name, 1,
        err=[r"error: .*bad\\nname\.png: not a readable image \(not JPEG, PNG, BMP, TIFF or WebP data\)"],
        check=check_one_line),
    # 12. bounded work
    Row("threads-too-many", usage(colorize.main, "--threads", "100000"), 2,
        err=[r".*--threads: threads must be 1 to \d+ \(4 x \d+ cores\), got 100000"]),
    Row("image-1x20000", narrow_png(1, 20000), 1,
        err=[r"error: .*narrow\.png: 20000x1 is too narrow \(the long side may be at most 20 times the short side\)"],
        out=["1 ok, 0 skipped, 1 failed"]),
    Row("image-2x4000", narrow_png(4000, 2), 1, err=[r"error: .*narrow\.png: 2x4000 is too narrow .*"]),
    # 13. a batch with hostile files among its photos finishes the rest
    Row("hostile-batch-of-100", hostile_batch, 1, out=["95 ok, 0 skipped, 5 failed"], check=check_95_done,
        slow=True),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared")
    return make_tiny_colorizer(folder / "tiny.onnx", input_size=32), folder


@pytest.mark.parametrize("row", [pytest.param(row, marks=[pytest.mark.slow] if row.slow else []) for row in ROWS],
                         ids=[row.id for row in ROWS])
def test_failure(row, tmp_path, monkeypatch, capfd, shared):
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(tmp_path, monkeypatch, capfd, *shared)
    result = row.run(ctx)
    assert result.code == row.code, (result.out, result.err)
    lines = result.lines()
    for pattern in row.err:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, result.err)
    for text in row.out:
        assert text in result.out, (text, result.out)
    for name in row.present:
        assert (tmp_path / name).is_file(), name
    for name in row.absent:
        assert not (tmp_path / name).exists(), name
    assert "Traceback" not in result.err
    assert not partials(tmp_path)  # no temp file left behind
    if row.check is not None:
        row.check(ctx, result)


# ---------------------------------------------------------------- runtime.fileio, the one home of the above

def test_atomic_writes_and_error_lines(tmp_path, capsys):
    target = tmp_path / "sub" / "data.bin"
    assert fileio.write_bytes_atomic(target, b"one") == target and target.read_bytes() == b"one"

    def broken(temp):
        Path(temp).write_bytes(b"half")
        assert fileio.is_partial(temp) and Path(temp).name.startswith(f".data.flowercolor-partial-{os.getpid()}-")
        raise OSError("No space left on device\nsecond line")

    with pytest.raises(OSError) as error:
        fileio.write_atomic(target, broken)
    assert fileio.first_line(error.value) == "No space left on device"
    assert fileio.first_line(ValueError("\n  \n")) == "ValueError"

    def refuse(temp):
        raise ValueError("not what was meant to be written")

    with pytest.raises(ValueError):
        fileio.write_atomic(target, lambda temp: Path(temp).write_bytes(b"two"), verify=refuse)
    assert target.read_bytes() == b"one" and os.listdir(target.parent) == ["data.bin"]  # old content, no temp

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = target.parent / fileio.partial_name("data.bin", dead, "abcdef")
    mine = target.parent / fileio.partial_name("data.bin", os.getpid(), "abcdef")
    forged = target.parent / stale.name.replace("abcdef", "abcdee")  # our pattern, but its check does not match
    others = [".data.partial-notes.txt", ".diary.partial-424242-draft.txt", f".x.partial-{dead}-abcd1234.bin"]
    for path in (stale, mine, forged, *(target.parent / name for name in others)):
        path.write_bytes(b"")
    assert fileio.remove_stale_partials(target.parent) == [stale]
    assert sorted(os.listdir(target.parent)) == sorted(["data.bin", mine.name, forged.name, *others])

    colorized = fileio.write_bytes_atomic(tmp_path / "plain.bin", b"x")
    assert fileio.is_ours(colorized) is False and fileio.is_ours(target) is False
    fileio.write_atomic(tmp_path / "ours.bin", lambda temp: Path(temp).write_bytes(b"x"), mark=True)
    assert fileio.is_ours(tmp_path / "ours.bin") is True  # tmp_path's file system keeps extended attributes

    with pytest.raises(SystemExit) as exit_:
        fileio.fail("something broke", 2)
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: something broke\n"


def test_a_decoder_that_stops_answering_is_ended(tmp_path):
    """A decoder that hangs (here a real child, stopped with SIGSTOP while it waits to hand over a 720p frame) is
    killed after the timeout and reported, so it cannot hang the batch."""
    from runtime.decoder import DecoderCrash, VideoDecoder

    path = make_video(tmp_path / "clip.mp4", frames=4, size=(1280, 720))  # 2.7 MB a frame: more than the pipe holds
    with VideoDecoder(path, timeout=1.0) as decoder:
        frames = decoder.frames()
        next(frames)
        os.kill(decoder._process.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(DecoderCrash, match=r"^the video decoder stopped answering \(nothing for 1 s\)$"):
            list(frames)
        assert time.monotonic() - started < 10
        assert decoder._process.wait(timeout=10) == -signal.SIGKILL


def test_unexpected_errors_are_told_in_words():
    """Real OpenCV and ONNX Runtime errors: their messages (source paths, assertions, node names) stay off the line."""
    import onnxruntime as ort

    with pytest.raises(cv2.error) as opencv_error:
        cv2.cvtColor(np.zeros((4, 4, 5), np.uint8), cv2.COLOR_BGR2GRAY)
    assert colorize.clean_reason(opencv_error.value) == "OpenCV could not process this file"
    session = ort.InferenceSession(str(REPO / "checkpoints" / "colorizer-int8.onnx"),
                                   providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as runtime_error:
        session.run(None, {session.get_inputs()[0].name: np.zeros((1, 1, 3, 3), np.float64)})
    assert colorize.clean_reason(runtime_error.value) == "the model failed on this input (ONNX Runtime error)"
    assert colorize.clean_reason(OSError(28, "No space left on device", "out/a.png")) == \
        "No space left on device: out/a.png"
