"""The one error class for a Polite Flamingo that cannot be loaded as configured."""


class FlamingoLoadError(ValueError):
    """The files or settings cannot make the model; the message names the group, tensor or
    file and the reason in plain words. Raised before any weight is read where possible
    (`loader.precheck`), so a run refuses (exit 2) before it starts."""
