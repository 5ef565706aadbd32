"""Where the repository is: the folder that holds the ultra_ops package, its shipped config
(ultra_ops.toml), the Dagster instance and workspace files and deploy/. A code server started from
workspace.yaml runs there, and so do the processes the local platform starts.
"""

from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
