"""`pf1m run` with Polite Flamingo files it cannot account for: exit 2 before any work (no Ray,
no output directory), the reason in plain words. In-process `main`, about 2 s a case."""

import json

import pytest

from pf1m.jobs.cli import demo_model_overrides, main
from tests.conftest import ROOT
from tests.flamingofiles import REFUSALS, write_refusal

PRESET = ROOT / "pf1m" / "configs" / "demo-flamingo.yaml"


def sets(fields: dict) -> list[str]:
    """`--set` items for a rewriter.model + rewriter.flamingo block (values as YAML/JSON)."""
    out = [f"rewriter.model={fields['model']}"]
    for key, value in fields["flamingo"].items():
        out.append(f"rewriter.flamingo.{key}={json.dumps(value)}")
    return out


@pytest.mark.parametrize("kind", REFUSALS)
def test_run_refuses_broken_files_before_any_work(kind, demo_models, demo_shards, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", str(PRESET), "--set", f"input={demo_shards}/*.tar", "--set", f"output={out}"]
    for item in demo_model_overrides(demo_models["rewriter"].parent):  # scorers that exist
        if item.startswith("filters."):
            argv += ["--set", item]
    for item in sets(write_refusal(kind, tmp_path / "files")):
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for words in REFUSALS[kind]:
        assert words in err, err
    assert not out.exists()  # refused before any shard, before Ray
