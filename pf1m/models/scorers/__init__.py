"""The model filters' scorer models, loaded inside the scorer actors (pf1m.actors.scorer). Each
class takes (settings, device, chunk) and has `unsupported(item)` and `score(items)`; which class
serves which filter is the filter's `scorer` (pf1m.filters)."""
