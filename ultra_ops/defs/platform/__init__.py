"""The platform domain: the upkeep of Dagster's own deployment (the platform, see
ultra_ops/platform), not of an environment: old runs purged, its PostgreSQL storage backed up."""
