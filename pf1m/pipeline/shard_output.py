"""One shard's output while it is written, and its commit: rows go to data/, rejected/ or
quarantine/ temporaries, its stats accumulate beside them, and `commit` writes the stats file
and commits all four (pipeline/commit.py). The run's shards, refilter, import-pf1m and the
benchmarks' synthetic runs all write through this one path. Used as a context manager, an
exception before the commit removes the attempt's temporaries."""

import posixpath
from collections.abc import Callable
from typing import Any

from fsspec import AbstractFileSystem

from pf1m.pipeline.commit import KINDS, clean_shard, commit_shard, relpath, tmp_path
from pf1m.pipeline.stats import StatsBuilder
from pf1m.pipeline.writer import RowGroupWriter, write_file
from pf1m.schemas.commit import InputFingerprint
from pf1m.schemas.rows import OUTPUT_SCHEMA, QUARANTINE_SCHEMA
from pf1m.schemas.stats import ShardStats

ROW_SCHEMAS = {"data": OUTPUT_SCHEMA, "rejected": OUTPUT_SCHEMA, "quarantine": QUARANTINE_SCHEMA}


class ShardOutput:
    def __init__(self, fs: AbstractFileSystem, root: str, shard: str, row_group_size: int) -> None:
        """Clears whatever an earlier attempt left of this shard, then opens its temporaries."""
        self.fs, self.root, self.shard = fs, root, shard
        self.stats = StatsBuilder(shard)
        clean_shard(fs, root, shard)
        self.committed = False
        self.writers: dict[str, RowGroupWriter] = {}
        for kind, schema in ROW_SCHEMAS.items():
            self.writers[kind] = RowGroupWriter(fs, self._temporary(kind), schema, row_group_size)

    def _temporary(self, kind: str) -> str:
        final = posixpath.join(self.root, relpath(kind, self.shard))
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        return tmp_path(final)

    def add(self, kind: str, row: dict[str, Any]) -> None:
        """A decided row (`data`, `rejected`) or a quarantine row, counted in the stats."""
        self.writers[kind].add(row)
        if kind == "quarantine":
            self.stats.add_quarantine(row["stage"], row["source"], row["task"])
        else:
            self.stats.add_row(row)

    def abort(self) -> None:
        """Close every temporary and remove what this attempt left; nothing is committed."""
        try:
            for writer in self.writers.values():
                try:
                    writer.abort()
                except OSError:
                    pass  # its temporary is removed below either way
        finally:
            clean_shard(self.fs, self.root, self.shard)

    def __enter__(self) -> "ShardOutput":
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        if exc_type is not None and not self.committed:
            self.abort()

    def commit(
        self,
        *,
        run_id: str,
        fingerprint: InputFingerprint,
        config_hash: str,
        samples_in: int,
        wall_s: float = 0.0,
        on_step: Callable[[str], None] = lambda step: None,
    ) -> ShardStats:
        written = {kind: writer.close() for kind, writer in self.writers.items()}
        stats = self.stats.build(wall_s)
        payload = stats.model_dump_json(indent=1).encode()
        written["stats"] = write_file(self.fs, self._temporary("stats"), payload)
        assert set(written) == set(KINDS)
        commit_shard(
            self.fs,
            self.root,
            self.shard,
            written,
            run_id=run_id,
            fingerprint=fingerprint,
            config_hash=config_hash,
            samples_in=samples_in,
            on_step=on_step,
        )
        self.committed = True
        return stats
