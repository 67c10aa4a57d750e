"""What a scorer actor returns for one item: a value, a reason it was not scored, or an error."""

from dataclasses import dataclass
from typing import Any


@dataclass
class ScoreResult:
    value: Any = None
    reason: str | None = None  # a reject code: the scorer is known not to handle this input
    error_class: str | None = None  # an unexpected failure on this item alone
    error_text: str | None = None
