"""The platform domain: Dagster's own upkeep (old runs purged, its PostgreSQL backed up)."""
