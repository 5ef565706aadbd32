"""`python -m ultra_ops.cli`: the console script."""

from ultra_ops.cli import run

run()
