"""The daily schedule and the new-file sensor."""

from datetime import UTC, datetime

import dagster as dg

from pipelines.defs.schedules import daily_at_two, new_raw_files
from pipelines.definitions import defs


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
