"""The tiny random Polite Flamingo of `pf1m demo-models`: the released layout, loadable by the
real loader with nothing missing, reproducible from its seed, and fast enough for CPU demos.
About 3 s."""

import torch
from PIL import Image

from pf1m.models.flamingo import FlamingoRunner, precheck
from pf1m.models.flamingo.tiny import build_tiny, tiny_rewriter_fields
from pf1m.schemas.config import Flamingo
from tests.flamingofiles import one_thread

PROMPT = "### Human: What is shown? <image><|endofchunk|>\n### Assistent: (Revised Response): "


def test_tiny_model_is_the_released_layout_and_loads(tmp_path):
    out = build_tiny(tmp_path / "flamingo", seed=0)
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [
        "adapter/adapter_config.json", "clip/open_clip_pytorch_model.bin", "clip/pf-tiny-vit.json",
        "llama/config.json", "llama/generation_config.json", "llama/pytorch_model.bin",
        "llama/special_tokens_map.json", "llama/tokenizer.model", "llama/tokenizer_config.json",
        "openflamingo_checkpoint.pt", "polite_flamingo.pt",
    ]  # fmt: skip
    fields = tiny_rewriter_fields(out)
    cfg = Flamingo.model_validate(fields["flamingo"])
    table = precheck(fields["model"], cfg)
    missing = [line.split()[2] for line in table.splitlines()[1:7]]
    assert missing == ["0"] * 6, table
    with one_thread():
        runner = FlamingoRunner.load(fields["model"], cfg, torch.float32, "cpu")
        out = runner.generate(
            [PROMPT, "### Human: Hello\n### Assistent: (Revised Response): "],
            [[Image.new("RGB", (96, 80), (200, 20, 20))], []],
            max_new_tokens=16, do_sample=True, temperature=1.0, top_k=20, top_p=0.9,
            num_beams=3, length_penalty=1.0, no_repeat_ngram_size=3, repetition_penalty=1.0,
            stop=[], seed=0,
        )  # fmt: skip
    assert [len(g.new_ids) <= 16 and g.text is not None for g in out] == [True, True]
    assert out[0].prompt_tokens == len(runner.encode(PROMPT))


def test_same_seed_same_files(tmp_path):
    a, b = build_tiny(tmp_path / "a", seed=3), build_tiny(tmp_path / "b", seed=3)
    for path in sorted(p for p in a.rglob("*") if p.is_file()):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path
