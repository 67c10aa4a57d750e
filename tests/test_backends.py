"""The transformers backend through the whole pipeline, and deterministic mode."""

import pyarrow.parquet as pq
import pytest

from pf1m.pipeline.driver import Driver
from pf1m.schemas.rows import OUTPUT_SCHEMA
from pf1m.schemas.run import ExitCode
from tests.conftest import demo_config

pytestmark = pytest.mark.slow


def all_rows(out) -> dict[str, dict]:
    rows = {}
    for path in sorted(out.glob("*/*.parquet")):
        for r in pq.read_table(path).to_pylist():
            r.pop("run_id")
            rows[r["uid"]] = {**r, "_kind": path.parent.name}
    return rows


# Small logical CPU requests: the session's own replicas hold most of this machine's two.
SMALL = (
    "resources.cpus_per_replica=0.2",
    "scoring.groups=[{scorers: [sts, nli, clip_paragraph, reward], num_cpus: 0.1}]",
)


def run(shards, models, out, scorers, *extra):
    """`scorers`: running scorer actors (deterministic runs need the deterministic ones)."""
    cfg = demo_config(shards, models, out, "rewriter.backend=transformers", *SMALL, *extra)
    return Driver(cfg, quiet=True, scorers=scorers).run()


def test_transformers_backend_writes_the_same_schema(
    ray_local, scorers, demo_models, demo_shards, tmp_path
):
    result = run(demo_shards, demo_models, tmp_path / "out", scorers, "limit_per_shard=6")
    assert result.exit_code == ExitCode.OK and result.summary["samples_in"] == 24
    for kind in ("data", "rejected"):
        for path in (tmp_path / "out" / kind).glob("*.parquet"):
            assert pq.read_schema(path).remove_metadata().equals(OUTPUT_SCHEMA.remove_metadata())
    rows = all_rows(tmp_path / "out")
    assert len(rows) == 24
    written = [r for r in rows.values() if r["_kind"] != "quarantine"]
    assert all(r["finish_reason"] in {"stop", "length"} and r["output_tokens"] > 0 for r in written)


def test_deterministic_rows_do_not_depend_on_batching(
    ray_local, deterministic_scorers, demo_models, demo_shards, tmp_path
):
    common = ("rewriter.deterministic=true", "limit_per_shard=6")
    scorers = deterministic_scorers
    small = run(
        demo_shards, demo_models, tmp_path / "a", scorers, *common, "resources.batch_size=2"
    )
    large = run(
        demo_shards, demo_models, tmp_path / "b", scorers, *common,
        "resources.batch_size=16", "resources.shards_in_flight=2",
    )  # fmt: skip
    assert small.exit_code == large.exit_code == ExitCode.OK
    a, b = all_rows(tmp_path / "a"), all_rows(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) == 24
    for uid in a:
        assert a[uid] == b[uid], uid
