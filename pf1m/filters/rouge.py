"""Rouge-L F-measure of `output` against `original`: recorded, never a filter (PF-1M's
`rouge_score`). Tokenised like the `rouge_score` package: lower case, alphanumeric runs."""

import re

_TOKEN = re.compile(r"[a-z0-9]+")


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str) -> float:
    cand = _TOKEN.findall(candidate.lower())
    ref = _TOKEN.findall(reference.lower())
    if not cand or not ref:
        return 0.0
    lcs = _lcs(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
