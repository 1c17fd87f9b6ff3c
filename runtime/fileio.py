"""One home for atomic writes and one-line error reports (torch-free; train/ and export/ may use it too).

Every output is written into a hidden temp file beside its target, named `.NAME.partial-PID-XXXXXXXX.EXT` (same
extension, so encoders pick the format from the name), flushed to disk, optionally checked, and only then renamed over
the target: a file under the target's name is always complete. A failure or an interrupt removes the temp file; one
left behind by a killed process (its PID no longer alive) is stale and `remove_stale_partials` deletes it. Input
scans skip these files (`is_partial`), so an output folder inside an input folder never feeds them back in.
"""

import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PARTIAL_MARK = ".partial-"
# .NAME.partial-PID-RANDOM.EXT (RANDOM: mkstemp's 8 characters; EXT optional)
PARTIAL_RE = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)-(?P<random>[a-z0-9_]+)(?P<ext>\.[^.]*)?$")


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (where the cause is; later lines are context, tracebacks of
    native code or hints), or the error's type name when it has no message."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


def fail(message: str, code: int = 1):
    """Print `error: message` to stderr and exit with `code` (raises SystemExit)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# ---------------------------------------------------------------- temp files

def is_partial(path: Path | str) -> bool:
    """True for a temp file of ours (`.NAME.partial-PID-XXXXXXXX.EXT`)."""
    return PARTIAL_RE.match(Path(path).name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or sys.platform == "win32":  # Windows' os.kill(pid, 0) would terminate that process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # exists but belongs to someone else (or an impossible number: keep the file)
    return True


def is_stale_partial(path: Path | str) -> bool:
    """A temp file of ours whose writer process is gone (killed, crashed): nothing will ever finish or remove it."""
    match = PARTIAL_RE.match(Path(path).name)
    return match is not None and not _pid_alive(int(match["pid"]))


def remove_stale_partials(folder: Path | str) -> list[Path]:
    """Delete the stale temp files of ours directly in `folder`; returns them (for a note to the user)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if PARTIAL_MARK in entry.name and is_stale_partial(entry.name):
            try:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_temp(target: Path | str) -> Path:
    """Create (empty) and return a temp file beside `target`, named so that it is recognisably ours."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.stem}{PARTIAL_MARK}{os.getpid()}-", suffix=target.suffix,
                                    dir=target.parent)
    os.close(handle)
    return Path(temp)


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        handle = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # not every system lets a folder be opened (Windows); the rename is still atomic
            return
        raise
    try:
        os.fsync(handle)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(handle)


def commit(temp: Path | str, target: Path | str, verify: Callable[[str], None] | None = None) -> None:
    """Flush `temp` to disk, run verify(temp) (it raises when the file is not what was meant to be written), give it
    the usual permissions and rename it over `target`. On any failure the temp file is removed and the error raised."""
    temp, target = Path(temp), Path(target)
    try:
        _fsync(temp)
        if verify is not None:
            verify(str(temp))
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync(target.parent, directory=True)


def write_atomic(target: Path | str, write_fn: Callable[[str], object],
                 verify: Callable[[str], None] | None = None) -> Path:
    """write_fn(temp_path) writes the content into a temp file beside `target` (same extension); it is flushed,
    checked with verify(temp_path) when given, and renamed onto `target`. Nothing is ever left under `target`'s name
    half-written, and the temp file is removed on any failure (an interrupt included). Returns `target`."""
    target = Path(target)
    temp = new_temp(target)
    try:
        write_fn(str(temp))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    commit(temp, target, verify)
    return target


def write_bytes_atomic(target: Path | str, data: bytes) -> Path:
    def write(temp: str) -> None:
        with open(temp, "wb") as handle:
            handle.write(data)

    return write_atomic(target, write)
