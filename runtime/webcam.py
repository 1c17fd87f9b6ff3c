"""Live colorization of a camera, a video file or a stream, shown in an OpenCV window.

    python -m runtime.webcam                                   # camera 0: gray input beside the colorized frame
    python -m runtime.webcam --source clip.mp4 --view color --record clip_color.mp4
    python -m runtime.webcam --source clip.mp4 --no-display    # no window; prints the end-to-end fps at exit

Keys in the window: q or Esc quit, space pause, s snapshot (PNG in the current folder), v cycle the view
(side-by-side, color, gray), r start / stop recording (the view as it is when recording starts, without the overlay).

Capture runs on its own thread. A camera or stream keeps only its newest frame, so a slow model skips frames instead
of falling behind; a file gives every frame in order, so a recording keeps its frame count and fps (in the window a
file plays at its own fps). The model's a*, b* are smoothed over time (runtime.smoothing; --smooth 0 turns it off).
Exit status: 0 done (quit, window closed, end of stream, --max-frames), 1 failure mid-stream, 2 usage, model,
provider, source or display error, 130 interrupted.
"""

import argparse
import collections
import glob
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from runtime.colorize import write_atomic
from runtime.model import PROVIDERS, ColorizerModel, ModelError, ProviderError
from runtime.smoothing import DEFAULT_WEIGHT, AbSmoother

VIEWS = ("side-by-side", "color", "gray")
WINDOW = "colorizer - q quit, space pause, s snapshot, v view, r record"
RECORD_SUFFIXES = (".mp4", ".avi", ".mov")
FALLBACK_FPS = 30.0  # for recordings when the source does not report a frame rate
FILE_BUFFER = 4  # decoded frames a file source may hold ahead of the model
POLL_S = 0.01  # with a window, how long to wait for a frame before serving the window's events again
MAX_WINDOW = (1600, 900)  # a larger view opens scaled down to this (the window stays resizable)
# A throwaway process tries a window first: Qt aborts the whole process when it cannot reach the display.
DISPLAY_PROBE = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
log = logging.getLogger(__name__)


class SourceError(Exception):
    """The camera, file or stream cannot be opened or gives no frames."""


class DisplayError(Exception):
    """No window can be opened here."""


def get_args_parser():
    parser = argparse.ArgumentParser(
        description="Colorize a camera, video file or stream live, with the gray input beside the result.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--camera", type=int, default=None, help="camera index (default: 0)")
    where.add_argument("--source", default=None,
                       help="video file, image sequence (frames_%%04d.png) or stream URL (rtsp://, http://) "
                            "instead of a camera")
    parser.add_argument("--model", default=None,
                        help="shipped model name (colorizer, colorizer-int8, seed-colorizer) or .onnx path "
                             "(default: colorizer)")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS,
                        help="auto = CUDA when available, else CPU; cuda/tensorrt fail rather than fall back")
    parser.add_argument("--size", type=int, default=None,
                        help="model input size (shorter side, px); default from the model's metadata")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--view", default=VIEWS[0], choices=VIEWS, help="what the window shows (v cycles it)")
    parser.add_argument("--record", default=None, metavar="OUT.mp4",
                        help="record the view from the start (r in the window starts and stops recordings)")
    parser.add_argument("--no-display", action="store_true", help="no window (headless; with --record or for fps)")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--smooth", type=float, default=DEFAULT_WEIGHT,
                        help=f"temporal smoothing of the colours: weight of the running average, 0 = off "
                             f"(default: {DEFAULT_WEIGHT})")
    return parser


# ---------------------------------------------------------------- sources and the capture thread

@dataclass
class Source:
    capture: cv2.VideoCapture
    name: str
    live: bool  # a camera or stream: frames come in real time and may be skipped
    fps: float  # 0 when the source does not say
    frame_count: int  # 0 when unknown
    first: np.ndarray  # read while opening, to be sure the source really gives frames


def camera_hint(index: int) -> str:
    if not sys.platform.startswith("linux"):
        return f"tried index {index} with OpenCV's default capture backend"
    devices = sorted(glob.glob("/dev/video*"))
    found = ", ".join(devices) if devices else "none"
    return f"tried /dev/video{index}; video devices on this machine: {found}"


def is_live(source: str) -> bool:
    return "://" in source or Path(source).is_char_device()


def open_source(camera: int | None, source: str | None) -> Source:
    if source is None:
        index = 0 if camera is None else camera
        name, live = f"camera {index}", True
        # V4L2 on Linux: that is where webcams are, and CAP_ANY would also probe depth-camera backends noisily
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        capture = cv2.VideoCapture(index, backend)
        if not capture.isOpened():
            raise SourceError(f"cannot open camera {index} ({camera_hint(index)}); choose another with --camera N "
                              "or use --source for a video file or stream")
    else:
        name, live = source, is_live(source)
        path = Path(source)
        if not live and path.is_dir():
            raise SourceError(f"source {source} is a folder (for an image sequence give a pattern: frames_%04d.png)")
        if not live and not path.exists() and "%" not in source:
            raise SourceError(f"source not found: {source}")
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise SourceError(f"cannot open {source} (not a readable video, image sequence or stream)")
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        busy = " (is another program using it?)" if source is None else ""
        raise SourceError(f"{name} opened but gave no frames{busy}")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else 0.0
    frame_count = 0 if live else max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    return Source(capture, name, live, fps, frame_count, first)


class FrameReader:
    """Reads frames on its own thread, so capture never waits on the model. A live source keeps only the newest
    frame (older ones are dropped and counted, so latency cannot build up); a file hands over every frame in order,
    decoding at most FILE_BUFFER frames ahead."""

    def __init__(self, source: Source):
        self._capture, self.live = source.capture, source.live
        self._frames = collections.deque([source.first])
        self._changed = threading.Condition()
        self._ended = self._stopping = False
        self.dropped = 0
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping:
                ok, frame = self._capture.read()
                with self._changed:
                    if not ok:
                        break
                    if self.live:
                        self.dropped += len(self._frames)
                        self._frames.clear()
                    else:
                        self._changed.wait_for(lambda: len(self._frames) < FILE_BUFFER or self._stopping)
                    self._frames.append(frame)
                    self._changed.notify_all()
        except Exception as error:  # a decoder failure ends the stream; main reports it
            self.error = error
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    @property
    def finished(self) -> bool:
        """The stream has ended and every frame has been read."""
        with self._changed:
            return self._ended and not self._frames

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """The next frame; None when none arrived within timeout or the stream is finished."""
        with self._changed:
            self._changed.wait_for(lambda: self._frames or self._ended, timeout)
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._changed.notify_all()
            return frame

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():  # never release a capture another thread may still be reading
            self._capture.release()


# ---------------------------------------------------------------- frames, views, overlay

def colorize_frame(model: ColorizerModel, smoother: AbSmoother, frame: np.ndarray) -> np.ndarray:
    """BGR frame -> colorized BGR frame: ab from the model at its size, smoothed over time, merged with full-res L*."""
    full, small = model.prepare(frame)
    ab = smoother(small, model.predict_ab(small)[0])
    return model.merge(full, ab)


def compose(view: str, frame: np.ndarray, colored: np.ndarray) -> np.ndarray:
    if view == "color":
        return colored
    gray = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return gray if view == "gray" else np.hstack([gray, colored])


def draw_overlay(image: np.ndarray, text: str) -> np.ndarray:
    """Status text in the top-left corner, white on a dark outline so it reads on any picture."""
    out = image.copy()
    scale = max(0.5, image.shape[0] / 720.0)
    origin = (8, int(8 + 22 * scale))
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return out


class RateMeter:
    """Frames per second as a running average of frame intervals (for the overlay)."""

    def __init__(self):
        self.fps, self._last = 0.0, None

    def tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            rate = 1.0 / (now - self._last)
            self.fps = rate if self.fps == 0.0 else 0.9 * self.fps + 0.1 * rate
        self._last = now


# ---------------------------------------------------------------- recordings and snapshots

def file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class Recorder:
    """Writes a video into a temp file beside the target and renames it into place when stopped, so a file with the
    target's name is always complete. Live sources are recorded in real time at `fps`: frames are repeated or skipped
    to keep the clock (the model may run slower or faster than the camera)."""

    def __init__(self, target: Path, fps: float, view: str, realtime: bool):
        self.target, self.fps, self.view, self.realtime = target, fps, view, realtime
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, self._temp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
        os.close(handle)
        self._writer, self._size, self._clock = None, None, None
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(self._temp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():
                raise OSError(f"cannot open a video writer for {self.target}")
        if (image.shape[1], image.shape[0]) != self._size:  # a stream changed resolution: keep the file valid
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        count = 1
        if self.realtime:
            now = time.monotonic()
            if self._clock is None:
                self._clock = now
            count = int((now - self._clock) * self.fps) + 1 - self.frames
            if count > self.fps:  # a long gap (paused): carry on from here rather than fill it with one frame
                self._clock, count = now - self.frames / self.fps, 1
        for _ in range(count):
            self._writer.write(image)
        self.frames += max(0, count)

    def stop(self) -> bool:
        """Finish the file; False (and nothing written) when no frame was recorded."""
        if self._writer is not None:
            self._writer.release()
        if self.frames == 0:
            Path(self._temp).unlink(missing_ok=True)
            return False
        os.chmod(self._temp, file_mode())
        os.replace(self._temp, self.target)
        return True


def next_recording_path(record: Path | None, taken: int) -> Path:
    """The first recording goes to --record; later ones (r pressed again) beside it as NAME-2.mp4, NAME-3.mp4, ...
    Without --record: webcam-DATE-TIME.mp4 in the current folder. Only --record itself is ever replaced."""
    if record is not None and taken == 0:
        return record
    base = record or Path(time.strftime("webcam-%Y%m%d-%H%M%S.mp4"))

    def numbered(number: int) -> Path:
        return base if number == 1 else base.with_name(f"{base.stem}-{number}{base.suffix}")

    number = 2 if record is not None else 1
    while numbered(number).exists():
        number += 1
    return numbered(number)


def save_snapshot(image: np.ndarray) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    number = 1
    while (target := Path(f"snapshot-{stamp}-{number}.png")).exists():
        number += 1

    def write(temp):
        if not cv2.imwrite(temp, image):
            raise OSError(f"could not write {target}")

    write_atomic(target, write)
    return target


# ---------------------------------------------------------------- the window

def quiet_qt_fonts() -> None:
    """OpenCV's Qt wheel ships no fonts and warns about its missing font folder at every start; point it at the
    system's (the window's text is drawn with OpenCV's own Hershey fonts, so any folder does)."""
    if "QT_QPA_FONTDIR" not in os.environ:
        for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts"):
            if os.path.isdir(folder):
                os.environ["QT_QPA_FONTDIR"] = folder
                break


def check_display() -> None:
    if sys.platform.startswith("linux"):
        display = os.environ.get("DISPLAY")
        if not display and not os.environ.get("WAYLAND_DISPLAY"):
            raise DisplayError("no display available (DISPLAY is not set)")
        try:
            probe = subprocess.run([sys.executable, "-c", DISPLAY_PROBE], capture_output=True, text=True,
                                   timeout=60)
        except subprocess.TimeoutExpired:
            raise DisplayError(f"display {display!r} did not answer") from None
        if probe.returncode != 0:
            if "not implemented" in probe.stderr:
                raise DisplayError("this OpenCV build has no GUI support (opencv-python-headless?)")
            raise DisplayError(f"cannot open a window on display {display!r}")


def open_window() -> None:
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
    except cv2.error:
        raise DisplayError("this OpenCV build has no GUI support (opencv-python-headless?)") from None


def fit_window(image: np.ndarray) -> None:
    height, width = image.shape[:2]
    scale = min(1.0, MAX_WINDOW[0] / width, MAX_WINDOW[1] / height)
    cv2.resizeWindow(WINDOW, int(width * scale), int(height * scale))


def window_closed() -> bool:
    try:
        return cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1
    except cv2.error:  # Qt: the last window is gone
        return True


# ---------------------------------------------------------------- main loop

def run(args, model: ColorizerModel, source: Source) -> int:
    display = not args.no_display
    smoother = AbSmoother(args.smooth)
    record_fps = source.fps or FALLBACK_FPS
    if not source.fps and (args.record or display):
        log.info("%s does not report a frame rate; recordings use %.0f fps", source.name, FALLBACK_FPS)
    if display:
        open_window()
    recordings, recorder = 0, None
    if args.record:
        recorder, recordings = Recorder(Path(args.record), record_fps, args.view, source.live), 1
    reader = FrameReader(source)
    view, paused, last, redraw, window_sized = args.view, False, None, False, False
    meter, processing_s = RateMeter(), 0.0
    # in the window a file plays at its own fps; without one it runs as fast as it can (that is the fps figure)
    interval = 1.0 / source.fps if display and not source.live and source.fps else 0.0
    shown_at = None
    total = min(filter(None, (args.max_frames, source.frame_count)), default=None)
    progress = tqdm(total=total, unit="frame", desc=source.name, leave=False, disable=display)
    processed, started, finished_at, reason, status = 0, None, None, "end of stream", 0

    def stop_recording():
        nonlocal recorder
        if recorder is not None:
            if recorder.stop():
                print(f"recording: {recorder.target} ({recorder.frames} frames, {recorder.fps:g} fps)", flush=True)
            else:
                print(f"recording: nothing recorded, {recorder.target} not written", flush=True)
            recorder = None

    try:
        while True:
            if args.max_frames is not None and processed >= args.max_frames:
                reason = f"--max-frames {args.max_frames}"
                break
            frame = None
            if not paused:
                frame = reader.read(timeout=POLL_S if display else None)
                if frame is None and reader.finished:
                    break
            if frame is not None:
                began = time.perf_counter()
                started = started or began
                colored = colorize_frame(model, smoother, frame)
                finished_at = time.perf_counter()
                processing_s = 0.9 * processing_s + 0.1 * (finished_at - began)
                processed += 1
                meter.tick()
                progress.update()
                last = (frame, colored)
                if recorder is not None:
                    recorder.write(compose(recorder.view, frame, colored))
            if not display:
                continue
            if (frame is not None or redraw) and last is not None:
                small_h, small_w = model.model_size(*last[0].shape[:2])
                flags = "  PAUSED" * paused + "  REC" * (recorder is not None)
                text = (f"{meter.fps:.1f} fps  {model.provider.removesuffix('ExecutionProvider')}  "
                        f"model {small_w}x{small_h}{flags}")
                image = draw_overlay(compose(view, *last), text)
                if not window_sized:
                    fit_window(image)
                    window_sized = True
                cv2.imshow(WINDOW, image)
                redraw = False
            delay_ms = 1
            if interval and frame is not None:  # hold the frame until the next one is due
                now = time.perf_counter()
                # when this frame is due: one interval after the last, or now when running late (no catching up)
                shown_at = now if shown_at is None else max(now, shown_at + interval)
                delay_ms = max(1, int((shown_at + interval - now - processing_s) * 1000))
            elif paused:
                delay_ms = 30
            key = cv2.waitKey(delay_ms) & 0xFF
            if window_closed():
                reason = "window closed"
                break
            if key in (ord("q"), 27):
                reason = "quit"
                break
            if key == ord(" "):
                paused, redraw, shown_at = not paused, True, None
                print("paused" if paused else "resumed", flush=True)
            elif key == ord("v"):
                view, redraw = VIEWS[(VIEWS.index(view) + 1) % len(VIEWS)], True
                print(f"view: {view}", flush=True)
            elif key == ord("s") and last is not None:
                print(f"snapshot: {save_snapshot(compose(view, *last))}", flush=True)
            elif key == ord("r"):
                if recorder is None:
                    target = next_recording_path(Path(args.record) if args.record else None, recordings)
                    recorder, recordings = Recorder(target, record_fps, view, source.live), recordings + 1
                    print(f"recording to {target} ...", flush=True)
                else:
                    stop_recording()
                redraw = True
    except KeyboardInterrupt:
        reason, status = "interrupted", 130
    except Exception as error:  # ONNX Runtime, encoder or disk failure mid-stream: one line, keep what was recorded
        message = str(error).strip().splitlines()
        print(f"error: {message[-1] if message else type(error).__name__}", file=sys.stderr)
        reason, status = "failed", 1
    finally:
        progress.close()
        reader.stop()
        stop_recording()
        if display:
            cv2.destroyAllWindows()
            cv2.waitKey(1)
    if reader.error is not None:
        print(f"error: reading {source.name} failed: {reader.error}", file=sys.stderr)
        status = status or 1
    print_summary(model, source, reader, processed, started, finished_at, reason)
    return status


def print_summary(model, source, reader, processed, started, finished_at, reason) -> None:
    height, width = source.first.shape[:2]
    small_h, small_w = model.model_size(height, width)
    if processed == 0:
        print(f"stopped ({reason}): no frames processed")
        return
    seconds = finished_at - started
    fps = processed / seconds if seconds > 0 else float("inf")
    skipped = f", {reader.dropped} camera frames skipped" if source.live else ""
    print(f"stopped ({reason}): {processed} frames in {seconds:.1f} s, mean {fps:.1f} fps end to end "
          f"({width}x{height} from {source.name}, model {small_w}x{small_h} on {model.provider}{skipped})")


def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # we report unopenable sources ourselves, in one line; FFmpeg's own log (read at its first use) stays quiet
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if args.camera is not None and args.camera < 0:
        parser.error("--camera must be 0 or more")
    for name in ("size", "threads", "max_frames"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 0.0 <= args.smooth < 1.0:
        parser.error("--smooth must be in [0, 1) (0 turns smoothing off)")
    if args.record:
        record = Path(args.record)
        if record.suffix.lower() not in RECORD_SUFFIXES:
            parser.error(f"--record must end in one of {', '.join(RECORD_SUFFIXES)}")
        if record.is_dir():
            parser.error(f"--record {record} is a folder")
        if args.source and Path(args.source).exists() and record.resolve() == Path(args.source).resolve():
            parser.error("--record would overwrite the source")
    try:
        if not args.no_display:
            quiet_qt_fonts()
            check_display()
        source = open_source(args.camera, args.source)
    except DisplayError as error:
        print(f"error: {error}; use --no-display", file=sys.stderr)
        return 2
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        model = ColorizerModel(args.model, provider=args.provider, size=args.size, threads=args.threads)
    except (ModelError, ProviderError) as error:
        source.capture.release()
        print(f"error: {error}", file=sys.stderr)
        return 2
    height, width = source.first.shape[:2]
    log.info("%s: %dx%d%s", source.name, width, height, f" at {source.fps:g} fps" if source.fps else "")
    try:
        return run(args, model, source)
    except DisplayError as error:
        print(f"error: {error}; use --no-display", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
