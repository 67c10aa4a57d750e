"""`pf1m audit OUT`: verify every committed shard, merge the shards' stats into OUT/stats.json,
and answer "what if this threshold were different" from stored scores.

Only committed shards count (marker present, same config hash as run.json), so an audit of a
run in progress is consistent, and an interrupted-then-resumed run audits exactly like an
uninterrupted one: stats are per shard and a shard is committed once.
"""

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pf1m.pipeline.commit import now_iso, read_marker, verify, write_atomic
from pf1m.pipeline.manifest import load_manifest
from pf1m.pipeline.row_flow import RowFlow
from pf1m.pipeline.stats import merge_shard_stats
from pf1m.schemas.audit import RunStats
from pf1m.schemas.commit import CommitMarker
from pf1m.schemas.config import ConfigError, RunConfig, apply_overrides, validate_config
from pf1m.schemas.run import RunManifest
from pf1m.schemas.stats import Counts, ShardStats

STATS_FILE = "stats.json"
ROW_KINDS = ("data", "rejected")
# Everything a decision reads; never the image bytes.
DECISION_COLUMNS = (
    "uid", "shard", "source", "task", "instruction", "original", "rewrite_raw", "output",
    "rouge_l", "sts", "nli_logits", "nli_label", "paragraphs", "reward", "reward_original",
    "finish_reason", "prompt_tokens", "output_tokens", "kept", "reject_reasons",
)  # fmt: skip


@dataclass
class Committed:
    manifest: RunManifest
    markers: dict[str, CommitMarker]  # committed shards only

    @property
    def complete(self) -> bool:
        return len(self.markers) == len(self.manifest.shards)


def committed(fs: AbstractFileSystem, root: str) -> Committed:
    manifest = load_manifest(fs, root)
    if manifest is None:
        raise ConfigError(f"{root}: no run.json here, not a pf1m run directory")
    markers = {}
    for shard in sorted(manifest.shards):
        marker = read_marker(fs, root, shard)
        if marker is not None and marker.config_hash == manifest.config_hash:
            markers[shard] = marker
    return Committed(manifest, markers)


def stream_rows(fs: AbstractFileSystem, path: str) -> Iterator[dict[str, Any]]:
    """A committed Parquet file's rows, one row group in memory at a time."""
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        for i in range(parquet.num_row_groups):
            yield from parquet.read_row_group(i).to_pylist()


def read_shard_stats(fs: AbstractFileSystem, root: str, marker: CommitMarker) -> ShardStats:
    with fs.open(posixpath.join(root, marker.files["stats"].path), "rb") as f:
        return ShardStats.model_validate_json(f.read())


def verify_shard(
    fs: AbstractFileSystem, root: str, marker: CommitMarker
) -> tuple[list[str], ShardStats | None]:
    """Checksums, row counts in the Parquet footers, and the conservation law. Returns the
    problems found and, for a shard with none, its stats: they are parsed here to check them
    against the files, so a caller that merges them need not read the file again."""
    problems = verify(fs, root, marker)
    if problems:
        return problems, None
    shard = marker.shard
    rows = {}
    for kind in ("data", "rejected", "quarantine"):
        entry = marker.files[kind]
        with fs.open(posixpath.join(root, entry.path), "rb") as f:
            rows[kind] = pq.ParquetFile(f).metadata.num_rows
        if rows[kind] != entry.rows:
            problems.append(f"{shard}: {kind} has {rows[kind]} rows, its marker says {entry.rows}")
    if sum(rows.values()) != marker.samples_in:
        problems.append(
            f"{shard}: conservation broken: {marker.samples_in} samples in, "
            f"{rows['data']} data + {rows['rejected']} rejected + {rows['quarantine']} quarantine"
        )
    stats = read_shard_stats(fs, root, marker)
    t = stats.totals
    if (t.samples_in, t.kept, t.rejected, t.quarantined) != (
        marker.samples_in,
        rows["data"],
        rows["rejected"],
        rows["quarantine"],
    ):
        problems.append(f"{shard}: stats file disagrees with the shard's files")
    return problems, (None if problems else stats)


def merge(run: Committed, stats: list[ShardStats], problems: list[str], bad: list[str]) -> RunStats:
    """OUT/stats.json's content: the verified shards' stats added up, and what was left out."""
    merged = merge_shard_stats(stats)
    return RunStats(
        run_id=run.manifest.run_id,
        config_hash=run.manifest.config_hash,
        complete=run.complete and not bad,
        shards_total=len(run.manifest.shards),
        shards_committed=sorted(s.shard for s in stats),
        shards_with_problems=sorted(bad),
        totals=merged.totals,
        by_group=dict(sorted(merged.by_group.items())),
        tokens=merged.tokens,
        finish_reasons=merged.finish_reasons,
        problems=problems,
        generated_at=now_iso(),
    )


def audit(fs: AbstractFileSystem, root: str) -> RunStats:
    """Verify every committed shard and write OUT/stats.json; returns what it wrote. A shard
    that fails verification is named in `problems` and left out of the figures."""
    run = committed(fs, root)
    problems: list[str] = []
    stats, bad = [], []
    for shard, marker in run.markers.items():
        found, shard_stats = verify_shard(fs, root, marker)
        problems += found
        if shard_stats is None:
            bad.append(shard)
        else:
            stats.append(shard_stats)
    merged = merge(run, stats, problems, bad)
    write_atomic(fs, posixpath.join(root, STATS_FILE), merged.model_dump_json(indent=1).encode())
    return merged


def _rate(counts: Counts) -> str:
    return f"{counts.kept / counts.samples_in:.1%}" if counts.samples_in else "-"


def format_table(stats: RunStats) -> str:
    """Per source|task: in, kept, rejected, quarantined, keep rate; then reasons and stages."""
    width = max([len(k) for k in stats.by_group] + [12])
    head = f"{'source|task':<{width}} {'in':>8} {'kept':>8} {'rejected':>9}"
    head += f" {'quarant.':>9} {'keep':>7}"
    lines = [head, "-" * len(head)]
    rows = [*stats.by_group.items(), ("TOTAL", stats.totals)]
    for key, c in rows:
        lines.append(
            f"{key:<{width}} {c.samples_in:>8} {c.kept:>8} {c.rejected:>9} {c.quarantined:>9}"
            f" {_rate(c):>7}"
        )
    for title, field in (
        ("rejected by reason", "reasons"),
        ("quarantined by stage", "quarantine_stages"),
    ):
        lines += ["", f"{title}:"]
        for key, c in rows:
            for code, n in sorted(getattr(c, field).items()):
                lines.append(f"  {key:<{width}} {code:<26} {n:>8}")
    if not stats.complete:
        lines += [
            "",
            f"NOTE: {len(stats.shards_committed)} of {stats.shards_total} shards committed"
            " and verified; figures cover those only (run in progress, failed shards, or"
            " shards with problems).",
        ]
    for problem in stats.problems:
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)


def stored_rows(fs: AbstractFileSystem, root: str, marker: CommitMarker) -> list[dict[str, Any]]:
    """A committed shard's data and rejected rows, decision columns only."""
    out = []
    for kind in ROW_KINDS:
        with fs.open(posixpath.join(root, marker.files[kind].path), "rb") as f:
            out += pq.read_table(f, columns=list(DECISION_COLUMNS)).to_pylist()
    return out


def with_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    data = cfg.model_dump()
    origins = apply_overrides(data, overrides)
    return validate_config(data, "the run's config", origins)


def what_if(fs: AbstractFileSystem, root: str, spec: str) -> list[tuple[str, int, int]]:
    """`KEY=V1,V2,...`: (value, rows kept, rows unscored) for each value, from stored scores."""
    key, sep, values = spec.partition("=")
    if not sep or not values:
        raise ConfigError(f"--what-if {spec!r}: expected dotted.key=value1,value2,...")
    run = committed(fs, root)
    base = validate_config(run.manifest.config, f"{root}/run.json")
    rows = [r for m in run.markers.values() for r in stored_rows(fs, root, m)]
    out = []  # (verify first with `pf1m audit`: a damaged file fails here)
    for value in values.split(","):
        cfg = with_overrides(base, [f"{key}={value}"])
        flow = RowFlow(cfg, run.manifest.run_id)
        decided = [flow.redecide(r)[0] for r in rows]
        kept = sum(r["kept"] for r in decided)
        unscored = sum(any(x.endswith(":unscored") for x in r["reject_reasons"]) for r in decided)
        out.append((value, kept, unscored))
    return out
