"""The golden run: the demo data through the transformers backend, deterministic, every filter
deciding, scored in full. Its rows, per-shard stats and audited figures were recorded before the
filter/row-flow restructuring (issue 13) and must stay identical: `tests/test_golden.py`.

Regenerate (only when a change is meant to alter decisions, and say so in the commit):
    .venv/bin/python -m tests.golden
"""

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
SETTINGS = (
    "rewriter.backend=transformers",
    "rewriter.deterministic=true",
    "filters.scoring=full",
    "filters.reward.min_reward=-0.00688",
    "filters.reward.min_gain=-0.0002",
    "limit_per_shard=12",
    "resources.cpus_per_replica=0.2",
    "scoring.groups=[{scorers: [sts, nli, clip_paragraph, reward], num_cpus: 0.1}]",
)
TIMING_FIELDS = ("wall_s", "generated_at", "run_id", "config_hash")


def _plain(value: Any) -> Any:
    """Image bytes as their digest, so the fixture stays small and still pins every byte."""
    if isinstance(value, bytes):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def snapshot(out: Path) -> dict[str, Any]:
    """Rows of every output file (all columns but `run_id`), each shard's stats and the audit's
    figures (all but timings and run identity)."""
    rows = {}
    for path in sorted(out.glob("*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            row.pop("run_id")
            rows[row["uid"]] = {"_file": f"{path.parent.name}/{path.name}", **_plain(row)}
    stats = {}
    for path in sorted((out / "stats").glob("*.json")):
        shard = json.loads(path.read_text())
        stats[path.stem] = {k: v for k, v in shard.items() if k not in TIMING_FIELDS}
    audited = json.loads((out / "stats.json").read_text())
    figures = {k: v for k, v in audited.items() if k not in TIMING_FIELDS}
    return {"rows": dict(sorted(rows.items())), "shard_stats": stats, "audit": figures}


def run_golden(shards: Path, models: dict[str, Path], out: Path, *extra: str, scorers=None):
    """`scorers`: deterministic scorer actors already running (None: the driver starts them)."""
    from pf1m.pipeline.audit import audit
    from pf1m.pipeline.driver import Driver
    from pf1m.pipeline.storage import url_to_fs
    from tests.conftest import demo_config

    cfg = demo_config(shards, models, out, *SETTINGS, *extra)
    result = Driver(cfg, quiet=True, scorers=scorers).run()
    audit(*url_to_fs(str(out)))
    return result


def load() -> dict[str, Any]:
    return json.loads((GOLDEN / "snapshot.json").read_text())


def main() -> int:
    import os
    import tempfile

    import ray

    from pf1m.demo.data import write_shards
    from pf1m.demo.models import build_all
    from pf1m.pipeline.local_ray import start_local_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = build_all(root / "models")
        (root / "shards").mkdir()
        write_shards(root / "shards", samples=84, shards=4, seed=0)
        os.environ.pop("RAY_ADDRESS", None)
        start_local_ray()
        try:
            result = run_golden(root / "shards", models, root / "out")
        finally:
            ray.shutdown()
        if result.exit_code != 0:
            print(f"golden run failed: {result}", file=sys.stderr)
            return 1
        GOLDEN.mkdir(parents=True, exist_ok=True)
        text = json.dumps(snapshot(root / "out"), indent=1, sort_keys=True)
        (GOLDEN / "snapshot.json").write_text(text + "\n")
    print(f"wrote {GOLDEN / 'snapshot.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
