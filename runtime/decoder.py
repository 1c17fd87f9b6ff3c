"""Video files decoded in a child process, so that a decoder crash is one input's failure, not the program's.

OpenCV's FFmpeg backend aborts the whole process on some videos (a 10-frame uncompressed AVI ends in heap corruption,
exit 134 or 139) with no Python exception to catch. Here a child process (runtime/decode_child.py) opens the file
with cv2.VideoCapture and streams what it decodes over its stdout: an INFO record (fps, declared frame count), one
FRAME record per frame (its shape, then its pixels), and END, or one ERROR record (a one-line reason). The parent
(`VideoDecoder`) reads the records as it needs frames; the pipe's buffer keeps the child a frame or two ahead, so
decoding and the model overlap and memory stays bounded. When the child dies before END, its signal becomes
`DecoderCrash`; so does a child that sends nothing for DECODE_TIMEOUT seconds (it is killed). The webcam reads
its --source files through `ChildCapture`, the same child behind cv2.VideoCapture's methods.
"""

import contextlib
import os
import select
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from runtime import decode_child, fileio
from runtime.decode_child import INFO, KIND_END, KIND_ERROR, KIND_FRAME, KIND_INFO, RECORD
from runtime.fileio import InputError
from runtime.video import SourceError

MAX_FRAME_BYTES = 1 << 31
PIPE_BYTES = 1 << 20
DECODE_TIMEOUT = 60.0  # seconds the child may take for its next bytes (one frame, or opening the file)
# The child is a plain script run in isolated mode (-I): it imports OpenCV and numpy only, never this package (whose
# import costs a video's start half a second), nor anything from the current folder or PYTHONPATH.
CHILD_SCRIPT = Path(decode_child.__file__).resolve()


class DecoderCrash(InputError):
    """The decoder process died (a signal or an unexpected exit) or hung before the end of the video."""


class SourceCrash(SourceError):
    """A video file given as a source crashes (or hangs) the decoder: the input's failure (exit 1), not a usage
    error."""


# ---------------------------------------------------------------- the parent

class VideoDecoder:
    """Frames of one video file, decoded in a child process. Use as a context manager: leaving it ends the child.
    fps and declared (frame count) come from the file; frames() yields the frames as OpenCV decodes them (BGR uint8);
    any failure, a crash of the decoder included, raises InputError (DecoderCrash for a crash)."""

    def __init__(self, path: Path | str, limit: int | None = None, timeout: float = DECODE_TIMEOUT):
        self.path, self.timeout = Path(path), timeout
        env = {**os.environ}
        env.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        command = [sys.executable, "-I", str(CHILD_SCRIPT), str(self.path), *([str(limit)] if limit else [])]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, env=env, bufsize=0)
        self._ended = False
        with contextlib.suppress(ImportError, AttributeError, OSError):  # Linux: fewer, larger hand-overs of frames
            import fcntl  # not on Windows

            fcntl.fcntl(self._process.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            if self._record()[0] != KIND_INFO:
                raise InputError("the video decoder sent something unexpected")
            self.fps, self.declared = INFO.unpack(self._read(INFO.size))
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, size: int) -> bytes:
        data = bytearray(size)
        self._read_into(memoryview(data))
        return bytes(data)

    def _read_into(self, view: memoryview) -> None:
        """Fill `view` from the pipe; a decoder that sends nothing for DECODE_TIMEOUT seconds is ended (a hang on a
        hostile file must not hang the batch)."""
        done, pipe = 0, self._process.stdout
        while done < len(view):
            if os.name == "posix" and not select.select([pipe], [], [], self.timeout)[0]:
                self._process.kill()
                raise DecoderCrash(f"the video decoder stopped answering (nothing for {self.timeout:g} s)")
            count = pipe.readinto(view[done:])
            if not count:
                raise self._failure()
            done += count

    def _record(self) -> tuple[int, int, int, int]:
        kind, a, b, c = RECORD.unpack(self._read(RECORD.size))
        if kind == KIND_ERROR:
            raise InputError(self._read(a).decode("utf-8", "replace"))
        return kind, a, b, c

    def _failure(self) -> InputError:
        """What ended the stream early: the child's exit, waited for (it has closed its end of the pipe)."""
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return InputError("the video decoder stopped answering")
        if code < 0:
            return DecoderCrash(f"the video decoder crashed (signal {-code})")
        return DecoderCrash(f"the video decoder stopped unexpectedly (exit code {code})")

    def frames(self):
        while not self._ended:
            kind, height, width, channels = self._record()
            if kind == KIND_END:
                self._ended = True
                return
            size = height * width * channels
            if kind != KIND_FRAME or size > MAX_FRAME_BYTES:
                raise InputError("the video decoder sent something unexpected")
            frame = np.empty((height, width, channels), np.uint8)
            self._read_into(memoryview(frame).cast("B"))
            yield frame[..., 0] if channels == 1 else frame  # as OpenCV gave it (gray frames are 2-D)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._process.stdout.close()


class ChildCapture:
    """cv2.VideoCapture's isOpened / read / get / release over a VideoDecoder: the webcam's --source files are decoded
    in a child too, so a file that crashes the decoder, at its first frame or its last, ends the stream with one
    error line (SourceCrash, exit 1) instead of ending the process."""

    def __init__(self, path: Path | str):
        self.path = path
        try:
            self._decoder = VideoDecoder(path)
        except InputError as error:
            raise self._error(error) from None
        self._frames = self._decoder.frames()

    def _error(self, error: InputError) -> SourceError:
        kind = SourceCrash if isinstance(error, DecoderCrash) else SourceError
        return kind(f"{fileio.shown(self.path)}: {error}")

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's name)
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            frame = next(self._frames, None)
        except InputError as error:
            raise self._error(error) from None
        return frame is not None, frame

    def get(self, prop: int) -> float:
        values = {cv2.CAP_PROP_FPS: self._decoder.fps, cv2.CAP_PROP_FRAME_COUNT: self._decoder.declared}
        return float(values.get(prop, 0.0))

    def release(self) -> None:
        self._decoder.close()
