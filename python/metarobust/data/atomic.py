"""Atomic writes: files are written into a fresh temporary directory beside the target,
flushed and fsynced, then the directory is renamed onto the target, so a reader sees the
old directory or the new one, never a half-written one; a single file likewise
(:func:`replace_file`)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["fresh_dir", "fsync_dir", "replace_dir", "replace_file", "write_file"]


def fsync_dir(path: Path) -> None:
    """Flushes a directory's entries to disk (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Creates ``path``, lets ``write`` fill it, then flushes and fsyncs it."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory in ``parent`` (mode from the umask, unlike ``mkdtemp``)."""
    for _ in range(100):
        candidate = parent / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not create a temporary directory in {parent}")


def replace_dir(tmp: Path, path: Path) -> None:
    """Renames the finished directory ``tmp`` onto ``path``. An existing ``path`` is moved
    aside first (and deleted afterwards); it is put back if the rename fails. ``tmp`` is
    removed whatever happens."""
    old: Path | None = None
    try:
        fsync_dir(tmp)
        if path.exists():
            old = fresh_dir(path.parent, f".{path.name}.old-")
            os.replace(path, old)  # onto the empty directory just made
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                old = None
                raise
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def replace_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path`` and renames it onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write_file(tmp, lambda f: f.write(data))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
