"""The CLIP paragraph filter's model (open_clip): each paragraph's score is 100 x the best
cosine, over the sample's images, between the image embedding and the mean of the normalised
text embeddings of the paragraph's sentences."""

import io

from pf1m.models.hub import open_clip_args
from pf1m.schemas.config import ClipParagraphFilter


class ClipScorer:
    def __init__(self, cfg: ClipParagraphFilter, device: str, chunk: int) -> None:
        import open_clip

        name, weights, extra = open_clip_args(cfg.model, cfg.pretrained)
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, device=device, **extra
        )
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.device = device
        self.chunk = chunk  # images and 77-token texts are fixed-size: chunks bound memory only

    def _encode(self, encode, batch):
        import torch

        parts = [
            encode(batch[i : i + self.chunk].to(self.device)).float()
            for i in range(0, len(batch), self.chunk)
        ]
        out = torch.cat(parts)
        return out / out.norm(dim=-1, keepdim=True)

    def unsupported(self, item: dict) -> str | None:
        return None

    def score(self, items: list[dict]) -> list[list[float]]:
        import torch
        from PIL import Image

        images = [
            self.preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
            for item in items
            for b in item["images"]
        ]
        texts = [s for item in items for para in item["paragraphs"] for s in para]
        with torch.inference_mode():
            img = self._encode(self.model.encode_image, torch.stack(images))
            txt = self._encode(self.model.encode_text, self.tokenizer(texts)) if texts else None
        out, i_img, i_txt = [], 0, 0
        for item in items:
            n_img = len(item["images"])
            item_img = img[i_img : i_img + n_img]
            i_img += n_img
            scores = []
            for para in item["paragraphs"]:
                mean = txt[i_txt : i_txt + len(para)].mean(dim=0)
                i_txt += len(para)
                cosine = item_img @ (mean / mean.norm())
                scores.append(float(100.0 * cosine.max()))
            out.append(scores)
        return out
