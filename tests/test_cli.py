"""The user's command: `pf1m run` on a real embedded local Ray, as a subprocess."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pf1m.jobs.cli import demo_model_overrides
from tests.conftest import DEMO_CONFIG, ROOT
from tests.test_backends import SMALL

pytestmark = pytest.mark.slow


def test_pf1m_run_smoke(demo_models, demo_shards, tmp_path):
    out = tmp_path / "out"
    models = [a for o in demo_model_overrides(demo_models["rewriter"].parent) for a in ("--set", o)]
    cmd = [
        sys.executable, "-m", "pf1m.jobs.cli", "run", str(DEMO_CONFIG),
        "--set", f"input={demo_shards}/*.tar", "--set", f"output={out}", *models,
        "--max-shards", "2", "--limit", "5",
    ]  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== pf1m run summary ==" in proc.stdout
    # A quiet terminal (what `pf1m demo` runs, less its two demo lines): pf1m's own lines;
    # Ray worker and vLLM engine output is in OUT/logs, which the summary names
    printed = (proc.stdout + proc.stderr).splitlines()
    assert len(printed) <= 40 and not [x for x in printed if "pid=" in x], "\n".join(printed)
    assert f"logs           {out}/logs" in proc.stdout
    engine = "".join(p.read_text() for p in (out / "logs").glob("worker-*.log"))
    assert "Initializing a V1 LLM engine" in engine
    assert "samples in     10" in proc.stdout and "2/2 committed" in proc.stdout
    counted = sum(pq.read_metadata(p).num_rows for p in out.glob("*/0000[01].parquet"))
    assert counted == 10


def test_a_model_that_cannot_load_is_a_clear_error(
    ray_local, demo_models, demo_shards, tmp_path, capsys
):
    """A folder that exists but holds no model passes the start-up checks and fails in its
    actor: exit 1 naming the actor and the cause (a path that names nothing is refused earlier,
    with exit 2: tests/test_revisions.py). `pf1m run` in-process, on the session's Ray with
    small CPU requests beside its replicas: the smoke test above is the subprocess."""
    from pf1m.jobs.cli import main

    (tmp_path / "not-a-model").mkdir()
    models = [a for o in demo_model_overrides(demo_models["rewriter"].parent) for a in ("--set", o)]
    small = [a for o in SMALL for a in ("--set", o)]
    code = main([
        "run", str(DEMO_CONFIG),
        "--set", f"input={demo_shards}/*.tar", "--set", f"output={tmp_path / 'out'}", *models,
        "--set", f"filters.nli.model={tmp_path / 'not-a-model'}", "--quiet", *small,
        "--set", "rewriter.backend=transformers",  # no engine to start: the scorer is the point
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert "could not start" in err and "pf1m-scorer" in err
