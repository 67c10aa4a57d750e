"""The whole pipeline with every filter on (issue: model filters).

- orchestration: the sum of the stages' walls when each runs alone on the same inputs (read and
  decode, rewrite, each scorer, write) divided by the end-to-end wall; target >= 0.8.
- the rewriter's busy fraction in the end-to-end run; target >= 0.9.

Stage inputs are rebuilt from the end-to-end run's own rows, so each stage alone sees exactly
what it saw in the pipeline. Run: `python -m bench.pipeline [--samples N --shards K]`.
"""

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray

from bench.common import demo_inputs, emit, note
from bench.rewriter import load_requests, rewriter_alone
from pf1m.filters import registry
from pf1m.jobs.cli import demo_model_overrides
from pf1m.pipeline.driver import Driver, absolutize, start_rewriters, start_scorers
from pf1m.pipeline.local_ray import start_local_ray
from pf1m.pipeline.reader import read_samples
from pf1m.pipeline.row_flow import RowFlow
from pf1m.pipeline.storage import url_to_fs
from pf1m.pipeline.writer import RowGroupWriter
from pf1m.schemas.config import load_config
from pf1m.schemas.rows import OUTPUT_SCHEMA

CONFIG = Path(__file__).resolve().parents[1] / "pf1m" / "configs" / "demo.yaml"


def scorer_alone(actor, name: str, items: list, call_size: int, concurrent: int) -> float:
    """Wall of scoring `items` with calls of `call_size`, `concurrent` calls in flight."""
    start = time.monotonic()
    refs = []
    for i in range(0, len(items), call_size):
        refs.append(actor.score.remote(name, items[i : i + call_size]))
        if len(refs) >= concurrent:
            _, refs = ray.wait(refs, num_returns=1)
    ray.get(refs)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=960)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pf1m-bench-"))
    shards, models = demo_inputs(work, args.samples, args.shards)
    base = [
        f"input={shards}/*.tar",
        *demo_model_overrides(models["rewriter"].parent),
        *args.overrides,
    ]
    cfg = absolutize(load_config(CONFIG, [*base, f"output={work / 'run'}"]))
    res = cfg.resources

    start_local_ray()
    rewriters, scorers = start_rewriters(cfg, "bench"), start_scorers(cfg, "bench")
    token = ray.get(rewriters[0].info.remote()).image_token
    requests = [r for r, _ in load_requests(cfg, shards, token)]
    rewriter_alone(rewriters, requests[: res.batch_size * 4], res.batch_size)  # warm-up

    summary = Driver(cfg, quiet=True, rewriters=rewriters, scorers=scorers).run().summary
    e2e = summary["wall_s"]
    note(
        f"end to end: {summary['samples_processed_now']} samples in {e2e}s, "
        f"busy {summary['rewriter_busy_fraction']}"
    )

    walls: dict[str, float] = {}
    start = time.monotonic()
    for tar in sorted(shards.glob("*.tar")):
        with open(tar, "rb") as f:
            for _ in read_samples(f, max_images=cfg.rewriter.max_images):
                pass
    walls["read"] = time.monotonic() - start
    walls["rewrite"] = len(requests) / rewriter_alone(rewriters, requests, res.batch_size)[0]

    outputs = [
        p for p in sorted((work / "run").glob("*/*.parquet")) if p.parent.name != "quarantine"
    ]
    rows = [r for path in outputs for r in pq.read_table(path).to_pylist()]
    flow = RowFlow(cfg, "bench")
    for f in registry.model_filters(cfg.filters.plugins):
        scored = [
            r for r in rows if r[f.score_field] is not None and f in flow.scored_by(r["task"])
        ]
        items = [f.request(r, f.settings(cfg.filters)) for r in scored]
        concurrent = res.shards_in_flight * res.batches_in_flight_per_shard
        walls[f.name] = scorer_alone(scorers[f.name][0], f.name, items, res.batch_size, concurrent)

    fs, _ = url_to_fs(str(work))
    start = time.monotonic()
    writer = RowGroupWriter(
        fs, str(work / "write-alone.bin"), OUTPUT_SCHEMA, cfg.writer.row_group_size
    )
    for r in rows:
        writer.add(r)
    writer.close()
    walls["write"] = time.monotonic() - start
    note("stage walls alone: " + ", ".join(f"{k} {v:.2f}s" for k, v in walls.items()))
    ray.shutdown()

    emit("pipeline", "sum_of_stage_walls_over_end_to_end_wall", sum(walls.values()), "s", e2e, 0.8)
    emit(
        "pipeline",
        "rewriter_busy_fraction_all_filters",
        summary["rewriter_busy_fraction"],
        "fraction",
        1.0,
        0.9,
    )


if __name__ == "__main__":
    main()
