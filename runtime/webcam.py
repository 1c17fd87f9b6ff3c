"""Live colorization of a camera, a video file or a stream, shown in an OpenCV window.

    python -m runtime.webcam                                   # camera 0: gray input beside the colorized frame
    python -m runtime.webcam --source clip.mp4 --view color --record clip_color.mp4
    python -m runtime.webcam --source clip.mp4 --no-display    # no window; prints the end-to-end fps at exit

Keys in the window: q or Esc quit, space pause, s snapshot (PNG in the current folder), v cycle the view
(side-by-side, color, gray), r start / stop recording (the view as it is when recording starts, without the overlay).

The default model is `auto` (runtime.model.DEFAULT_MODEL: colorizer-int8 on the CPU, colorizer on CUDA). Capture
runs on its own thread (runtime.video) and the model on another (ModelStage), one frame ahead of the merge. A camera
or stream keeps only its newest frame, so a slow model skips frames instead of falling behind; a file gives every
frame in order, so a recording keeps its frame count and fps (in the window a file plays at its own fps). The
model's a*, b* are smoothed over time (runtime.smoothing; --smooth 0 turns it off). Recordings are read back and
counted before they get their name. A progress bar only on a terminal without a window; one summary line at the end.
Exit status: 0 done (quit, window closed, end of stream, --max-frames), 1 failure mid-stream, a file source that
ended early or a recording that could not be written, 2 usage, model, provider, source or display error, 130
interrupted (SIGINT), 143 terminated (SIGTERM).
"""

import argparse
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from runtime import cli, color, contract, decoder, fileio
from runtime.model import ColorizerModel
from runtime.smoothing import DEFAULT_WEIGHT, AbSmoother
from runtime.video import FrameReader, Recorder, Source, SourceError, open_source

VIEWS = ("side-by-side", "color", "gray")
WINDOW = "colorizer - q quit, space pause, s snapshot, v view, r record"
RECORD_SUFFIXES = (".mp4", ".avi", ".mov")
FALLBACK_FPS = 30.0  # for recordings when the source does not report a frame rate
POLL_S = 0.01  # with a window, how long to wait for a frame before serving the window's events again
MAX_WINDOW = (1600, 900)  # a larger view opens scaled down to this (the window stays resizable)
# A throwaway process tries a window first: Qt aborts the whole process when it cannot reach the display.
DISPLAY_PROBE = "import cv2; cv2.namedWindow('probe'); cv2.waitKey(1); cv2.destroyAllWindows()"
log = logging.getLogger(__name__)


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
    cli.add_model_options(parser)
    parser.add_argument("--view", default=VIEWS[0], choices=VIEWS, help="what the window shows (v cycles it)")
    parser.add_argument("--record", default=None, metavar="OUT.mp4",
                        help="record the view from the start (r in the window starts and stops recordings)")
    parser.add_argument("--no-display", action="store_true", help="no window (headless; with --record or for fps)")
    parser.add_argument("--max-frames", type=cli.positive_int, default=None, help="stop after this many frames")
    parser.add_argument("--smooth", type=float, default=DEFAULT_WEIGHT,
                        help=f"temporal smoothing of the colours: weight of the running average, 0 = off "
                             f"(default: {DEFAULT_WEIGHT})")
    return parser


# ---------------------------------------------------------------- frames, views, overlay

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


# ---------------------------------------------------------------- keys

@dataclass(frozen=True)
class KeyState:
    view: str
    paused: bool = False


def on_key(key: int, state: KeyState) -> tuple[KeyState, str | None]:
    """A key code from cv2.waitKey (-1: none) -> (new state, action): "quit", "pause", "resume", "view" (the view
    changed), "snapshot", "record" (start or stop) or None."""
    key &= 0xFF
    if key in (ord("q"), 27):
        return state, "quit"
    if key == ord(" "):
        return replace(state, paused=not state.paused), "resume" if state.paused else "pause"
    if key == ord("v"):
        return replace(state, view=VIEWS[(VIEWS.index(state.view) + 1) % len(VIEWS)]), "view"
    if key == ord("s"):
        return state, "snapshot"
    if key == ord("r"):
        return state, "record"
    return state, None


# ---------------------------------------------------------------- recordings and snapshots

def remove_stale_partials(folder: Path) -> None:
    """Temp files left in `folder` by a killed run (their process is gone) are deleted, with a note."""
    removed = fileio.remove_stale_partials(folder)
    if removed:
        print(f"note: removed {len(removed)} temp file(s) left in {folder} by an interrupted run", file=sys.stderr)


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
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {target}")
    return fileio.write_bytes_atomic(target, data.tobytes())


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


# ---------------------------------------------------------------- the model stage

END = object()  # the model stage's last item: the stream is finished


class ModelStage:
    """The model's half of the image path (contract.image_ab: L* at the model's size, the model, the smoothing) on
    its own thread, one frame ahead of the main thread, which merges, records and shows the frame before.

    How two cores are shared: ONNX Runtime runs each model call on its --threads (default: every core) and releases
    the GIL; between calls its threads stop spinning. The capture thread decodes the next frame, this thread computes
    L* and runs the model, and the main thread merges the previous frame's ab with its full-resolution L* (OpenCV,
    GIL released) and writes or shows it, so the model never waits for Python or the merge and the cores stay busy.
    Items are (frame, ab), then END, or the exception that stopped the stage; at most `depth` wait (one: a camera's
    frame is shown at most one model run after it was taken, while the model and the merge still overlap)."""

    def __init__(self, model: ColorizerModel, reader: FrameReader, smoother: AbSmoother, depth: int = 1):
        self._model, self._reader, self._smoother = model, reader, smoother
        self._items = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._items.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                frame = self._reader.read(timeout=POLL_S)
                if frame is None:
                    if self._reader.finished:
                        break
                    continue
                ab = contract.image_ab(self._model.predict_ab, frame, self._model.info, self._smoother)
                if not self._put((frame, ab)):
                    return
            self._put(END)
        except Exception as error:  # the main thread reports it
            self._put(error)

    def get(self, timeout: float | None):
        """The next (frame, ab), END, or None when nothing came within timeout; raises what stopped the stage."""
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self) -> None:
        self._stopping.set()
        self._model.stop_runs()  # a run in progress ends at its next operator, so shutting down never waits on it
        self._thread.join(timeout=5.0)


# ---------------------------------------------------------------- the live loop

class LiveColorizer:
    """The main loop: frames from the model stage are merged, recorded and (unless --no-display) shown, with keys.
    run() returns the exit status and releases the source."""

    def __init__(self, args, model: ColorizerModel, source: Source):
        self.args, self.model, self.source = args, model, source
        self.display = not args.no_display
        self.state = KeyState(args.view)
        self.record_fps = source.fps or FALLBACK_FPS
        if not source.fps and (args.record or self.display):
            log.info("%s does not report a frame rate; recordings use %.0f fps", source.name, FALLBACK_FPS)
        self.recordings, self.recorder = 0, None
        self.reader = self.stage = self.last = None
        self.redraw = self.window_sized = False
        self.meter, self.merge_s, self.shown_at = RateMeter(), 0.0, None
        # in the window a file plays at its own fps; without one it runs as fast as it can (that is the fps figure)
        self.interval = 1.0 / source.fps if self.display and not source.live and source.fps else 0.0
        self.processed, self.started, self.finished_at = 0, None, None
        self.reason, self.status = "end of stream", cli.EXIT_OK
        total = min(filter(None, (args.max_frames, source.frame_count)), default=None)
        # a bar only on a terminal without a window; logs get the one-line summary at the end
        self.progress = tqdm(total=total, unit="frame", desc=source.name, leave=False,
                             disable=self.display or not sys.stderr.isatty())

    def note(self, message: str) -> None:
        tqdm.write(f"note: {message}", file=sys.stderr)

    def start_recording(self, target: Path) -> None:
        remove_stale_partials(target.parent)
        self.recordings += 1
        self.recorder = Recorder(target, self.record_fps, self.state.view, self.source.live, note=self.note)

    def stop_recording(self) -> None:
        if self.recorder is None:
            return
        finished, self.recorder = self.recorder, None
        try:
            if finished.stop():
                print(f"recording: {finished.target} ({finished.frames} frames, {finished.fps:g} fps)", flush=True)
            else:
                print(f"recording: nothing recorded, {finished.target} not written", flush=True)
        except Exception as error:  # disk full: the file is not complete, so it is not there at all
            print(f"error: recording {finished.target} failed, not written: {fileio.first_line(error)}",
                  file=sys.stderr, flush=True)
            self.status = self.status or cli.EXIT_FAILED

    def run(self) -> int:
        try:
            if self.args.record:
                self.start_recording(Path(self.args.record))
            self.reader = FrameReader(self.source)
            self.stage = ModelStage(self.model, self.reader, AbSmoother(self.args.smooth))
            self.loop()
        except KeyboardInterrupt as interrupt:  # SIGINT or SIGTERM (cli.interruptible): stop, keep the recording
            self.reason, self.status = "interrupted", cli.interrupt_code(interrupt)
        except Exception as error:  # ONNX Runtime, encoder or disk failure mid-stream: one line, keep what was recorded
            print(f"error: {fileio.first_line(error)}", file=sys.stderr)
            self.reason, self.status = "failed", cli.EXIT_FAILED
        finally:
            self.close()
        self.check_stream()
        self.print_summary()
        return self.status

    def loop(self) -> None:
        while True:
            if self.args.max_frames is not None and self.processed >= self.args.max_frames:
                self.reason = f"--max-frames {self.args.max_frames}"
                return
            item = None if self.state.paused else self.stage.get(timeout=POLL_S if self.display else None)
            if item is END:
                return
            if item is not None:
                self.output(*item)
            if self.display and not self.serve_window(item is not None):
                return

    def output(self, frame: np.ndarray, ab: np.ndarray) -> None:
        """Merge the model's ab with the frame's full-resolution L*, then record it."""
        began = time.perf_counter()
        self.started = self.started or began
        colored = color.merge_ab(frame, ab, threads=1)  # the model thread has the other core
        self.finished_at = time.perf_counter()
        self.merge_s = 0.9 * self.merge_s + 0.1 * (self.finished_at - began)
        self.processed += 1
        self.meter.tick()
        self.progress.update()
        self.last = (frame, colored)
        if self.recorder is not None:
            self.recorder.write(compose(self.recorder.view, frame, colored))

    def serve_window(self, new_frame: bool) -> bool:
        """Show the newest frame (when there is one or the view changed) and handle one key; False: stop."""
        if (new_frame or self.redraw) and self.last is not None:
            small_h, small_w = self.model.model_size(*self.last[0].shape[:2])
            flags = "  PAUSED" * self.state.paused + "  REC" * (self.recorder is not None)
            text = (f"{self.meter.fps:.1f} fps  {self.model.provider.removesuffix('ExecutionProvider')}  "
                    f"model {small_w}x{small_h}{flags}")
            image = draw_overlay(compose(self.state.view, *self.last), text)
            if not self.window_sized:
                fit_window(image)
                self.window_sized = True
            cv2.imshow(WINDOW, image)
            self.redraw = False
        key = cv2.waitKey(self.key_delay_ms(new_frame))
        if window_closed():
            self.reason = "window closed"
            return False
        self.state, action = on_key(key, self.state)
        if action == "quit":
            self.reason = "quit"
            return False
        if action is not None:
            self.act(action)
        return True

    def key_delay_ms(self, new_frame: bool) -> int:
        if self.interval and new_frame:  # hold the frame until the next one is due
            now = time.perf_counter()
            # when this frame is due: one interval after the last, or now when running late (no catching up)
            self.shown_at = now if self.shown_at is None else max(now, self.shown_at + self.interval)
            return max(1, int((self.shown_at + self.interval - now - self.merge_s) * 1000))
        return 30 if self.state.paused else 1

    def act(self, action: str) -> None:
        if action in ("pause", "resume"):
            self.redraw, self.shown_at = True, None
            print("paused" if self.state.paused else "resumed", flush=True)
        elif action == "view":
            self.redraw = True
            print(f"view: {self.state.view}", flush=True)
        elif action == "snapshot" and self.last is not None:
            print(f"snapshot: {save_snapshot(compose(self.state.view, *self.last))}", flush=True)
        elif action == "record":
            if self.recorder is None:
                target = next_recording_path(Path(self.args.record) if self.args.record else None, self.recordings)
                self.start_recording(target)
                print(f"recording to {target} ...", flush=True)
            else:
                self.stop_recording()
            self.redraw = True

    def close(self) -> None:
        self.progress.close()
        if self.stage is not None:
            self.stage.stop()
        if self.reader is not None:
            self.reader.stop()
        else:
            self.source.capture.release()
        self.stop_recording()
        if self.display:
            cv2.destroyAllWindows()
            cv2.waitKey(1)

    def check_stream(self) -> None:
        source, reader = self.source, self.reader
        if reader is not None and reader.error is not None:
            print(f"error: reading {source.name} failed: {fileio.first_line(reader.error)}", file=sys.stderr)
            self.status = self.status or cli.EXIT_FAILED
        elif self.reason == "end of stream" and 0 < self.processed < source.frame_count:  # damaged or truncated
            print(f"error: {source.name}: read {self.processed} of {source.frame_count} declared frames",
                  file=sys.stderr)
            self.status = self.status or cli.EXIT_FAILED

    def print_summary(self) -> None:
        height, width = self.source.first.shape[:2]
        small_h, small_w = self.model.model_size(height, width)
        if self.processed == 0:
            print(f"stopped ({self.reason}): no frames processed")
            return
        seconds = self.finished_at - self.started
        fps = self.processed / seconds if seconds > 0 else float("inf")
        skipped = (f", {self.reader.dropped} camera frames skipped"
                   if self.source.live and self.reader is not None else "")
        print(f"stopped ({self.reason}): {self.processed} frames in {seconds:.1f} s, mean {fps:.1f} fps end to end "
              f"({width}x{height} from {self.source.name}, model {small_w}x{small_h} on {self.model.provider}"
              f"{skipped})")


def check_args(parser, args) -> None:
    if args.camera is not None and args.camera < 0:
        parser.error("--camera must be 0 or more")
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


def main(argv=None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli.quiet_opencv()
    with cli.interruptible():
        source = None
        try:
            if not args.no_display:
                quiet_qt_fonts()
                check_display()
            source = open_source(args.camera, args.source, open_file=decoder.ChildCapture)
            model = cli.load_model(args)
            height, width = source.first.shape[:2]
            log.info("%s: %dx%d%s", source.name, width, height, f" at {source.fps:g} fps" if source.fps else "")
            if not args.no_display:
                open_window()
            source, running = None, source  # from here the capture thread owns (and releases) the capture
            return LiveColorizer(args, model, running).run()
        except DisplayError as error:
            fileio.fail(f"{error}; use --no-display", cli.EXIT_USAGE)
        except decoder.SourceCrash as error:  # the input's failure, as in runtime.colorize
            fileio.fail(str(error), cli.EXIT_FAILED)
        except (SourceError, *cli.MODEL_ERRORS) as error:
            fileio.fail(str(error), cli.EXIT_USAGE)
        except KeyboardInterrupt as interrupt:  # before the main loop started
            print("interrupted", file=sys.stderr)
            return cli.interrupt_code(interrupt)
        finally:
            if source is not None:
                source.capture.release()


if __name__ == "__main__":
    sys.exit(main())
