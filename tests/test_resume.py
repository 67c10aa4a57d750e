"""Resuming: a changed input shard is redone and said so, failed shards are retried, resources
may change on `pf1m resume` and anything hashed may not."""

import shutil

import pytest

from pf1m.jobs.cli import main
from pf1m.pipeline.driver import Driver
from pf1m.schemas.run import ExitCode
from tests.conftest import demo_config
from tests.tarutil import png, record, write_tar

pytestmark = pytest.mark.slow


def test_changed_input_redone_failed_retried_resources_may_change(
    ray_local, rewriter, scorers, demo_models, demo_shards, tmp_path, capsys
):
    shards, out = tmp_path / "in", tmp_path / "out"
    shards.mkdir()
    for name in ("00000.tar", "00001.tar"):
        shutil.copy(demo_shards / name, shards / name)
    (shards / "broken.tar").write_bytes(b"not a tar" * 100)

    def run():
        cfg = demo_config(shards, demo_models, out, "limit_per_shard=3")
        return Driver(cfg, rewriters=rewriter, scorers=scorers).run()

    first = run()
    assert first.exit_code == ExitCode.PARTIAL and list(first.summary["shards_failed"]) == [
        "broken"
    ]
    capsys.readouterr()

    write_tar(shards / "00001.tar", [("new.json", record()), ("new.png", png())])  # changed
    write_tar(shards / "broken.tar", [("fixed.json", record()), ("fixed.png", png())])  # mended
    second = run()
    err = capsys.readouterr().err
    assert second.exit_code == ExitCode.OK
    assert "input shard 00001 changed since its commit: redoing it" in err
    assert second.summary["shards_processed_now"] == 2  # 00001 and broken; 00000 kept
    assert second.summary["samples_in"] == 3 + 1 + 1 and second.summary["shards_failed"] == {}

    assert main(["resume", str(out), "--set", "resources.shards_in_flight=1", "--quiet"]) == 0
    assert main(["resume", str(out), "--set", "filters.sts.threshold=0.9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "filters.sts.threshold" in err
