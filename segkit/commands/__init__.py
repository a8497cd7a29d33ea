"""The ``segkit`` subcommands, one module each."""
