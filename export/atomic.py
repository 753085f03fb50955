"""Atomic outputs: everything this toolchain writes appears whole or not at all.

One rule for every file and folder the tools write (outputs, packages, caches, work folders):

* **staged beside the target**: a :class:`StagedPath` is a hidden sibling of the target
  (``.NAME.partial-PID-XXXX``, a file or a folder) that replaces the target on
  :meth:`~StagedPath.commit` and is removed on :meth:`~StagedPath.discard`, so an interrupted write
  (an error, Ctrl-C, SIGTERM) never leaves a partial output and never touches an existing one
  until the new one is complete;
* **committed atomically, also when two processes race**: a file is put in place by one
  ``rename``; a folder replacing a folder is swapped with it in one step (``renameat2`` with
  ``RENAME_EXCHANGE`` on Linux, ``renamex_np`` on macOS; elsewhere, or on a file system that cannot,
  under the target's commit lock, :class:`FileLock`), so concurrent commits of one target all
  succeed and each leaves a whole folder;
* **leftovers of a killed run are recognised and removed** by the next write of the same target:
  the staged path carries its owner's process id and is locked (``flock``) by it while it lives,
  so :func:`sweep_leftovers` removes exactly those whose owner is gone (SIGKILL, a power cut), and
  puts back an old output that a killed commit had moved aside;
* **symlinks are not followed**: leftovers are opened with ``O_NOFOLLOW`` and a symlink among them
  is removed as a link; :func:`check_real_folder` refuses a folder the tool owns that has been
  replaced by a link.

Locks are ``fcntl.flock`` locks (POSIX: Linux, macOS). On a platform without ``fcntl`` (Windows)
there is no lock: staged paths are still written and committed, but a leftover cannot be told
from a live run's file and is left alone, and :class:`FileLock` cannot keep two runs apart.

Plain Python: no torch, no onnx.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import errno
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vsr_models.errors import VSRError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

PARTIAL_MARK = ".partial-"
OLD_MARK = ".old-"
LOCK_SUFFIX = ".lock"

#: errno values that mean the disk (or its quota) cannot take what is being written.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class WriteError(VSRError, OSError):
    """A file or folder cannot be written: no permission, no space left, a read-only disk."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]"
        return str(self.strerror)


class Busy(VSRError, RuntimeError):
    """Another process holds the lock of what this one wants to write."""


def shown(path: str | os.PathLike[str]) -> Path:
    """``path`` as the user named it: a staged component (``.NAME.partial-PID-XXXX``) shown as ``NAME``."""
    parts = [re.sub(rf"^\.(.+){re.escape(PARTIAL_MARK)}\d+-[^/]*$", r"\1", part) for part in Path(path).parts]
    return Path(*parts)


def write_problem(exc: OSError, target: str | os.PathLike[str]) -> WriteError | None:
    """A one-line :class:`WriteError` for an ``OSError`` raised while writing ``target``, or ``None``
    when the error is not about the disk or permissions (a bug, or a problem of the input)."""
    reason = exc.strerror or str(exc)
    target = shown(target)
    if exc.errno in _NO_ROOM:
        return WriteError(
            exc.errno,
            f"cannot write {target}: {reason}; free space there (or choose another place to write) and run "
            "again; nothing was written",
        )
    if exc.errno == errno.ELOOP:
        place = shown(exc.filename) if exc.filename else target
        return WriteError(
            exc.errno, f"cannot write {target}: {place} is a symbolic link where this tool keeps a file; remove it"
        )
    if exc.errno == errno.ENOTDIR:
        place = shown(exc.filename) if exc.filename else target
        return WriteError(
            exc.errno, f"cannot write {target}: a part of {place} is a file, not a folder; choose another place"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        place = shown(exc.filename) if exc.filename else target.parent
        return WriteError(
            exc.errno, f"cannot write {target}: {place}: {reason}; fix its permissions or choose another place"
        )
    return None


@contextlib.contextmanager
def writing(target: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full disk, a read-only disk or a permission error met inside the block into a one-line
    :class:`WriteError` naming ``target``; other errors pass unchanged."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        problem = write_problem(exc, target)
        if problem is None:
            raise
        raise problem from exc


# ---- locks ----------------------------------------------------------------------------------------


def _lock_fd(fd: int, blocking: bool) -> bool:
    """``flock`` ``fd`` exclusively; ``False`` if another open file holds it (and not ``blocking``)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without flock support: no lock, as on Windows
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return True
        raise
    return True


class FileLock:
    """An exclusive lock held through a lock file at ``path`` (``flock``), that says who holds it.

    The lock file holds one line naming its holder (process id, host, start time, command), which
    :meth:`holder` reads back for the error of whoever finds it taken. :meth:`release` removes the
    file while still holding the lock; an acquirer that then finds the path gone or replaced tries
    again, so removing the file never lets two holders in. A lock file left by a killed holder is
    free (the kernel drops a dead process's locks) and is taken over.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock (waiting for it when ``blocking``); ``False`` if it is taken and not ``blocking``."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this process")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o644)
            try:
                if not _lock_fd(fd, blocking):
                    os.close(fd)
                    return False
                mine = os.fstat(fd)
                try:
                    now = os.lstat(self.path)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)  # the holder before us removed or replaced the file: lock the new one
        self._fd = fd
        started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
        line = f"pid {os.getpid()} on {socket.gethostname()} since {started}: {command}"
        os.ftruncate(fd, 0)
        os.write(fd, line.encode("utf-8", "replace")[:4000] + b"\n")
        return True

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ("" if unknown)."""
        try:
            with open(self.path, "rb") as f:
                return f.read(4096).decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Remove the lock file and let go of the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # the file stays; the next acquirer takes it over


# ---- swapping two paths --------------------------------------------------------------------------

#: renameat2(2) flag (Linux 3.15+, glibc 2.28+) and renamex_np(2) flag (macOS 10.12+): swap two paths.
_RENAME_EXCHANGE = 2
_RENAME_SWAP = 2
_AT_FDCWD = -100


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # Windows: no C library by that name
        return None


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap ``a`` and ``b`` (two existing paths on one file system) in one atomic step; ``False``
    where the system or the file system cannot (then nothing was changed)."""
    libc = _libc()
    first, second = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and libc is not None and hasattr(libc, "renameat2"):
        done = libc.renameat2(_AT_FDCWD, first, _AT_FDCWD, second, _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and libc is not None and hasattr(libc, "renamex_np"):
        done = libc.renamex_np(first, second, _RENAME_SWAP)
    else:
        return False
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # a file system (or kernel) without the swap
    raise OSError(code, os.strerror(code), os.fsdecode(first), None, os.fsdecode(second))


# ---- leftovers of killed runs --------------------------------------------------------------------


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie has ended)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass  # no /proc (macOS): ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str, mark: str) -> int | None:
    """The process id in a staged name ``.TARGET<mark>PID-XXXX``, ``None`` if it has none."""
    head = name.split(mark, 1)[1].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _is_leftover(path: Path, mark: str) -> bool:
    """Whether the staged path ``path`` was left by a process that is gone: no process holds its
    lock and the process its name records has ended."""
    if fcntl is None:
        return False  # without locks a live run's file cannot be told from a leftover
    pid = _owner_pid(path.name, mark)
    if pid is None or _process_alive(pid):
        return False
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        return True  # never ours: a staged path is a file or a folder
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC | os.O_NONBLOCK
    if stat.S_ISDIR(info.st_mode):
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        return _lock_fd(fd, blocking=False)
    finally:
        os.close(fd)


def _rename_folder(source: Path, target: Path) -> bool:
    """Rename the folder ``source`` to the absent path ``target``; ``False`` if a folder is already
    there (another process put it there first)."""
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def remove_path(path: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree (links inside are not followed)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def sweep_leftovers(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers of ``target`` left beside it: staged ``.NAME.partial-*`` files and
    folders, ``.NAME.old-*`` folders of an interrupted commit (whose old output is first put back
    at ``target`` if nothing took its place), and a commit lock ``.NAME.lock`` nobody holds. Return
    what was removed. A live writer's staged path (this process's included) is left alone."""
    target = Path(target)
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for mark in (PARTIAL_MARK, OLD_MARK):
        prefix = f".{target.name}{mark}"
        for entry in entries:
            if entry.name.startswith(prefix) and _is_leftover(Path(entry.path), mark):
                if mark == OLD_MARK:
                    _put_back(Path(entry.path) / target.name, target)
                remove_path(Path(entry.path))
                removed.append(Path(entry.path))
    lock = FileLock(target.parent / f".{target.name}{LOCK_SUFFIX}")
    if fcntl is not None and os.path.lexists(lock.path):
        try:
            if lock.acquire(blocking=False):
                lock.release()  # removes the file, still holding the lock
                removed.append(lock.path)
        except OSError:
            pass  # a link or an unreadable file in its place: a commit that needs it says so
    return removed


def _put_back(old: Path, target: Path) -> None:
    """Return the output a killed commit moved aside (``old``) to ``target``, unless something is there."""
    try:
        if not stat.S_ISDIR(os.lstat(old).st_mode) or os.path.lexists(target):
            return
        os.rename(old, target)
    except OSError:
        pass  # gone meanwhile, or another writer put something there: the old one is removed


def check_real_folder(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """The ``lstat`` of ``path``, which must be a folder (not a link to one) owned by this user; a
    :class:`WriteError` naming ``what`` otherwise."""
    path = Path(path)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise WriteError(
            errno.ELOOP,
            f"{what} {path} is a symbolic link (to {os.readlink(path)}), not a folder this tool made; "
            "remove the link and run again",
        )
    if not stat.S_ISDIR(info.st_mode):
        raise WriteError(errno.ENOTDIR, f"{what} {path} is not a folder; remove it and run again")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise WriteError(
            errno.EPERM,
            f"{what} {path} belongs to another user (uid {info.st_uid}); remove it or choose another place",
        )
    return info


def shared_folder_warning(path: str | os.PathLike[str], what: str) -> str | None:
    """A warning when others could change what is in ``path`` (writable by group or others, or
    owned by another user), ``None`` when only this user can. A folder of this user's with the sticky
    bit (as ``/tmp``) draws none: others may add entries there but not rename or remove this user's,
    and every cache folder below it is made private and checked on its own."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not hasattr(os, "geteuid"):
        return None
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid() and info.st_uid != 0:
        who = f"belongs to another user (uid {info.st_uid})"
    elif mode & 0o022 and not (mode & stat.S_ISVTX and info.st_uid == os.geteuid()):
        who = f"is writable by {'others' if mode & 0o002 else 'its group'} (mode {mode:o})"
    else:
        return None
    return (
        f"{what} {path} {who}: whoever can write there can change what this tool runs; make it "
        f"private (chmod 700 {path}) or set VSR_CACHE_DIR to a private folder"
    )


# ---- staged paths ----------------------------------------------------------------------------------


class StagedPath:
    """A temporary file or folder beside ``target`` that becomes ``target`` on :meth:`commit`.

    Creating one first removes the leftovers of killed writers of the same target
    (:func:`sweep_leftovers`). The staged path is named ``.NAME.partial-PID-XXXX`` and locked by this
    process until it is committed or discarded, so that a later writer can tell a leftover from a
    live write.

    Args:
        target: the path to write.
        directory: stage a folder (else a file).
        suffix: kept on a staged file's name (``.mp4``), so tools that guess the format by the
            suffix (FFmpeg) see the right one.
    """

    def __init__(self, target: str | os.PathLike[str], *, directory: bool = False, suffix: str = "") -> None:
        self.target = Path(target)
        self.directory = directory
        parent = self.target.parent
        with writing(self.target):
            parent.mkdir(parents=True, exist_ok=True)
            sweep_leftovers(self.target)
            prefix = f".{self.target.name}{PARTIAL_MARK}{os.getpid()}-"
            if directory:
                self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
                flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
                self._fd: int | None = os.open(self.path, flags)
            else:
                handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
                self.path, self._fd = Path(name), handle
        _lock_fd(self._fd, blocking=True)  # new and ours alone: granted at once
        self.done = False

    def _let_go(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def commit(self) -> Path:
        """Put the staged output in place of ``target`` (replacing what was there) and return it.

        A folder replaces an existing folder by swapping the two (or, where that cannot be done, by
        moving the old one aside under the target's commit lock), so at every moment the old or the
        new output is complete at ``target``, and concurrent commits of one target each succeed.
        """
        if self.done:
            raise RuntimeError(f"{self.path} was already committed or discarded")
        umask = os.umask(0)
        os.umask(umask)
        try:
            with writing(self.target):
                os.chmod(self.path, (0o777 if self.directory else 0o666) & ~umask)  # mkstemp/mkdtemp: private
                if self.directory:
                    self._commit_folder()
                else:
                    os.replace(self.path, self.target)
        except BaseException:
            self.discard()
            raise
        self.done = True
        self._let_go()
        return self.target

    def _commit_folder(self) -> None:
        """Put the staged folder at ``target``. Where the system can swap two paths in one step
        (:func:`exchange`: Linux, macOS) an existing folder is swapped with the staged one, which
        then holds the old output and is removed; no lock is needed, and two commits racing each
        leave a whole folder, the later one's. Elsewhere the target's commit lock is taken and the
        old folder moved aside first (a kill between the two renames leaves it in ``.NAME.old-*``,
        which the next write of ``target`` puts back if nothing took its place)."""
        for _ in range(100):  # each turn another process changed the target; one always ends a turn
            try:
                existing = os.lstat(self.target)
            except FileNotFoundError:
                try:
                    os.rename(self.path, self.target)  # a folder: refused if one appeared meanwhile
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                        raise
                    continue
                return
            if not stat.S_ISDIR(existing.st_mode):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.target)  # a file or a link (not what it points to), replaced as asked
                continue
            try:
                swapped = exchange(self.path, self.target)
            except FileNotFoundError:
                continue  # the target went away meanwhile
            if swapped:
                remove_path(self.path)  # the old output, under the staged name
                return
            self._commit_folder_locked()
            return
        raise OSError(errno.EBUSY, f"{self.target} keeps changing while this run puts its output there")

    def _commit_folder_locked(self) -> None:
        """The commit of a folder where paths cannot be swapped: under the target's commit lock, the
        old folder moved aside, the new one put in place, the old one removed. A commit that found no
        folder at ``target`` renames without the lock (a rename onto an absent path is atomic); if one
        lands in the moment the old folder is aside, it is the later commit and this one gives way."""
        lock = FileLock(self.target.parent / f".{self.target.name}{LOCK_SUFFIX}")
        old: Path | None = None
        with lock:
            try:
                existing = os.lstat(self.target)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(self.target)
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                if not _rename_folder(self.path, self.target):
                    remove_path(self.path)  # another commit put its folder there meanwhile: the later one
                return
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}{OLD_MARK}{os.getpid()}-", dir=self.target.parent))
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile (an unlocked writer's unlink)
                os.replace(self.target, old / self.target.name)
            try:
                if not _rename_folder(self.path, self.target):
                    remove_path(self.path)  # another commit landed while the old folder was aside
            except BaseException:
                if (old / self.target.name).exists() and not os.path.lexists(self.target):
                    os.replace(old / self.target.name, self.target)  # put the old one back
                shutil.rmtree(old, ignore_errors=True)
                raise
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staged output (idempotent; a committed one is left alone)."""
        if self.done:
            return
        remove_path(self.path)
        self.done = True
        self._let_go()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staged folder for ``target``; it replaces ``target`` when the block succeeds and
    is removed when the block raises (including KeyboardInterrupt and SystemExit). A full disk or a
    permission error inside the block is a one-line :class:`WriteError` naming ``target``."""
    staged = StagedPath(target, directory=True)
    try:
        with writing(target):
            yield staged.path
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Replace ``target`` with ``text`` in one rename."""
    staged = StagedPath(target, suffix=Path(target).suffix)
    try:
        with writing(target):
            staged.path.write_text(text)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
