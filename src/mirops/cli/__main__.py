"""`python -m mirops.cli`: the same as the `mirops` console script."""

from mirops.cli import entry

entry()
