"""Demo dataset and tiny random-weight models, built locally so the pipeline runs offline."""
