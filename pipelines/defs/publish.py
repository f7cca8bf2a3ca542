"""What a run hands to readers: dbt docs, and the read-only warehouse copy with its Parquet marts (issue #5)."""

import json
import os
from collections.abc import Sequence

import dagster as dg
from dagster_dbt import DbtCliResource

from pipelines import publish
from pipelines.dbt_run import dbt_env, dbt_vars
from pipelines.defs.dbt import DBT_TARGET_PATH, loyalty_dbt_models
from pipelines.defs.resources import LoyaltySettings

DBT_DOCS = dg.AssetKey(["docs", "dbt_docs"])
PUBLISHED = dg.AssetKey(["warehouse", "published"])


@dg.asset(key=DBT_DOCS, deps=list(loyalty_dbt_models.keys), group_name="publish", kinds={"dbt", "html"})
def dbt_docs(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: LoyaltySettings) -> dg.MaterializeResult:
    """dbt docs of the marts as one self-contained page, <warehouse dir>/docs/index.html."""
    resolved = settings.resolved()
    os.environ.update(dbt_env(resolved.warehouse, resolved.as_of))
    variables = dbt_vars(settings.load_rules())
    # The build just compiled every model into the shared target directory: reuse its manifest, only add the catalog.
    args = ["docs", "generate", "--static", "--no-compile", "--vars", json.dumps(variables)]
    dbt.cli(args, target_path=DBT_TARGET_PATH).wait()
    target = publish.docs_path(resolved.warehouse)
    size = publish.ship_docs(DBT_TARGET_PATH / "static_index.html", target)
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(target)), "bytes": size})


def published_warehouse(after: Sequence[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    """The publishing asset, downstream of every asset in `after`: a failed step or blocking check upstream skips it.

    `dagster/priority` puts it behind non-blocking checks that become ready at the same time, so it runs last.
    """
    upstream = sorted({key for assets_def in after for key in assets_def.keys}, key=lambda key: key.path)

    @dg.asset(
        key=PUBLISHED,
        deps=upstream,
        group_name="publish",
        kinds={"duckdb", "parquet"},
        op_tags={"dagster/priority": "-10"},
    )
    def published(context: dg.AssetExecutionContext, settings: LoyaltySettings) -> dg.MaterializeResult:
        """Read-only warehouse copy and Parquet marts for analysts, swapped in atomically after a successful run."""
        resolved = settings.resolved()
        result = publish.publish(resolved.warehouse, resolved.published_warehouse, resolved.published_parquet_dir)
        context.log.info(f"published {result.path} ({result.size_bytes} bytes) and {len(result.rows)} Parquet marts")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(result.path)),
                "parquet_dir": dg.MetadataValue.path(str(result.parquet_dir)),
                "bytes": result.size_bytes,
                "mart_rows": dg.MetadataValue.json(result.rows),
            }
        )

    return published


assets = [dbt_docs]
