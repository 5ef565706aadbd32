"""What the tests share besides fixtures: configs, databases, ports, the CLI in its own process,
HTTP peers and the running platform. Tests import these modules directly; conftest.py holds only
fixtures and hooks. bench/ writes its configs with the same writers (configs.py)."""
