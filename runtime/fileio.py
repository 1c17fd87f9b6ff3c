"""One home for atomic writes, our temp files and output marks, and one-line error reports (torch-free; train/ and
export/ may use it too).

Every output is written into a hidden temp file beside its target, named
`.NAME.flowercolor-partial-PID-TOKENCHECK.EXT` (same extension, so encoders pick the format from the name; CHECK is
a hash of NAME, PID and TOKEN, so a user's file does not carry our name by accident), flushed to disk, optionally
checked, marked as ours when it is a colorized output, and only then renamed over the target: a file under the
target's name is always complete. A failure or an interrupt removes the temp file; one left behind by a killed
process (its PID no longer alive, the file a regular one of this user) is stale and `remove_stale_partials` deletes
it. Input scans skip these files (`is_partial`), so an output folder inside an input folder never feeds them back in.
"""

import errno
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

PARTIAL_MARK = ".flowercolor-partial-"
PARTIAL_RE = re.compile(r"^\.(?P<stem>.*)\.flowercolor-partial-(?P<pid>\d{1,10})-(?P<token>[0-9a-f]{6})"
                        r"(?P<check>[0-9a-f]{4})(?P<ext>\.[A-Za-z0-9]{1,8})?$")
OUTPUT_ATTRIBUTE = "user.flowercolor"  # extended attribute our committed outputs carry (where the file system has them)
OUTPUT_MARK = b"output"
_live_temps: set[Path] = set()  # temp files this process is writing (removed by a hard exit, see cli.interruptible)


class InputError(Exception):
    """One input cannot be colorized; the message names the reason, the caller names the file."""


def shown(path: Path | str) -> str:
    """A path as one line of text: control characters (a newline in a file name) escaped, so an `error:` line about
    the file stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(path))


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

def _check(stem: str, pid: str, token: str) -> str:
    return hashlib.blake2s(f"{stem}/{pid}/{token}".encode("utf-8", "surrogateescape"), digest_size=2).hexdigest()


def partial_name(name: str, pid: int, token: str) -> str:
    """The temp file name for an output named `name`, written by process `pid`; `token`: six hex digits."""
    stem, suffix = os.path.splitext(name)
    return f".{stem}{PARTIAL_MARK}{pid}-{token}{_check(stem, str(pid), token)}{suffix}"


def is_partial(path: Path | str) -> bool:
    """True for a temp file of ours: the whole name has our pattern and its check matches."""
    match = PARTIAL_RE.match(Path(path).name)
    return match is not None and match["check"] == _check(match["stem"], match["pid"], match["token"])


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
    return is_partial(path) and not _pid_alive(int(PARTIAL_RE.match(Path(path).name)["pid"]))


def remove_stale_partial(path: Path | str) -> bool:
    """Delete `path` when it is a stale temp file of ours: our name with a valid check, a regular file (not a link)
    owned by this user, its writer gone. True when it was deleted."""
    if not is_stale_partial(path):
        return False
    try:
        info = os.lstat(path)
        if not os.path.isfile(path) or os.path.islink(path) or info.st_uid != getattr(os, "getuid", lambda: 0)():
            return False
        os.unlink(path)
    except OSError:
        return False
    return True


def remove_stale_partials(folder: Path | str) -> list[Path]:
    """Delete the stale temp files of ours directly in `folder`; returns them (for a note to the user)."""
    try:
        names = [entry.name for entry in os.scandir(folder) if PARTIAL_MARK in entry.name]
    except OSError:
        return []
    return [Path(folder) / name for name in names if remove_stale_partial(Path(folder) / name)]


def mark_ours(path: Path | str) -> None:
    """Mark a finished colorized output as ours (an extended attribute; skipped where the file system has none)."""
    try:
        os.setxattr(path, OUTPUT_ATTRIBUTE, OUTPUT_MARK)
    except (AttributeError, OSError):
        pass


def is_ours(path: Path | str) -> bool | None:
    """True for a colorized output we wrote, False for any other file, None where the file system keeps no marks."""
    try:
        return os.getxattr(path, OUTPUT_ATTRIBUTE) == OUTPUT_MARK
    except AttributeError:  # no extended attributes on this platform
        return None
    except OSError as error:
        return None if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) else False


def remove_live_temps() -> None:
    """Remove the temp files this process is writing (before a hard exit that skips the usual cleanup)."""
    for temp in list(_live_temps):
        try:
            os.unlink(temp)
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_temp(target: Path | str) -> Path:
    """Create (empty) and return a temp file beside `target`, named so that it is recognisably ours."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temp = target.parent / partial_name(target.name, os.getpid(), secrets.token_hex(3))
        _live_temps.add(temp)  # before it exists: a signal between creating and registering would leak it
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError as error:  # not created: not ours to remove later
            _live_temps.discard(temp)
            if isinstance(error, FileExistsError):
                continue
            raise
        return temp


def discard_temp(temp: Path | str) -> None:
    Path(temp).unlink(missing_ok=True)
    _live_temps.discard(Path(temp))


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


def commit(temp: Path | str, target: Path | str, verify: Callable[[str], None] | None = None,
           mark: bool = False) -> None:
    """Flush `temp` to disk, run verify(temp) (it raises when the file is not what was meant to be written), give it
    the usual permissions, mark it as a colorized output of ours when `mark`, and rename it over `target`. On any
    failure the temp file is removed and the error raised."""
    temp, target = Path(temp), Path(target)
    try:
        _fsync(temp)
        if verify is not None:
            verify(str(temp))
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        if mark:
            mark_ours(temp)
        os.replace(temp, target)
    except BaseException:
        discard_temp(temp)
        raise
    _live_temps.discard(temp)
    _fsync(target.parent, directory=True)


def write_atomic(target: Path | str, write_fn: Callable[[str], object],
                 verify: Callable[[str], None] | None = None, mark: bool = False) -> Path:
    """write_fn(temp_path) writes the content into a temp file beside `target` (same extension); it is flushed,
    checked with verify(temp_path) when given, and renamed onto `target`. Nothing is ever left under `target`'s name
    half-written, and the temp file is removed on any failure (an interrupt included). Returns `target`."""
    target = Path(target)
    temp = new_temp(target)
    try:
        write_fn(str(temp))
    except BaseException:
        discard_temp(temp)
        raise
    commit(temp, target, verify, mark)
    return target


def write_bytes_atomic(target: Path | str, data: bytes) -> Path:
    def write(temp: str) -> None:
        with open(temp, "wb") as handle:
            handle.write(data)

    return write_atomic(target, write)
