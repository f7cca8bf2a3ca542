"""The daily schedule and the new-file sensor."""

from datetime import UTC, datetime

import dagster as dg

from pipelines.definitions import defs
from pipelines.defs.schedules import daily_at_two, new_raw_files


def test_schedule_runs_daily_at_two_utc_as_of_the_previous_day():
    assert daily_at_two.cron_schedule == "0 2 * * *"
    assert daily_at_two.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 5, 2, 2, 0, tzinfo=UTC))
    request = daily_at_two.evaluate_tick(context).run_requests[0]
    assert request.run_config == {"resources": {"settings": {"config": {"as_of": "2024-05-01"}}}}
    assert request.run_key == "daily-2024-05-01"


def test_schedule_and_sensor_target_the_job_that_runs_everything():
    job = defs.resolve_job_def("loyalty_daily")
    assert daily_at_two.job_name == new_raw_files.job_name == "loyalty_daily"
    assert job.tags.get("dagster/max_retries") == "2"


def test_sensor_requests_a_run_when_files_land(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    (raw / "brevo").mkdir(parents=True)
    monkeypatch.setenv("LOYALTY_RAW_DIR", str(raw))
    with dg.instance_for_test() as instance:
        first = new_raw_files.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert not first.run_requests  # nothing there yet
        (raw / "brevo" / "2024-05-01.ndjson").write_text('{"id": "1"}\n')
        second = new_raw_files.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert len(second.run_requests) == 1
        third = new_raw_files.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=second.cursor))
        assert not third.run_requests  # nothing new
        (raw / "brevo" / "notes.txt").write_text("not an export")
        fourth = new_raw_files.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=second.cursor))
        assert not fourth.run_requests  # not a raw export
        (raw / "brevo" / "2024-05-02.ndjson").write_text('{"id": "2"}\n')
        fifth = new_raw_files.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=second.cursor))
        assert len(fifth.run_requests) == 1


def test_marts_are_dbt_assets_with_tests_as_checks_and_a_freshness_policy():
    graph = defs.resolve_asset_graph()
    marts = {key.path[1] for key in graph.get_all_asset_keys() if key.path[0] == "marts"}
    assert {
        "customer_rfm",
        "rfm_segment_summary",
        "rfm_history",
        "tier_migration",
        "points_redemption",
        "customer_lifetime_value",
        "clv_model_params",
        "order_value_trend",
        "campaign_performance",
        "points_reconciliation",
        "fct_orders",
        "dim_customers",
    } <= marts
    # the marts hang off the canonical, ledger and lifetime-value assets
    upstream = graph.get(dg.AssetKey(["staging", "stg_core__points_ledger"])).parent_keys
    assert dg.AssetKey(["core", "points_ledger"]) in upstream
    rfm_checks = {key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey(["marts", "customer_rfm"])}
    assert any(name.startswith("unique_") for name in rfm_checks)
    policy = graph.get(dg.AssetKey(["marts", "customer_rfm"])).freshness_policy
    assert policy is not None and policy.fail_window.to_timedelta().total_seconds() == 26 * 3600
