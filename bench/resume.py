"""What an interruption costs (issue: shard lifecycle). The demo config runs on demo data with
several shards in flight; the driver is SIGKILLed (with its embedded Ray) right after a
mid-run commit (`PF1M_FAULT_KILL=after_commit:SHARD`), then `pf1m resume` finishes the run.

- in-flight share: samples of the shards that had started but not committed at the kill (they
  left temporaries), over all samples: what a shard-level commit can lose at most.
- re-processed share: samples the resume processed again, over all samples (the resume's
  samples processed minus those of shards the killed run never started).

The line is {value: in-flight share, baseline: re-processed share}, so that the ratio is at
least 1 (target) when resuming costs no more than the in-flight shards.

Run: `make bench` or `python -m bench.resume [--samples N --shards K --in-flight F]`.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import demo_inputs, emit, note
from pf1m.jobs.cli import demo_model_overrides
from pf1m.pipeline.commit import TMP_TAG

ROOT = Path(__file__).resolve().parents[1]


def pf1m(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "pf1m.jobs.cli", *args, "--quiet"],
        cwd=ROOT,
        env={**clean, **(env or {})},
        start_new_session=True,
        capture_output=True,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=480)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--in-flight", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pf1m-bench-"))
    shards_dir, models = demo_inputs(work, args.samples, args.shards)
    out = work / "out"
    sets = [
        f"input={shards_dir}/*.tar",
        f"output={out}",
        *demo_model_overrides(models["rewriter"].parent),
    ]
    sets.append(f"resources.shards_in_flight={args.in_flight}")
    demo = str(ROOT / "pf1m" / "configs" / "demo.yaml")
    run = ["run", demo, *[a for s in sets for a in ("--set", s)]]
    names = sorted(p.stem for p in shards_dir.glob("*.tar"))
    per_shard = {
        n: args.samples // args.shards + (i < args.samples % args.shards)
        for i, n in enumerate(names)
    }

    victim = names[len(names) // 2]
    killed = pf1m(*run, env={"PF1M_FAULT_KILL": f"after_commit:{victim}"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    committed = {p.stem for p in (out / "_commits").glob("*.json")}
    started = {
        p.name.split(".")[0] for p in out.rglob(f"*{TMP_TAG}*") if p.parent.name != "_commits"
    }
    in_flight = started - committed
    never = set(names) - committed - in_flight
    note(
        f"killed after committing {victim}: {len(committed)} committed, "
        f"in flight {sorted(in_flight)}"
    )

    resumed = pf1m("resume", str(out))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((out / "run.json").read_text())["summary"]
    processed_again = summary["samples_processed_now"] - sum(per_shard[n] for n in never)
    total = sum(per_shard.values())
    in_flight_share = sum(per_shard[n] for n in in_flight) / total
    reprocessed_share = processed_again / total
    note(
        f"re-processed {processed_again} of {total} samples; "
        f"in flight at the kill: {in_flight_share:.3f}"
    )
    emit(
        "resume",
        "inflight_share_over_reprocessed_share",
        in_flight_share,
        "fraction",
        reprocessed_share,
        1.0,
    )


if __name__ == "__main__":
    main()
