"""The Polite Flamingo reference fixture (tests/data/flamingo-ref/dev) and variants of its files
for the tests: the released gen1 layout as a `rewriter.flamingo` block, a gen2 three-file
layout, and one broken variant per pre-check refusal (shared by the model tests and the CLI
tests)."""

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from pf1m.schemas.config import Flamingo

FIXTURE = Path(__file__).resolve().parent / "data" / "flamingo-ref" / "dev"
REFERENCE = FIXTURE / "reference.json"
OF_FILE = "openflamingo_checkpoint.pt"
POLITE_FILE = "polite_flamingo.pt"
LAYERS_IN_CLEVER = 4  # gen2 split: LoRA of the first decoder layers goes into the middle file

# refusal kind -> words the error must contain (group/tensor/file named, reason in plain words)
REFUSALS = {
    "missing_group": ["perceiver: missing", "cross-attention: missing"],
    "wrong_shape": ["perceiver.latents", "has shape [64, 12]", "needs [64, 16]"],
    "pickled_object": ["pickled object", "weights_only", "evil.pt"],
    "lora_targets": ["LoRA", "query_key_value", "match no module"],
}


def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def added_rows() -> torch.Tensor:
    """lm_head rows of the 3 added tokens that the reference model happened to draw."""
    return torch.load(FIXTURE / "reference.pt", weights_only=True)["lm_head_added_rows"]


def rewriter_fields(root: Path = FIXTURE, checkpoints: list[str] | None = None) -> dict:
    """`rewriter.model` and `rewriter.flamingo` for the fixture's released (gen1) layout."""
    return {
        "model": str(root / "llama"),
        "flamingo": {
            "vision": str(root / "clip" / "pf-tiny-vit-dev.json"),
            "vision_pretrained": str(root / "clip" / "open_clip_pytorch_model.bin"),
            "cross_attn_every_n_layers": 4,
            "checkpoints": checkpoints or [str(root / OF_FILE), str(root / POLITE_FILE)],
            "lora": {"path": str(root / "adapter")},
        },
    }


def flamingo_block(fields: dict) -> Flamingo:
    return Flamingo.model_validate(fields["flamingo"])


class Payload:
    """Stands for arbitrary code a pickle could run on load."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def write_gen2(out: Path) -> dict:
    """The fixture as gen2 ships: OpenFlamingo checkpoint, then a "clever" file (the LoRA of the
    first decoder layers and an embedding that the last file overrides), then a "gen2" file
    (the remaining LoRA and the final embeddings). Same weights as gen1, in three files."""
    out.mkdir(parents=True, exist_ok=True)
    polite = torch.load(FIXTURE / POLITE_FILE, weights_only=True)
    first = tuple(f"lang_encoder.model.layers.{i}." for i in range(LAYERS_IN_CLEVER))
    clever = {k: v for k, v in polite.items() if k.startswith(first)}
    embed = "lang_encoder.model.embed_tokens.weight"
    clever[embed] = torch.zeros_like(polite[embed])  # overwritten by the gen2 file, last wins
    gen2 = {k: v for k, v in polite.items() if k not in clever or k == embed}
    torch.save(clever, out / "clever_flamingo.pt")
    torch.save(gen2, out / "polite_flamingo_gen2.pt")
    paths = [
        str(FIXTURE / OF_FILE),
        str(out / "clever_flamingo.pt"),
        str(out / "polite_flamingo_gen2.pt"),
    ]
    return rewriter_fields(checkpoints=paths)


def write_refusal(kind: str, out: Path) -> dict:
    """Rewriter fields (model + flamingo block) of one broken variant, files under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    fields = rewriter_fields()
    block = fields["flamingo"]
    if kind == "missing_group":  # the OpenFlamingo checkpoint left out of the load order
        block["checkpoints"] = [str(FIXTURE / POLITE_FILE)]
    elif kind == "wrong_shape":  # a perceiver from a model of another width
        state = torch.load(FIXTURE / OF_FILE, weights_only=True)
        state["perceiver.latents"] = torch.zeros(64, 12)
        torch.save(state, out / OF_FILE)
        block["checkpoints"] = [str(out / OF_FILE), str(FIXTURE / POLITE_FILE)]
    elif kind == "pickled_object":  # a .pt that would run code if unpickled in full
        state = torch.load(FIXTURE / POLITE_FILE, weights_only=True)
        state["extra"] = Payload()
        torch.save(state, out / "evil.pt")
        block["checkpoints"] = [str(FIXTURE / OF_FILE), str(out / "evil.pt")]
    elif kind == "lora_targets":  # a LoRA config for another architecture
        block["lora"] = {"r": 8, "alpha": 16, "targets": ["query_key_value"]}
    else:
        raise ValueError(f"unknown refusal kind {kind}")
    return fields


@contextmanager
def one_thread():
    """torch on one thread while the tiny model runs: the reference was made so, and on a
    shared CPU more threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_released():
    """The fixture's released (gen1) layout through the real loading path, in fp32 on the CPU,
    with the reference's added lm_head rows."""
    from pf1m.models.flamingo import FlamingoRunner

    fields = rewriter_fields()
    return FlamingoRunner.load(
        fields["model"], flamingo_block(fields), torch.float32, "cpu", added_rows=added_rows()
    )
