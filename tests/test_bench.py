"""`loyalty bench` on a small sample: every stage is timed, the floor is measured, the ratio is written; with
`--daily`, a daily run on the history is timed and compared with the full run table by table."""

import json
import subprocess
import sys
import time

import duckdb
import pytest

from pipelines.bench import STAGES, StageClock, compare_warehouses, split_days
from pipelines.cli import main


def test_bench_writes_every_stage_floor_ratio_and_the_daily_run(tmp_path, capsys):
    out = tmp_path / "figures.json"
    args = ["bench", "--orders", "2000", "--data-dir", str(tmp_path / "data"), "--json", str(out), "--daily"]
    assert main(args) == 0

    figures = json.loads(out.read_text())
    assert [s["name"] for s in figures["stages"]] == list(STAGES)
    assert all(s["wall_s"] > 0 and s["peak_rss_bytes"] > 0 for s in figures["stages"])
    assert figures["floor_s"] > 0
    assert figures["floor_records"] > 0
    assert figures["ratio"] == round(figures["total_s"] / figures["floor_s"], 2)
    assert figures["records"] > 2000  # orders plus their status updates
    table = capsys.readouterr().out
    assert "total / floor" in table and "floor" in table

    daily = figures["daily"]
    assert daily["files"] > 0 and 0 < daily["records"] < figures["records"] / 5
    assert daily["canonical_mode"] == "incremental" and daily["orders_merged"] > 0
    assert daily["ledger_mode"] in ("full", "incremental") and daily["ledger_customers_computed"] > 0
    assert f"ledger {daily['ledger_mode']} ({daily['ledger_customers_computed']:,} customers computed)" in table
    assert [s["name"] for s in daily["stages"]] == list(STAGES)
    assert daily["share_of_rebuild"] == round(daily["total_s"] / figures["total_s"], 3)
    assert daily["tables_compared"] >= 25 and daily["rows_compared"] > 10_000
    assert daily["mismatches"] == []
    assert "identical" in table

    # The generated data is cached by (orders, seed): a second run does not generate again.
    assert (tmp_path / "data" / "orders-2000-seed-42" / "raw.complete").exists()


def test_split_days_takes_the_latest_days_holding_the_share(tmp_path):
    for name, size in [("2026-01-01-a.ndjson", 500), ("2026-01-02-b.csv", 300), ("2026-01-03-c.ndjson", 150)]:
        (tmp_path / "brevo").mkdir(exist_ok=True)
        (tmp_path / "brevo" / name).write_bytes(b"x" * size)
    (tmp_path / "esputnik").mkdir()
    (tmp_path / "esputnik" / "2026-01-03-d.json").write_bytes(b"x" * 50)

    cut, history, daily = split_days(tmp_path, share=0.2)  # 200 of 1000 bytes: the last day holds 200
    assert cut == "2026-01-03"
    assert [p.name for p in history] == ["2026-01-01-a.ndjson", "2026-01-02-b.csv"]
    assert sorted(p.name for p in daily) == ["2026-01-03-c.ndjson", "2026-01-03-d.json"]
    cut, history, daily = split_days(tmp_path, share=0.3)
    assert cut == "2026-01-02" and len(history) == 1 and len(daily) == 3
    cut, history, daily = split_days(tmp_path, share=0.99)  # the first day always stays in the history
    assert cut == "2026-01-02" and len(history) == 1


def _warehouse(path, rows):
    con = duckdb.connect(str(path))
    con.execute("create schema core; create schema marts")
    con.execute("create table core.orders (order_id varchar, net decimal(18,2), run_id varchar)")
    con.executemany("insert into core.orders values (?, ?, ?)", rows)
    con.execute("create table core.canonical_runs (run_id varchar)")
    con.execute(f"insert into core.canonical_runs values ('{path.stem}')")
    con.execute("create table marts.fct_orders as select order_id, net from core.orders")
    con.close()
    return path


def test_compare_warehouses_finds_a_changed_row_and_ignores_run_columns(tmp_path):
    full = _warehouse(tmp_path / "full.duckdb", [("a", 1, "r1"), ("b", 2, "r1"), ("b", 2, "r1")])
    same = _warehouse(tmp_path / "same.duckdb", [("b", 2, "r7"), ("a", 1, "r8"), ("b", 2, "r9")])
    assert compare_warehouses(same, full) == (2, 6, [])
    with duckdb.connect(str(same)) as con:  # a bookkeeping table left out of the comparison: even when absent
        con.execute("drop table core.canonical_runs")
    assert compare_warehouses(same, full) == (2, 6, [])
    assert compare_warehouses(full, same) == (2, 6, [])

    changed = _warehouse(tmp_path / "changed.duckdb", [("a", 1, "r1"), ("b", 2, "r1"), ("b", 3, "r1")])
    tables, rows, mismatches = compare_warehouses(changed, full)
    assert mismatches == [
        "core.orders: 3 rows against 3; 1 not in the full run, 1 missing",
        "marts.fct_orders: 3 rows against 3; 1 not in the full run, 1 missing",
    ]
    fewer = _warehouse(tmp_path / "fewer.duckdb", [("a", 1, "r1"), ("b", 2, "r1")])  # a duplicate row lost
    assert compare_warehouses(fewer, full)[2][0] == "core.orders: 2 rows against 3; 0 not in the full run, 1 missing"


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_split_days_needs_two_days(tmp_path, share):
    (tmp_path / "brevo").mkdir()
    (tmp_path / "brevo" / "2026-01-01-a.ndjson").write_text("{}\n")
    with pytest.raises(ValueError, match="fewer than two days"):
        split_days(tmp_path, share=share)


def test_stage_clock_counts_nested_stages_once():
    """A step timed as a whole while it times its parts: each part counts for itself, the rest of the step
    (its commit, closing the warehouse) for the outer stage, and a part with the outer stage's name once."""
    clock = StageClock()
    with clock("identity"):
        time.sleep(0.05)  # the step's own work: identity's
        with clock("merge"):
            time.sleep(0.2)
        with clock("identity"):
            time.sleep(0.1)
        time.sleep(0.05)  # commit and close
    merge, identity = clock.stages["merge"].wall_s, clock.stages["identity"].wall_s
    assert 0.2 <= merge < 0.3
    assert 0.2 <= identity < 0.3  # 0.05 + 0.1 + 0.05, the merge left out
    assert sum(f.wall_s for f in clock.in_order()) < 0.55  # the whole block, counted once


def test_the_bench_dbt_step_needs_no_dagster(tmp_path):
    """The bench runs dbt itself (`bench.run_dbt`): what it needs of a run's dbt command comes from a plain
    module, so a checkout whose dbt manifest was never parsed (Dagster's dbt assets need one) can still be
    benchmarked. Here dbt itself is not started: the command `run_dbt` would run is recorded instead."""
    code = f"""
import subprocess, sys
from pipelines import bench
from pipelines.rules import load_rules
from pipelines.settings import Settings
commands = []
def record(command, **kwargs):
    commands.append((command, kwargs["env"]))
    return subprocess.CompletedProcess(command, 0)
subprocess.run = record
settings = Settings.resolve(raw_dir={str(tmp_path)!r}, warehouse={str(tmp_path / "w.duckdb")!r}, as_of="2024-01-31")
bench.run_dbt(settings, load_rules(None), __import__("pathlib").Path({str(tmp_path)!r}))
(command, env), = commands
print(command[1], env["LOYALTY_AS_OF"], env["LOYALTY_DUCKDB_VACUUM_TASKS"], [m for m in sys.modules if "dagster" in m])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["build", "2024-01-31", "100", "[]"]


@pytest.mark.parametrize("changed", ["pipelines/step.py", "dbt_project/models/mart.sql"])
def test_figures_from_changed_code_or_dbt_models_are_marked_dirty_and_docs_are_not(tmp_path, monkeypatch, changed):
    from pipelines import bench

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for path in ("pipelines/step.py", "dbt_project/models/mart.sql", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "v1")
    monkeypatch.setattr(bench, "PROJECT_ROOT", tmp_path)
    clean = bench._git_sha()
    assert clean != "unknown" and not clean.endswith("-dirty")
    (tmp_path / "README.md").write_text("v2\n")
    assert bench._git_sha() == clean
    (tmp_path / changed).write_text("v2\n")
    assert bench._git_sha() == clean + "-dirty"
