"""Every record shape of pf1m: config, input sample, output rows, stats, commit, run manifest."""
