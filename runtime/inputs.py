"""What runtime.colorize takes as inputs (files, folders, glob patterns) and where their outputs go.

Folders and `**` globs are walked loop-safely (each real folder once, symlinks followed) and within a budget of
directory entries; our own temp files are never inputs (stale ones are removed on the way) and neither are our own
earlier outputs (`is_previous_output`), so a re-run in place does not colorize them again.
"""

import fnmatch
import glob
import os
from pathlib import Path

from runtime import fileio

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov"}
OUTPUT_SUFFIX = "_color"
MAX_SCAN_ENTRIES = 200_000  # a folder scan or glob stops past this many directory entries


def media_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def output_path(path: Path, subfolder: Path, outdir: Path) -> Path:
    suffix = ".mp4" if media_kind(path) == "video" else path.suffix
    return outdir / subfolder / f"{path.stem}{OUTPUT_SUFFIX}{suffix}"


def is_previous_output(path: Path, outdir: Path) -> bool | None:
    """An output we wrote earlier: True when it carries our mark (fileio.is_ours). A user's own `x_color.jpg`
    carries none: it is an input like any other, so the output of `x.jpg` never replaces it. Where the file system
    keeps no marks, a `*_color.*` file inside the output folder is taken for one, but as None (cannot be sure), and
    the caller must not replace it."""
    ours = fileio.is_ours(path)
    if ours is not None:
        return ours
    return None if path.stem.endswith(OUTPUT_SUFFIX) and path.resolve().is_relative_to(outdir) else False


class ScanLimit(Exception):
    pass


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


class Scanner:
    """Lists folders for one input (a folder or a glob pattern). Symlinked folders are followed, but each real folder
    is entered once, so links that point at each other cannot loop; past MAX_SCAN_ENTRIES entries it stops. Our own
    temp files are never inputs; stale ones (their writer is gone) are deleted on the way. Folders that cannot be
    read are collected in `unreadable` (the caller reports each as a failure)."""

    def __init__(self):
        self.entries = 0
        self.visited: set[tuple[int, int]] = set()
        self.repeats = 0  # folders reached a second time (through a symlink) and not entered again
        self.unreadable: list[tuple[Path, str]] = []  # (folder, reason)
        self.stale_removed = 0

    def enter(self, folder: Path) -> bool:
        try:
            info = os.stat(folder)
        except OSError:
            return False
        key = (info.st_dev, info.st_ino)
        if key in self.visited:
            self.repeats += 1
            return False
        self.visited.add(key)
        return True

    def listing(self, folder: Path) -> list[os.DirEntry]:
        entries = []
        try:
            with os.scandir(folder) as iterator:
                for entry in iterator:
                    self.entries += 1
                    if self.entries > MAX_SCAN_ENTRIES:
                        raise ScanLimit
                    if fileio.PARTIAL_MARK in entry.name and fileio.is_partial(entry.name):
                        self.stale_removed += fileio.remove_stale_partial(entry.path)
                        continue
                    entries.append(entry)
        except OSError as error:
            self.unreadable.append((folder, error.strerror or type(error).__name__))
        return sorted(entries, key=lambda entry: entry.name)

    def walk(self, top: Path, recursive: bool, hidden: bool = True):
        """-> (folder, its entries) for `top` and, when recursive, every real folder below it (hidden ones too unless
        hidden=False), each once."""
        if not self.enter(top):
            return
        stack = [top]
        while stack:
            folder = stack.pop()
            entries = self.listing(folder)
            yield folder, entries
            if recursive:
                below = [folder / entry.name for entry in entries
                         if (hidden or not entry.name.startswith(".")) and _is_dir(entry)]
                stack += [path for path in reversed(below) if self.enter(path)]

    def folder_files(self, top: Path, recursive: bool) -> list[Path]:
        return sorted(folder / entry.name for folder, entries in self.walk(top, recursive) for entry in entries
                      if _is_file(entry))

    def _glob_part(self, current: list[Path], part: str, last: bool, recursive: bool) -> list[Path]:
        found = []
        if recursive and part == "**":
            for base in current:
                for folder, entries in self.walk(base, recursive=True, hidden=False):
                    found.append(folder)
                    if last:
                        found += [folder / entry.name for entry in entries
                                  if _is_file(entry) and not entry.name.startswith(".")]
        elif glob.has_magic(part):
            for base in current:
                if not base.is_dir():
                    continue
                for entry in self.listing(base):
                    if (entry.name.startswith(".") and not part.startswith(".")) or \
                            not fnmatch.fnmatch(entry.name, part):
                        continue
                    if last or _is_dir(entry):
                        found.append(base / entry.name)
        else:
            found = [base / part for base in current]
        return found

    def glob(self, pattern: str, recursive: bool) -> list[Path]:
        """glob.glob's matches (hidden names only for parts that start with a dot; ** only when recursive), found
        with this scanner's loop-safe walk."""
        path = Path(pattern)
        parts = path.parts[1:] if path.anchor else path.parts
        current = [Path(path.anchor) if path.anchor else Path()]
        for index, part in enumerate(parts):
            current = self._glob_part(current, part, index == len(parts) - 1, recursive)
        return sorted({p for p in current if p.is_file() and not fileio.is_partial(p)})

    def notes(self, pattern: str) -> list[str]:
        notes = []
        if self.repeats:
            notes.append(f"{fileio.shown(pattern)}: {self.repeats} symlinked folder(s) lead to folders already "
                         "scanned (a loop or a second link); each real folder was scanned once")
        if self.stale_removed:
            notes.append(f"{fileio.shown(pattern)}: removed {self.stale_removed} temp file(s) left by an "
                         "interrupted run")
        return notes


def _folder_inputs(scanner: Scanner, folder: Path, outdir: Path, recursive: bool, errors: list,
                   unsure: set) -> list[Path]:
    files = [p for p in scanner.folder_files(folder, recursive) if media_kind(p)]
    previous = {p: is_previous_output(p, outdir) for p in files}
    unsure.update(p.resolve() for p, ours in previous.items() if ours is None)
    inputs = [p for p in files if previous[p] is False]
    if not inputs and not scanner.unreadable:
        if files:
            errors.append((folder, f"nothing to colorize in this folder: it only holds {len(files)} colorized "
                                   "output(s) of ours"))
        else:
            errors.append((folder, "no images or videos in this folder" + ("" if recursive else
                                                                           " (use --recursive?)")))
    return inputs


def _pattern_inputs(scanner: Scanner, pattern: str, outdir: Path, recursive: bool, errors: list, unsure: set) -> list:
    """-> [(input, output subfolder)] for one command-line input; its problems appended to `errors`."""
    path = Path(pattern)
    if path.is_dir():
        return [(p, p.relative_to(path).parent)
                for p in _folder_inputs(scanner, path, outdir, recursive, errors, unsure)]
    if path.exists():
        if fileio.is_partial(path):
            errors.append((pattern, "a temp file of an unfinished run, not an input"))
            return []
        return [(path, Path())]
    if glob.has_magic(pattern):
        files = scanner.glob(pattern, recursive)
        if not files and not scanner.unreadable:
            errors.append((pattern, "no files match this pattern"))
        return [(p, Path()) for p in files]
    errors.append((pattern, "no such file or folder"))
    return []


def expand_inputs(patterns, outdir: Path, recursive: bool, notes: list | None = None, unsure: set | None = None):
    """-> ([(input path, output path relative to outdir)], [(pattern or folder, error message)]); notes (one line
    each, for the user) are appended to `notes`, and to `unsure` the resolved paths of files skipped as earlier
    outputs that carry no mark (see is_previous_output; never to be replaced). A folder that cannot be read is an
    error: its files are missing."""
    found, errors = [], []
    notes = [] if notes is None else notes
    unsure = set() if unsure is None else unsure
    for pattern in patterns:
        scanner = Scanner()
        try:
            found += _pattern_inputs(scanner, pattern, outdir, recursive, errors, unsure)
        except ScanLimit:
            errors.append((pattern, f"scan stopped after {MAX_SCAN_ENTRIES} entries, nothing taken from it "
                                    "(give a narrower folder or pattern)"))
        errors += [(folder, f"folder cannot be read ({reason}); its files were not colorized")
                   for folder, reason in scanner.unreadable]
        notes += scanner.notes(pattern)
    unique, seen = [], set()
    for item in found:
        key = item[0].resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique, errors
