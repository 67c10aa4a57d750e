"""Filters: each one a small class in its own module (the contract is `base.Filter`), listed in
`registry.py`; decisions are pure, so a run can be re-decided from stored scores. Nothing here
loads a model: scorer model code lives in `pf1m.models.scorers`."""
