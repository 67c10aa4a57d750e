"""`pf1m refilter OUT --set filters... --to NEW`: every committed row decided again from its
stored scores under new filter settings, into a new run directory with its own commits, stats
and report. No model is loaded and OUT is never modified (DESIGN.md, "Commit and resume").

Only decision settings may change: thresholds, the task-to-filter map, the scoring mode, the
length window. A change that would need new scores (a filter's model, NLI strings, CLIP
sentence count) or new rewrites is refused: that is a new run.
"""

import posixpath
import uuid
from dataclasses import dataclass

from pf1m.filters import registry
from pf1m.pipeline.audit import ROW_KINDS, audit, committed, stream_rows, with_overrides
from pf1m.pipeline.commit import now_iso
from pf1m.pipeline.manifest import diff_views, load_manifest, package_versions, save_manifest
from pf1m.pipeline.row_flow import RowFlow
from pf1m.pipeline.shard_output import ShardOutput
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.audit import RunStats
from pf1m.schemas.config import ConfigError, config_hash, validate_config
from pf1m.schemas.run import RunManifest, ShardState


@dataclass
class RefilterResult:
    out: str
    shards: int = 0
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0
    to_data: int = 0  # rows that moved from rejected/ to data/
    to_rejected: int = 0  # rows that moved from data/ to rejected/
    unscored: int = 0  # rows whose new decision needs a score never computed
    reward_stale: int = 0  # rows whose reward was computed on an `output` now rebuilt
    stats: RunStats | None = None  # the new run's merged stats (also in NEW/stats.json)


def _check_changes(lines: list[str], plugins: list[str]) -> None:
    """Each filter says which of its settings change scores (`scoring_settings`)."""
    known = registry.load(plugins)
    refused = []
    for line in lines:
        key = line.strip().split(":")[0]
        parts = key.split(".")
        scoring = known[parts[1]].scoring_settings if len(parts) > 2 and parts[1] in known else ()
        if parts[0] != "filters" or (len(parts) > 2 and parts[2] in scoring):
            refused.append(line)
    if refused:
        raise ConfigError(
            "refilter changes decisions only; these need new scores or rewrites (a new run):\n"
            + "\n".join(refused)
        )


def refilter(src: str, overrides: list[str], dest: str) -> RefilterResult:
    fs, root = url_to_fs(src)
    dfs, droot = url_to_fs(dest)
    run = committed(fs, root)
    old = run.manifest
    base = validate_config(old.config, f"{src}/run.json")
    cfg = with_overrides(base, [*overrides, f"output={dest}"])
    fingerprints = old.hashed["model_fingerprints"]
    hashed = cfg.hashed_view(fingerprints)
    _check_changes(diff_views(base.hashed_view(fingerprints), hashed), cfg.filters.plugins)
    if load_manifest(dfs, droot) is not None:
        raise ConfigError(f"{dest} already holds a run; refilter writes a new directory")
    dfs.makedirs(droot, exist_ok=True)
    manifest = RunManifest(
        run_id=uuid.uuid4().hex[:12],
        config=cfg.model_dump(mode="json"),
        config_hash=config_hash(hashed),
        hashed=hashed,
        versions=package_versions(),
        started_at=now_iso(),
        updated_at=now_iso(),
        shards={s: ShardState(url=st.url, source=st.source) for s, st in old.shards.items()},
        refiltered_from=src,
    )
    save_manifest(dfs, droot, manifest)
    result = RefilterResult(dest)
    for shard, marker in run.markers.items():
        _refilter_shard(fs, root, dfs, droot, shard, marker, cfg, manifest, result)
        manifest.shards[shard].status = "done"
        manifest.shards[shard].samples_in = marker.samples_in
    result.stats = audit(dfs, droot)
    manifest.status = "succeeded" if run.complete else "partial"
    manifest.summary = {
        "kept": result.kept,
        "rejected": result.rejected,
        "quarantined": result.quarantined,
        "unscored": result.unscored,
        "reward_stale": result.reward_stale,
        "to_data": result.to_data,
        "to_rejected": result.to_rejected,
    }
    manifest.updated_at = manifest.finished_at = now_iso()
    save_manifest(dfs, droot, manifest)
    return result


def _refilter_shard(fs, root, dfs, droot, shard, marker, cfg, manifest, result) -> None:
    flow = RowFlow(cfg, manifest.run_id)
    with ShardOutput(dfs, droot, shard, cfg.writer.row_group_size) as output:
        for kind in ROW_KINDS:
            for row in stream_rows(fs, posixpath.join(root, marker.files[kind].path)):
                new, stale = flow.redecide(row)
                output.add("data" if new["kept"] else "rejected", new)
                result.kept += new["kept"]
                result.rejected += not new["kept"]
                result.to_data += new["kept"] and not row["kept"]
                result.to_rejected += row["kept"] and not new["kept"]
                result.unscored += any(r.endswith(":unscored") for r in new["reject_reasons"])
                result.reward_stale += stale
        # Quarantine does not depend on filters: the same rows, now of this run.
        for row in stream_rows(fs, posixpath.join(root, marker.files["quarantine"].path)):
            output.add("quarantine", {**row, "run_id": manifest.run_id})
            result.quarantined += 1
        output.commit(
            run_id=manifest.run_id,
            fingerprint=marker.input,
            config_hash=manifest.config_hash,
            samples_in=marker.samples_in,
        )
    result.shards += 1
