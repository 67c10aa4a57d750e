"""The YAML presets (`pf1m run paper`, `pf1m run demo`, ...), shipped as package data and read
through `importlib.resources` (pf1m/schemas/config.py `presets`), so an installed wheel has them."""
