"""The one filter contract: what a filter reads and writes, when it runs, the reasons it gives,
and its pure decision. Model code is named by import path (`scorer`) and lives in
`pf1m.models.scorers`, so deciding from stored scores never loads a model.

A rule filter (`phase is None`) decides from a row's own fields. A model filter scores in a
phase: phase 0 reads `rewrite_raw`; phase 1 reads `output`, which exists once phase 0's filters
have rebuilt it (`after_phase`).
"""

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Histogram:
    """A report figure: the values of a row, and the setting drawn as a line over them."""

    title: str
    values: Callable[[Row], list[float]]
    threshold: Callable[[Any], float | None] = lambda settings: None


def import_object(path: str) -> Any:
    """`package.module:Name` -> the object (filter plugins, scorer classes)."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{path!r}: expected 'package.module:Name'")
    return getattr(importlib.import_module(module), name)


class Filter:
    """Subclasses set the class attributes and override `decide` (and, for a model filter,
    `request` and `record`). One instance serves every row; it holds no state."""

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]]  # row fields its request or decision reads
    writes: ClassVar[tuple[str, ...]] = ()  # row fields it stores its score in (first: null
    # when this filter did not score the row)
    phase: ClassVar[int | None] = None  # None: a rule filter
    reasons: ClassVar[tuple[str, ...]]  # every reason code it gives
    not_scorable: ClassVar[frozenset[str]] = frozenset()  # reasons given instead of a score
    scorer: ClassVar[str | None] = None  # `module:Class` of its model (pf1m.models.scorers)
    # settings that change its scores, not just its decision (refilter refuses changing them)
    scoring_settings: ClassVar[tuple[str, ...]] = ()
    histograms: ClassVar[tuple[Histogram, ...]] = ()
    labels: ClassVar[tuple[str, ...]] = ()  # a label score: the report counts each label
    labels_title: ClassVar[str] = ""

    @property
    def score_field(self) -> str:
        return self.writes[0]

    def settings(self, filters: Any) -> Any:
        """This filter's section of the `filters` config (None for a plugin without one)."""
        section = getattr(filters, self.name, None)
        return section if section is not None else filters.options.get(self.name)

    def decide(self, row: Row, settings: Any) -> list[str]:
        raise NotImplementedError

    def request(self, row: Row, settings: Any) -> Any:
        """What the scorer reads for this row, or a reason code when it cannot be scored."""
        raise NotImplementedError

    def record(self, row: dict[str, Any], value: Any) -> None:
        row[self.score_field] = value

    def after_phase(self, row: dict[str, Any], settings: Any) -> None:
        """Once this filter's phase has scored the row: change `output` if it must."""

    def build_scorer(self, settings: Any, device: str, chunk: int) -> Any:
        """The model that scores `request` items (`unsupported(item)`, `score(items)`)."""
        if self.scorer is None:
            raise TypeError(f"filter {self.name} has no scorer")
        return import_object(self.scorer)(settings, device, chunk)
