"""ultra_ops: the Ultra AI release process as a Dagster code location."""

__version__ = "0.1.0"
