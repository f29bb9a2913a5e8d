"""`python -m stratuslab` is `stratus`."""

from stratuslab.cli.main import entry

entry()
