"""Storage opens go through pipeline/storage.py: a URL whose fsspec package is missing names the
package, on the driver (refused, exit 2) and on a worker node (the shard fails by name).
In-process, no Ray: gcsfs is not installed in this environment, as on a bare worker node."""

import pytest

from pf1m.pipeline.plan import ShardJob
from pf1m.pipeline.shard import RunContext, ShardError, process_shard
from pf1m.pipeline.storage import open_url, url_to_fs
from pf1m.schemas.commit import InputFingerprint
from pf1m.schemas.config import ConfigError, load_config
from tests.conftest import DEMO_CONFIG

MISSING = "gcsfs"  # gs:// needs it; a test environment without it stands for a bare node


@pytest.fixture(autouse=True)
def _without_gcsfs():
    import importlib.util

    assert importlib.util.find_spec(MISSING) is None, f"{MISSING} is installed: pick another"


def test_driver_side_names_the_package():
    for call in (lambda: url_to_fs("gs://bucket/out"), lambda: open_url("gs://bucket/a.tar")):
        with pytest.raises(ConfigError, match=f"needs the package {MISSING} .*on every node"):
            call()


def shard_args(tmp_path, out: str, url: str):
    cfg = load_config(DEMO_CONFIG, [f"input={tmp_path}/*.tar", f"output={out}"])
    ctx = RunContext(cfg, "run", "hash", out, "<image>")
    return ctx, ShardJob("00000", url, None), InputFingerprint(url=url, size=1)


def test_worker_side_output_names_the_package_and_the_node(tmp_path):
    with pytest.raises(ShardError) as caught:
        process_shard(*shard_args(tmp_path, "gs://bucket/out", f"file://{tmp_path}/00000.tar"), [])
    text = str(caught.value)
    assert text.startswith("00000: gs://bucket/out: needs the package gcsfs")
    assert "pip install gcsfs on every node" in text and "missing on the worker node" in text


def test_worker_side_input_names_the_package_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(
        ShardError, match="00000: gs://bucket/in/00000.tar: needs the package gcsfs"
    ):
        process_shard(*shard_args(tmp_path, str(out), "gs://bucket/in/00000.tar"), [])
    assert not [p for p in out.rglob("*") if p.is_file()]  # temporaries removed with the shard
