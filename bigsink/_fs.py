"""The one atomic writer: every file or directory bigsink writes appears whole or not at all.

An output is built under a temporary name next to its destination (``PATH.tmp-XXXX``) and
renamed into place only once complete, so a crash or an error never leaves a partial file,
array or group at the requested path. Replacing a directory moves the old one aside first
(``PATH.old-XXXX``, removed after the rename): for an instant neither is at ``PATH``, and a
reader that finds nothing there can use :func:`old_copies` (checkpoints do). Outputs are
local (a rename is atomic there; object stores have no such operation). Two writers of one
path in this machine's processes (two solves sharing a checkpoint, two saves at once) take
turns for the swap: a lock per destination (:func:`swap_lock`, a ``filelock`` in the temp
directory, so nothing is left beside the output); the later one's output stays.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from filelock import FileLock

from .errors import InputError

__all__ = ["FORMAT", "atomic_path", "check_replace", "check_target", "local_path", "marked",
           "old_copies", "remove", "swap_lock"]

#: Format marker stored in the attributes of every Zarr group or array bigsink writes.
FORMAT = "bigsink"


def local_path(name: str, path: Any) -> str:
    """``path`` as an absolute local file-system path, or an InputError naming ``name`` for
    a URL or something that is not a path."""
    if not isinstance(path, str | bytes) and not hasattr(path, "__fspath__"):
        raise InputError(f"{name} must be a local path; got {path!r}.")
    where = os.fsdecode(os.fspath(path))
    if "://" in where:
        raise InputError(
            f"{name}: {where!r} is a URL; bigsink writes outputs to local directories only "
            "(a rename is atomic there). Write locally, then copy to the object store."
        )
    return os.path.abspath(where)


def marked(path: str) -> bool:
    """Whether ``path`` is a Zarr group or array that bigsink wrote: its ``zarr.json``
    carries the attribute ``format`` = :data:`FORMAT` (or a checkpoint's
    ``bigsink-checkpoint``)."""
    try:
        with open(os.path.join(path, "zarr.json")) as fh:
            attrs = json.load(fh).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(attrs, dict) and str(attrs.get("format", "")).startswith(FORMAT)


def check_target(name: str, path: str, overwrite: bool,
                 ours: Callable[[str], bool] = marked) -> None:
    """InputError unless ``path`` may be written in an existing directory: nothing is
    there, or ``overwrite`` and what is there is bigsink's own output (``ours``: by default
    a Zarr group or array with bigsink's format marker, :func:`marked`). Whatever bigsink did
    not write is never replaced, ``overwrite`` or not."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise InputError(f"{name}: the parent directory {parent!r} does not exist; create it.")
    if os.path.lexists(path):
        check_replace(name, path, overwrite, lambda: not os.path.islink(path) and ours(path))


def check_replace(name: str, path: str, overwrite: bool, ours: Callable[[], bool]) -> None:
    """The rule for something already at ``path`` (a local path or a URL): an InputError
    unless ``overwrite`` was asked for and ``ours()`` says bigsink wrote it."""
    if not overwrite:
        raise InputError(
            f"{name}: {path!r} already exists. Choose another path or pass overwrite=True "
            "(--overwrite on the command line)."
        )
    if not ours():
        raise InputError(
            f"{name}: {path!r} exists and is not an output of bigsink (it has no bigsink "
            "format marker), so it is not replaced even with overwrite: move it away or "
            "choose another path."
        )


def remove(path: str) -> None:
    """Remove a file, link or directory tree if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def old_copies(path: str) -> list[str]:
    """Older copies of ``path`` left by an interrupted replacement, oldest first."""
    return sorted(glob.glob(glob.escape(path) + ".old-*"), key=os.path.getmtime)


@contextmanager
def atomic_path(path: str | os.PathLike[str], overwrite: bool = True) -> Iterator[str]:
    """Yield a temporary name next to ``path`` to write a file or directory under; when the
    block ends without an exception, move it to ``path``.

    On an exception the temporary output is removed and nothing changes at ``path`` (an
    OSError such as a full disk is raised again naming ``path``, not the temporary name). An
    existing ``path`` is replaced when ``overwrite`` (a file in one atomic rename; a
    directory is moved aside first and removed after), else InputError: it appeared while
    the output was being written.
    """
    target = os.path.abspath(os.fspath(path))
    tag = uuid.uuid4().hex[:12]
    tmp = f"{target}.tmp-{tag}"
    try:
        yield tmp
    except OSError as exc:             # a full disk, a size limit, no permission: say where
        remove(tmp)
        if exc.errno is None or target in str(exc):
            raise
        raise OSError(exc.errno, f"{os.strerror(exc.errno)} while writing {target!r} "
                      "(nothing was written there)") from exc
    except BaseException:
        remove(tmp)
        raise
    try:
        with swap_lock(target):
            old = None
            if os.path.lexists(target):
                if not overwrite:
                    raise InputError(
                        f"{target!r} appeared while it was being written; not replacing it.")
                if (os.path.isdir(target) and not os.path.islink(target)) or os.path.isdir(tmp):
                    old = f"{target}.old-{tag}"
                    os.rename(target, old)
            os.replace(tmp, target)
    except BaseException:
        remove(tmp)
        raise
    if old is not None:
        remove(old)


def swap_lock(target: str) -> FileLock:
    """The lock that writers of ``target`` hold while they swap their output in: one file
    per destination in ``tempfile.gettempdir()/bigsink-locks`` (named by a hash of the
    path)."""
    where = os.path.join(tempfile.gettempdir(), "bigsink-locks")
    os.makedirs(where, exist_ok=True)
    name = hashlib.sha1(target.encode()).hexdigest()
    return FileLock(os.path.join(where, f"{name}.lock"))
