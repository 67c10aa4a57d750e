"""The generation entry point a rewriter replica calls: prompts and images in, answers out.

`FlamingoRunner.generate` repeats the authors' inferencer: prompt ids by the 4.28 rules,
`vision_x` from the images (a black image for a text-only sample, zero images as batch
padding), left padding, then transformers' `generate` with mask-derived positions, the image
latents repeated per beam, and the no-repeat n-gram ban over the whole sequence. A sample that
cannot run (e.g. its `<image>` markers and images disagree) raises; the caller may retry the
batch item by item to isolate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from PIL import Image
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from pf1m.models.flamingo.images import vision_batch
from pf1m.models.flamingo.loader import load
from pf1m.models.flamingo.model import FlamingoModel
from pf1m.models.flamingo.ngram import NoRepeatNGram
from pf1m.models.flamingo.tokenizer import EOS_ID, PAD_ID, PromptTokenizer

if TYPE_CHECKING:  # pydantic is not needed to run the model (e.g. a bare GPU machine)
    from pf1m.schemas.config import Flamingo


@dataclass
class Generated:
    """One prompt's answer, in prompt order."""

    new_ids: list[int]  # up to, not including, EOS
    text: str  # new ids decoded (special tokens skipped), cut before the first stop string
    finish_reason: str  # "stop": EOS or a stop string; "length": max_new_tokens reached
    prompt_tokens: int


class _StopStrings(StoppingCriteria):
    """Ends a row once its new text holds a stop string (the text is cut afterwards)."""

    def __init__(self, tokenizer: PromptTokenizer, prompt_len: int, stop: list[str]) -> None:
        self.tokenizer, self.prompt_len, self.stop = tokenizer, prompt_len, stop

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [
            any(s in self.tokenizer.decode(row[self.prompt_len :].tolist()) for s in self.stop)
            for row in input_ids
        ]
        return torch.tensor(done, device=input_ids.device)


class FlamingoRunner:
    def __init__(
        self, model: FlamingoModel, tokenizer: PromptTokenizer | None, report: str = ""
    ) -> None:
        """`tokenizer` None: only `generate_ids` works (benchmarks on random weights)."""
        self.model = model
        self.tokenizer = tokenizer
        self.report = report
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.image_size = model.spec.vision.image_size

    @classmethod
    def load(
        cls,
        model: str,
        cfg: Flamingo,
        dtype: torch.dtype,
        device: str,
        revision_map: dict | None = None,
        added_rows: torch.Tensor | None = None,
    ) -> FlamingoRunner:
        """`added_rows`: lm_head's rows of the 3 added tokens, instead of the seeded rule."""
        net, parts, report = load(model, cfg, dtype, device, revision_map, added_rows)
        return cls(net, PromptTokenizer(parts.tokenizer_file), report)

    @property
    def lm_shape(self) -> tuple[int, int]:
        """(decoder layers, hidden size) of the language model, for KV-cache sizing."""
        config = self.model.lang_encoder.config
        return config.num_hidden_layers, config.hidden_size

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt)

    def generate(
        self,
        prompts: list[str],
        images: list[list[Image.Image]],
        *,
        max_new_tokens: int,
        do_sample: bool,
        temperature: float,
        top_k: int,
        top_p: float,
        num_beams: int,
        length_penalty: float,
        no_repeat_ngram_size: int | None,
        repetition_penalty: float,
        stop: list[str],
        seed: int | None,
        min_new_tokens: int = 0,
    ) -> list[Generated]:
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
        ids = [self.encode(p) for p in prompts]
        media = self.tokenizer.media_id
        for i, (row, ims) in enumerate(zip(ids, images, strict=True)):
            if row.count(media) != len(ims):
                raise ValueError(
                    f"prompt {i} has {row.count(media)} <image> markers but {len(ims)} images"
                )
        out = self.generate_ids(
            ids,
            vision_batch(images, self.image_size),
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_beams=num_beams,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
            stop=stop,
            seed=seed,
            min_new_tokens=min_new_tokens,
        )
        results = []
        for row, new in zip(ids, out, strict=True):
            stopped = EOS_ID in new
            new = new[: new.index(EOS_ID)] if stopped else new
            text = self.tokenizer.decode(new)
            cut = min((text.index(s) for s in stop if s in text), default=None)
            if cut is not None:  # like the other backends: the stop string is not output
                text = text[:cut]
            finish = "stop" if stopped or cut is not None else "length"
            results.append(Generated(new, text, finish, len(row)))
        return results

    def generate_ids(
        self,
        ids: list[list[int]],
        vision_x: torch.Tensor,
        *,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int | None = None,
        repetition_penalty: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        """Prompt ids (BOS first) and their (B, T_img, 1, 3, H, W) images -> each row's new
        ids as `generate` returned them (finished rows padded after EOS)."""
        width = max(len(r) for r in ids)
        input_ids = torch.full((len(ids), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):  # left padding: every prompt ends at the same column
            input_ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        kw: dict = dict(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            num_beams=num_beams,
            length_penalty=length_penalty,
            early_stopping=False,
            repetition_penalty=repetition_penalty,
            do_sample=do_sample,
        )
        if do_sample:
            kw.update(temperature=temperature, top_k=max(top_k, 0), top_p=top_p)
        if no_repeat_ngram_size:
            kw["logits_processor"] = LogitsProcessorList([NoRepeatNGram(no_repeat_ngram_size)])
        if stop and num_beams == 1 and self.tokenizer is not None:
            kw["stopping_criteria"] = StoppingCriteriaList(
                [_StopStrings(self.tokenizer, width, stop)]
            )
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids.to(self.device),
                mask.to(self.device),
                vision_x.to(self.device, self.dtype),
                **kw,
            )
        return out[:, width:].tolist()
