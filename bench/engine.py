"""vLLM CPU engine: start-up time and throughput of a replica with `rewriter.engine.cpu_executor:
uni` (the model in the engine-core process, pf1m's default) against vLLM's own CPU default `mp`
(one more worker process). Each side starts in a fresh process that has already imported vLLM,
so a start counts what a Ray restart or a timeout restart pays; the sides alternate and each
keeps its best of the repeats.

Run: `make bench` or `python -m bench.engine [--samples N --repeats R]`.
"""

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import demo_inputs, emit, note

CONFIG = Path(__file__).resolve().parents[1] / "pf1m" / "configs" / "demo.yaml"


def measure(models: str, shards: str, executor: str, samples: int) -> dict:
    """In this process: one engine start and one batch of `samples` requests."""
    import vllm  # noqa: F401  (imported before the clock starts: both sides pay it alike)

    from bench.rewriter import load_requests
    from pf1m.actors.replica import resolve_image_token
    from pf1m.actors.vllm_rewriter import VllmRewriter
    from pf1m.jobs.cli import demo_model_overrides
    from pf1m.schemas.config import load_config

    sets = [*demo_model_overrides(Path(models)), f"rewriter.engine.cpu_executor={executor}"]
    cfg = load_config(CONFIG, sets)
    token = resolve_image_token(cfg.rewriter.model, False, cfg.rewriter.image_token)
    requests = [r for r, _ in load_requests(cfg, Path(shards), token)][:samples]
    threads = cfg.resources.torch_threads
    started = time.perf_counter()
    replica = VllmRewriter(cfg.rewriter, cfg.seed, threads)
    start_s = time.perf_counter() - started

    async def timed() -> tuple[list, float]:
        """One event loop for both calls: the engine's output handler lives in it."""
        await replica.generate(requests[:4])  # first-request costs out of the clock
        began = time.perf_counter()
        results = await replica.generate(requests)
        return results, time.perf_counter() - began

    try:
        results, wall = asyncio.run(timed())
    finally:
        replica.shutdown()
    assert all(r.error_class is None for r in results), [r.error_text for r in results]
    return {"start_s": start_s, "samples_per_s": len(requests) / wall}


def in_fresh_process(models: Path, shards: Path, executor: str, samples: int) -> dict:
    code = (
        "import json, sys; from bench.engine import measure; "
        "print('RESULT', json.dumps(measure(*sys.argv[1:4], int(sys.argv[4]))))"
    )
    args = [sys.executable, "-c", code, str(models), str(shards), executor, str(samples)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"the {executor} side failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards, models = demo_inputs(Path(tmp), args.samples, 4)
        best: dict[str, dict] = {"uni": {}, "mp": {}}
        for _ in range(args.repeats):
            for executor in ("mp", "uni"):
                got = in_fresh_process(models["rewriter"].parent, shards, executor, args.samples)
                note(f"{executor}: {got}")
                mine = best[executor]
                mine["start_s"] = min(mine.get("start_s", float("inf")), got["start_s"])
                mine["samples_per_s"] = max(mine.get("samples_per_s", 0.0), got["samples_per_s"])
    uni, mp = best["uni"], best["mp"]
    emit("engine", "cpu_start_uni_vs_mp", uni["start_s"], "s", mp["start_s"], None)
    emit("engine", "cpu_throughput_uni_vs_mp", uni["samples_per_s"], "samples/s",
         mp["samples_per_s"], None)  # fmt: skip


if __name__ == "__main__":
    main()
