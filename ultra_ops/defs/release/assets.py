"""Assets of the release domain: what runs where (releases), delivery metrics from the release records,
the health state."""

from datetime import date

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from ultra_ops.defs.release.health import health_state
from ultra_ops.defs.release.health_figures import ENVIRONMENT_HEALTH
from ultra_ops.defs.release.releases import RELEASES_SPEC
from ultra_ops.defs.shared.partitions import environment_days
from ultra_ops.defs.shared.resources import OpsSettings
from ultra_ops.defs.shared.steps import load, step
from ultra_ops.engine.release.metrics import delivery_metrics as compute_delivery_metrics


@asset(
    name="delivery_metrics",
    deps=[RELEASES_SPEC.key],  # computed from the release records: beside releases in the lineage
    partitions_def=environment_days,
    group_name="release",
    owners=["team:ops"],
    description="Deployment frequency, lead time (release commit to deployed), change failure rate and "
    "failed-deployment recovery time of an environment over the 30 days ending with the partition's "
    "day, from ultra_ops's own release records.",
)
def delivery_metrics(context: AssetExecutionContext, settings: OpsSettings) -> MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    loaded = load(settings)
    with step(context.op_execution_context, loaded, keys["environment"]) as s:
        metrics = compute_delivery_metrics(s.env, date.fromisoformat(keys["day"]))
    # window_days is the config's constant: a chart of one value, so it stays in the JSON only.
    numbers = {
        k: v
        for k, v in metrics.to_dict().items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "window_days"
    }
    return MaterializeResult(
        metadata={
            **numbers,
            "table": MetadataValue.md(metrics.table()),
            "metrics": MetadataValue.json(metrics.to_dict()),
        }
    )


RELEASE_ASSETS = [RELEASES_SPEC, delivery_metrics, health_state, *ENVIRONMENT_HEALTH]
