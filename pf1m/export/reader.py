"""The streaming reader of committed rows: only shards whose commit marker matches the run's
config hash and whose files pass the audit's verification (`pf1m.pipeline.audit.verify_shard`), one
Parquet row group at a time, so an export's memory does not grow with the run."""

import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fsspec import AbstractFileSystem

from pf1m.pipeline.audit import Committed, committed, merge, stream_rows, verify_shard
from pf1m.pipeline.manifest import MANIFEST
from pf1m.schemas.audit import RunStats
from pf1m.schemas.commit import CommitMarker
from pf1m.schemas.config import ConfigError, RunConfig, validate_config


@dataclass
class Source:
    """A run to export: its verified shards, what verification found, and its merged stats."""

    fs: AbstractFileSystem
    root: str
    run: Committed
    run_json: dict[str, Any]  # run.json as stored, fields this code does not model included
    config: RunConfig
    verified: dict[str, CommitMarker] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stats: RunStats | None = None

    @property
    def complete(self) -> bool:
        return self.run.complete and not self.skipped


def open_source(fs: AbstractFileSystem, root: str) -> Source:
    """Verify every committed shard (checksums, footers, conservation, stats) and merge the
    verified shards' stats, as `pf1m audit` does; the run directory is not modified."""
    run = committed(fs, root)
    with fs.open(posixpath.join(root, MANIFEST), "rb") as f:
        run_json = json.loads(f.read())
    config = validate_config(run.manifest.config, f"{root}/run.json")
    if not config.writer.embed_images:
        raise ConfigError(
            f"{root}: the run has writer.embed_images=false, so its rows hold no image bytes "
            "and cannot be exported; rerun with images embedded"
        )
    source = Source(fs, root, run, run_json, config)
    shard_stats = []
    for shard, marker in run.markers.items():
        found, stats = verify_shard(fs, root, marker)
        source.problems += found
        if stats is None:
            source.skipped.append(shard)
        else:
            source.verified[shard] = marker
            shard_stats.append(stats)
    source.stats = merge(run, shard_stats, source.problems, source.skipped)
    return source


def kept_rows(source: Source) -> Iterator[dict[str, Any]]:
    """Every kept row of the verified shards, in shard order, one row group in memory."""
    for marker in source.verified.values():
        yield from stream_rows(source.fs, posixpath.join(source.root, marker.files["data"].path))
