"""The merged folder (`pf1m flamingo-merge`) and the gen2 three-file layout give the released
layout's results: greedy and beam ids identical, prompt logits within 1e-4. About 6 s."""

import json

import pytest
import torch
from PIL import Image

from pf1m.jobs.cli import main
from pf1m.models.flamingo import FlamingoLoadError, FlamingoRunner, precheck
from pf1m.models.flamingo.merge import merge
from pf1m.schemas.config import Flamingo
from tests.conftest import DEMO_CONFIG
from tests.flamingofiles import (
    FIXTURE,
    added_rows,
    flamingo_block,
    load_released,
    one_thread,
    reference,
    rewriter_fields,
    write_gen2,
)

REF = reference()
CASES = ("b_one_image", "d_batch_left_padded")
LOGIT_TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def released() -> FlamingoRunner:
    return load_released()


@pytest.fixture(scope="module")
def merged_dir(tmp_path_factory):
    fields = rewriter_fields()
    out = tmp_path_factory.mktemp("merged") / "polite-flamingo"
    return merge(
        fields["model"], flamingo_block(fields), out, torch.float32, added_rows=added_rows()
    )


def outputs(runner: FlamingoRunner, case: str, num_beams: int) -> list[list[int]]:
    c = REF["cases"][case]
    ims = [[Image.open(FIXTURE / "images" / n) for n in row] for row in c["images_per_row"]]
    out = runner.generate(
        c["prompts"], ims, max_new_tokens=12, do_sample=False, temperature=1.0, top_k=0,
        top_p=1.0, num_beams=num_beams, length_penalty=1.0, no_repeat_ngram_size=3,
        repetition_penalty=1.0, stop=[], seed=None,
    )  # fmt: skip
    return [g.new_ids for g in out]


def logits(runner: FlamingoRunner, case: str) -> torch.Tensor:
    c = REF["cases"][case]
    vision_x = torch.load(FIXTURE / "reference.pt", weights_only=True)["vision_x"][case]
    mask = torch.tensor(c["attention_mask"])
    with torch.inference_mode():
        return runner.model(torch.tensor(c["input_ids"]), mask, vision_x)[mask.bool()]


def same_results(runner: FlamingoRunner, released: FlamingoRunner) -> None:
    for case in CASES:
        assert (logits(runner, case) - logits(released, case)).abs().max() < LOGIT_TOL
        for beams in (1, 3):
            assert outputs(runner, case, beams) == outputs(released, case, beams)
            want = REF["cases"][case]["generation"]["beam3_nrng3" if beams == 3 else "greedy_nrng3"]
            assert outputs(runner, case, beams) == want["new_ids"]


def test_merged_folder_gives_the_same_results(merged_dir, released):
    runner = FlamingoRunner.load(str(merged_dir), Flamingo(), torch.float32, "cpu")
    assert "LoRA" not in runner.report.split("initialised")[0]  # merged: no LoRA group
    assert "initialised" not in runner.report  # the added rows are in the file
    same_results(runner, released)


def test_merged_folder_holds_one_weight_set_and_the_tokenizer(merged_dir):
    names = sorted(p.name for p in merged_dir.iterdir())
    assert names == [
        "config.json", "generation_config.json", "load_report.txt", "model.safetensors",
        "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json",
    ]  # fmt: skip
    config = json.loads((merged_dir / "config.json").read_text())
    assert config["pf1m_flamingo"]["lora"] is None
    assert config["merged_from"]["lora_modules_merged"] == 7 * 8


def test_merged_folder_refuses_checkpoints_and_lora(merged_dir):
    cfg = Flamingo(checkpoints=[str(FIXTURE / "polite_flamingo.pt")])
    with pytest.raises(FlamingoLoadError, match="merged folder"):
        precheck(str(merged_dir), cfg)


def test_gen2_three_files_give_the_same_results(tmp_path, released):
    fields = write_gen2(tmp_path)
    table = precheck(fields["model"], flamingo_block(fields))
    assert "clever_flamingo.pt x56, polite_flamingo_gen2.pt x56" in table  # the LoRA's files
    assert "polite_flamingo_gen2.pt x1" in table  # embed_tokens: the last file wins
    runner = FlamingoRunner.load(
        fields["model"], flamingo_block(fields), torch.float32, "cpu", added_rows=added_rows()
    )
    same_results(runner, released)


def test_merge_command_writes_a_loadable_folder(tmp_path):
    fields = rewriter_fields()
    sets = [
        "rewriter.backend=flamingo",
        f"rewriter.model={fields['model']}",
        f"rewriter.flamingo={json.dumps(fields['flamingo'])}",
    ]
    args = ["flamingo-merge", str(DEMO_CONFIG), *(x for s in sets for x in ("--set", s))]
    out = tmp_path / "merged"
    assert main([*args, "--to", str(out), "--dtype", "float32"]) == 0
    assert "LoRA" not in precheck(str(out), Flamingo())
    assert main([*args, "--to", str(out)]) == 2  # not empty: refused
