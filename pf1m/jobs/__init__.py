"""Entry points a user runs (`pf1m ...`) or submits (`python -m pf1m.jobs.rewrite ...`)."""
