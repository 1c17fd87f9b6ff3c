"""Pieces the runtime's command lines share: exit codes, turning SIGINT / SIGTERM into a clean interrupt, the model
options (--model, --provider, --size, --temperature, --threads) and loading the model they name."""

import argparse
import contextlib
import os
import signal
import threading
from pathlib import Path

import cv2

from runtime import contract, fileio
from runtime import model as model_module
from runtime.model import PROVIDERS, ColorizerModel, ModelError, ProviderError

# Exit status of every runtime command.
EXIT_OK = 0  # every input done
EXIT_FAILED = 1  # some input failed, or an output could not be written
EXIT_USAGE = 2  # bad command line, model, provider, source or display
EXIT_SIGINT = 128 + signal.SIGINT  # 130: interrupted (Ctrl-C)
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: terminated

MAX_SIZE = 2048  # --size above this needs gigabytes per image for nothing: the models are trained at 112-224 px
HARD_EXIT_SECONDS = 0.8  # a signal the main thread has not taken by then ends the process (see interruptible)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so every cleanup that handles Ctrl-C handles SIGTERM too."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interrupt_code(error: KeyboardInterrupt) -> int:
    return error.exit_code if isinstance(error, Interrupted) else EXIT_SIGINT


def _watch_signals(wakeup: int, handled: threading.Event, grace: float, busy_message: str) -> None:
    """The watchdog thread of `interruptible`: the signal module writes each signal's number to `wakeup` at once,
    while its Python handler waits for the main thread to come back from native code (a model run, a decoder). When
    that takes longer than `grace` seconds, our temp files are removed and the process ends here."""
    while True:
        try:
            data = os.read(wakeup, 1)
        except OSError:
            return
        if not data or data[0] == 0:  # the block has ended
            return
        signum = data[0]
        if signum in (signal.SIGINT, signal.SIGTERM) and not handled.wait(grace):
            fileio.remove_live_temps()
            os.write(2, f"\n{busy_message} ({signal.Signals(signum).name})\n".encode())
            os._exit(128 + signum)


@contextlib.contextmanager
def interruptible(grace: float = HARD_EXIT_SECONDS,
                  busy_message: str = "interrupted: stopped while busy in native code"):
    """Within this block SIGINT and SIGTERM raise Interrupted in the main thread (once: a second signal while the
    first is being cleaned up is ignored, so the cleanup finishes). Python runs the handler only between bytecodes,
    so a watchdog thread ends the process (temp files removed, busy_message said) when the main thread has not taken
    the signal within `grace` seconds (training passes a longer one: a step on a busy CPU takes seconds, and ending
    between steps keeps its own message). The previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired, handled = [], threading.Event()

    def handler(signum, frame):
        handled.set()
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    wakeup, notify = os.pipe()
    os.set_blocking(notify, False)
    previous_wakeup = signal.set_wakeup_fd(notify, warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch_signals, args=(wakeup, handled, grace, busy_message),
                                name="signal-watchdog", daemon=True)
    watchdog.start()
    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old if old is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(previous_wakeup)
        os.write(notify, b"\0")
        watchdog.join(timeout=grace + 1)
        os.close(notify)
        os.close(wakeup)


def quiet_opencv() -> None:
    """We report unreadable files, sources and failed writes ourselves, in one line each: OpenCV's own log stays at
    errors, and FFmpeg's decoder log (thousands of lines for a damaged video) off. FFmpeg reads its setting at its
    first use, so this runs before any video is opened; an explicit OPENCV_FFMPEG_LOGLEVEL is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


# ---------------------------------------------------------------- model options


def _whole_number(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{what}, got {value}")
    return value


def size_option(text: str) -> int:
    return _whole_number(text, 1, MAX_SIZE, f"must be 1 to {MAX_SIZE} px")


def temperature(text: str) -> float:
    try:
        return contract.check_temperature(text)
    except contract.ContractError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    return _whole_number(text, 1, None, "must be positive")


def threads(text: str) -> int:
    try:
        return model_module.check_threads(_whole_number(text, 1, None, "must be positive"))
    except ModelError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    installed = model_module.shipped_model_names()
    names = ", ".join(installed) if installed else "none installed"
    parser.add_argument("--model", default=None,
                        help=f"installed model name ({names}) or .onnx path (default: {model_module.AUTO_HELP})")
    parser.add_argument("--provider", default="auto", choices=PROVIDERS,
                        help="auto = CUDA when available, else CPU; cuda/tensorrt fail rather than fall back")
    parser.add_argument("--size", type=size_option, default=None, metavar="PX",
                        help=f"model input size (shorter side, 1-{MAX_SIZE} px); default from the model's metadata")
    parser.add_argument("--temperature", type=temperature, default=None, metavar="T",
                        help=f"annealed-mean temperature, the vividness control: how much each pixel averages its likely "
                             f"colours; for the default model higher gives everyday photos more colour "
                             f"({contract.MIN_TEMPERATURE:g} <= T <= {contract.MAX_TEMPERATURE:g}; default: the model's own)")
    parser.add_argument("--threads", type=threads, default=None, help="ONNX Runtime threads (default: all cores)")


def _check_model_file(model: str | None) -> None:
    """A path that exists but is no regular file (a FIFO would block the loader, a folder is no model): say so."""
    if model is None or model_module.shipped_model_path(model.removesuffix(".onnx")) is not None:
        return
    path = Path(model).expanduser()
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "a FIFO (named pipe)" if path.is_fifo() else "a special file"
        raise ModelError(f"model {fileio.shown(path)} is {kind}, not a regular file")


def load_model(args) -> ColorizerModel:
    """The model the options name; ModelError / ProviderError (exit EXIT_USAGE) when it cannot be used."""
    _check_model_file(args.model)
    return ColorizerModel(args.model, provider=args.provider, size=args.size, threads=args.threads,
                          temperature=args.temperature)


MODEL_ERRORS = (ModelError, ProviderError)
