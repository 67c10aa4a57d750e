"""Output files written once: Parquet in row groups as rows finish (memory for one row group,
not for the shard), and small payloads; each file is checksummed while it is written, so a
commit never reads back what it has just written."""

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pf1m.schemas.commit import FileEntry


class HashingFile:
    """A writable file that keeps the sha256 and size of everything written through it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._digest.update(view)
        self.size += len(view)
        return self._raw.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __enter__(self) -> "HashingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_file(
    fs: AbstractFileSystem, path: str, payload: bytes, rows: int | None = None
) -> FileEntry:
    """Write `payload` to `path`; its entry (path, rows, bytes, sha256) for the commit."""
    f = HashingFile(fs.open(path, "wb"))
    try:
        f.write(payload)
    finally:
        f.close()
    return FileEntry(path=path, rows=rows, bytes=f.size, sha256=f.sha256())


class RowGroupWriter:
    def __init__(self, fs: AbstractFileSystem, path: str, schema: pa.Schema, row_group_size: int):
        self.path = path
        self.schema = schema
        self.row_group_size = row_group_size
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._file = HashingFile(fs.open(path, "wb"))
        self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.row_group_size:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self.rows += len(self._buffer)
            self._buffer = []

    def close(self) -> FileEntry:
        """Finish the file; its entry (path, rows, bytes, sha256)."""
        self.flush()
        self._writer.close()
        self._file.close()
        return FileEntry(
            path=self.path, rows=self.rows, bytes=self._file.size, sha256=self._file.sha256()
        )

    def abort(self) -> None:
        self._buffer = []
        try:
            self._writer.close()
        finally:
            self._file.close()
