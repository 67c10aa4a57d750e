"""Streaming Parquet writer: rows are flushed in row groups as they finish, so a shard of any
size needs memory for one row group per output, not for the shard."""

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem


class RowGroupWriter:
    def __init__(self, fs: AbstractFileSystem, path: str, schema: pa.Schema, row_group_size: int):
        self.path = path
        self.schema = schema
        self.row_group_size = row_group_size
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._file = fs.open(path, "wb")
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

    def close(self) -> int:
        self.flush()
        self._writer.close()
        self._file.close()
        return self.rows

    def abort(self) -> None:
        self._buffer = []
        try:
            self._writer.close()
        finally:
            self._file.close()
