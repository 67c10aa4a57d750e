"""Polite Flamingo loading: the load table, and the pre-check that refuses files it cannot
account for (from key names and shapes only), naming the group, tensor or file. About 3 s."""

import pytest
import torch

from pf1m.models.flamingo import FlamingoLoadError, FlamingoRunner, precheck
from tests.flamingofiles import (
    FIXTURE,
    OF_FILE,
    POLITE_FILE,
    REFUSALS,
    flamingo_block,
    one_thread,
    rewriter_fields,
    write_refusal,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def check(fields: dict) -> str:
    return precheck(fields["model"], flamingo_block(fields))


def table_row(table: str, group: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.startswith(group + " "))


def test_load_table_accounts_for_every_group_and_file():
    table = check(rewriter_fields())
    # group, loaded, missing, unexpected, then the files the tensors came from
    assert table_row(table, "vision")[:5] == [
        "vision",
        "29",
        "0",
        "0",
        "clip/open_clip_pytorch_model.bin",
    ]
    assert table_row(table, "perceiver")[:5] == ["perceiver", "25", "0", "0", OF_FILE]
    assert table_row(table, "cross-attention")[:5] == ["cross-attention", "22", "0", "0", OF_FILE]
    assert table_row(table, "decoder")[:5] == ["decoder", "73", "0", "0", "llama/pytorch_model.bin"]
    assert table_row(table, "LoRA")[:5] == ["LoRA", "112", "0", "0", POLITE_FILE]
    embeddings = " ".join(table_row(table, "embeddings"))
    assert f"{POLITE_FILE} x1" in embeddings  # embed_tokens: the last file wins
    assert "llama/pytorch_model.bin (640 rows) x1" in embeddings  # lm_head: LLaMA's rows
    assert "initialised: 3 added-token rows of lang_encoder.lm_head.weight" in table
    assert "8 rotary_emb.inv_freq buffers" in table
    assert "22 second name of a cross-attention tensor" in table
    assert "unexpected:" not in table


def test_unknown_keys_are_named_in_the_table(tmp_path):
    state = torch.load(FIXTURE / POLITE_FILE, weights_only=True)
    state["lang_encoder.model.layers.0.decoder_layer.mystery.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / POLITE_FILE)
    fields = rewriter_fields(checkpoints=[str(FIXTURE / OF_FILE), str(tmp_path / POLITE_FILE)])
    table = check(fields)
    assert table_row(table, "decoder")[3] == "1"
    assert f"unexpected: {POLITE_FILE}: lang_encoder.model.layers.0.decoder_layer.mystery" in table


@pytest.mark.parametrize("kind", REFUSALS)
def test_precheck_refuses_with_the_reason(kind, tmp_path, capsys):
    fields = write_refusal(kind, tmp_path)
    with pytest.raises(FlamingoLoadError) as err:
        check(fields)
    for words in REFUSALS[kind]:
        assert words in str(err.value)
    assert "this ran while loading" not in capsys.readouterr().out  # nothing was unpickled


def test_a_replica_refuses_the_same_way(tmp_path):
    fields = write_refusal("wrong_shape", tmp_path)
    with pytest.raises(FlamingoLoadError, match="perceiver.latents"):
        FlamingoRunner.load(fields["model"], flamingo_block(fields), torch.float32, "cpu")


def test_one_missing_tensor_is_named(tmp_path):
    state = torch.load(FIXTURE / OF_FILE, weights_only=True)
    del state["perceiver.layers.1.0.to_q.weight"]
    torch.save(state, tmp_path / OF_FILE)
    fields = rewriter_fields(checkpoints=[str(tmp_path / OF_FILE), str(FIXTURE / POLITE_FILE)])
    with pytest.raises(
        FlamingoLoadError,
        match=r"perceiver: 1 of 25 tensors missing: perceiver\.layers\.1\.0\.to_q",
    ):
        check(fields)


def test_lora_in_the_files_but_not_configured_is_refused():
    fields = rewriter_fields()
    fields["flamingo"]["lora"] = None
    with pytest.raises(FlamingoLoadError, match="lora is not set: they would be dropped"):
        check(fields)


def test_lora_tensors_for_unconfigured_targets_are_refused():
    fields = rewriter_fields()
    fields["flamingo"]["lora"] = {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}
    with pytest.raises(FlamingoLoadError, match=r"k_proj\.lora_A.*does not name"):
        check(fields)


def test_embeddings_without_the_added_tokens_are_refused(tmp_path):
    state = torch.load(FIXTURE / OF_FILE, weights_only=True)
    del state["lang_encoder.model.embed_tokens.weight"]
    torch.save(state, tmp_path / OF_FILE)
    polite = torch.load(FIXTURE / POLITE_FILE, weights_only=True)
    del polite["lang_encoder.model.embed_tokens.weight"]
    torch.save(polite, tmp_path / POLITE_FILE)
    fields = rewriter_fields(checkpoints=[str(tmp_path / OF_FILE), str(tmp_path / POLITE_FILE)])
    with pytest.raises(FlamingoLoadError, match="embed_tokens.weight with 643 rows"):
        check(fields)


def test_missing_files_and_bad_references_are_named(tmp_path):
    fields = rewriter_fields(checkpoints=[str(tmp_path / "nowhere.pt")])
    with pytest.raises(FlamingoLoadError, match="nowhere.pt is neither a local file nor a hub"):
        check(fields)
    fields = rewriter_fields()
    fields["flamingo"]["vision"] = "No-Such-ViT"
    with pytest.raises(FlamingoLoadError, match="No-Such-ViT is neither an open_clip model name"):
        check(fields)


def test_hub_ids_and_repo_files_resolve_through_huggingface_hub(tmp_path, monkeypatch):
    """rewriter.model as a hub id and checkpoints as `repo:file`, read from an offline hub
    cache in huggingface_hub's own layout: the same plan as the local files."""
    from huggingface_hub import constants

    from tests.hubcache import add_snapshot, fake_commit

    cache = tmp_path / "hub"
    for name, value in (("HF_HUB_OFFLINE", True), ("HF_HUB_CACHE", str(cache))):
        monkeypatch.setenv(name, "1" if value is True else value)
        monkeypatch.setattr(constants, name, value)
    add_snapshot(cache, "pf1m-test/llama-tiny", FIXTURE / "llama", fake_commit("llama"))
    add_snapshot(cache, "pf1m-test/flamingo-tiny", FIXTURE, fake_commit("flamingo"))
    fields = rewriter_fields()
    fields["model"] = "pf1m-test/llama-tiny"
    fields["flamingo"]["checkpoints"] = [
        f"pf1m-test/flamingo-tiny:{f}" for f in (OF_FILE, POLITE_FILE)
    ]
    fields["flamingo"]["vision_pretrained"] = (
        "pf1m-test/flamingo-tiny:clip/open_clip_pytorch_model.bin"
    )
    table = check(fields)
    hub = "pf1m-test/flamingo-tiny:"
    assert table_row(table, "LoRA")[:5] == ["LoRA", "112", "0", "0", hub + POLITE_FILE]
    assert table_row(table, "perceiver")[:5] == ["perceiver", "25", "0", "0", hub + OF_FILE]
    assert table_row(table, "decoder")[:4] == ["decoder", "73", "0", "0"]
    assert table_row(table, "decoder")[4].endswith("/pytorch_model.bin")  # from the snapshot
    fields["flamingo"]["checkpoints"] = ["pf1m-test/flamingo-tiny:missing.pt"]
    with pytest.raises(
        FlamingoLoadError, match="cannot fetch missing.pt from hub repo pf1m-test/flamingo-tiny"
    ):
        check(fields)
