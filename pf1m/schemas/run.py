"""The run manifest (OUT/run.json) and the process exit codes a driver returns."""

from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from pf1m.schemas.config import migrate_flat_prompt

RUN_VERSION = "1"


class ExitCode(IntEnum):
    OK = 0  # every planned shard committed
    ERROR = 1  # the run itself broke (unexpected exception)
    BAD_CONFIG = 2  # refused before any work: config, input pattern, arguments, OUT locked
    PARTIAL = 3  # finished, but some shards failed; named in the summary and run.json
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM; committed shards kept, resume goes on


ShardStatus = Literal["pending", "done", "failed"]


class ShardState(BaseModel):
    status: ShardStatus = "pending"
    url: str
    source: str | None = None
    error: str | None = None
    samples_in: int | None = None
    kept: int | None = None


class RunManifest(BaseModel):
    version: str = RUN_VERSION
    run_id: str
    status: Literal["running", "succeeded", "partial", "failed", "interrupted"] = "running"
    error: str | None = None  # why a `failed` run broke, or which signal interrupted it
    config: dict[str, Any]
    config_hash: str
    hashed: dict[str, Any]  # exactly what the config hash covers
    # Hub reference (`ORG/NAME`, or `ORG/NAME@REV` as the config pins it) -> the commit every
    # node loads; a resume, or a run into this OUT again, reuses these (pf1m/pipeline/revisions.py)
    revisions: dict[str, str] = Field(default_factory=dict)
    versions: dict[str, str]
    started_at: str
    updated_at: str
    finished_at: str | None = None
    shards: dict[str, ShardState] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
    # Progress samples (t_s, shards_done, samples, samples_per_s, rewriter busy) for the report
    timeline: list[dict[str, Any]] = Field(default_factory=list)
    replicas: list[dict[str, Any]] = Field(default_factory=list)  # where each rewriter runs
    refiltered_from: str | None = None  # `pf1m refilter`: the run whose rows were re-decided

    @field_validator("config")
    @classmethod
    def _prompt_block(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Runs recorded before the prompt block keep working (resume, audit, refilter)."""
        return migrate_flat_prompt(config)


class RunLock(BaseModel):
    """OUT/_lock.json: who is running on this output directory (DESIGN.md, one run per OUT)."""

    host: str
    pid: int
    run_id: str
    ray_job_id: str | None = None
    started_at: str
    heartbeat_at: float  # seconds since the epoch, rewritten every ttl_s / 4
    ttl_s: float
