"""The dbt models as Dagster assets (dagster-dbt): dbt tests become asset checks, sources map to `core`."""

import json
import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from pipelines.dbt_run import dbt_env, dbt_vars
from pipelines.defs.resources import LoyaltySettings
from pipelines.settings import DBT_PROJECT_DIR

# dbt lives beside the interpreter in the virtual environment, which need not be on PATH (`.venv/bin/dagster dev`
# from a shell without the venv activated): put it there so that every dbt call, ours and dagster-dbt's, finds it.
_VENV_BIN = str(Path(sys.executable).parent)
if _VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _VENV_BIN + os.pathsep + os.environ.get("PATH", "")

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()  # `dagster dev` re-parses; elsewhere `make setup` has written the manifest

dbt_resource = DbtCliResource(project_dir=dbt_project, dbt_executable=str(Path(_VENV_BIN) / "dbt"))
# One target directory, reused by every run's dbt commands: dagster-dbt would otherwise leave one per command.
DBT_TARGET_PATH = DBT_PROJECT_DIR / "target" / "run"


# The marts should be at most a day old: the schedule runs daily at 02:00 UTC; 26 hours leave slack.
MART_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))


class LoyaltyDbtTranslator(DagsterDbtTranslator):
    """Models are keyed `<schema>/<model>` (e.g. marts/customer_rfm); sources keep `core/<table>`."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if spec.key.path[0] == "marts":
            spec = spec.replace_attributes(freshness_policy=MART_FRESHNESS)
        return spec

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return dbt_resource_props["schema"] if dbt_resource_props["resource_type"] != "source" else None


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=LoyaltyDbtTranslator(),
    retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
)
def loyalty_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: LoyaltySettings):
    """dbt build: staging views, intermediate models and the marts, with their tests."""
    resolved = settings.resolved()
    os.environ.update(dbt_env(resolved.warehouse, resolved.as_of))  # dagster-dbt passes it to the dbt process
    variables = dbt_vars(settings.load_rules())
    # dbt unit tests check the models' logic against fixed inputs and the default vars: they run in `make test`
    # (tests/test_marts.py), not against production data with a shop's own rules.
    args = ["build", "--vars", json.dumps(variables), "--exclude", "resource_type:unit_test"]
    yield from dbt.cli(args, context=context, target_path=DBT_TARGET_PATH).stream()


assets = [loyalty_dbt_models]
resources = {"dbt": dbt_resource}
