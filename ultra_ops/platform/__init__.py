"""The production platform run on this machine: webserver, daemon and the ultra_ops gRPC code
server on PostgreSQL storage, from the production dagster.yaml with a launcher that needs no Docker."""
