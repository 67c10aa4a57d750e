"""Images to the `vision_x` tensor the model takes, as the authors' inferencer made it.

- Each image: open_clip's validation transform for the model: resize the shorter side to the
  model's size (bicubic), center crop, RGB, scale to [0, 1], normalise with OpenAI's mean/std.
  Written with PIL and torch only (the same arithmetic as torchvision's PIL path).
- A sample without images gets one black 224 x 224 image (and no `<image>` token, so nothing
  attends it).
- A batch pads its image axis with all-zero tensors; by the media rule no token attends them.
- `vision_x` has shape (batch, images, 1, 3, size, size).
"""

import numpy as np
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BLACK_SIZE = 224  # the inferencer's stand-in image for text-only samples


def preprocess(image: Image.Image, size: int) -> torch.Tensor:
    """One image -> (3, size, size) float32."""
    w, h = image.size
    if w <= h:  # torchvision Resize(size): shorter side to size, the other truncated
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    if new != (w, h):
        image = image.resize(new, Image.BICUBIC)
    w, h = image.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    if top < 0 or left < 0:
        raise ValueError(f"image of {w}x{h} is smaller than the crop {size}")
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    return (x - mean) / std


def black_image() -> Image.Image:
    return Image.new("RGB", (BLACK_SIZE, BLACK_SIZE))


def vision_batch(images: list[list[Image.Image]], size: int) -> torch.Tensor:
    """Per-sample image lists -> (B, T_max, 1, 3, size, size), zero tensors as padding."""
    rows = [[preprocess(im, size) for im in (ims or [black_image()])] for ims in images]
    t_max = max(len(r) for r in rows)
    out = torch.zeros(len(rows), t_max, 1, 3, size, size)
    for i, row in enumerate(rows):
        out[i, : len(row), 0] = torch.stack(row)
    return out
