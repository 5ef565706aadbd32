"""The release domain's Dagster layer: deploy, verify, rollback and backup jobs."""
