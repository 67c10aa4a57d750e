"""Reject-reason codes and quarantine stages: the one enum every filter and report uses.

A code is `FILTER:REASON`. Filters return these; stats count them; the audit prints them.
"""

from enum import StrEnum


class Reason(StrEnum):
    LENGTH_EMPTY = "length:empty"  # no answer text at all (nothing after the marker)
    LENGTH_TOO_SHORT = "length:too_short"
    LENGTH_TOO_LONG = "length:too_long"
    LENGTH_NO_EOS = "length:no_eos"
    CHANGE_UNCHANGED = "change:unchanged"  # the answer only repeats the raw annotation
    STS_BELOW_THRESHOLD = "sts:below_threshold"
    STS_TOO_LONG = "sts:too_long"
    NLI_CONTRADICTION = "nli:contradiction"
    NLI_TOO_LONG = "nli:too_long"
    CLIP_ALL_REMOVED = "clip_paragraph:all_removed"
    CLIP_NO_IMAGE = "clip_paragraph:no_image"
    REWARD_BELOW_MIN = "reward:below_min"
    REWARD_LOW_GAIN = "reward:low_gain"

    @staticmethod
    def unscored(name: str) -> str:
        """Refilter: the new decision needs a score FILTER never computed for this row."""
        return f"{name}:unscored"


# The error class of a rewrite request or a scorer call that timed out on its retry as well.
TIMEOUT = "timeout"


class Stage(StrEnum):
    """Where a quarantined sample failed (DESIGN.md: read|decode|validate|rewrite|score:NAME)."""

    READ = "read"
    DECODE = "decode"
    VALIDATE = "validate"
    REWRITE = "rewrite"

    @staticmethod
    def score(name: str) -> str:
        return f"score:{name}"
