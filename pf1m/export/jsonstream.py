"""JSON arrays and JSON lines read one record at a time: released PF-1M files and LLaVA
JSON are gigabytes, so neither the importer nor the mixer ever loads one whole."""

import codecs
import json
from collections.abc import Iterator
from typing import IO, Any

_CHUNK = 1 << 16


def iter_json_records(f: IO[bytes]) -> Iterator[Any]:
    """Records of a JSON array or of JSON lines, decoded one at a time (a released file is
    gigabytes: it is never loaded whole)."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")()
    buf, pos, eof, opened = "", 0, False, False

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = f.read(_CHUNK)
        eof = not chunk
        buf, pos = buf[pos:] + text.decode(chunk, final=eof), 0
        return True

    while True:
        while True:  # separators: whitespace, commas, the array's brackets
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf):
                break
            if not more():
                return
        if buf[pos] == "[" and not opened:
            opened, pos = True, pos + 1
            continue
        if buf[pos] == "]":
            return
        while True:
            try:
                record, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if not more():
                    raise
                continue
            if end == len(buf) and more():  # a number at the chunk's end may go on
                continue
            break
        pos = end
        yield record
