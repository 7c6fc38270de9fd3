"""Scratch files for kernels too large to keep in memory: room, creation, page release.

The scaling path (:mod:`bigsink.kernels.scaling`) keeps the kernel of a cost read from a Zarr store
in a scratch file, mapped, in this process or on a Dask worker. Mapped pages that a pass
has touched count toward the process's resident set (RSS) -- which a Dask nanny compares
with the worker's memory limit -- although they are the OS's file cache and cost no
memory of their own. :func:`release_pages` drops a range of them from the mapping after
use (``MADV_DONTNEED``; for a shared file mapping the data stays in the file and its cache),
so a pass over a file of any size keeps only the window it is working on resident.

Plain OS and NumPy: the executors import it to size their scratch room on the workers.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SCRATCH_MARGIN", "in_memory_fs", "kernel_budget", "physical_memory",
           "release_pages", "scratch_array", "scratch_room"]

#: Free space a scratch kernel file leaves on its disk.
SCRATCH_MARGIN = 1 << 30


LOG = logging.getLogger(__name__)


def physical_memory() -> int:
    """This machine's physical memory in bytes (8 GiB where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def kernel_budget() -> int:
    """Bytes a resident kernel may take in memory: 40% of physical memory (at most 16 GiB)."""
    return int(min(0.4 * physical_memory(), 16 << 30))


def in_memory_fs(path: str) -> bool:
    """Whether ``path`` lies on a file system kept in memory (tmpfs, ramfs: ``/tmp`` on
    some Linux distributions, ``/dev/shm``), from ``/proc/mounts`` (False without it)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    real, best, kind = os.path.realpath(path), "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")                   # (escaped spaces)
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):                   # the deepest mount wins
            best, kind = point, fields[2]
    return kind in ("tmpfs", "ramfs")


def scratch_room() -> tuple[int, str]:
    """Bytes that scratch files may take in ``tempfile.gettempdir()`` on this machine, and
    where (for messages): its free space less SCRATCH_MARGIN, and no more than
    :func:`kernel_budget` if that directory is kept in memory."""
    where = tempfile.gettempdir()
    free = max(0, shutil.disk_usage(where).free - SCRATCH_MARGIN)
    if in_memory_fs(where):
        room = min(free, kernel_budget())
        return room, (f"the room for its scratch file in {where!r}, a file system in "
                      f"memory ({room / 2**30:.1f} GiB: 40% of memory at most; set TMPDIR "
                      "to a directory on disk)")
    return free, (f"the free space for its scratch file in {where!r} ({free / 2**30:.1f} "
                  f"GiB, less {SCRATCH_MARGIN / 2**30:g} GiB kept free; set TMPDIR to a "
                  "larger disk)")


def scratch_array(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A writable array of ``shape`` whose memory is a scratch file, mapped.

    The file is created in ``tempfile.gettempdir()`` and unlinked at once: it lives as
    long as the mapping, i.e. the returned array. Its blocks are reserved first
    (``posix_fallocate`` where the OS has it), so a full disk raises OSError here instead
    of killing the process on a write to the mapping."""
    nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    fd, path = tempfile.mkstemp(prefix="bigsink-kernel-")
    LOG.info("scratch file %s: %.1f MiB, mapped and unlinked (it goes with the kernel)",
             path, nbytes / 2**20)
    try:
        os.unlink(path)
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        else:                                        # (macOS) sparse: blocks on write
            os.ftruncate(fd, nbytes)
        buffer = mmap.mmap(fd, nbytes)               # shared: pages are the file's cache
        if hasattr(mmap, "MADV_SEQUENTIAL"):         # passes run in order: read ahead, and
            buffer.madvise(mmap.MADV_SEQUENTIAL)     # evict these pages first under pressure
    finally:
        os.close(fd)                                 # the mapping keeps the file open
    return np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def _mapping(array: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """The file mapping under ``array`` (a view of a :func:`scratch_array`) and the address
    where it starts; None for memory of any other kind."""
    root, base = array, array.base
    while isinstance(base, np.ndarray):
        root, base = base, base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not isinstance(base, mmap.mmap):
        return None
    return base, int(root.__array_interface__["data"][0])


def release_pages(view: np.ndarray) -> None:
    """Drop the whole pages of ``view`` (a contiguous view of a :func:`scratch_array`) from
    this process's mapping: its resident set shrinks, the data stays in the file (and in
    the OS's file cache while there is memory for it). Nothing for other memory, or where
    the OS has no ``MADV_DONTNEED``."""
    found = _mapping(view)
    if found is None or not hasattr(mmap, "MADV_DONTNEED") or view.nbytes == 0:
        return
    assert view.flags.c_contiguous, "release_pages takes a contiguous view"
    buffer, start = found
    page = mmap.PAGESIZE
    lo = int(view.__array_interface__["data"][0]) - start
    hi = lo + view.nbytes
    lo, hi = -(-lo // page) * page, hi // page * page         # the pages wholly inside
    if hi > lo:
        buffer.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
