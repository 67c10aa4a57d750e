"""Export's pure parts, without a run: multi-turn packing (budget, every sample once, seeded),
stage mixtures (exact fractions, prefixes within tolerance, seeded), the released record
layout per task, the streaming JSON reader, and the importer's derivations. ~2 s."""

import io
import json
import random
from collections import Counter

import pytest

from pf1m.export import layouts
from pf1m.export.importer import derive_task, paragraphs_of, resolve_image, shard_batches
from pf1m.export.jsonstream import iter_json_records
from pf1m.export.mixing import mix, select
from pf1m.export.packing import pack
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.config import ConfigError
from pf1m.schemas.export import MixSettings, Pf1mRecord, load_export_config
from tests.conftest import ROOT

SETTINGS = load_export_config(ROOT / "pf1m" / "configs" / "export.yaml")


# ------------------------------------------------------------------ packing


def test_packing_uses_every_item_once_within_budget_and_k():
    rng = random.Random(1)
    sizes = {i: rng.randint(5, 120) for i in range(700)}
    budget = 300

    def fits(group):
        return sum(sizes[i] for i in group) <= budget

    groups = list(pack(list(sizes), 4, fits, seed=7, window=128))
    used = [i for g, _ in groups for i in g]
    assert sorted(used) == sorted(sizes)  # each exactly once
    assert all(1 <= len(g) <= 4 and fits(g) and not over for g, over in groups)
    assert sum(len(g) for g, _ in groups) / len(groups) > 2  # it does pack
    again = list(pack(list(sizes), 4, fits, seed=7, window=128))
    other = list(pack(list(sizes), 4, fits, seed=8, window=128))
    assert groups == again and groups != other


def test_a_sample_over_the_budget_is_alone_and_flagged():
    sizes = [10, 500, 20, 30]
    groups = list(pack(range(4), 3, lambda g: sum(sizes[i] for i in g) <= 100, seed=0, window=8))
    assert ([1], True) in groups
    assert sorted(i for g, _ in groups for i in g) == [0, 1, 2, 3]
    assert sum(over for _, over in groups) == 1


def test_conversation_spans_locate_every_assistant_turn():
    rows = [
        {"uid": f"s/{i}", "source": "x", "task": "vqa", "instruction": ins, "output": out}
        for i, (ins, out) in enumerate([("What? <image>", "A cat."), ("Describe.", "Two dogs.")])
    ]
    conv = layouts.conversation(rows, [["a.png"], ["b.png", "c.png"]], SETTINGS.conversation, "c")
    assert [conv.text[s:e] for s, e in conv.assistant_spans] == ["A cat.", "Two dogs."]
    assert [t.loss for t in conv.turns] == [False, True, False, True]
    assert conv.turns[2].value == "<image>\n<image>\nDescribe."  # images first, one per line
    assert conv.images == ["a.png", "b.png", "c.png"]
    assert conv.text.count("<image>") == 3


# ------------------------------------------------------------------ mixing


def _jsonl(path, n, prefix):
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}"}) + "\n" for i in range(n)))
    return str(path)


def test_select_takes_exactly_the_count():
    for available, take in ((1000, 100), (7, 7), (7, 0), (3333, 1234)):
        assert sum(select(available, take, random.Random(available))) == take


def test_mix_fractions_within_tolerance_and_deterministic(tmp_path):
    inputs = {
        "pf1m": _jsonl(tmp_path / "pf1m.jsonl", 6000, "p"),
        "llava": _jsonl(tmp_path / "llava.jsonl", 1500, "l"),
        "text": _jsonl(tmp_path / "text.jsonl", 900, "t"),
    }
    settings = SETTINGS.mix
    m = mix(inputs, str(tmp_path / "mix"), settings, seed=3)
    s1 = m.stages["stage1"]
    assert s1.inputs["pf1m"].taken == 600 and s1.inputs["llava"].taken == 1500
    assert m.stages["stage2"].rows == 6000 and m.stages["stage2"].inputs["pf1m"].achieved == 1.0
    for stage in m.stages.values():
        for take in stage.inputs.values():
            assert abs(take.achieved - take.fraction) <= settings.tolerance
    lines = (tmp_path / "mix" / "stage1.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == s1.rows == 3000
    assert len({(r["input"], r["id"]) for r in rows}) == len(rows)  # no sample twice
    # interleaved, not concatenated: the first 1000 rows hold each input near its share
    head = Counter(r["input"] for r in rows[:1000])
    for name, take in s1.inputs.items():
        assert abs(head[name] / 1000 - take.share) < 0.06, (name, head)
    again = mix(inputs, str(tmp_path / "mix2"), settings, seed=3)
    assert (tmp_path / "mix2" / "stage1.jsonl").read_text() == (
        tmp_path / "mix" / "stage1.jsonl"
    ).read_text()
    assert again.stages["stage1"].inputs == s1.inputs
    mix(inputs, str(tmp_path / "mix3"), settings, seed=4)
    assert (tmp_path / "mix3" / "stage1.jsonl").read_text() != (
        tmp_path / "mix" / "stage1.jsonl"
    ).read_text()


def test_mix_names_a_missing_input(tmp_path):
    settings = MixSettings(tolerance=0.01, stages={"s": {"a": 1.0, "b": 0.5}})
    with pytest.raises(ConfigError, match="no --input for b"):
        mix({"a": _jsonl(tmp_path / "a.jsonl", 3, "a")}, str(tmp_path / "m"), settings, 0)


# ------------------------------------------------------------------ released layout


def _row(task, **over):
    row = {
        "uid": "sh/k", "shard": "sh", "key": "k", "source": "coco", "task": task,
        "instruction": "Describe <image> please.", "original": "a cat", "rewrite_raw": "A.\n\nB.",
        "output": "A.", "images": [{"bytes": b"\x89PNG....", "path": "k.png"}],
        "rouge_l": 0.5, "sts": 0.7, "nli_logits": [0.1, 0.2, 0.3], "nli_label": "neutral",
        "paragraphs": [{"text": "A.", "clip_score": 20.0}, {"text": "B.", "clip_score": 3.0}],
        "reward": 1.0, "reward_original": -2.0, "finish_reason": "stop", "prompt_tokens": 9,
        "output_tokens": 4, "run_id": "r",
    }  # fmt: skip
    return {**row, **over}


@pytest.mark.parametrize("task", ["caption", "vqa", "text"])
def test_pf1m_record_carries_only_the_tasks_published_fields(task):
    images = [] if task == "text" else ["images/k.0.png"]
    row = _row(task, images=[] if task == "text" else _row(task)["images"])
    if task == "text":
        row["instruction"] = "Say hi."
    record = layouts.pf1m_record(row, images, SETTINGS.published, 17.0)
    Pf1mRecord.model_validate(record)
    fields = set(record) - {"pf1m"}
    assert fields <= SETTINGS.published.allowed(task)
    assert set(SETTINGS.published.required) <= fields
    assert None not in record.values()
    if task == "caption":
        assert record["sts_similarity"] == 0.7 and "nli_similarity" not in record
        assert record["paragraph_clip_scores"] == [20.0]
        assert record["filtered_paragraphs"] == [[3.0, "B."]]
        assert record["input"] == "Describe <img_path>images/k.0.png<img_path> please."
    if task == "vqa":
        assert record["nli_similarity"] == [0.1, 0.2, 0.3] and "sts_similarity" not in record
        assert "paragraph_clip_scores" not in record
    if task == "text":
        assert fields == {"input", "output", "original", "rouge_score", "reward"}


def test_missing_scores_are_omitted_not_null():
    record = layouts.pf1m_record(_row("caption", sts=None, reward=None), ["i.png"],
                                 SETTINGS.published, 17.0)  # fmt: skip
    assert "sts_similarity" not in record and "reward" not in record


def test_image_paths_from_data_stay_inside_the_export():
    row = _row("caption", source="../../etc", shard="a/../../b", key="x/y")
    path = layouts.image_relpath("images", row, 0)
    assert ".." not in path.split("/") and path.startswith("images/")


# ------------------------------------------------------------------ import derivations


def test_json_stream_reads_arrays_and_lines_in_small_chunks(monkeypatch):
    import pf1m.export.jsonstream as js

    monkeypatch.setattr(js, "_CHUNK", 5)
    data = [{"a": "x" * 40, "n": 123456789}, {"b": [1, 2, {"c": None}]}, {"u": "é ✓"}]
    as_array = json.dumps(data, ensure_ascii=False).encode()
    as_lines = "\n".join(json.dumps(d, ensure_ascii=False) for d in data).encode()
    assert list(iter_json_records(io.BytesIO(as_array))) == data
    assert list(iter_json_records(io.BytesIO(as_lines))) == data
    assert list(iter_json_records(io.BytesIO(b" [ ] "))) == []
    with pytest.raises(json.JSONDecodeError):
        list(iter_json_records(io.BytesIO(b'[{"a": 1}, {"b": ')))


def test_released_task_derivation():
    def rec(**f):
        return Pf1mRecord(input="x", output="y", original="z", **f)

    assert derive_task(rec(), 0) == "text"
    assert derive_task(rec(nli_similarity=[0.0, 1.0, 0.0]), 1) == "vqa"
    assert derive_task(rec(sts_similarity=0.5), 2) == "change_caption"
    assert derive_task(rec(sts_similarity=0.5), 1) == "caption"
    assert derive_task(rec(paragraph_clip_scores=[20.0]), 1) == "caption"
    assert derive_task(rec(reward=1.0), 1) == "classification"


def test_released_paragraphs_kept_first_then_removed():
    record = Pf1mRecord(
        input="x", output="One.\n\nTwo.", original="z",
        paragraph_clip_scores=[20.0, 18.0], filtered_paragraphs=[[2.0, "Bad."]],
    )  # fmt: skip
    assert paragraphs_of(record, None, record.output) == [
        {"text": "One.", "clip_score": 20.0},
        {"text": "Two.", "clip_score": 18.0},
        {"text": "Bad.", "clip_score": 2.0},
    ]


def test_image_paths_resolve_under_the_root_only(tmp_path):
    (tmp_path / "coco" / "train").mkdir(parents=True)
    (tmp_path / "coco" / "train" / "1.jpg").write_bytes(b"x")
    fs, root = url_to_fs(str(tmp_path))
    assert resolve_image(fs, root, "coco/train/1.jpg") == "coco/train/1.jpg"
    assert resolve_image(fs, root, "/cpfs/user/data/coco/train/1.jpg") == "coco/train/1.jpg"
    for bad, cls in (("../x/1.jpg", "UnsafeImagePath"), ("coco/train/2.jpg", "MissingImage")):
        with pytest.raises(Exception) as exc:
            resolve_image(fs, root, bad)
        assert exc.value.error_class == cls


def test_own_exports_come_back_in_their_shards_released_ones_by_size():
    own = [{"pf1m": {"shard": s}} for s in ["a", "a", "b", "c", "c", "c"]]
    assert [(n, len(b)) for n, b in shard_batches(iter(own), 2, "f", own=True)] == [
        ("a", 2), ("b", 1), ("c", 3),
    ]  # fmt: skip
    released = [{}] * 5
    assert [(n, len(b)) for n, b in shard_batches(iter(released), 2, "f", own=False)] == [
        ("f-00000", 2), ("f-00001", 2), ("f-00002", 1),
    ]  # fmt: skip


def test_card_models_carry_recorded_revisions_and_degrade_without():
    from pf1m.export.card import models
    from pf1m.schemas.config import load_config

    cfg = load_config(ROOT / "pf1m" / "configs" / "demo.yaml", [
        "filters.reward.model=OpenAssistant/reward-model-deberta-v3-large-v2",
        "filters.nli.model=cross-encoder/nli-deberta-v3-base@abc123",
    ])  # fmt: skip
    run_json = {
        "revisions": {"OpenAssistant/reward-model-deberta-v3-large-v2": "f00d"},
        "hashed": {"model_fingerprints": {"sts": "hub:sentence-transformers/x@beef", "nli": "x"}},
    }
    found = models(cfg, run_json)
    assert found["reward"]["revision"] == "f00d"  # run.json's revisions, by hub reference
    assert found["sts"]["revision"] == "beef"  # from a hub fingerprint
    assert found["nli"]["revision"] == "abc123"  # pinned in the config
    older = models(cfg, {"hashed": {"model_fingerprints": {}}})  # a run from before revisions
    assert older["reward"]["revision"] is None and older["rewriter"]["id"] == cfg.rewriter.model


def test_reasoning_rides_in_the_pf1m_object_and_version_2_rows_have_none(tmp_path):
    from pf1m.export.importer import _Importer

    (tmp_path / "i.png").write_bytes(b"\x89PNG....")
    fs, root = url_to_fs(str(tmp_path))
    v3 = layouts.pf1m_record(_row("vqa", reasoning="I looked."), ["i.png"], SETTINGS.published, 17)
    v2 = layouts.pf1m_record(_row("vqa"), ["i.png"], SETTINGS.published, 17)  # no such column
    assert v3["pf1m"]["reasoning"] == "I looked." and "reasoning" not in v2["pf1m"]
    importer = _Importer(fs, root)
    assert importer.row(v3, "sh", 0, "new")["reasoning"] == "I looked."
    assert importer.row(v2, "sh", 0, "new")["reasoning"] is None


def test_mix_command_line(tmp_path, capsys):
    from pf1m.jobs.cli import main

    args = ["mix", "--to", str(tmp_path / "m"), "--seed", "1"]
    for name, n in (("pf1m", 200), ("llava", 50), ("text", 30)):
        args += ["--input", f"{name}={_jsonl(tmp_path / f'{name}.jsonl', n, name)}"]
    assert main(args) == 0
    assert "stage1: 100 rows" in capsys.readouterr().out  # 30 + 50 + 10% of 200
    manifest = json.loads((tmp_path / "m" / "mix.json").read_text())
    assert manifest["stages"]["stage2"]["rows"] == 200
    assert main(["mix", "--to", str(tmp_path / "n"), "--input", "nameless"]) == 2


@pytest.mark.parametrize("command", ["export", "import-pf1m", "mix"])
def test_help_prints_with_an_example(command, capsys):
    from pf1m.jobs.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0 and "example" in capsys.readouterr().out
