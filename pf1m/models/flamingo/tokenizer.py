"""Prompt ids and answer text exactly as the authors' tokenizer made them.

The authors used transformers 4.28's slow `LlamaTokenizer` with `<|endofchunk|>`, `<image>` and
`<PAD>` added after the sentencepiece vocabulary and pad/bos/eos forced to 0/1/2. transformers 5
tokenizes such prompts differently (no BOS, spaces kept around special tokens), so the rules are
rebuilt here on sentencepiece itself:

- encode: split the text on the special tokens, strip the whitespace on both sides of each
  special token, encode every remaining piece of text on its own (with sentencepiece's dummy
  prefix `▁`), prepend BOS;
- decode: drop the special ids (pad/unk, bos, eos, `<|endofchunk|>`, `<image>`) and let
  sentencepiece join the rest (`<PAD>` is not special there: it splits the text and is kept).
"""

import re
from pathlib import Path

EOC = "<|endofchunk|>"
MEDIA = "<image>"
PAD = "<PAD>"
ADDED = (EOC, MEDIA, PAD)  # ids vocab, vocab+1, vocab+2, in this order
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
# sentencepiece's own special pieces are no-split tokens of the slow tokenizer too
BASE_SPECIAL = {"<unk>": PAD_ID, "<s>": BOS_ID, "</s>": EOS_ID}
TOKENIZER_FILE = "tokenizer.model"


class PromptTokenizer:
    """The slow-tokenizer rules of transformers 4.28 on a LLaMA `tokenizer.model`."""

    def __init__(self, model_file: str | Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.vocab = self.sp.get_piece_size()
        self.eoc_id, self.media_id, self.pad_token_id = (self.vocab + i for i in range(3))
        self.special = {**BASE_SPECIAL, EOC: self.eoc_id, MEDIA: self.media_id}
        self.added = {**self.special, PAD: self.vocab + 2}
        # longest first, so that a token that is a prefix of another cannot win
        names = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")
        self.skipped = {PAD_ID, BOS_ID, EOS_ID, self.eoc_id, self.media_id}

    def __len__(self) -> int:
        return self.vocab + len(ADDED)

    def encode(self, text: str) -> list[int]:
        """BOS, then each text piece encoded on its own, special tokens in between."""
        parts = self._split.split(text)
        for i, part in enumerate(parts):
            if part in self.special:  # the slow tokenizer strips around special tokens
                if i > 0:
                    parts[i - 1] = parts[i - 1].rstrip()
                if i + 1 < len(parts):
                    parts[i + 1] = parts[i + 1].lstrip()
        ids = [BOS_ID]
        for part in parts:
            if part in self.added:
                ids.append(self.added[part])
            elif part:
                ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` with special tokens skipped (`skip_special_tokens=True` in 4.28)."""
        chunks: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self.skipped:
                continue
            if i == self.pad_token_id:  # an added token that is not special: its own chunk
                if run:
                    chunks.append(self.sp.decode(run))
                    run = []
                chunks.append(PAD)
            else:
                run.append(i)
        if run:
            chunks.append(self.sp.decode(run))
        return " ".join(chunks)  # 4.28 joins chunks around added tokens with a space
