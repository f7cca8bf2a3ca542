"""Idempotency and restart (issue #7): a second run on the same inputs changes no row; a run killed at any point
(`kill -9`), followed by a normal run, gives exactly what a clean run gives, and analysts never see it.

Every run here is a real `loyalty run` in a subprocess of its own session, so a kill takes the process group
(the run and the dbt it started) the way a scheduler or an out-of-memory kill does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from pipelines.generate import generate

AS_OF = "2026-10-31"
ORDERS = 1500
# What differs between two runs by design: which run wrote a row, and when. Everything else must be equal.
RUN_COLUMNS = {"run_id", "ingested_at", "first_ingested_at", "last_ingested_at"}


def snapshot(warehouse: Path, *, ignore: set[str] = frozenset()) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent hash of every base table of `core` and `marts`."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        columns: dict[str, list[str]] = {}
        for schema, table, column in con.execute(
            """select c.table_schema, c.table_name, c.column_name
               from information_schema.columns c
               join information_schema.tables t using (table_schema, table_name)
               where c.table_schema in ('core', 'marts') and t.table_type = 'BASE TABLE'
               order by c.table_schema, c.table_name, c.ordinal_position"""
        ).fetchall():
            if column not in ignore:
                columns.setdefault(f"{schema}.{table}", []).append(f'"{column}"')
        result = {}
        for table, cols in columns.items():
            count, digest = con.execute(
                f"select count(*), coalesce(sum(hash({', '.join(cols)})::hugeint), 0)::varchar from {table}"
            ).fetchone()
            result[table] = (count, digest)
        return result


def differences(left: dict, right: dict) -> list[str]:
    tables = sorted(set(left) | set(right))
    return [f"{t}: {left.get(t)} != {right.get(t)}" for t in tables if left.get(t) != right.get(t)]


def start_run(raw: Path, home: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "LOYALTY_RAW_DIR": str(raw),
        "LOYALTY_WAREHOUSE": str(home / "warehouse" / "loyalty.duckdb"),
        "LOYALTY_EXPORTS_DIR": str(home / "exports"),
        "LOYALTY_REPORTS_DIR": str(home / "reports"),
        "LOYALTY_AS_OF": AS_OF,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill below reaches dbt too
    )


def run(raw: Path, home: Path) -> str:
    process = start_run(raw, home)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    return output


def warehouse_of(home: Path) -> Path:
    return home / "warehouse" / "loyalty.duckdb"


def published_of(home: Path) -> Path:
    return home / "warehouse" / "published" / "loyalty.duckdb"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Generated exports arriving in two halves: the warehouse after the first, and the clean result after both."""
    root = tmp_path_factory.mktemp("restart")
    everything = root / "all"
    generate(everything, orders=ORDERS, seed=11)
    files = sorted(p for p in everything.rglob("*") if p.is_file())
    day_one = root / "day_one"
    for path in files[: len(files) // 2]:
        target = day_one / path.relative_to(everything)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)

    after_day_one = root / "after_day_one"
    run(day_one, after_day_one)

    # The clean result: the same two arrivals, nothing killed.
    clean = root / "clean"
    shutil.copytree(after_day_one, clean)
    started = time.monotonic()
    run(everything, clean)
    duration = time.monotonic() - started
    return {
        "all": everything,
        "clean": snapshot(warehouse_of(clean), ignore=RUN_COLUMNS),
        "clean_home": clean,
        "duration": duration,
        "after_day_one": after_day_one,
        "day_one_published": snapshot(published_of(after_day_one), ignore=RUN_COLUMNS),
    }


def test_a_second_run_on_the_same_inputs_changes_no_row(world, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(world["clean_home"], home)
    before = snapshot(warehouse_of(home))  # every column, run ids and timestamps included
    run(world["all"], home)
    assert differences(before, snapshot(warehouse_of(home))) == []


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_a_run_killed_at_any_point_then_run_again_gives_the_clean_result(world, tmp_path, fraction):
    home = tmp_path / "home"
    shutil.copytree(world["after_day_one"], home)
    process = start_run(world["all"], home)
    time.sleep(world["duration"] * fraction)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)

    # What analysts open is whole: the last good run's copy, or this run's if it got as far as publishing.
    published = snapshot(published_of(home), ignore=RUN_COLUMNS)
    assert published in (world["day_one_published"], world["clean"]), differences(world["day_one_published"], published)

    run(world["all"], home)
    assert differences(world["clean"], snapshot(warehouse_of(home), ignore=RUN_COLUMNS)) == []
    assert differences(world["clean"], snapshot(published_of(home), ignore=RUN_COLUMNS)) == []


def test_the_same_records_arriving_in_the_opposite_order_give_the_same_marts(world, tmp_path):
    """Issue #7: order of arrival does not matter. The generated files are renamed so that they are processed
    last-first (the processing order follows paths), in one run; every mart equals the clean result's, but for
    the columns that record which file came last (see tests/test_permutations.py)."""
    from tests.test_permutations import PROCESSING_ORDER_DEPENDENT

    reversed_raw = tmp_path / "raw"
    files = sorted(p for p in world["all"].rglob("*") if p.is_file())
    for rank, path in enumerate(reversed(files)):
        relative = path.relative_to(world["all"])
        target = reversed_raw / relative.parts[0] / f"{rank:05d}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    home = tmp_path / "home"
    run(reversed_raw, home)

    ignore = RUN_COLUMNS | set(PROCESSING_ORDER_DEPENDENT) | {"source_file", "path", "record_locator"}
    ours = snapshot(warehouse_of(home), ignore=ignore)
    clean = snapshot(warehouse_of(world["clean_home"]), ignore=ignore)
    marts = [t for t in clean if t.startswith("marts.")]
    assert marts
    assert differences({t: clean[t] for t in marts}, {t: ours.get(t) for t in marts}) == []
