"""Video in and out, shared by runtime.colorize and runtime.webcam.

In: cameras, files, image sequences and streams (`open_source`, with hints when they cannot be opened) and the
capture thread (`FrameReader`) that keeps only the newest frame of a live source. Out: `VideoFile`, an mp4 written
into a hidden temp file beside its target, read back and counted before it is renamed into place (a full disk makes
OpenCV's writer fail silently and leave an unplayable file), and `Recorder`, which records a live view in real time.
"""

import collections
import glob
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime import fileio

FOURCC = "mp4v"
FILE_BUFFER = 4  # decoded frames a file source may hold ahead of the model


class SourceError(Exception):
    """The camera, file or stream cannot be opened or gives no frames."""


class VideoWriteError(OSError):
    """A video could not be written completely (disk full, file size limit, encoder failure)."""


# ---------------------------------------------------------------- sources

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


def open_source(camera: int | None, source: str | None, open_file=cv2.VideoCapture) -> Source:
    """The camera or --source (a file, an image-sequence pattern or a stream), its first frame read; open_file opens
    a plain file (the webcam passes decoder.ChildCapture, so a hostile file cannot crash it)."""
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
        capture = (open_file if path.is_file() else cv2.VideoCapture)(source)
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


# ---------------------------------------------------------------- writing

def even_size(width: int, height: int) -> tuple[int, int]:
    """mp4's codec works on 2x2 chroma blocks: OpenCV's writer silently crops odd sizes down, so they are padded up."""
    return width + width % 2, height + height % 2


def check_video(path: str | Path, frames: int) -> None:
    """Raise VideoWriteError unless the video at `path` opens, declares `frames` frames and its last one decodes."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoWriteError("the written video cannot be read back (disk full or file size limit?)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count != frames:
            raise VideoWriteError(f"the written video holds {max(count, 0)} of {frames} frames "
                                  "(disk full or file size limit?)")
        capture.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
        ok, _ = capture.read()
        if not ok:
            raise VideoWriteError("the written video's last frame cannot be read back (disk full or file size limit?)")
    finally:
        capture.release()


def _note_to_stderr(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


class VideoFile:
    """An mp4 written frame by frame into a hidden temp file beside `target`; finish() reads it back, checks its frame
    count and renames it into place, discard() removes it. Sized from the first frame; an odd width or height is
    padded (edge pixels repeated) to even, with one note."""

    def __init__(self, target: Path | str, fps: float, note=_note_to_stderr):
        self.target, self.fps, self._note = Path(target), fps, note
        self.temp = fileio.new_temp(self.target)
        self._writer = None
        self.size = None  # (width, height) of the frames given
        self._pad = None  # (bottom, right) rows / columns added, or None
        self.frames = 0

    def _open(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        self.size = (width, height)
        padded = even_size(width, height)
        if padded != self.size:
            self._pad = (padded[1] - height, padded[0] - width)
            self._note(f"{width}x{height} is padded to {padded[0]}x{padded[1]} (the mp4 codec needs even sizes)")
        self._writer = cv2.VideoWriter(str(self.temp), cv2.VideoWriter_fourcc(*FOURCC), self.fps, padded)
        if not self._writer.isOpened():
            raise VideoWriteError(f"cannot open a video writer for {self.target}")

    def write(self, image: np.ndarray, count: int = 1) -> None:
        if self._writer is None:
            self._open(image)
        elif count <= 0:
            return
        if self._pad is not None:
            image = cv2.copyMakeBorder(image, 0, self._pad[0], 0, self._pad[1], cv2.BORDER_REPLICATE)
        for _ in range(count):
            try:
                self._writer.write(image)
            finally:  # an interrupt is raised only once the write has returned: that frame is in the file
                self.frames += 1

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def finish(self) -> bool:
        """Close, verify and rename into place; False (and nothing written) when no frame was written. Raises
        VideoWriteError (temp removed, nothing under the target's name) when the file is not complete."""
        self._release()
        if self.frames == 0:
            fileio.discard_temp(self.temp)
            return False
        fileio.commit(self.temp, self.target, verify=lambda temp: check_video(temp, self.frames), mark=True)
        return True

    def discard(self) -> None:
        self._release()
        fileio.discard_temp(self.temp)


class Recorder:
    """Records a view into a VideoFile, renamed into place (after it is read back) when stopped. Live sources are
    recorded in real time at `fps`: frames are repeated or skipped to keep the clock (the model may run slower or
    faster than the camera)."""

    def __init__(self, target: Path, fps: float, view: str, realtime: bool, note=_note_to_stderr):
        self.target, self.fps, self.view, self.realtime = Path(target), fps, view, realtime
        self._file = VideoFile(self.target, fps, lambda message: note(f"{self.target}: {message}"))
        self._clock = None

    @property
    def frames(self) -> int:
        return self._file.frames

    def write(self, image: np.ndarray) -> None:
        size = self._file.size
        if size is not None and (image.shape[1], image.shape[0]) != size:  # a stream changed resolution
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        count = 1
        if self.realtime:
            now = time.monotonic()
            if self._clock is None:
                self._clock = now
            count = int((now - self._clock) * self.fps) + 1 - self.frames
            if count > self.fps:  # a long gap (paused): carry on from here rather than fill it with one frame
                self._clock, count = now - self.frames / self.fps, 1
        self._file.write(image, count)

    def stop(self) -> bool:
        """Finish the file; False (and nothing written) when no frame was recorded. Raises VideoWriteError (and
        leaves nothing) when the recording could not be written completely."""
        return self._file.finish()

    def discard(self) -> None:
        self._file.discard()
