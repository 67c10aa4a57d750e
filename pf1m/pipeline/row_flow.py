"""A sample's way to its row, coded once for the run and for refilter: the rewrite request, the
rewrite read into a row, the rule filters, the scoring phases (score requests out, scores in),
then the final decision. Pure: no Ray, no model; `pipeline/shard.py` carries the requests to
the actors, `pipeline/refilter.py` decides again from stored scores.

Decision order (a row's `reject_reasons`): the task's rule filters, then, when the row is
scored (`full`, or no rule rejected it under `cheap_first`), each of the task's model filters in
the task's order: the reason it could not be scored, else its decision on its score, else
`FILTER:unscored` (refilter only: a run scores every filter it decides on).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pf1m.filters import registry
from pf1m.filters.base import Filter
from pf1m.filters.rouge import rouge_l
from pf1m.pipeline.prompt import (
    chat_messages,
    extract_answer,
    render_prompt,
    sample_seed,
    split_reasoning,
)
from pf1m.pipeline.reader import Bad, Sample
from pf1m.schemas.config import RunConfig
from pf1m.schemas.reasons import Reason, Stage
from pf1m.schemas.rewrite import RewriteRequest, RewriteResult
from pf1m.schemas.rows import OUTPUT_SCHEMA
from pf1m.schemas.scores import ScoreResult

ERROR_TEXT_LIMIT = 4000  # characters of an error kept in a quarantine row


@dataclass
class Flowing:
    """A row on its way: the row, and what the flow knows about it that is not a column."""

    row: dict[str, Any]
    members: list[tuple[str, int]]  # the tar members it came from (for quarantine)
    rule_reasons: list[str] = field(default_factory=list)  # decided once, on the rewrite
    # filter name -> the reasons it gave instead of a score
    not_scorable: dict[str, list[str]] = field(default_factory=dict)
    failed: Bad | None = None  # rewrite or scorer failure: the row goes to quarantine


@dataclass
class ScoreRequest:
    """One filter's items for the scorer, and the rows they came from (in item order)."""

    name: str
    targets: list[Flowing]
    items: list


class RowFlow:
    def __init__(self, cfg: RunConfig, run_id: str, image_token: str = "") -> None:
        self.cfg = cfg
        self.filters = cfg.filters
        self.run_id = run_id
        self.image_token = image_token
        self.registry: dict[str, Filter] = registry.load(cfg.filters.plugins)
        self.phases: list[list[Filter]] = registry.phases(cfg.filters.plugins)
        # per task, in the task's order: its rule filters and its model filters
        by_task = {t: [self.registry[n] for n in names] for t, names in self.filters.tasks.items()}
        self._rules = {t: [f for f in fs if f.phase is None] for t, fs in by_task.items()}
        self._scored = {t: [f for f in fs if f.phase is not None] for t, fs in by_task.items()}

    # ------------------------------------------------------------------ per task
    def _settings(self, f: Filter) -> Any:
        return f.settings(self.filters)

    def rules(self, row: Mapping[str, Any]) -> list[str]:
        """The reasons of the task's rule filters, in the task's order."""
        return [str(r) for f in self._rules[row["task"]] for r in f.decide(row, self._settings(f))]

    def scored_by(self, task: str) -> list[Filter]:
        """The task's model filters, in the task's order."""
        return self._scored[task]

    def _scores_wanted(self, row: Mapping[str, Any], rule_reasons: list[str]) -> bool:
        return bool(self.scored_by(row["task"])) and (
            self.filters.scoring == "full" or not rule_reasons
        )

    # ------------------------------------------------------------------ rewrite
    def rewrite_request(
        self, shard: str, sample: Sample, images_without_markers: str = "first"
    ) -> RewriteRequest:
        """A raw prompt is rendered here; a chat prompt travels as messages and is rendered by
        the replica with the model's chat template (README, design notes)."""
        cfg = self.cfg
        p, rec = cfg.rewriter.prompt, sample.record
        uid = f"{shard}/{sample.key}"
        seed = sample_seed(cfg.seed, uid)
        adapter = cfg.rewriter.adapter_for(sample.source, rec.task)
        if p.style == "chat":
            n = len(sample.images)
            messages = chat_messages(p.system, p.template, rec.instruction, rec.response, n)
            return RewriteRequest(uid, "", sample.images, seed, adapter, messages=messages)
        prompt = render_prompt(
            p.template,
            p.system or "",
            rec.instruction,
            rec.response,
            len(sample.images),
            self.image_token,
            images_without_markers,
        )
        return RewriteRequest(uid, prompt, sample.images, seed, adapter)

    def begin(self, shard: str, sample: Sample, result: RewriteResult) -> Flowing:
        """The row of a rewritten sample with its rule filters' reasons (scores still null). A
        thinking block goes to `reasoning`; the answer is read from what follows it. A failed
        rewrite is marked for quarantine."""
        row: dict[str, Any] = {name: None for name in OUTPUT_SCHEMA.names}
        rec = sample.record
        row.update(
            uid=f"{shard}/{sample.key}",
            shard=shard,
            key=sample.key,
            source=sample.source,
            task=rec.task,
            instruction=rec.instruction,
            original=rec.response,
            images=[
                {"bytes": b, "path": n}
                for b, n in zip(sample.images, sample.image_names, strict=True)
            ],
            run_id=self.run_id,
        )
        flowing = Flowing(row, sample.members)
        if result.error_class is not None:
            row["rewrite_raw"] = result.completion
            text = result.error_text or ""
            flowing.failed = Bad(sample.key, Stage.REWRITE, result.error_class, text)
            return flowing
        prompt = self.cfg.rewriter.prompt
        reasoning, rest = split_reasoning(
            result.completion or "", prompt.think_start, prompt.think_end
        )
        answer = extract_answer(rest, prompt.answer_marker)
        row.update(
            rewrite_raw=answer,
            reasoning=reasoning,
            output=answer,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
        )
        flowing.rule_reasons = self.rules(row)
        row["reject_reasons"] = list(flowing.rule_reasons)
        return flowing

    def needs_scores(self, flowing: Flowing) -> bool:
        return flowing.failed is None and self._scores_wanted(flowing.row, flowing.rule_reasons)

    # ------------------------------------------------------------------ scoring
    def requests(self, rows: Iterable[Flowing], phase: int) -> list[ScoreRequest]:
        """This phase's score requests: for each of its filters, the rows whose task uses it.
        A row its filter cannot score gets that reason instead of a request."""
        rows = list(rows)
        out = []
        for f in self.phases[phase]:
            req = ScoreRequest(f.name, [], [])
            for flowing in rows:
                if flowing.failed is not None or f not in self.scored_by(flowing.row["task"]):
                    continue
                item = f.request(flowing.row, self._settings(f))
                if isinstance(item, str):
                    flowing.not_scorable.setdefault(f.name, []).append(item)
                    continue
                req.targets.append(flowing)
                req.items.append(item)
            if req.targets:
                out.append(req)
        return out

    def take_scores(self, name: str, targets: list[Flowing], results: list[ScoreResult]) -> None:
        """Store each result: a score, a reason it could not be scored, or a failure."""
        f = self.registry[name]
        for flowing, res in zip(targets, results, strict=True):
            if res.error_class is not None:
                key = flowing.row["key"]
                text = res.error_text or ""
                flowing.failed = Bad(key, Stage.score(name), res.error_class, text)
            elif res.reason is not None:
                flowing.not_scorable.setdefault(name, []).append(res.reason)
            else:
                f.record(flowing.row, res.value)

    def end_phase(self, rows: Iterable[Flowing], phase: int) -> None:
        """After a phase has scored: its filters may rebuild `output` (the next phase reads
        it)."""
        for flowing in rows:
            if flowing.failed is not None:
                continue
            for f in self.phases[phase]:
                if f in self.scored_by(flowing.row["task"]):
                    f.after_phase(flowing.row, self._settings(f))

    # ------------------------------------------------------------------ decision
    def _decide(
        self,
        row: dict[str, Any],
        rule_reasons: list[str],
        not_scorable: Mapping[str, Iterable[str]],
    ) -> None:
        reasons = list(rule_reasons)
        if self._scores_wanted(row, rule_reasons):
            for f in self.scored_by(row["task"]):
                instead = sorted(set(not_scorable.get(f.name, ())))
                if instead:
                    reasons += instead
                elif row[f.score_field] is None:
                    reasons.append(Reason.unscored(f.name))
                else:
                    reasons += [str(r) for r in f.decide(row, self._settings(f))]
        row["rouge_l"] = rouge_l(row["output"] or "", row["original"] or "")
        row["reject_reasons"] = list(dict.fromkeys(reasons))
        row["kept"] = not row["reject_reasons"]

    def finish(self, flowing: Flowing) -> tuple[str, dict[str, Any]]:
        """(kind, row): `data` or `rejected` with the decided row, or `quarantine`."""
        row = flowing.row
        if flowing.failed is not None:
            bad = replace(flowing.failed, members=flowing.members)
            return "quarantine", self.quarantine_row(
                row["shard"], bad, row["source"], row["task"], row["rewrite_raw"]
            )
        self._decide(row, flowing.rule_reasons, flowing.not_scorable)
        if not self.cfg.writer.embed_images:
            row["images"] = [{"bytes": None, "path": img["path"]} for img in row["images"]]
        return ("data" if row["kept"] else "rejected"), row

    def quarantine_row(
        self,
        shard: str,
        bad: Bad,
        source: str | None = None,
        task: str | None = None,
        rewrite_raw: str | None = None,
    ) -> dict[str, Any]:
        """Source and task are known once the sample's JSON was read (rewrite, score stages)."""
        return {
            "uid": f"{shard}/{bad.key}",
            "shard": shard,
            "source": source,
            "task": task,
            "key": bad.key,
            "stage": str(bad.stage),
            "error_class": bad.error_class,
            "error_text": bad.error_text[:ERROR_TEXT_LIMIT],
            "members": [{"name": n, "size": s} for n, s in bad.members],
            "rewrite_raw": rewrite_raw,
            "run_id": self.run_id,
        }

    def redecide(self, stored: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """A stored row decided again under this config from its stored scores, as the run
        would have decided it (no model). Returns the row and whether its reward was computed
        on an `output` that has now changed (a new CLIP threshold rebuilt it)."""
        row = dict(stored)
        row["output"] = row["rewrite_raw"]
        rule_reasons = self.rules(row)
        given = set(stored["reject_reasons"] or [])
        not_scorable = {f.name: given & f.not_scorable for f in self.scored_by(row["task"])}
        if self._scores_wanted(row, rule_reasons):
            for phase in range(len(self.phases)):
                for f in self.phases[phase]:
                    if f in self.scored_by(row["task"]) and row[f.score_field] is not None:
                        f.after_phase(row, self._settings(f))
        self._decide(row, rule_reasons, not_scorable)
        row["run_id"] = self.run_id
        stale = stored["reward"] is not None and row["output"] != stored["output"]
        return row, stale
