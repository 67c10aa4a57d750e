"""Behaviour pinned across restructurings: the golden run (tests/golden.py) gives the recorded
rows, stats and audited figures, and refilter with no change reproduces every decision."""

import pytest

from pf1m.pipeline.refilter import refilter
from pf1m.schemas.run import ExitCode
from tests.golden import load, run_golden, snapshot

pytestmark = pytest.mark.slow


def _diff(got: dict, want: dict) -> list[str]:
    problems = [f"missing {k}" for k in want.keys() - got.keys()]
    problems += [f"unexpected {k}" for k in got.keys() - want.keys()]
    problems += [k for k in want.keys() & got.keys() if got[k] != want[k]]
    return sorted(problems)


def test_golden_run_and_refilter_reproduce_the_recorded_decisions(
    ray_local, deterministic_scorers, demo_models, demo_shards, tmp_path
):
    out = tmp_path / "out"
    result = run_golden(demo_shards, demo_models, out, scorers=deterministic_scorers)
    assert result.exit_code == ExitCode.OK
    got, want = snapshot(out), load()
    assert len(want["rows"]) == 48
    assert _diff(got["rows"], want["rows"]) == []
    assert got["shard_stats"] == want["shard_stats"]
    assert got["audit"] == want["audit"]

    again = tmp_path / "again"
    refilter(str(out), [], str(again))
    redecided = snapshot(again)
    assert _diff(redecided["rows"], want["rows"]) == []
    assert redecided["shard_stats"] == want["shard_stats"]
    assert redecided["audit"] == want["audit"]
