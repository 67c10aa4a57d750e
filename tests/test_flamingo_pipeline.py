"""`pf1m/configs/demo-flamingo.yaml` end to end: the tiny Polite Flamingo that `pf1m demo-models`
builds, in the released file layout, as a `flamingo` replica on the session's local Ray, with
the demo's scorers, commits and `pf1m audit`. About 40 s."""

import json

import pyarrow.parquet as pq
import pytest

from pf1m.jobs.cli import demo_model_overrides, main
from pf1m.pipeline.driver import Driver
from pf1m.schemas.config import load_config
from pf1m.schemas.run import ExitCode
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PRESET = ROOT / "pf1m" / "configs" / "demo-flamingo.yaml"


@pytest.fixture(scope="module")
def flamingo_run(ray_local, scorers, demo_models, demo_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("flamingo-run")
    overrides = [
        f"input={demo_shards}/*.tar",
        f"output={out}",
        *demo_model_overrides(demo_models["rewriter"].parent, flamingo=True),
        "limit_per_shard=6",
        "resources.cpus_per_replica=0.25",  # beside the session's vLLM replica on 2 CPUs
    ]
    cfg = load_config(PRESET, overrides)
    return out, Driver(cfg, quiet=True, scorers=scorers).run()


def test_demo_flamingo_runs_commits_and_audits(flamingo_run):
    out, result = flamingo_run
    assert result.exit_code == ExitCode.OK
    s = result.summary
    assert s["shards_done"] == 4 and s["samples_in"] == 24
    assert s["kept"] + s["rejected"] + s["quarantined"] == 24
    assert s["quarantined"] == 0
    rows = [r for p in sorted(out.glob("*/*.parquet")) for r in pq.read_table(p).to_pylist()]
    rewritten = [r for r in rows if "rewrite_raw" in r and r.get("output_tokens")]
    assert len(rewritten) == 24
    # beam search with sampling runs to the token limit or to EOS; every row counted its tokens
    assert all(0 < r["output_tokens"] <= 24 for r in rewritten)
    assert all(r["prompt_tokens"] > 0 for r in rewritten)
    assert main(["audit", str(out)]) == 0  # every committed file verifies
    totals = json.loads((out / "stats.json").read_text())["totals"]
    assert totals["samples_in"] == 24 and totals["kept"] == s["kept"]
