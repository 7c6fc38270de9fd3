"""Cost matrices stored block-partitioned in a Zarr v3 array (local directory or fsspec URL)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import FORMAT
from ..errors import InputError
from .base import BlockGrid, ColumnStrip, Gridded

__all__ = ["ZarrCost", "array_location", "open_zarr_array", "raw_chunk_dir"]


def open_zarr_array(path: Any, storage_options: dict[str, Any] | None = None) -> Any:
    """Open a 2-D Zarr array read-only, or raise an InputError saying what is wrong."""
    import zarr

    where = os.fspath(path) if hasattr(path, "__fspath__") else str(path)
    if "://" not in where and not os.path.exists(where):
        raise InputError(
            f"cost: no Zarr store at {where!r} (the path does not exist). Write one with "
            "bigsink.write_cost(...) or `bigsink cost`, or check the path."
        )
    try:
        arr = zarr.open_array(where, mode="r", storage_options=storage_options)
    except Exception as exc:  # zarr raises several types for 'not an array'
        members = _group_members(where, storage_options)
        if members is not None:
            listed = ", ".join(repr(f"{where.rstrip('/')}/{k}") for k in members[:5]) or "none"
            raise InputError(
                f"cost: {where!r} is a Zarr group, not an array; pass the path of the array "
                f"inside it (its arrays: {listed}).") from None
        hint = (" Check the credentials in storage_options (--storage-options)."
                if isinstance(exc, PermissionError) else "")
        raise InputError(
            f"cost: could not open a Zarr array at {where!r}: {type(exc).__name__}: {exc}.{hint}"
        ) from exc
    if arr.ndim != 2:
        raise InputError(
            f"cost: the Zarr array at {where!r} has shape {arr.shape}; a cost matrix must be "
            "2-D (n, m)."
        )
    if 0 in arr.shape:
        raise InputError(f"cost: the Zarr array at {where!r} is empty (shape {arr.shape}).")
    return arr


def array_location(arr: Any) -> tuple[str, dict[str, Any] | None] | None:
    """Where an open ``zarr.Array`` lives, so that workers can reopen it: ``(path, None)``
    for a local store, ``(URL, storage_options)`` for an fsspec one, None for an in-memory
    store (nothing to reopen)."""
    store = arr.store
    root = getattr(store, "root", None)                                   # LocalStore
    if root is not None:
        return os.path.join(os.fspath(root), arr.path), None
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)   # FsspecStore
    if fs is not None and path is not None:
        url = fs.unstrip_protocol(f"{path.rstrip('/')}/{arr.path}".rstrip("/"))
        return url, dict(getattr(fs, "storage_options", {})) or None
    return None


def _group_members(where: str, storage_options: dict[str, Any] | None) -> list[str] | None:
    """The array paths inside the Zarr group at ``where`` (nested groups walked), or None
    when ``where`` is no group."""
    import zarr

    try:
        group = zarr.open_group(where, mode="r", storage_options=storage_options)
    except Exception:  # not a group either: the caller reports its own error
        return None
    return sorted(name for name, _ in group.arrays()) + sorted(
        f"{name}/{inner}" for name, sub in group.groups() for inner, _ in sub.arrays())


def raw_chunk_dir(arr: Any) -> Path | None:
    """The directory of ``arr``'s chunk files when each file is the chunk's raw bytes in
    this machine's byte order (a local Zarr v3 array with the bytes codec alone: no
    compressor, filter or sharding), else None.

    Zarr v3 stores such a chunk as exactly its C-order bytes, edge chunks at full chunk
    shape, under the key its chunk key encoding gives; an absent file is a chunk of the
    fill value. Reading those files directly skips zarr's asynchronous codec pipeline,
    which costs about three times the file reads on an uncompressed store.
    """
    from zarr.codecs import BytesCodec
    from zarr.storage import LocalStore

    md = arr.metadata
    if getattr(md, "zarr_format", None) != 3 or len(md.codecs) != 1:
        return None
    codec, store = md.codecs[0], arr.store_path.store
    if not isinstance(codec, BytesCodec) or not isinstance(store, LocalStore):
        return None
    endian = getattr(codec.endian, "value", codec.endian)
    if np.dtype(arr.dtype).itemsize > 1 and endian not in (None, sys.byteorder):
        return None
    return Path(store.root) / arr.store_path.path


class ZarrCost(Gridded):
    """A cost matrix in a 2-D Zarr v3 array; its blocks are the array's (inner) chunks.

    Only the path travels when pickled, so Dask workers open the store themselves and no
    process ever holds more of C than the strips it is working on.

    Args:
        path: directory or fsspec URL of the array, or an open ``zarr.Array`` of a local or
            fsspec store (reopened there, so that workers can read it too).
        storage_options: passed to fsspec for remote stores.
    """

    def __init__(self, path: Any, storage_options: dict[str, Any] | None = None) -> None:
        if type(path).__module__.split(".")[0] == "zarr" and hasattr(path, "store"):
            found = array_location(path)                 # an open zarr.Array: reopen it
            if found is None:
                raise InputError(
                    "cost: this zarr.Array lives in memory (no path or URL that workers could "
                    "reopen): pass it to bigsink.solve, which reads a small one whole, or "
                    "write it to a directory or object store.")
            path, storage_options = found[0], storage_options or found[1]
        where = os.fspath(path) if hasattr(path, "__fspath__") else str(path)
        # absolute, so that workers with another working directory open the same store
        self.path = where if "://" in where else os.path.abspath(where)
        self.storage_options = storage_options
        self._arr = open_zarr_array(self.path, storage_options)
        attrs = self._arr.attrs
        if attrs.get("format") == FORMAT and attrs.get("complete") is False:
            raise InputError(
                f"cost: the Zarr array at {self.path!r} is incomplete: writing it was "
                "interrupted (object stores have no atomic rename, so bigsink marks a store "
                "complete last). Write it again with overwrite=True.")
        # a store bigsink wrote fills missing chunks with NaN: a read that finds one is a
        # chunk lost (or deleted) since, named at once instead of solved on
        fill = self._arr.fill_value
        self._missing_is_nan = attrs.get("format") == FORMAT and bool(np.isnan(fill))
        n, m = (int(s) for s in self._arr.shape)
        chunks = tuple(int(c) for c in self._arr.chunks)
        self._grid = BlockGrid((n, m), (chunks[0], chunks[1]))
        self._raw = raw_chunk_dir(self._arr)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["storage_options"])  # type: ignore[misc]

    @property
    def array(self) -> Any:
        """The open ``zarr.Array``."""
        return self._arr

    @property
    def attrs(self) -> dict[str, Any]:
        """The array's attributes (``write_cost`` records the metric and value range)."""
        return dict(self._arr.attrs)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type."""
        return np.dtype(self._arr.dtype)

    #: Strips are read from the store (a solve never holds C whole in one process).
    reads_store = True

    def block(self, i: int, j: int) -> np.ndarray:
        """Block ``(i, j)`` read from the store."""
        r0, r1 = self._grid.row_range(i)
        c0, c1 = self._grid.col_range(j)
        with self._reading(r0, r1):
            return self._present(np.asarray(self._arr[r0:r1, c0:c1]), r0,
                                 np.arange(c0, c1))

    @contextlib.contextmanager
    def _reading(self, start: int, stop: int) -> Iterator[None]:
        """A failure of zarr to read rows ``[start, stop)`` (a chunk its codec cannot decode,
        an unreadable file) as an InputError naming the store and the first such chunk."""
        try:
            yield
        except InputError:
            raise
        except Exception as exc:
            what = f"{type(exc).__name__}: {exc}"
            rb = self._grid.block_shape[0]
            for i in range(start // rb, (stop - 1) // rb + 1):
                r0, r1 = self._grid.row_range(i)
                for j in range(self._grid.n_blocks[1]):
                    c0, c1 = self._grid.col_range(j)
                    try:
                        self._arr[r0:r1, c0:c1]
                    except Exception:
                        raise InputError(
                            f"cost: chunk ({i}, {j}) of the Zarr array at {self.path!r} "
                            f"cannot be read ({what}): the store is damaged. Restore that "
                            "chunk, or write the store again.") from None
            raise InputError(f"cost: reading rows {start}:{stop} of the Zarr array at "
                             f"{self.path!r} failed ({what}).") from None

    def _present(self, out: np.ndarray, start: int, cols: np.ndarray | None = None
                 ) -> np.ndarray:
        """``out`` (rows from ``start``; of columns ``cols``, default all) unless it holds
        the NaN that marks a missing chunk of a store bigsink wrote: then an InputError
        naming the chunk."""
        if not self._missing_is_nan or not np.isnan(out).any():
            return out
        r, c = (int(v) for v in np.argwhere(np.isnan(out))[0])
        i, j = self._grid.block_of(start + r, c if cols is None else int(cols[c]))
        raise InputError(
            f"cost: chunk ({i}, {j}) of the Zarr array at {self.path!r} is missing (it reads "
            "as NaN, the fill value of a store bigsink wrote): the store lost it or was "
            "changed after it was written. Write the store again.")

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` read from the store."""
        if self._raw is None:
            with self._reading(start, stop):
                return self._present(np.asarray(self._arr[start:stop, :]), start)
        return self.rows_into(start, stop, np.empty((stop - start, self.shape[1]), self.dtype))

    def rows_in(self, start: int, stop: int, blocks: np.ndarray) -> ColumnStrip:
        """Rows ``[start, stop)`` of the column blocks ``blocks`` ((nJ,) bool) only, read
        into one compact array (the other chunks are never read, nor copied)."""
        grid = self._grid
        J = [int(j) for j in np.flatnonzero(blocks)]
        ranges = [grid.col_range(j) for j in J]
        cols = (np.concatenate([np.arange(c0, c1) for c0, c1 in ranges]) if J
                else np.zeros(0, dtype=np.int64))
        out = np.empty((stop - start, cols.size), self.dtype)
        at = dict(zip(J, np.cumsum([0] + [c1 - c0 for c0, c1 in ranges])[:-1], strict=True))
        if self._raw is None:
            with self._reading(start, stop):
                for j, (c0, c1) in zip(J, ranges, strict=True):
                    out[:, at[j]:at[j] + c1 - c0] = self._arr[start:stop, c0:c1]
        else:
            self._read_raw(start, stop, out, J, at)
        return ColumnStrip(self._present(out, start, cols), cols)

    def block_min(self) -> np.ndarray | None:
        """The least cost of each chunk (nI, nJ) when the store records it
        (:func:`bigsink.write_cost` does, as the attribute ``block_min``), else None."""
        stored = self._arr.attrs.get("block_min")
        if stored is None:
            return None
        cmin = np.asarray(stored, dtype=np.float64)
        return cmin if cmin.shape == self._grid.n_blocks else None

    def rows_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Rows ``[start, stop)`` read from the store straight into ``out`` (a C-contiguous
        NumPy array of shape (stop - start, m) and the store's dtype, e.g. pinned memory).

        Uncompressed local stores (:func:`raw_chunk_dir`) are read from their chunk files
        into ``out`` directly when chunks span whole rows (one copy), else through one
        chunk buffer; other stores through zarr."""
        if self._raw is None:
            from zarr.core.buffer import cpu

            with self._reading(start, stop):
                self._arr.get_basic_selection((slice(start, stop), slice(None)),
                                              out=cpu.NDBuffer.from_numpy_array(out))
            return self._present(out, start)
        return self._present(self._read_raw(start, stop, out, range(self._grid.n_blocks[1])),
                             start)

    def _read_raw(self, start: int, stop: int, out: np.ndarray, blocks: Any,
                  at: dict[int, int] | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of the column blocks ``blocks`` from the chunk files, each
        into ``out``'s columns from ``at[j]`` on (default: its own columns)."""
        if stop <= start:
            return out
        assert self._raw is not None
        grid, key = self._grid, self._arr.metadata.chunk_key_encoding.encode_chunk_key
        rb, cb = grid.block_shape
        m = self.shape[1]
        chunk = None if cb == m else np.empty((rb, cb), self.dtype)    # (rb, cb) file buffer
        for i in range(start // rb, (stop - 1) // rb + 1):
            r0, r1 = max(start, i * rb), min(stop, (i + 1) * rb)       # rows of block row i
            for j in blocks:
                c0, c1 = grid.col_range(j)
                p0 = c0 if at is None else at[j]                       # where it goes in out
                dest = out[r0 - start:r1 - start, p0:p0 + c1 - c0]
                path = self._raw / key((i, j))
                target = dest.reshape(-1) if chunk is None else chunk.reshape(-1)
                try:
                    with open(path, "rb") as fh:
                        if chunk is None:                           # whole rows: contiguous
                            fh.seek((r0 - i * rb) * m * self.dtype.itemsize)
                        got = fh.readinto(target.view(np.uint8))  # type: ignore[arg-type]
                except FileNotFoundError:                           # an unwritten chunk
                    dest[...] = self._arr.fill_value
                    continue
                if got != target.nbytes:
                    raise InputError(
                        f"cost: chunk file {str(path)!r} of the Zarr array at {self.path!r} "
                        f"holds {got} bytes where {target.nbytes} were expected: the store "
                        "is truncated or was not written by zarr. Rewrite it."
                    )
                if chunk is not None:
                    dest[...] = chunk[r0 - i * rb:r1 - i * rb, :c1 - c0]
        return out

    def __repr__(self) -> str:
        return (f"ZarrCost({self.path!r}, shape={self.shape}, dtype={self.dtype}, "
                f"chunks={self.grid.block_shape})")

