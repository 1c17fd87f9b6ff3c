"""Video files decoded in a child process, so that a decoder crash is one input's failure, not the program's.

OpenCV's FFmpeg backend aborts the whole process on some videos (a 10-frame uncompressed AVI ends in heap corruption,
exit 134 or 139) with no Python exception to catch. Here a child process (this module's `child_main`) opens the file
with cv2.VideoCapture and streams what it decodes over its stdout: an INFO record (fps, declared frame count), one
FRAME record per frame (its shape, then its pixels), and END, or one ERROR record (a one-line reason). The parent
(`VideoDecoder`) reads the records as it needs frames; the pipe's buffer keeps the child a frame or two ahead, so
decoding and the model overlap and memory stays bounded. When the child dies before END, its signal becomes
`DecoderCrash`; so does a child that sends nothing for DECODE_TIMEOUT seconds (it is killed). `probe_video` decodes
the first frames of a file the same way, for callers (the webcam) that then open the file themselves.
"""

import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from runtime import fileio
from runtime.fileio import InputError
from runtime.video import SourceError

RECORD = struct.Struct("<B3I")  # kind, then three numbers: (height, width, channels) / (message length, 0, 0)
INFO = struct.Struct("<dq")  # fps, declared frame count
KIND_INFO, KIND_FRAME, KIND_END, KIND_ERROR = range(4)
MAX_FRAME_BYTES = 1 << 31
PROBE_FRAMES = 30
PIPE_BYTES = 1 << 20
DECODE_TIMEOUT = 60.0  # seconds the child may take for its next bytes (one frame, or opening the file)
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The child runs this module from the folder this very package came from, in place of the current folder (where
# `python -m` would look first, and where a user's own `runtime/` folder may be).
CHILD_START = "import runpy, sys; sys.path[0] = sys.argv.pop(1); runpy.run_module('runtime.decoder', " \
              "run_name='__main__', alter_sys=True)"


class DecoderCrash(InputError):
    """The decoder process died (a signal or an unexpected exit) or hung before the end of the video."""


class SourceCrash(SourceError):
    """A video file given as a source crashes (or hangs) the decoder: the input's failure (exit 1), not a usage
    error."""


# ---------------------------------------------------------------- the child

def _send(out, kind: int, a: int = 0, b: int = 0, c: int = 0, payload=b"") -> None:
    out.write(RECORD.pack(kind, a, b, c))
    out.write(payload)


def _decode_to(out, path: str, limit: int | None) -> None:
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        message = b"not a readable video (corrupt or unsupported format)"
        _send(out, KIND_ERROR, len(message), payload=message)
        return
    _send(out, KIND_INFO, payload=INFO.pack(capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))))
    count = 0
    while limit is None or count < limit:
        ok, frame = capture.read()
        if not ok:
            break
        frame = np.ascontiguousarray(frame if frame.ndim == 3 else frame[..., None], dtype=np.uint8)
        _send(out, KIND_FRAME, *frame.shape, payload=frame.data)
        count += 1
    _send(out, KIND_END)
    out.flush()
    capture.release()


def child_main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    limit = int(argv[1]) if len(argv) > 1 else None
    out = os.fdopen(os.dup(1), "wb")  # the records go here; anything a library prints goes to stderr (discarded)
    os.dup2(2, 1)
    try:
        _decode_to(out, argv[0], limit)
    except BrokenPipeError:  # the parent stopped reading (it is done with this video, or interrupted)
        os._exit(0)
    except Exception:  # one line for the parent, in words rather than OpenCV's internals
        message = b"the video decoder failed on this file"
        _send(out, KIND_ERROR, len(message), payload=message)
        out.flush()
    return 0


# ---------------------------------------------------------------- the parent

class VideoDecoder:
    """Frames of one video file, decoded in a child process. Use as a context manager: leaving it ends the child.
    fps and declared (frame count) come from the file; frames() yields the frames as OpenCV decodes them (BGR uint8);
    any failure, a crash of the decoder included, raises InputError (DecoderCrash for a crash)."""

    def __init__(self, path: Path | str, limit: int | None = None, timeout: float = DECODE_TIMEOUT):
        self.path, self.timeout = Path(path), timeout
        env = {**os.environ}
        env.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        command = [sys.executable, "-c", CHILD_START, str(PACKAGE_ROOT), str(self.path),
                   *([str(limit)] if limit else [])]
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


def probe_video(path: Path | str, frames: int = PROBE_FRAMES) -> None:
    """Decode the first `frames` frames of a video file in a child process; raise SourceCrash (a SourceError naming
    the file) when the decoder crashes or hangs on them. Other problems (unreadable, no frames) are left to the
    caller's own open."""
    try:
        with VideoDecoder(path, limit=frames) as decoder:
            for _ in decoder.frames():
                pass
    except DecoderCrash as crash:
        raise SourceCrash(f"{fileio.shown(path)}: {crash}") from None
    except InputError:
        pass


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
