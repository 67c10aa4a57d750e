"""Shard statistics arithmetic (pure: no I/O): a shard's ShardStats accumulated from its rows as
they are written, and several shards' stats added up into the run's figures."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pf1m.schemas.stats import HISTOGRAM_RANGES, Counts, Histogram, ShardStats, Tokens


def _bin(value: float, lo: float, hi: float, bins: int) -> int:
    return min(bins - 1, max(0, int((value - lo) / (hi - lo) * bins)))


class StatsBuilder:
    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.totals = Counts()
        self.groups: dict[str, Counts] = {}
        self.finish: Counter[str] = Counter()
        self.tokens = Tokens()
        self.hist = {
            name: Histogram(lo=lo, hi=hi, counts=[0] * n, kept_counts=[0] * n)
            for name, (lo, hi, n) in HISTOGRAM_RANGES.items()
        }

    def _counts(self, source: str | None, task: str | None) -> list[Counts]:
        key = f"{source or 'unknown'}|{task or 'unknown'}"
        return [self.totals, self.groups.setdefault(key, Counts())]

    def add_row(self, row: dict[str, Any]) -> None:
        for counts in self._counts(row["source"], row["task"]):
            counts.samples_in += 1
            if row["kept"]:
                counts.kept += 1
            else:
                counts.rejected += 1
            for reason in row["reject_reasons"]:
                counts.reasons[reason] = counts.reasons.get(reason, 0) + 1
        self.finish[row["finish_reason"] or "none"] += 1
        self.tokens.prompt += row["prompt_tokens"] or 0
        self.tokens.output += row["output_tokens"] or 0
        if not row["kept"]:
            self.tokens.output_on_rejected += row["output_tokens"] or 0
        for name, hist in self.hist.items():
            value = row.get(name)
            if value is not None:
                i = _bin(value, hist.lo, hist.hi, len(hist.counts))
                hist.counts[i] += 1
                hist.kept_counts[i] += int(row["kept"])

    def add_quarantine(
        self, stage: str, source: str | None = None, task: str | None = None
    ) -> None:
        for counts in self._counts(source, task):
            counts.samples_in += 1
            counts.quarantined += 1
            counts.quarantine_stages[stage] = counts.quarantine_stages.get(stage, 0) + 1

    def build(self, wall_s: float) -> ShardStats:
        return ShardStats(
            shard=self.shard,
            totals=self.totals,
            by_group=self.groups,
            finish_reasons=dict(self.finish),
            tokens=self.tokens,
            histograms=self.hist,
            wall_s=round(wall_s, 3),
        )


def add_counts(into: Counts, other: Counts) -> None:
    """Add `other` to `into` in place (merging shards, or groups into totals)."""
    into.samples_in += other.samples_in
    into.kept += other.kept
    into.rejected += other.rejected
    into.quarantined += other.quarantined
    for code, n in other.reasons.items():
        into.reasons[code] = into.reasons.get(code, 0) + n
    for stage, n in other.quarantine_stages.items():
        into.quarantine_stages[stage] = into.quarantine_stages.get(stage, 0) + n


@dataclass
class MergedStats:
    """Shards' figures added up; the one merge behind the run summary and OUT/stats.json."""

    totals: Counts = field(default_factory=Counts)
    by_group: dict[str, Counts] = field(default_factory=dict)  # in first-seen order
    tokens: Tokens = field(default_factory=Tokens)
    finish_reasons: dict[str, int] = field(default_factory=dict)


def merge_shard_stats(stats: Iterable[ShardStats]) -> MergedStats:
    """Add up shards' stats in the order given; the inputs are left untouched."""
    merged = MergedStats()
    for s in stats:
        add_counts(merged.totals, s.totals)
        for key, counts in s.by_group.items():
            add_counts(merged.by_group.setdefault(key, Counts()), counts)
        merged.tokens.prompt += s.tokens.prompt
        merged.tokens.output += s.tokens.output
        merged.tokens.output_on_rejected += s.tokens.output_on_rejected
        for reason, n in s.finish_reasons.items():
            merged.finish_reasons[reason] = merged.finish_reasons.get(reason, 0) + n
    return merged
