"""The user's command in-process: `pf1m run` whose model cannot load. `pf1m run demo` as a
user starts it (a subprocess, from an installed wheel) is tests/test_wheel.py."""

import pytest

from pf1m.jobs.cli import demo_model_overrides
from tests.conftest import DEMO_CONFIG
from tests.test_backends import SMALL

pytestmark = pytest.mark.slow


def test_a_model_that_cannot_load_is_a_clear_error(
    ray_local, demo_models, demo_shards, tmp_path, capsys
):
    """A folder that exists but holds no model passes the start-up checks and fails in its
    actor: exit 1 naming the actor and the cause (a path that names nothing is refused earlier,
    with exit 2: tests/test_revisions.py). `pf1m run` in-process, on the session's Ray with
    small CPU requests beside its replicas: tests/test_wheel.py runs the subprocess."""
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
