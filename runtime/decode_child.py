"""The child process of runtime.decoder: decodes one video file with OpenCV and streams it to stdout as records.

A plain script, run as `python -I decode_child.py FILE [LIMIT]`: it imports OpenCV and numpy only, so that starting it
is quick and a decoder crash here (OpenCV's FFmpeg backend aborts on some files) ends only this process. Records: an
INFO record (fps, declared frame count), one FRAME record per frame (its shape, then its pixels), and END, or one
ERROR record (a one-line reason). The parent (runtime.decoder.VideoDecoder) imports the record formats from here.
"""

import os
import signal
import struct
import sys

RECORD = struct.Struct("<B3I")  # kind, then three numbers: (height, width, channels) / (message length, 0, 0)
INFO = struct.Struct("<dq")  # fps, declared frame count
KIND_INFO, KIND_FRAME, KIND_END, KIND_ERROR = range(4)


def _send(out, kind: int, a: int = 0, b: int = 0, c: int = 0, payload=b"") -> None:
    out.write(RECORD.pack(kind, a, b, c))
    out.write(payload)


def _decode_to(out, path: str, limit: int | None) -> None:
    import cv2
    import numpy as np

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


def main(argv: list[str]) -> int:
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
