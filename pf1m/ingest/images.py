"""An ingested sample's image bytes: resolve a data-given path strictly under --images, read it,
decode it fully with PIL's decompression-bomb guard on, and return the bytes as stored when the
input contract takes its type (jpg, png, webp); anything else, or a region drawn on a copy,
is re-encoded. A problem is an `ImageProblem` with its skip reason, never a crash."""

import io
import os
from pathlib import Path, PurePosixPath

from PIL import Image, ImageDraw

from pf1m.pipeline.reader import decode_image
from pf1m.schemas.ingest import ImageRef, RegionPhrasing, SkipReason

STORED_AS_IS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # PIL format -> member extension
PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}


class ImageProblem(Exception):
    def __init__(self, reason: SkipReason, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def resolve(root: Path, rel: str) -> Path:
    """`root/rel`, refusing an absolute path, a `..` part, or a symlink that leads out of root.
    `root` must already be resolved."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or os.path.isabs(rel) or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ImageProblem(SkipReason.PATH_ESCAPE, f"{rel!r}: absolute or '..' path")
    try:
        path = (root / rel).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop
        raise ImageProblem(SkipReason.BAD_RECORD, f"{rel!r}: not a usable path ({exc})") from None
    if not path.is_relative_to(root):
        raise ImageProblem(SkipReason.PATH_ESCAPE, f"{rel!r}: resolves outside --images")
    return path


def _read(path: Path, rel: str) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ImageProblem(SkipReason.IMAGE_MISSING, f"{rel}: no such file") from None
    except OSError as exc:
        raise ImageProblem(SkipReason.IMAGE_UNREADABLE, f"{rel}: {exc.strerror or exc}") from None


def _decode(payload: bytes, rel: str) -> Image.Image:
    try:
        return decode_image(payload)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(SkipReason.IMAGE_TOO_LARGE, f"{rel}: {exc}") from None
    except Exception as exc:  # whatever PIL raises on a bad file is this sample's problem
        raise ImageProblem(
            SkipReason.IMAGE_UNDECODABLE, f"{rel}: {type(exc).__name__}: {exc}"
        ) from None


def _png(img: Image.Image) -> bytes:
    if img.mode not in PNG_MODES:
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def draw_box(
    img: Image.Image, box: tuple[float, float, float, float], cfg: RegionPhrasing
) -> Image.Image:
    """A copy of `img` with the (x, y, w, h) pixel box outlined, the line just outside the box
    where the image leaves room, so the region itself stays as it was."""
    copy = img.convert("RGB")
    x, y, w, h = box
    pad = cfg.box_width
    x0, y0 = max(round(x) - pad, 0), max(round(y) - pad, 0)
    x1 = min(round(x + w) + pad - 1, copy.width - 1)
    y1 = min(round(y + h) + pad - 1, copy.height - 1)
    if w <= 0 or h <= 0 or x0 > x1 or y0 > y1:
        raise ImageProblem(SkipReason.BAD_RECORD, f"box {list(box)} is empty or off the image")
    ImageDraw.Draw(copy).rectangle((x0, y0, x1, y1), outline=cfg.box_colour, width=cfg.box_width)
    return copy


def load(root: Path, ref: ImageRef, region: RegionPhrasing, reencode: bool) -> tuple[str, bytes]:
    """(member extension, bytes) for one image of a sample."""
    payload = _read(resolve(root, ref.path), ref.path)
    img = _decode(payload, ref.path)
    try:
        if ref.box is not None:
            drawn = draw_box(img, ref.box, region)
            if img.format == "JPEG" and not reencode:
                buf = io.BytesIO()
                drawn.save(buf, format="JPEG", quality=region.jpeg_quality)
                return "jpg", buf.getvalue()
            return "png", _png(drawn)
        ext = STORED_AS_IS.get(img.format or "")
        if ext is None or reencode:
            return "png", _png(img)
        return ext, payload
    except ImageProblem:
        raise
    except Exception as exc:  # a mode PIL decodes but cannot convert or encode
        detail = f"{ref.path}: cannot re-encode ({type(exc).__name__}: {exc})"
        raise ImageProblem(SkipReason.IMAGE_UNDECODABLE, detail) from None
