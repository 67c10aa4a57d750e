"""Question-answer sources: `vqa-v2` (questions + annotations files), `gqa` (a questions file
keyed by question id) and `aokvqa` (one list with answers and rationales).

The files hold no image paths, only image ids, so the path comes from `--image-pattern`
(defaults: the official file names). VQAv2's two files list the same question ids in the same
order; they are streamed side by side, holding only the annotations read ahead of their
question (none when the files are aligned), so memory stays flat however large they are.
"""

from collections import Counter
from collections.abc import Iterator

from pf1m.ingest.formats.common import (
    SourceError,
    check_pattern,
    first_value,
    json_items,
    json_kvitems,
    sanitize_key,
    text,
)
from pf1m.ingest.phrasing import choose
from pf1m.schemas.ingest import (
    ImageRef,
    IngestPhrasing,
    IngestRequest,
    Skip,
    SkipReason,
    SourceRecord,
)

Item = SourceRecord | Skip
VQA_V2_PATTERN = "COCO_{data_subtype}_{image_id:012d}.jpg"  # under train2014/, val2014/, ...
GQA_PATTERN = "{image_id}.jpg"  # images/
AOKVQA_PATTERN = "{image_id:012d}.jpg"  # COCO 2017: train2017/, val2017/


def most_frequent(answers: list[str], preferred: str = "") -> str:
    """The most frequent answer; a tie goes to `preferred` (VQAv2's `multiple_choice_answer`)
    when it is among the tied, else to the answer seen first."""
    counts = Counter(a for a in answers if a)
    if not counts:
        return preferred
    top = max(counts.values())
    tied = [a for a, n in counts.items() if n == top]
    return preferred if preferred in tied else tied[0]


def _image_path(pattern: str, key: str, **fields) -> ImageRef | Skip:
    try:
        return ImageRef(pattern.format(**fields))
    except (ValueError, TypeError, KeyError) as exc:
        return Skip(key, SkipReason.BAD_RECORD, f"--image-pattern {pattern!r} with {fields}: {exc}")


def _vqa_record(
    ph: IngestPhrasing,
    seed: int,
    key: str,
    question: str,
    answer: str,
    image: ImageRef,
    meta: dict,
) -> Item:
    if not question:
        return Skip(key, SkipReason.BAD_RECORD, "empty question")
    if not answer:
        return Skip(key, SkipReason.NO_ANNOTATION, f"question {key}: no answer")
    instruction = choose(ph.vqa.instructions, seed, key).format(question=question)
    return SourceRecord(key, ph.image_prefix + instruction, answer, "vqa", [image], meta)


def read_vqa_v2(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    pattern = check_pattern(req.image_pattern or VQA_V2_PATTERN, {"image_id", "data_subtype"})
    subtype = text(first_value(req.src[0], "data_subtype"))
    if "{data_subtype" in pattern and not subtype:
        raise SourceError(
            f"{req.src[0]}: no `data_subtype` to name the images; pass --image-pattern"
        )
    return _vqa_v2(req, ph, pattern, subtype)


def _answers(path: str) -> Iterator[tuple[object, str]]:
    for ann in json_items(path, "annotations.item"):
        answers = [text(a.get("answer")) for a in ann.get("answers") or [] if isinstance(a, dict)]
        preferred = text(ann.get("multiple_choice_answer"))
        yield ann.get("question_id"), most_frequent(answers, preferred)


def _vqa_v2(req: IngestRequest, ph: IngestPhrasing, pattern: str, subtype: str) -> Iterator[Item]:
    assert req.answers is not None
    answers = _answers(req.answers)
    ahead: dict[object, str] = {}  # annotations read before their question came
    for q in json_items(req.src[0], "questions.item"):
        qid = q.get("question_id")
        key = sanitize_key(qid)
        while qid not in ahead:
            nxt = next(answers, None)
            if nxt is None:
                break
            ahead[nxt[0]] = nxt[1]
        answer = ahead.pop(qid, "")
        image = _image_path(pattern, key, image_id=q.get("image_id"), data_subtype=subtype)
        if isinstance(image, Skip):
            yield image
            continue
        meta = {"question_id": qid, "image_id": q.get("image_id")}
        yield _vqa_record(ph, req.seed, key, text(q.get("question")), answer, image, meta)


def read_gqa(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    pattern = check_pattern(req.image_pattern or GQA_PATTERN, {"image_id"})
    return _gqa(req, ph, pattern)


def _gqa(req: IngestRequest, ph: IngestPhrasing, pattern: str) -> Iterator[Item]:
    for qid, q in json_kvitems(req.src[0], ""):
        key = sanitize_key(qid)
        if not isinstance(q, dict):
            raise SourceError(f"{req.src[0]}: question {qid} is not an object (GQA layout?)")
        image = _image_path(pattern, key, image_id=q.get("imageId"))
        if isinstance(image, Skip):
            yield image
            continue
        meta = {"question_id": qid, "image_id": q.get("imageId")}
        answer = text(q.get("answer"))
        yield _vqa_record(ph, req.seed, key, text(q.get("question")), answer, image, meta)


def read_aokvqa(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    pattern = check_pattern(req.image_pattern or AOKVQA_PATTERN, {"image_id"})
    return _aokvqa(req, ph, pattern)


def aokvqa_answer(q: dict) -> str:
    """The correct choice when the split gives it, else the most frequent direct answer."""
    choices, idx = q.get("choices") or [], q.get("correct_choice_idx")
    if isinstance(idx, int) and 0 <= idx < len(choices) and text(choices[idx]):
        return text(choices[idx])
    return most_frequent([text(a) for a in q.get("direct_answers") or []])


def _aokvqa(req: IngestRequest, ph: IngestPhrasing, pattern: str) -> Iterator[Item]:
    cfg = ph.vqa_rationale
    for q in json_items(req.src[0], "item"):
        if not isinstance(q, dict):
            raise SourceError(f"{req.src[0]}: an entry is not an object (A-OKVQA layout?)")
        qid = q.get("question_id")
        key = sanitize_key(qid)
        question, answer = text(q.get("question")), aokvqa_answer(q)
        rationales = [r for r in (text(x) for x in q.get("rationales") or []) if r]
        if not question:
            yield Skip(key, SkipReason.BAD_RECORD, "empty question")
            continue
        if not answer or not rationales:
            yield Skip(key, SkipReason.NO_ANNOTATION, f"question {qid}: no answer or rationale")
            continue
        image = _image_path(pattern, key, image_id=q.get("image_id"))
        if isinstance(image, Skip):
            yield image
            continue
        response = cfg.response.format(
            answer=answer.rstrip("."), rationales=cfg.rationale_separator.join(rationales)
        )
        instruction = choose(cfg.instructions, req.seed, key).format(question=question)
        meta = {"question_id": qid, "image_id": q.get("image_id"), "split": q.get("split")}
        yield SourceRecord(
            key, ph.image_prefix + instruction, response, "vqa_rationale", [image], meta
        )
