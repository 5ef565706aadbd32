"""The platform, run on this machine (`./dev platform`).

"Platform" means one thing in ultra_ops: Dagster's own deployment, the webserver, the daemon and
the ultra_ops gRPC code server on their PostgreSQL storage, as opposed to the environments it
operates. This package runs the production platform as local processes, from the production
dagster.yaml with a launcher that needs no Docker; defs/platform/ holds the jobs of its upkeep and
engine/backups/platform_storage.py the backup of its storage.
"""
