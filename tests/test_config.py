"""Config validation fails before any work, naming the field and where it came from."""

import subprocess
import sys

import pytest

from pf1m.schemas.config import ConfigError, config_hash, load_config
from tests.conftest import DEMO_CONFIG, PAPER_CONFIG, ROOT


def test_presets_validate():
    paper = load_config(PAPER_CONFIG)
    demo = load_config(DEMO_CONFIG)
    flamingo = load_config(ROOT / "pf1m" / "configs" / "demo-flamingo.yaml")
    d = paper.rewriter.decoding  # the paper's decoding, exactly
    assert (d.max_tokens, d.beam_width, d.temperature, d.top_k, d.top_p) == (1024, 3, 1.0, 20, 0.9)
    assert (d.length_penalty, d.no_repeat_ngram_size) == (1.0, 3)
    assert paper.rewriter.backend == "flamingo"
    assert paper.rewriter.flamingo.checkpoints[-1].endswith(":polite_flamingo_gen2.pt")  # gen2
    assert demo.rewriter.prompt == paper.rewriter.prompt  # the same prompt
    assert paper.rewriter.prompt.style == "raw"
    assert demo.rewriter.backend == "vllm" and demo.rewriter.decoding.max_tokens == 24
    assert flamingo.rewriter.backend == "flamingo"
    for cfg in (demo, flamingo):  # every preset extends paper-filters.yaml
        assert cfg.filters.tasks == paper.filters.tasks


def test_unknown_field_in_file_names_field_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {PAPER_CONFIG}\nfilters:\n  length:\n    min_wrods: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "filters.length.min_wrods" in str(err.value)
    assert str(bad) in str(err.value)


def test_ill_typed_set_names_the_set():
    with pytest.raises(ConfigError) as err:
        load_config(PAPER_CONFIG, ["resources.batch_size=many"])
    msg = str(err.value)
    assert "resources.batch_size" in msg and "--set resources.batch_size=many" in msg


def test_set_parses_yaml_values():
    cfg = load_config(PAPER_CONFIG, ['rewriter.decoding.stop=["###", "\\n\\n"]', "seed=7"])
    assert cfg.rewriter.decoding.stop == ["###", "\n\n"] and cfg.seed == 7


@pytest.mark.parametrize(
    "override,field",
    [
        ("filters.length.min_words=900", "filters.length"),
        ("rewriter.prompt.template=no fields", "rewriter.prompt"),
        ("filters.tasks={caption: [length]}", "filters.tasks"),
        ("filters.tasks.vqa=[poetry]", "filters.tasks.vqa"),
        ("filters.sts=null", "tasks use sts but no such section"),
        ("scoring.groups=[{scorers: [sts]}]", "no group holds nli, clip_paragraph, reward"),
        ("filters.nli.premise=no fields", "filters.nli"),
        ("rewriter.decoding.top_p=0", "rewriter.decoding.top_p"),
        ("rewriter.decoding.beam_width=1", "rewriter.decoding.beam_width"),
    ],
)
def test_semantic_errors(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(PAPER_CONFIG, [override])


def test_vllm_beam_search_refuses_what_it_would_ignore():
    beam = "rewriter.decoding.beam_width=3"
    for extra in ("rewriter.decoding.stop=[x]", "rewriter.decoding.no_repeat_ngram_size=3"):
        with pytest.raises(ConfigError, match=extra.split("=")[0].removeprefix("rewriter.")):
            load_config(DEMO_CONFIG, [beam, extra])
        load_config(DEMO_CONFIG, [beam, extra, "rewriter.backend=transformers"])  # it applies


def test_malformed_set_and_yaml(tmp_path):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(PAPER_CONFIG, ["seed"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_hash_ignores_resources_but_not_thresholds():
    base = load_config(PAPER_CONFIG)
    more = load_config(
        PAPER_CONFIG,
        [
            "resources.rewriter_replicas=64",
            "rewriter.engine.max_num_seqs=8",
            "rewriter.request_timeout_s=5",
        ],
    )
    stricter = load_config(PAPER_CONFIG, ["filters.length.min_words=5"])
    digest = config_hash(base.hashed_view({"rewriter": "fp"}))
    assert config_hash(more.hashed_view({"rewriter": "fp"})) == digest
    assert config_hash(stricter.hashed_view({"rewriter": "fp"})) != digest
    assert config_hash(base.hashed_view({"rewriter": "other-weights"})) != digest


def test_cli_refuses_bad_config_before_any_work(tmp_path):
    out = tmp_path / "out"
    cli, job = [sys.executable, "-m", "pf1m.jobs.cli"], [sys.executable, "-m", "pf1m.jobs.rewrite"]
    for cmd in (
        [*cli, "run", str(DEMO_CONFIG), "--set", "resources.nope=1"],
        [*job, "--config", str(DEMO_CONFIG), "--set", "seed=x"],
    ):
        proc = subprocess.run(
            [*cmd, "--set", f"output={out}"], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 2, proc.stderr
        assert "invalid config" in proc.stderr and "--set" in proc.stderr
    assert not out.exists()
