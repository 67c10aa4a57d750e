"""Per-shard statistics: the unit of truth the audit merges (written to OUT/stats/SHARD.json)."""

from pydantic import BaseModel, Field

STATS_VERSION = "1"

# Fixed bins for each recorded score, so per-shard histograms add up across shards.
HISTOGRAM_RANGES: dict[str, tuple[float, float, int]] = {
    "rouge_l": (0.0, 1.0, 20),
}


class Histogram(BaseModel):
    lo: float
    hi: float
    counts: list[int]
    kept_counts: list[int]


class Counts(BaseModel):
    samples_in: int = 0
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)
    quarantine_stages: dict[str, int] = Field(default_factory=dict)


class Tokens(BaseModel):
    prompt: int = 0
    output: int = 0
    output_on_rejected: int = 0


class ShardStats(BaseModel):
    """Counts per filter reason and quarantine stage, by (source, task) too; a row may carry
    several reasons, so `reasons` sums to at least `rejected`."""

    version: str = STATS_VERSION
    shard: str
    totals: Counts
    by_group: dict[str, Counts] = Field(default_factory=dict)  # key: "SOURCE|TASK"
    finish_reasons: dict[str, int] = Field(default_factory=dict)
    tokens: Tokens = Field(default_factory=Tokens)
    histograms: dict[str, Histogram] = Field(default_factory=dict)
    wall_s: float = 0.0
