"""Streaming output files of an export: JSON arrays, Parquet, tar shards, image files. Each
sink writes records as they come and starts a new file every `shard_size` records (None: one
file), so an export holds one record (one Parquet row group) in memory, not the dataset."""

import io
import json
import posixpath
import tarfile
from typing import Any

import pyarrow as pa
from fsspec import AbstractFileSystem

from pf1m.pipeline.writer import RowGroupWriter
from pf1m.schemas.export import ExportFile


class _Sharded:
    def __init__(self, fs: AbstractFileSystem, root: str, pattern: str, shard_size: int | None):
        self.fs, self.root, self.pattern, self.shard_size = fs, root, pattern, shard_size
        self.files: list[ExportFile] = []
        self._n = 0  # records in the open file

    def _name(self) -> str:
        if self.shard_size is None:
            return self.pattern.replace("-{index}", "")
        return self.pattern.replace("{index}", f"{len(self.files):05d}")

    def add(self, record: Any) -> None:
        if not self.files or (self.shard_size is not None and self._n >= self.shard_size):
            if self.files:
                self._close()
            rel = self._name()
            path = posixpath.join(self.root, rel)
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self._open(path)
            self.files.append(ExportFile(path=rel, records=0))
            self._n = 0
        self._write(record)
        self._n += 1
        self.files[-1].records += 1

    def close(self) -> list[ExportFile]:
        if self.files:
            self._close()
        return self.files

    def _open(self, path: str) -> None:
        raise NotImplementedError

    def _write(self, record: Any) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class JsonArraySink(_Sharded):
    """A JSON array per file, one record per line inside it (what PF-1M and LLaVA ship)."""

    def _open(self, path: str) -> None:
        self._f = self.fs.open(path, "wb")
        self._f.write(b"[\n")

    def _write(self, record: dict) -> None:
        if self._n:
            self._f.write(b",\n")
        self._f.write(json.dumps(record, ensure_ascii=False).encode())

    def _close(self) -> None:
        self._f.write(b"\n]\n")
        self._f.close()


class ParquetSink(_Sharded):
    def __init__(self, fs, root, pattern, shard_size, schema: pa.Schema, row_group_size: int):
        super().__init__(fs, root, pattern, shard_size)
        self.schema, self.row_group_size = schema, row_group_size

    def _open(self, path: str) -> None:
        self._w = RowGroupWriter(self.fs, path, self.schema, self.row_group_size)

    def _write(self, record: dict) -> None:
        self._w.add(record)

    def _close(self) -> None:
        self._w.close()


class TarSink(_Sharded):
    """WebDataset shards: a sample is the members sharing a key (`KEY.json`, `KEY.I.EXT`)."""

    def _open(self, path: str) -> None:
        self._f = self.fs.open(path, "wb")
        self._tar = tarfile.open(fileobj=self._f, mode="w|")

    def _write(self, members: list[tuple[str, bytes]]) -> None:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(payload))

    def _close(self) -> None:
        self._tar.close()
        self._f.close()


class ImageFiles:
    """Image bytes written under DEST at the relative paths the records refer to."""

    def __init__(self, fs: AbstractFileSystem, root: str) -> None:
        self.fs, self.root, self.count = fs, root, 0
        self._dirs: set[str] = set()

    def write(self, rel: str, payload: bytes) -> None:
        path = posixpath.join(self.root, rel)
        folder = posixpath.dirname(path)
        if folder not in self._dirs:
            self.fs.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)
        with self.fs.open(path, "wb") as f:
            f.write(payload)
        self.count += 1
