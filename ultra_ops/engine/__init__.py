"""The engine: plain Python that does the release work. Nothing here imports dagster."""
