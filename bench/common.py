"""Shared benchmark helpers: the JSON line format and demo fixtures built in a temp dir."""

import json
import sys
from pathlib import Path


def emit(
    bench: str, metric: str, value: float, unit: str, baseline: float | None, target: float | None
) -> dict:
    """Print one result line; ratio = value / baseline, measured in the same run."""
    ratio = None if not baseline else round(value / baseline, 3)
    line = {
        "bench": bench,
        "metric": metric,
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "ratio": ratio,
        "target": target,
    }
    print(json.dumps(line), flush=True)
    return line


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def demo_inputs(work: Path, samples: int, shards: int) -> tuple[Path, dict[str, Path]]:
    from pf1m.demo.data import write_shards
    from pf1m.demo.models import build_all

    shards_dir = work / "shards"
    write_shards(shards_dir, samples, shards, seed=0)
    return shards_dir, build_all(work / "models")
