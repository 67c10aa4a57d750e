"""Pinned model revisions: every hub model resolves to one commit at run start, run.json records
it, loaders read exactly it, and a resume keeps it however the hub cache moves on. Also: model
paths that name nothing fail before any actor, and runs written before this change resume.

The hub is a cache made on disk in huggingface_hub's real layout (tests/hubcache.py) with the
demo models under hub ids, read with HF_HUB_OFFLINE=1; models load for real from it. Fast
tests need no Ray (about 15 s, most of it loading torch and the tiny models); the two slow ones
reuse the session's Ray, rewriter and scorer actors (about 20 s).
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from pf1m.jobs.cli import main as pf1m
from pf1m.pipeline.driver import Driver
from pf1m.pipeline.manifest import load_manifest
from pf1m.pipeline.revisions import legacy_view, pin_models
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.config import ConfigError, RunConfig, config_hash, validate_config
from pf1m.schemas.modelref import load_args, parse_hub
from pf1m.schemas.run import ExitCode
from tests.conftest import demo_config
from tests.hubcache import add_snapshot, fake_commit

OLD_RUN = Path(__file__).parent / "data" / "run-before-revisions"
NLI = "pf1m-test/tiny-nli"


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, offline: huggingface_hub reads both settings when it is imported, so
    they are set in its constants as well as in the environment."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def nli_v2(demo_models: dict[str, Path], tmp_path: Path) -> Path:
    """The demo NLI model with its labels in another order: a newer upload of the same repo."""
    v2 = tmp_path / "nli-v2"
    shutil.copytree(demo_models["nli"], v2)
    config = json.loads((v2 / "config.json").read_text())
    config["id2label"] = {"0": "contradiction", "1": "entailment", "2": "neutral"}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (v2 / "config.json").write_text(json.dumps(config))
    return v2


def cfg_with(demo_shards, demo_models, out, *overrides: str) -> RunConfig:
    return demo_config(demo_shards, demo_models, out, *overrides)


def nli_order(cfg: RunConfig) -> list[int]:
    """Load the NLI scorer the way its actor does, from the (pinned) config."""
    from pf1m.models.scorers.nli import NliScorer as Scorer

    return Scorer(cfg.filters.nli, "cpu", 8).order


V1_ORDER = [2, 0, 1]  # demo NLI: 0 entailment, 1 neutral, 2 contradiction
V2_ORDER = [0, 1, 2]


def test_model_references_parse_in_one_place(tmp_path):
    odd = tmp_path / "weights@v2:final"
    odd.mkdir()
    assert parse_hub(str(odd)) is None and load_args(str(odd)) == (str(odd), None)
    assert load_args("org/name@abc") == ("org/name", "abc")
    assert load_args("org/name") == ("org/name", None)
    ref = parse_hub("org/name@v1.0:ckpt/model.pt", with_file=True)
    assert (ref.repo, ref.revision, ref.filename) == ("org/name", "v1.0", "ckpt/model.pt")
    assert (
        ref.key == "org/name@v1.0" and ref.pinned("f" * 40) == f"org/name@{'f' * 40}:ckpt/model.pt"
    )


def test_first_run_pins_the_cached_commit_and_loads_it(hub, demo_models, demo_shards, tmp_path):
    v1 = fake_commit(NLI, "v1")
    add_snapshot(hub, NLI, demo_models["nli"], v1)
    cfg = cfg_with(demo_shards, demo_models, tmp_path / "out", f"filters.nli.model={NLI}")
    pins = pin_models(cfg)
    assert pins.revisions == {NLI: v1}
    assert pins.fingerprints["nli"] == f"hub:{NLI}@{v1}"
    assert pins.fingerprints["rewriter"].startswith("dir:")  # local folders are not pinned
    assert pins.config.filters.nli.model == f"{NLI}@{v1}"
    assert pins.config.rewriter.model == cfg.rewriter.model
    assert nli_order(pins.config) == V1_ORDER


def test_recorded_commit_wins_over_a_newer_snapshot(hub, demo_models, demo_shards, tmp_path):
    v1, v2 = fake_commit(NLI, "v1"), fake_commit(NLI, "v2")
    add_snapshot(hub, NLI, demo_models["nli"], v1)
    cfg = cfg_with(demo_shards, demo_models, tmp_path / "out", f"filters.nli.model={NLI}")
    first = pin_models(cfg)
    add_snapshot(hub, NLI, nli_v2(demo_models, tmp_path), v2)  # the cache gained `main` = v2

    assert pin_models(cfg).revisions == {NLI: v2}  # a new run would take the new commit
    again = pin_models(cfg, first.revisions)  # the run that recorded v1 keeps it
    assert again.revisions == {NLI: v1} and again.fingerprints == first.fingerprints
    digest = config_hash(cfg.hashed_view(first.fingerprints))
    assert config_hash(cfg.hashed_view(again.fingerprints)) == digest
    assert nli_order(again.config) == V1_ORDER
    assert nli_order(pin_models(cfg).config) == V2_ORDER


def test_explicit_revision(hub, demo_models, demo_shards, tmp_path):
    v1, v2 = fake_commit(NLI, "v1"), fake_commit(NLI, "v2")
    add_snapshot(hub, NLI, demo_models["nli"], v1, ref="release")
    add_snapshot(hub, NLI, nli_v2(demo_models, tmp_path), v2)  # main
    out = tmp_path / "out"

    by_sha = pin_models(cfg_with(demo_shards, demo_models, out, f"filters.nli.model={NLI}@{v1}"))
    assert by_sha.revisions == {f"{NLI}@{v1}": v1} and nli_order(by_sha.config) == V1_ORDER
    by_tag = pin_models(cfg_with(demo_shards, demo_models, out, f"filters.nli.model={NLI}@release"))
    assert by_tag.revisions == {f"{NLI}@release": v1}
    assert by_tag.fingerprints["nli"] == f"hub:{NLI}@{v1}"

    # A full sha that nothing here can check is used as given (the nodes will fetch it)...
    unseen = "0123456789abcdef0123456789abcdef01234567"
    pinned = pin_models(
        cfg_with(demo_shards, demo_models, out, f"filters.nli.model={NLI}@{unseen}")
    )
    assert pinned.revisions == {f"{NLI}@{unseen}": unseen} and unseen in pinned.notes[0]
    # ... a branch it cannot resolve is refused, saying how to pin one.
    with pytest.raises(ConfigError) as err:
        pin_models(cfg_with(demo_shards, demo_models, out, f"filters.nli.model={NLI}@nightly"))
    assert f"filters.nli.model: {NLI}@nightly: cannot pin it" in str(err.value)
    assert f"filters.nli.model: {NLI}@COMMIT" in str(err.value)


def test_pinned_open_clip_hub_model_loads_from_its_commit(hub, demo_models, demo_shards, tmp_path):
    from pf1m.models.scorers.clip import ClipScorer as Scorer

    repo = "pf1m-test/tiny-clip"
    v1 = fake_commit(repo, "v1")
    add_snapshot(hub, repo, demo_models["clip"], v1)
    cfg = cfg_with(
        demo_shards, demo_models, tmp_path / "out", f"filters.clip_paragraph.model=hf-hub:{repo}"
    )
    pins = pin_models(cfg)
    assert pins.config.filters.clip_paragraph.model == f"hf-hub:{repo}@{v1}"
    assert pins.fingerprints["clip_paragraph"] == f"hub:{repo}@{v1}"
    scorer = Scorer(pins.config.filters.clip_paragraph, "cpu", 8)
    assert scorer.model.visual.image_size == (32, 32)  # the demo's tiny ViT


def test_open_clip_tag_pins_the_repository_it_downloads_from(
    hub, demo_models, demo_shards, tmp_path
):
    repo = "timm/vit_large_patch14_clip_336.openai"  # what open_clip 3.3 fetches for the tag
    commit = fake_commit(repo, "v1")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "open_clip_model.safetensors").write_bytes(b"not loaded here")
    add_snapshot(hub, repo, weights, commit)
    cfg = cfg_with(
        demo_shards,
        demo_models,
        tmp_path / "out",
        "filters.clip_paragraph.model=ViT-L-14-336",
        "filters.clip_paragraph.pretrained=openai",
    )
    pins = pin_models(cfg)
    assert pins.revisions == {repo: commit}
    assert pins.fingerprints["clip_paragraph"] == f"hub:{repo}@{commit}"
    assert pins.config.filters.clip_paragraph.pretrained == f"openai@{commit}"


def test_flamingo_checkpoint_repo_file_is_pinned(hub, demo_models, demo_shards, tmp_path):
    """A checkpoint given as `repo:file` loads from the recorded commit after `main` moved."""
    from pf1m.models.flamingo.files import resolve_file
    from pf1m.models.hub import fetch_file

    repo = "pf1m-test/flamingo-checkpoint"
    v1, v2 = fake_commit(repo, "v1"), fake_commit(repo, "v2")
    for commit, data in ((v1, b"first upload"), (v2, b"second upload")):
        folder = tmp_path / commit
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(data)
    add_snapshot(hub, repo, tmp_path / v1, v1)
    cfg = cfg_with(
        demo_shards,
        demo_models,
        tmp_path / "out",
        "rewriter.backend=flamingo",
        f'rewriter.flamingo.checkpoints=["{repo}:checkpoint.pt"]',
        "rewriter.flamingo.vision_pretrained=null",
    )
    pins = pin_models(cfg)
    assert pins.fingerprints["flamingo:checkpoint:0"] == f"hub:{repo}@{v1}:checkpoint.pt"
    pinned = pins.config.rewriter.flamingo.checkpoints[0]
    assert pinned == f"{repo}@{v1}:checkpoint.pt"
    add_snapshot(hub, repo, tmp_path / v2, v2)
    assert resolve_file(pinned, "checkpoint").read_bytes() == b"first upload"
    assert fetch_file(pinned).read_bytes() == b"first upload"
    assert pin_models(cfg, pins.revisions).config == pins.config


def test_vllm_and_transformers_get_the_revision(hub, demo_models, demo_shards, tmp_path):
    from pf1m.actors.vllm_rewriter import vllm_engine_kwargs

    cfg = cfg_with(demo_shards, demo_models, tmp_path / "out")
    pinned = cfg.rewriter.model_copy(update={"model": "org/llava@" + "a" * 40})
    kwargs = vllm_engine_kwargs(pinned, seed=0)
    assert (kwargs["model"], kwargs["revision"]) == ("org/llava", "a" * 40)
    assert kwargs["tokenizer_revision"] == "a" * 40


def test_missing_model_path_fails_before_any_work(demo_shards, tmp_path, capsys, monkeypatch):
    """Item 8: a relative path that names nothing (e.g. a git-ignored folder Ray did not upload)
    is refused naming the field and the path, before Ray or any actor starts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    args = [
        "run",
        "demo",
        "--set",
        f"input={demo_shards}/*.tar",
        "--set",
        f"output={tmp_path / 'out'}",
        "--set",
        "rewriter.model=demo_out/models/rewriter",
    ]
    assert pf1m(args) == ExitCode.BAD_CONFIG
    err = capsys.readouterr().err
    assert "rewriter.model: no such folder: demo_out/models/rewriter" in err
    assert "Repo id must be" not in err and "git does not ignore" not in err
    assert not (tmp_path / "out").exists()

    job = {"metadata": {"job_submission_id": "pf1m-0123456789"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert pf1m(args) == ExitCode.BAD_CONFIG
    err = capsys.readouterr().err
    assert "rewriter.model: no such folder: demo_out/models/rewriter" in err
    assert "Ray uploads only files git does not ignore" in err


def test_unresolvable_hub_model_is_refused_with_how_to_pin(hub, demo_shards, tmp_path, capsys):
    args = ["run", "demo", "--set", f"input={demo_shards}/*.tar"]
    args += ["--set", f"output={tmp_path / 'out'}", "--set", "rewriter.model=org/not-cached"]
    assert pf1m(args) == ExitCode.BAD_CONFIG
    err = capsys.readouterr().err
    assert "rewriter.model: org/not-cached: cannot pin it to a commit" in err
    assert "rewriter.model: org/not-cached@COMMIT" in err


def test_fields_at_their_default_stay_out_of_the_hash(demo_shards, demo_models, tmp_path):
    cfg = cfg_with(demo_shards, demo_models, tmp_path / "out")
    view = cfg.hashed_view({})
    assert "flamingo" not in view["rewriter"]  # added after version 1, left at its default
    assert view["rewriter"]["deterministic"] is False  # version 1 fields stay, default or not
    assert "tokenizer" in view["rewriter"] and "seed" in view
    flamingo = cfg.model_copy(
        update={"rewriter": cfg.rewriter.model_copy(update={"backend": "flamingo"})}
    )
    flamingo = RunConfig.model_validate(flamingo.model_dump())
    assert "flamingo" in flamingo.hashed_view({})["rewriter"]


def test_a_run_written_before_this_change_keeps_its_hash():
    """The hash run.json recorded equals the one this code computes from its config, and the
    fingerprints this code gives now differ only where the old run recorded no commit."""
    manifest = load_manifest(*url_to_fs(str(OLD_RUN / "run")))  # as resume and audit read it
    cfg = validate_config(manifest.config, "run.json")
    old_fingerprints = manifest.hashed["model_fingerprints"]
    assert config_hash(cfg.hashed_view(old_fingerprints)) == manifest.config_hash
    assert cfg.hashed_view(old_fingerprints) == manifest.hashed

    new = dict(old_fingerprints, clip_paragraph="hub:pf1m-test/tiny-clip@" + "c" * 40)
    view, roles = legacy_view(manifest.hashed, cfg.hashed_view(new))
    assert roles == ["clip_paragraph"] and config_hash(view) == manifest.config_hash


OLD_REPOS = {
    "rewriter": "pf1m-test/tiny-llava",
    "sts": "pf1m-test/minilm",
    "nli": "pf1m-test/tiny-nli",
    "reward": "pf1m-test/tiny-reward",
    "clip": "pf1m-test/tiny-clip",
}


@pytest.mark.slow
def test_old_run_directory_resumes(hub, demo_models, rewriter, scorers, tmp_path, capsys):
    """The run directory the code before this change wrote (tests/data/run-before-revisions,
    README there) resumes: its committed shard is skipped, the other is done under the same
    config hash, and run.json records the commits from now on."""
    for role, repo in OLD_REPOS.items():
        add_snapshot(hub, repo, demo_models[role], fake_commit(repo, "v1"))
    out, shards = tmp_path / "run", tmp_path / "shards"
    shutil.copytree(OLD_RUN / "run", out)
    shutil.copytree(OLD_RUN / "shards", shards)
    for tar in shards.iterdir():  # the input moved here: same bytes and mtime, new URL
        os.utime(tar, (1700000000, 1700000000))
    marker_path = out / "_commits" / "00000.json"
    marker = json.loads(marker_path.read_text())
    marker["input"]["url"] = marker["input"]["url"].replace("/tmp/compat-gen/shards", str(shards))
    marker_path.write_text(json.dumps(marker))
    fs, root = url_to_fs(str(out))
    before = load_manifest(fs, root)

    # What `pf1m resume OUT --set input=...` does, with the session's actors.
    data = dict(before.config, input=f"{shards}/*.tar", output=str(out))
    cfg = validate_config(data, "run.json")
    result = Driver(cfg, rewriters=rewriter, scorers=scorers).run()
    err = capsys.readouterr().err
    assert result.exit_code == ExitCode.OK, err
    assert "resuming: 1 shards already committed, 1 to do" in err
    assert "run.json names no commit for clip_paragraph" in err

    after = load_manifest(fs, root)
    assert after.config_hash == before.config_hash and after.run_id == before.run_id
    assert json.loads(marker_path.read_text())["committed_at"] == marker["committed_at"]
    new_marker = json.loads((out / "_commits" / "00001.json").read_text())
    assert new_marker["config_hash"] == before.config_hash
    assert after.revisions == {repo: fake_commit(repo, "v1") for repo in OLD_REPOS.values()}
    assert after.hashed["model_fingerprints"]["clip_paragraph"] == "hub:hf-hub:pf1m-test/tiny-clip"


@pytest.mark.slow
def test_rerun_after_the_cache_moved_on_resumes(
    hub, demo_models, demo_shards, rewriter, scorers, tmp_path, capsys
):
    """First run from the cache, then the cache gains a newer `main`: the same command resumes
    with the recorded commit instead of refusing a 'different config'."""
    v1, v2 = fake_commit(NLI, "v1"), fake_commit(NLI, "v2")
    add_snapshot(hub, NLI, demo_models["nli"], v1)
    out = tmp_path / "out"
    cfg = cfg_with(demo_shards, demo_models, out, f"filters.nli.model={NLI}", "limit_per_shard=2")
    first = Driver(cfg, max_shards=1, quiet=True, rewriters=rewriter, scorers=scorers).run()
    assert first.exit_code == ExitCode.OK
    fs, root = url_to_fs(str(out))
    recorded = load_manifest(fs, root)
    assert recorded.revisions == {NLI: v1}

    add_snapshot(hub, NLI, nli_v2(demo_models, tmp_path), v2)
    again = Driver(cfg, rewriters=rewriter, scorers=scorers).run()
    err = capsys.readouterr().err
    assert again.exit_code == ExitCode.OK, err
    assert "resuming: 1 shards already committed" in err
    after = load_manifest(fs, root)
    assert after.revisions == {NLI: v1} and after.config_hash == recorded.config_hash
    assert after.config["filters"]["nli"]["model"] == NLI  # the config as written
