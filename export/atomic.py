"""Atomic outputs: everything this toolchain writes appears whole or not at all.

A :class:`StagedPath` is a hidden temporary sibling of the target (``.name.partial-XXXX``, a
file or a folder) that replaces the target on :meth:`~StagedPath.commit` and is removed on
:meth:`~StagedPath.discard`. Packages, engine sets and videos are written through it, so an
interrupted write (an error, Ctrl-C, SIGTERM) never leaves a partial output and never touches an
existing one until the new one is complete.

Plain Python: no torch, no onnx.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PARTIAL_MARK = ".partial-"


class StagedPath:
    """A temporary file or folder beside ``target`` that becomes ``target`` on :meth:`commit`.

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
        parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.target.name}{PARTIAL_MARK}"
        if directory:
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        else:
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
            os.close(handle)
            self.path = Path(name)
        self.done = False

    def commit(self) -> Path:
        """Put the staged output in place of ``target`` (replacing what was there) and return it.

        A folder replaces an existing folder by moving the old one aside first, so at every
        moment either the old or the new output is complete at ``target``.
        """
        if self.done:
            raise RuntimeError(f"{self.path} was already committed or discarded")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, (0o777 if self.directory else 0o666) & ~umask)  # mkstemp/mkdtemp make it private
        if self.target.is_dir() and not self.target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
            os.replace(self.target, old / self.target.name)
            os.replace(self.path, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.path, self.target)
        self.done = True
        return self.target

    def discard(self) -> None:
        """Remove the staged output (idempotent; a committed one is left alone)."""
        if self.done:
            return
        if self.directory:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.done = True


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a staged folder for ``target``; it replaces ``target`` when the block succeeds and
    is removed when the block raises (including KeyboardInterrupt and SystemExit)."""
    staged = StagedPath(target, directory=True)
    try:
        yield staged.path
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Replace ``target`` with ``text`` in one rename."""
    staged = StagedPath(target, suffix=Path(target).suffix)
    try:
        staged.path.write_text(text)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
