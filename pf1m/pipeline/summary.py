"""The end-of-run summary a person reads (pure formatting)."""

from typing import Any

DEMO_NOTE = (
    "NOTE: demo weights are random, so rewrites are noise and filter decisions say nothing about "
    "quality. Real configurations: the README's sections \"The paper's rewriter\" and "
    '"Choosing a rewriter".'
)


def format_summary(summary: dict[str, Any], exit_code: int) -> str:
    s = summary
    lines = [
        "",
        "== pf1m run summary ==",
        f"shards         {s['shards_done']}/{s['shards_total']} committed"
        f" ({s['shards_processed_now']} processed now)",
        f"samples in     {s['samples_in']}",
        f"kept           {s['kept']}",
        f"rejected       {s['rejected']}",
    ]
    for code, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {code:<22} {n}")
    lines.append(f"quarantined    {s['quarantined']}")
    for stage, n in sorted(s["quarantine_stages"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {stage:<22} {n}")
    rate = s.get("samples_per_s")
    busy = s.get("rewriter_busy_fraction")
    lines.append(
        f"throughput     {rate if rate is not None else '-'} samples/s over {s['wall_s']}s"
        f" (+{s['startup_s']}s start-up)"
        + (f", rewriter busy {busy:.0%}" if busy is not None else "")
    )
    for shard, error in sorted(s["shards_failed"].items()):
        lines.append(f"FAILED shard {shard}: {error}")
    lines.append(f"output         {s['output']}  (kept rows: data/, rejected: rejected/)")
    if s.get("logs"):
        lines.append(f"logs           {s['logs']}  (Ray workers, engines)")
    state = s.get("state")
    if state in ("interrupted", "failed"):
        pending = s["shards_total"] - s["shards_done"] - len(s["shards_failed"])
        why = f" ({s['error'].splitlines()[0][:200]})" if s.get("error") else ""
        lines.append(f"state          {state}{why}; shards pending: {pending}")
    if state in ("interrupted", "failed", "partial"):
        lines.append(f"continue       pf1m resume {s['output']}")
    lines.append(f"exit code      {exit_code}")
    return "\n".join(lines)
