"""Build small WebDataset tars in tests, including malformed ones."""

import io
import json
import tarfile
from pathlib import Path

from PIL import Image


def png(colour=(200, 30, 30), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def record(task="vqa", instruction="<image>\nWhat colour?", response="red", **extra) -> bytes:
    return json.dumps(
        {"instruction": instruction, "response": response, "task": task, **extra}
    ).encode()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path
