"""OUT/stats.json: the run's statistics merged from the committed shards' stats files, for
people (`pf1m audit` prints it) and for other tools (versioned; fields below are stable
within a version).

- `complete`: every planned shard is committed and verified; otherwise the figures cover
  `shards_committed` only (a run in progress, failed shards, or shards that failed
  verification: those are listed in `shards_with_problems` and described in `problems`).
- `totals`, `by_group` ("SOURCE|TASK"): input samples, kept, rejected, quarantined, reject
  reasons (a row may carry several, so reasons sum to at least `rejected`) and quarantine
  stages. For every group: samples_in = kept + rejected + quarantined.
- `tokens`: prompt and output tokens; `output_on_rejected` is spent on rows later rejected.
- `finish_reasons`: the rewriter's finish reasons over data/ and rejected/.
- `problems`: what verification found (missing file, checksum, conservation); empty when clean.
"""

from pydantic import BaseModel, Field

from pf1m.schemas.stats import Counts, Tokens

RUN_STATS_VERSION = "1"


class RunStats(BaseModel):
    version: str = RUN_STATS_VERSION
    run_id: str
    config_hash: str
    complete: bool
    shards_total: int
    shards_committed: list[str]  # committed and verified: what the figures cover
    shards_with_problems: list[str] = Field(default_factory=list)
    totals: Counts
    by_group: dict[str, Counts] = Field(default_factory=dict)
    tokens: Tokens = Field(default_factory=Tokens)
    finish_reasons: dict[str, int] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)
    generated_at: str
