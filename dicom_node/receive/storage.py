"""Where instances live on disk, and how a file gets there durably.

A file is first complete under a temporary name in the same folder tree, fsynced, then renamed to
its final name and the folder fsynced: a crash leaves either the old state or the whole file. A
job's many outputs are flushed together before their renames (:func:`atomic_files`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dicom_node.uids import require_uid


def instance_path(root: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """``root/<study>/<series>/<sop>.dcm``; every part is checked to be a UID first."""
    return (
        root
        / require_uid(study_uid, "Study Instance UID")
        / require_uid(series_uid, "Series Instance UID")
        / f"{require_uid(sop_uid, 'SOP Instance UID')}.dcm"
    )


def tmp_dir(data_dir: Path) -> Path:
    return data_dir / "tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents, fsyncing the folder that holds each new one, so
    a power cut cannot drop the new entry (and every file later committed below it)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:  # another association made it meanwhile
            pass
        _fsync_dir(new.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staged_name(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.{uuid.uuid4().hex}.part"


def _publish(staged: Path, dst: Path) -> None:
    """The one atomic step: the complete staged file fsynced, renamed over ``dst``, folder fsynced."""
    fsync_file(staged)
    os.replace(staged, dst)
    _fsync_dir(dst.parent)


@contextmanager
def atomic_file(dst: Path) -> Iterator[BinaryIO]:
    """Write ``dst`` whole or not at all: how the node writes every file it makes and keeps.

    Yields a file staged beside ``dst`` (``.<name>.<random>.part``, which :func:`remove_stale_parts`
    clears after a crash); when the block ends without an exception it is published as ``dst``,
    otherwise removed. Many files into one folder: :func:`atomic_files`.
    """
    make_folders(dst.parent)
    staged = _staged_name(dst)
    try:
        with open(staged, "wb") as fh:
            yield fh
        _publish(staged, dst)
    finally:
        staged.unlink(missing_ok=True)


def atomic_files(folder: Path, files: Iterable[tuple[str, bytes]]) -> list[Path]:
    """Write each ``(name, data)`` as ``folder/name``, each whole or not at all, flushed together.

    As :func:`atomic_file`, but all files are staged first and made durable by one ``syncfs`` of
    the folder's filesystem before any is renamed: one journal commit, not one per file (192
    files of 200 kB, the size of the Siemens series' SC images: 0.12 s instead of 0.23 s on ext4). A name is still never
    seen with partial contents. ``files`` is consumed lazily, so the caller can encode as it goes.
    Where ``syncfs`` is missing (not Linux) each file is fsynced.
    """
    make_folders(folder)
    staged: list[tuple[Path, Path]] = []
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # opened first: syncfs reports errors since then
    try:
        for name, data in files:
            dst = folder / name
            part = _staged_name(dst)
            staged.append((part, dst))
            with open(part, "wb") as fh:
                fh.write(data)
        if staged:
            _sync_filesystem(fd, [part for part, _ in staged])
            for part, dst in staged:
                os.replace(part, dst)
            os.fsync(fd)
    finally:
        os.close(fd)
        for part, _ in staged:
            part.unlink(missing_ok=True)
    return [dst for _, dst in staged]


def _sync_filesystem(folder_fd: int, files: list[Path]) -> None:
    """Make ``files`` durable: ``syncfs`` on the folder's filesystem, else an fsync per file."""
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        for path in files:
            fsync_file(path)
        return
    if syncfs(folder_fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs failed: {os.strerror(error)}")


_LIBC = ctypes.CDLL(None, use_errno=True)


def commit_file(src: Path, dst: Path, scratch: Path) -> None:
    """Move the finished file ``src`` durably to ``dst`` (replacing it), via ``scratch`` if needed.

    ``src`` is hard-linked when it is on the same filesystem; otherwise it is copied to a staged
    name beside ``dst`` first. Either way ``dst`` appears whole or not at all.
    """
    make_folders(dst.parent)
    staged = _staged_name(dst)
    try:
        try:
            os.link(src, staged)
        except OSError:
            shutil.copyfile(src, staged)
        _publish(staged, dst)
    finally:
        staged.unlink(missing_ok=True)


def remove_stale_parts(root: Path) -> int:
    """Delete ``.part`` files a crash left behind; they were never acknowledged."""
    count = 0
    if not root.exists():
        return 0
    for part in root.rglob(".*.part"):
        part.unlink(missing_ok=True)
        count += 1
    return count


def free_bytes(path: Path) -> int:
    """Free space on the filesystem holding ``path`` (the nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def remove_orphans(scratch: Path, idle_s: float) -> int:
    """Delete files in ``scratch`` untouched for ``idle_s`` seconds: partial instances of
    associations that ended. A live association writes each PDU as it arrives and is dropped by
    the network timeout once it stops, so a file this old has no writer and was never acknowledged."""
    count = 0
    cutoff = time.time() - idle_s
    try:
        entries = list(os.scandir(scratch))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                count += 1
        except OSError:
            pass
    return count
