"""The one I/O layer: which files to read, and how every output file is named and written.

Output names keep the input's stem and the prompt text in any language; two outputs of a batch never
share a name, no output replaces an input, and concurrent runs into one folder never write the same
file (each run claims the names it writes). Every file is written to a unique temporary name in
its folder and renamed into place, so it is whole or absent.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DiskFullError, SegkitError
from .imageio import IMAGE_SUFFIXES

MAX_NAME_BYTES = 255  # the limit of ext4, APFS, NTFS (UTF-16 units there) and most others
UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')  # what Windows, macOS or Linux refuse in a name
WINDOWS_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
TEMP_PREFIX = ".segkit-tmp-"
WRITERS = 2  # files of one image encoded at a time


@dataclass
class Inputs:
    """Paths to process, the arguments that named nothing readable, and hints for an empty result."""

    paths: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


def collect_inputs(args, recursive: bool = False, exclude: Path | None = None,
                   suffixes=IMAGE_SUFFIXES) -> Inputs:
    """Expand files, folders (files with ``suffixes`` inside; all levels with ``recursive``) and globs.

    A file named explicitly is kept whatever its suffix; nothing inside ``exclude`` (the output
    folder, compared by real path so a symlink cannot hide it) is taken from folders and globs.
    Order is argument order, then sorted.
    """
    found = Inputs()
    seen = set()
    skip = os.path.realpath(exclude) if exclude is not None else None
    skipped = 0

    def inside_output(path: Path) -> bool:
        real = os.path.realpath(path)
        return skip is not None and (real == skip or real.startswith(skip + os.sep))

    def add(path: Path, named: bool = False):
        nonlocal skipped
        key = os.path.realpath(path)
        if key in seen:
            return
        if not named and inside_output(path):
            skipped += 1
            return
        seen.add(key)
        found.paths.append(path)

    def wanted(path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in suffixes

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            if skip is not None and os.path.realpath(path) == skip:
                found.hints.append(f"{arg} is the output folder, so its files are not inputs; choose another -o")
                continue
            children = sorted(path.glob("**/*" if recursive else "*"))
            for child in children:
                if wanted(child):
                    add(child)
            if not recursive and not any(wanted(c) for c in children) and any(
                    wanted(c) for c in path.glob("*/**/*")):
                found.hints.append(f"{arg} has images only in sub-folders; add --recursive")
        elif path.is_file():
            add(path, named=True)
        elif glob.has_magic(str(arg)):
            files = [Path(m) for m in sorted(glob.glob(str(arg), recursive=recursive)) if wanted(Path(m))]
            if not files:
                found.missing.append(f"{arg}: no image files match this pattern")
            for m in files:
                add(m)
        else:
            found.missing.append(f"{arg}: no such file or folder")
    if skipped and not found.paths:
        found.hints.append(f"{skipped} file(s) inside the output folder {exclude} were left out; choose another -o")
    return found


def safe_name(text: str, fallback: str, max_bytes: int = 120) -> str:
    """``text`` as a file-name part: kept in any script, with only what a common file system refuses
    replaced (path separators, control characters, ``<>:"/\\|?*``, trailing dots and spaces,
    Windows device names) and what would hide the file (leading dots), cut at a character boundary
    to ``max_bytes`` of UTF-8."""
    name = unicodedata.normalize("NFC", UNSAFE.sub("_", str(text))).lstrip("._ ").rstrip(". ")
    name = shorten(name, max_bytes).rstrip(". ")
    if not name or set(name) <= {"_", "."}:
        return fallback
    if name.split(".")[0].casefold() in WINDOWS_DEVICES:
        name = "_" + name
    return name


def shorten(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def name_key(name: str) -> str:
    """How file systems compare names: case-insensitively (macOS, Windows) and Unicode-normalised (APFS)."""
    return unicodedata.normalize("NFC", name).casefold()


def check_writable(folder: Path) -> None:
    """Create the output folder and prove it is writable, before any model loads."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=TEMP_PREFIX):
            pass
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise DiskFullError(f"{folder}: the disk is full; free some space or choose another -o") from None
        raise SegkitError(
            f"{folder}: output folder is not writable ({exc.strerror or exc}); choose another with -o") from None


class _FileLock:
    """An advisory lock on an open file that the operating system drops when the process dies."""

    def __init__(self, path: Path):
        self.file = open(path, "a+b")

    def acquire(self, blocking: bool = True) -> bool:
        try:
            if os.name == "nt":
                import msvcrt

                self.file.seek(0)
                msvcrt.locking(self.file.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            return True
        except OSError:
            return False

    def release(self) -> None:
        if os.name == "nt":
            import msvcrt

            self.file.seek(0)
            msvcrt.locking(self.file.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        self.file.close()


class OutputFolder:
    """One run's view of an output folder: the names it claimed, and atomic writes into it.

    A run holds a lock on its own claims file (``.segkit-run-<pid>-<n>``) for as long as it runs and
    lists there every name it claims. Before claiming, it reads the claims of every other live run
    (a claims file whose lock can be taken belongs to a finished or crashed run and is removed), all
    under the folder's lock ``.segkit.lock``, and keeps them taken for its whole life (that run may
    finish first); a file another run wrote after this run started counts as taken too (claimed
    between two looks). So runs that overlap never replace each other's files, while a rerun after
    a finished run replaces that run's files.
    """

    def __init__(self, folder, protected=()):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._protected = {name_key(os.path.realpath(p)) for p in protected}
        self._mine: set[str] = set()  # names this run claimed
        self._seen: set[str] = set()  # names other live runs claimed while this one ran
        self._started_ns = time.time_ns()
        self._claims_path = None
        folder_lock = self._folder_lock()
        try:  # made and locked under the folder's lock, so no other run can take it for a dead one's
            self._seen = {name_key(n) for n in self._others()}
            fd, claims = tempfile.mkstemp(dir=self.folder, prefix=f".segkit-run-{os.getpid()}-")
            os.close(fd)
            self._claims_path = Path(claims)
            self._claims = _FileLock(self._claims_path)
            self._claims.acquire()
        finally:
            folder_lock.release()
            folder_lock.close()

    def close(self) -> None:
        """End the run: its claims go, its files stay (and the folder's lock file, when no other run
        uses the folder)."""
        if self._claims is None:
            return
        self._claims.release()
        self._claims.close()
        self._claims = None
        with contextlib.suppress(OSError):
            self._claims_path.unlink()
        lock = self._folder_lock(blocking=False)
        if lock is not None:
            try:
                if not self._others():
                    with contextlib.suppress(OSError):
                        (self.folder / ".segkit.lock").unlink()
            finally:
                lock.release()
                lock.close()

    def _folder_lock(self, blocking: bool = True):
        """The folder's lock, held; None if ``blocking`` is off and another run holds it.

        A run that removes the lock file does so while holding it, so a waiter that then gets the
        lock of a removed file tries again with the current one.
        """
        path = self.folder / ".segkit.lock"
        while True:
            lock = _FileLock(path)
            if not lock.acquire(blocking):
                lock.close()
                return None
            try:
                if os.stat(path).st_ino == os.fstat(lock.file.fileno()).st_ino:
                    return lock
            except FileNotFoundError:
                pass
            lock.release()
            lock.close()

    def _others(self) -> set[str]:
        """Names claimed by other live runs; removes the claims files of dead ones."""
        taken = set()
        for path in self.folder.glob(".segkit-run-*"):
            if path == self._claims_path:
                continue
            lock = _FileLock(path)
            try:
                if lock.acquire(blocking=False):  # nobody holds it: that run is over
                    lock.release()
                    with contextlib.suppress(OSError):
                        path.unlink()
                else:
                    taken.update(path.read_text(encoding="utf-8").split("\n"))
            finally:
                lock.close()
        return taken

    def claim(self, make_names) -> tuple[str, list[str]]:
        """Claim every name one image will write, together.

        ``make_names(k)`` gives the names for the k-th candidate stem (k = 0, 1, …); the first
        candidate none of whose names this run or a live run has claimed, and none of which is an
        input file, wins. Returns (k, its names).
        """
        folder_lock = self._folder_lock()
        try:
            self._seen |= {name_key(n) for n in self._others()}
            taken = self._mine | self._seen
            k = 0
            while True:
                names = make_names(k)
                keys = [name_key(n) for n in names]
                if len(set(keys)) == len(keys) and not any(
                        key in taken or self._is_input(name) or self._written_by_another_run(name, key)
                        for key, name in zip(keys, names)):
                    break
                k += 1
            self._mine.update(keys)
            self._claims.file.write(("\n".join(keys) + "\n").encode("utf-8"))
            self._claims.file.flush()
            return k, names
        finally:
            folder_lock.release()
            folder_lock.close()

    def _written_by_another_run(self, name: str, key: str) -> bool:
        if key in self._mine:
            return False
        try:
            return os.stat(self.folder / name).st_mtime_ns >= self._started_ns
        except OSError:
            return False

    def _is_input(self, name: str) -> bool:
        return name_key(os.path.realpath(self.folder / name)) in self._protected

    def write_all(self, files: dict, abort=None) -> list[Path]:
        """Write ``{name: write(path)}`` atomically as a group: every file goes to a temporary name
        first; only when all are complete are they renamed into place. On any failure (disk full,
        an interrupt, ``abort()`` true) no file of the group is left, temporary or final."""
        temps = {}
        done = []
        made = []
        try:
            for name in files:
                target = self.folder / name
                if not target.parent.is_dir():
                    target.parent.mkdir(parents=True)
                    made.append(target.parent)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX, suffix=Path(name).suffix)
                os.close(fd)
                temps[name] = Path(tmp)
            self._write_each(files, temps, abort)
            for name, tmp in temps.items():
                os.replace(tmp, self.folder / name)
                done.append(self.folder / name)
            return done
        except BaseException as exc:
            for path in list(temps.values()) + done:
                with contextlib.suppress(OSError):
                    path.unlink()
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                raise DiskFullError(f"{self.folder}: the disk is full; free some space or choose another -o") from None
            raise


    @staticmethod
    def _write_each(files: dict, temps: dict, abort) -> None:
        """Write the group's files, two at a time: PNG and JPEG encoders release the GIL, so one image's
        overlay and heatmaps encode side by side."""
        from concurrent.futures import ThreadPoolExecutor

        if len(files) == 1:
            (name, write), = files.items()
            write(temps[name])
        else:
            with ThreadPoolExecutor(WRITERS) as pool:
                for future in [pool.submit(write, temps[name]) for name, write in files.items()]:
                    future.result()
        if abort is not None and abort():
            raise KeyboardInterrupt


def write_json(path: Path, record) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(record, out, indent=1, ensure_ascii=False)
