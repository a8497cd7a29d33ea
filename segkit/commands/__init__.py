"""One module per ``segkit`` command; each is a thin layer over the runner (see segkit/cli.py)."""
