"""`loyalty bench`: how long each stage of a full run takes on N generated orders, against a floor.

The floor is DuckDB reading and parsing every raw byte once (same thread count as the pipeline's DuckDB): no
pipeline can ingest the files faster than that, so `total ÷ floor` is a machine-independent figure of merit
that can be compared across commits (the JSON written by each run). Wall times on a shared machine are noisy;
the ratio much less so.

Stages run the same functions as the Dagster assets (pipelines/runs.py), through the warehouse, in this order:
read (discover and sha256 the files, split them into records, check each record is one JSON object), validate
(field extraction, the sources' quarantine rules, ids, writing core.order_events / quarantine / ingest_files),
merge (events → orders and lines), identity (customers, the canonical tables written), ledger, CLV (before dbt:
the lifetime-value mart reads it), dbt (`dbt build` in a subprocess, as dagster-dbt runs it) and exports (every
segment in every format). Dagster's own step overhead is not included.

Peak RSS per stage: the process's high-water mark (VmHWM), reset before each stage (/proc/self/clear_refs);
for dbt, the child process's peak (RUSAGE_CHILDREN). Where the reset is not allowed, a sampling thread.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pipelines.settings import DBT_PROJECT_DIR, PROJECT_ROOT

STAGES = ("read", "validate", "merge", "identity", "ledger", "clv", "dbt", "exports")
DEFAULT_DATA_DIR = Path("/tmp/loyalty-bench")
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


@dataclass
class StageFigures:
    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system, every thread, and child processes (dbt): steadier than wall time
    peak_rss_bytes: int = 0
    rows: int = 0
    rows_label: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class BenchResult:
    orders: int
    seed: int
    git_sha: str
    started_at: str
    threads: int
    cpus: int
    duckdb_version: str
    raw_files: int
    raw_bytes: int
    records: int
    stages: list[StageFigures]
    floor_s: float
    floor_cpu_s: float
    floor_records: int
    total_s: float = 0.0
    total_cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    generate_s: float | None = None
    notes: list[str] = field(default_factory=list)
    daily: DailyResult | None = None

    @property
    def ratio(self) -> float:
        return self.total_s / self.floor_s if self.floor_s > 0 else float("inf")

    @property
    def cpu_ratio(self) -> float:
        return self.total_cpu_s / self.floor_cpu_s if self.floor_cpu_s > 0 else float("inf")

    def to_json(self) -> dict:
        out = asdict(self)
        out["stages"] = _stages_json(self.stages)
        out["ratio"] = round(self.ratio, 2)
        out["cpu_ratio"] = round(self.cpu_ratio, 2)
        out["total_rows_per_s"] = round(self.records / self.total_s, 1) if self.total_s else 0.0
        out["daily"] = self.daily.to_json() if self.daily else None
        return out


def _stages_json(stages: list[StageFigures]) -> list[dict]:
    return [{**asdict(s), "rows_per_s": round(s.rows_per_s, 1)} for s in stages]


# ---------------------------------------------------------------------------------------------- memory


def _status_kib(field_name: str, pid: str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class _Sampler:
    """Polls VmRSS where the high-water mark cannot be reset."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak_kib = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))


class StageClock:
    """Accumulates wall time and peak RSS per stage name (a stage may be entered more than once).

    Stages nest: a stage entered inside another counts for itself only, and the outer one keeps the rest of its
    time. So a whole step can be timed as its writing stage while the step times its parts: its commit and the
    closing of the warehouse (DuckDB's checkpoint) are counted too, not left between stages.
    """

    def __init__(self) -> None:
        self.stages: dict[str, StageFigures] = {name: StageFigures(name) for name in STAGES}
        self._open: list[StageFigures] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[StageFigures]:
        figures = self.stages.setdefault(name, StageFigures(name))
        outer = self._open[-1] if self._open else None
        if outer is not None:  # its peak so far, before this stage resets the high-water mark
            outer.peak_rss_bytes = max(outer.peak_rss_bytes, _status_kib("VmHWM") * 1024)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        resettable = _reset_high_water_mark()
        start, cpu_start = time.perf_counter(), cpu_seconds()
        self._open.append(figures)
        try:
            with contextlib.ExitStack() as stack:
                sampler = None if resettable else stack.enter_context(_Sampler())
                yield figures
        finally:
            self._open.pop()
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        figures.wall_s += wall
        figures.cpu_s += cpu
        if outer is not None:  # the outer stage's own time excludes this one (nothing changes when they are one)
            outer.wall_s -= wall
            outer.cpu_s -= cpu
        peak_kib = _status_kib("VmHWM") if resettable else sampler.peak_kib  # type: ignore[union-attr]
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if children_after > children_before:  # a child (dbt) reached a new high during this stage
            peak_kib = max(peak_kib, children_after)
        figures.peak_rss_bytes = max(figures.peak_rss_bytes, peak_kib * 1024)

    def in_order(self, skip: frozenset[str] = frozenset()) -> list[StageFigures]:
        """The stages run, in pipeline order (any other stage name last)."""
        ordered = [self.stages[name] for name in STAGES if name not in skip]
        return ordered + [f for name, f in self.stages.items() if name not in STAGES]


# ---------------------------------------------------------------------------------------------- data


def dataset_dir(data_dir: Path, orders: int, seed: int) -> Path:
    return Path(data_dir) / f"orders-{orders}-seed-{seed}"


def ensure_data(data_dir: Path, orders: int, seed: int) -> tuple[Path, float | None]:
    """The raw directory of N generated orders, generated once per (N, seed); seconds spent generating."""
    from pipelines.generate import generate

    root = dataset_dir(data_dir, orders, seed)
    raw, done = root / "raw", root / "raw.complete"
    if done.exists():
        return raw, None
    shutil.rmtree(raw, ignore_errors=True)
    start = time.perf_counter()
    generate(raw, orders=orders, seed=seed)
    elapsed = time.perf_counter() - start
    done.write_text(f"generated {orders} orders with seed {seed} in {elapsed:.1f} s\n")
    return raw, elapsed


# ---------------------------------------------------------------------------------------------- floor


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return name.rsplit(".", 1)[-1]


def _csv_header(path: Path) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:  # type: ignore[operator]
        return handle.readline().removeprefix("\ufeff").rstrip("\r\n")


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def floor_seconds(paths: list[Path], threads: int) -> tuple[float, float, int]:
    """DuckDB reading and parsing every raw file once: JSON documents parsed (yyjson), CSV rows split into
    their columns, each value hashed so that nothing is skipped. One query per file format (per CSV header,
    so that no per-file sniffing counts). Returns (wall seconds, CPU seconds, records)."""
    import duckdb

    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in paths:
        kind = _kind(path)
        if kind == "csv":
            groups[("csv", _csv_header(path))].append(str(path))
        else:
            groups[("ndjson" if kind in ("ndjson", "jsonl") else "json", "")].append(str(path))
    con = duckdb.connect()
    try:
        con.execute(f"set threads = {int(threads)}")
        con.execute("set enable_progress_bar = false")
        start, cpu_start = time.perf_counter(), cpu_seconds()
        records = 0
        for (kind, header), files in sorted(groups.items()):
            if kind == "ndjson":
                query = (
                    "select count(*), sum(hash(json)) from "
                    "read_json_objects(?, format = 'newline_delimited', ignore_errors = true)"
                )
            elif kind == "json":
                query = (
                    "select count(*), sum(hash(json)) from read_json_objects(?, format = 'auto', ignore_errors = true)"
                )
            else:
                names = next(csv.reader([header])) if header else []
                if not names:
                    continue
                columns = "{" + ", ".join(f"{_sql_text(n)}: 'VARCHAR'" for n in names) + "}"
                query = (
                    "select count(*), sum(hash(columns(*))) from read_csv(?, header = true, auto_detect = false, "
                    f"delim = ',', quote = '\"', escape = '\"', columns = {columns}, "
                    "ignore_errors = true, strict_mode = false, null_padding = true)"
                )
            records += con.execute(query, [files]).fetchone()[0]
        return time.perf_counter() - start, cpu_seconds() - cpu_start, records
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------- stages


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            # what the bench runs: the Python steps and the dbt project (the figures, not the docs, are its)
            ["git", "status", "--porcelain", "--untracked-files=no", "pipelines", "dbt_project"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_dbt(settings, rules, work: Path) -> None:
    """`dbt build` as the dbt asset runs it (same vars, no unit tests), in its own process."""
    from pipelines.dbt_run import dbt_env, dbt_vars

    dbt = Path(sys.executable).parent / "dbt"
    variables = dbt_vars(rules)
    env = {**os.environ, **dbt_env(settings.warehouse, settings.as_of), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    log_file = work / "dbt.log"
    command = [
        str(dbt),
        "build",
        "--vars",
        json.dumps(variables),
        "--exclude",
        "resource_type:unit_test",
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(work / "dbt-target"),
        "--log-path",
        str(work / "dbt-logs"),
    ]
    with log_file.open("w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"dbt build failed (exit {done.returncode}); see {log_file}:\n{tail}")


def run_bench(
    orders: int,
    *,
    seed: int = 42,
    data_dir: Path = DEFAULT_DATA_DIR,
    threads: int | None = None,
    skip: frozenset[str] = frozenset(),
    daily: bool = False,
    progress=None,
) -> BenchResult:
    """Generate (once) and run every stage on N generated orders in a fresh warehouse; then the floor.

    `skip` may hold `dbt` (and then `exports`, which read the marts): the total then leaves them out, and the
    notes say so. `daily` adds the daily run (see `run_daily`), compared with this full run.
    """
    import duckdb

    from pipelines.generate import DEFAULT_END_DATE
    from pipelines.reading import discover_files
    from pipelines.rules import load_rules

    say = progress or (lambda message: None)
    threads = threads or os.cpu_count() or 1
    started = datetime.now(UTC)
    say(f"data: {orders} orders (seed {seed}) under {data_dir}")
    raw, generate_s = ensure_data(data_dir, orders, seed)
    work = dataset_dir(data_dir, orders, seed) / "run"
    shutil.rmtree(work, ignore_errors=True)
    rules = load_rules(None)
    skip = frozenset(skip) | ({"exports"} if "dbt" in skip else frozenset())
    clock = StageClock()
    outcome = run_pipeline(raw, work, DEFAULT_END_DATE, rules, clock, skip, say)

    say("floor (DuckDB reads every raw file once)")
    files, _ = discover_files(raw)
    floor_s, floor_cpu_s, floor_records = floor_seconds([f.path for f in files], threads)

    stages = clock.in_order(skip)
    result = BenchResult(
        orders=orders,
        seed=seed,
        git_sha=_git_sha(),
        started_at=started.isoformat(timespec="seconds"),
        threads=threads,
        cpus=os.cpu_count() or 1,
        duckdb_version=duckdb.__version__,
        raw_files=len(files),
        raw_bytes=sum(f.size_bytes for f in files),
        records=outcome.records_read,
        stages=stages,
        floor_s=floor_s,
        floor_cpu_s=floor_cpu_s,
        floor_records=floor_records,
        total_s=sum(s.wall_s for s in stages),
        total_cpu_s=sum(s.cpu_s for s in stages),
        peak_rss_bytes=max(s.peak_rss_bytes for s in stages),
        generate_s=generate_s,
        notes=[
            f"ledger entries {outcome.ledger_entries}, customers {outcome.customers}, "
            f"quarantined {outcome.records_quarantined}",
            *([f"skipped: {', '.join(sorted(skip))} (not in the total)"] if skip else []),
        ],
    )
    if daily:
        result.daily = run_daily(raw, work, dataset_dir(data_dir, orders, seed) / "daily", result, rules, skip, say)
    return result


@dataclass
class PipelineOutcome:
    records_read: int
    records_quarantined: int
    customers: int
    ledger_entries: int
    canonical_mode: str
    orders_merged: int
    ledger_mode: str
    ledger_customers_computed: int


def run_pipeline(raw: Path, work: Path, as_of: date, rules, clock: StageClock, skip, say) -> PipelineOutcome:
    """Every stage over `raw` into the warehouse under `work` (kept if it exists: a later run is incremental)."""
    from pipelines import runs, warehouse
    from pipelines.exports import FORMATS, export_all_segments
    from pipelines.settings import Settings

    work.mkdir(parents=True, exist_ok=True)
    settings = Settings.resolve(
        raw_dir=str(raw),
        warehouse=str(work / "loyalty.duckdb"),
        as_of=_as_of(as_of),
        exports_dir=str(work / "exports"),
    )
    figures = clock.stages

    def done(*names: str) -> None:
        for name in names:
            f = figures[name]
            say(f"  {name:<9} {f.wall_s:8.1f} s wall {f.cpu_s:8.1f} s CPU {_size(f.peak_rss_bytes):>9}")

    say(f"ingest (read, validate) as of {as_of}")
    with clock("validate"):  # what ingest does outside its stages (the last commit, closing) is validate's
        report = runs.ingest(settings, rules, run_id=f"bench-{as_of}", stage=clock)
    figures["read"].rows, figures["read"].rows_label = report.records_read, "records"
    figures["validate"].rows, figures["validate"].rows_label = report.records_read, "records"
    done("read", "validate")
    say("canonical (merge, identity)")
    with clock("identity"):  # likewise, the commit of the canonical tables and closing are identity's
        canonical = runs.rebuild_canonical(settings, rules, stage=clock)
    figures["merge"].rows, figures["merge"].rows_label = report.records_accepted, "events"
    figures["identity"].rows, figures["identity"].rows_label = canonical.orders, "orders"
    done("merge", "identity")
    say("ledger")
    with clock("ledger"):
        points = runs.compute_points(settings, rules)
    figures["ledger"].rows, figures["ledger"].rows_label = canonical.orders, "orders"
    done("ledger")
    say("lifetime value")
    with clock("clv"):
        clv = runs.fit_lifetime_value(settings, rules)
    figures["clv"].rows, figures["clv"].rows_label = clv.customers, "customers"
    done("clv")
    if "dbt" not in skip:
        say("dbt build")
        with clock("dbt"):
            run_dbt(settings, rules, work)
        figures["dbt"].rows, figures["dbt"].rows_label = canonical.orders, "orders"
        done("dbt")
    if "exports" not in skip:
        say("exports")
        with clock("exports"), warehouse.connect(settings.warehouse, read_only=True) as con:
            # what the pipeline's exports asset writes: every segment in every format
            files = export_all_segments(con, settings.exports_dir / settings.as_of.isoformat())
            written = sum(files.contacts.values()) * len(FORMATS)
        figures["exports"].rows, figures["exports"].rows_label = written, "contacts"
        done("exports")
    return PipelineOutcome(
        records_read=report.records_read,
        records_quarantined=report.records_quarantined,
        customers=canonical.customers,
        ledger_entries=points.entries,
        canonical_mode=canonical.mode,
        orders_merged=canonical.orders_merged,
        ledger_mode=points.mode,
        ledger_customers_computed=points.customers_computed,
    )


# ---------------------------------------------------------------------------------------------- daily run

DAILY_SHARE = 0.01  # the daily run adds the latest files holding about this share of the raw bytes
RUN_COLUMNS = ("run_id", "ingested_at", "first_ingested_at", "last_ingested_at")  # say when, not what
# canonical_runs lists run ids; raw_file_hashes holds the files' times (a hard link changes a file's ctime);
# ledger_changes numbers the ledger's computations, and the records of the tables incremental by customer
# (macros/incremental_by_customer.sql) hold run ids and those numbers
UNCOMPARED_TABLES = {
    ("core", "canonical_runs"),
    ("core", "raw_file_hashes"),
    ("core", "ledger_changes"),
    ("intermediate", "fct_orders__built"),
    ("intermediate", "fct_orders__runs"),
    ("intermediate", "points_reconciliation__built"),
    ("intermediate", "points_reconciliation__runs"),
    ("intermediate", "int_orders_delivered__built"),
    ("intermediate", "int_orders_delivered__runs"),
}


@dataclass
class DailyResult:
    cut_day: str  # files of this day and later are the daily run's
    history_as_of: str
    as_of: str
    files: int
    raw_bytes: int
    records: int
    canonical_mode: str
    orders_merged: int
    ledger_mode: str
    ledger_customers_computed: int
    stages: list[StageFigures]
    total_s: float
    total_cpu_s: float
    peak_rss_bytes: int
    full_total_s: float
    tables_compared: int
    rows_compared: int
    mismatches: list[str]

    @property
    def share_of_rebuild(self) -> float:
        return self.total_s / self.full_total_s if self.full_total_s > 0 else float("inf")

    def to_json(self) -> dict:
        out = asdict(self)
        out["stages"] = _stages_json(self.stages)
        out["share_of_rebuild"] = round(self.share_of_rebuild, 3)
        return out


def split_days(raw: Path, share: float = DAILY_SHARE) -> tuple[str, list[Path], list[Path]]:
    """Split the raw files by the day their names start with (YYYY-MM-DD): the latest days holding about `share`
    of the bytes (one day at least) are the daily files. Returns (first daily day, history files, daily files)."""
    files = sorted(p for p in raw.rglob("*") if p.is_file())
    by_day: dict[str, int] = defaultdict(int)
    for p in files:
        by_day[p.name[:10]] += p.stat().st_size
    days = sorted(by_day)
    if len(days) < 2:
        raise ValueError(f"{raw}: the files span fewer than two days; nothing to split")
    target, size, cut = share * sum(by_day.values()), 0, days[-1]
    for day in reversed(days[1:]):
        size += by_day[day]
        cut = day
        if size >= target:
            break
    history = [p for p in files if p.name[:10] < cut]
    return cut, history, [p for p in files if p.name[:10] >= cut]


def _link(paths: list[Path], source: Path, target: Path) -> None:
    for path in paths:
        to = target / path.relative_to(source)
        to.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, to)
        except OSError:
            shutil.copyfile(path, to)


def run_daily(raw: Path, full_work: Path, root: Path, full: BenchResult, rules, skip, say) -> DailyResult:
    """A daily run on a history, compared with the full run.

    History: the files before the cut day (see `split_days`), run as of the day before the cut. Daily: the cut
    day's files and later added, run as of the full run's date: this run is timed. Its warehouse must then hold
    exactly what the full run's does, table for table, row for row (columns that say when a run happened
    aside).
    """
    from pipelines.generate import DEFAULT_END_DATE

    shutil.rmtree(root, ignore_errors=True)
    cut, history, new = split_days(raw)
    history_as_of = date.fromisoformat(cut) - timedelta(days=1)
    daily_raw, work = root / "raw", root / "run"
    _link(history, raw, daily_raw)
    say(f"daily: history = files before {cut} ({len(history)} files), as of {history_as_of}")
    run_pipeline(daily_raw, work, history_as_of, rules, StageClock(), skip, say)
    _link(new, raw, daily_raw)
    say(f"daily: the run adding {len(new)} files from {cut} on, as of {DEFAULT_END_DATE}")
    clock = StageClock()
    outcome = run_pipeline(daily_raw, work, DEFAULT_END_DATE, rules, clock, skip, say)
    say("daily: comparing every table with the full run's")
    tables, rows, mismatches = compare_warehouses(work / "loyalty.duckdb", full_work / "loyalty.duckdb")
    stages = clock.in_order(skip)
    return DailyResult(
        cut_day=cut,
        history_as_of=history_as_of.isoformat(),
        as_of=DEFAULT_END_DATE.isoformat(),
        files=len(new),
        raw_bytes=sum(p.stat().st_size for p in new),
        records=outcome.records_read,
        canonical_mode=outcome.canonical_mode,
        orders_merged=outcome.orders_merged,
        ledger_mode=outcome.ledger_mode,
        ledger_customers_computed=outcome.ledger_customers_computed,
        stages=stages,
        total_s=sum(s.wall_s for s in stages),
        total_cpu_s=sum(s.cpu_s for s in stages),
        peak_rss_bytes=max(s.peak_rss_bytes for s in stages),
        full_total_s=full.total_s,
        tables_compared=tables,
        rows_compared=rows,
        mismatches=mismatches,
    )


def compare_warehouses(got: Path, expected: Path) -> tuple[int, int, list[str]]:
    """Every table of `expected` (core, intermediate, marts) against `got`'s, as multisets of rows (row order
    carries no meaning), leaving out RUN_COLUMNS. Returns (tables, rows compared, one line per difference).
    Tables whose multiset digests agree are taken as equal (a 64-bit row hash: a difference slipping through
    would need hash sums and xors that collide on both)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"attach {_sql_text(str(got))} as got (read_only)")
        con.execute(f"attach {_sql_text(str(expected))} as expected (read_only)")
        listing = """
            select table_schema, table_name, list(column_name order by ordinal_position)
            from information_schema.columns c
            where table_catalog = ? and table_schema in ('core', 'intermediate', 'marts')
              and (table_schema, table_name) in (
                select (table_schema, table_name) from information_schema.tables
                where table_catalog = ? and table_type = 'BASE TABLE')
            group by all order by 1, 2
        """
        want = {(s, t): cols for s, t, cols in con.execute(listing, ["expected", "expected"]).fetchall()}
        have = {(s, t): cols for s, t, cols in con.execute(listing, ["got", "got"]).fetchall()}
        mismatches = [f"{s}.{t}: missing" for s, t in sorted(set(want) - set(have) - UNCOMPARED_TABLES)]
        mismatches += [f"{s}.{t}: not in the full run" for s, t in sorted(set(have) - set(want) - UNCOMPARED_TABLES)]
        tables = rows = 0
        for (schema, table), columns in sorted(want.items()):
            if (schema, table) in UNCOMPARED_TABLES or (schema, table) not in have:
                continue
            if have[(schema, table)] != columns:
                mismatches.append(f"{schema}.{table}: columns differ")
                continue
            kept = ", ".join(f'"{c}"' for c in columns if c not in RUN_COLUMNS)
            a = f"select {kept} from got.{schema}.{table}"
            b = f"select {kept} from expected.{schema}.{table}"
            # A multiset digest first (count, sum and xor of a 64-bit hash of each row: streamed, no spill); the
            # rows are set against each other only when the digests differ. At 10M orders, `except all` over
            # every table spilled more than the disk held.
            digest = f"select count(*), sum(hash({kept}))::hugeint, bit_xor(hash({kept})) from {{}}.{schema}.{table}"
            d_got, d_expected = (con.execute(digest.format(x)).fetchone() for x in ("got", "expected"))
            n_got, n_expected = d_got[0], d_expected[0]
            tables, rows = tables + 1, rows + n_expected
            if d_got == d_expected:
                continue
            extra = con.execute(f"select count(*) from ({a} except all {b})").fetchone()[0]
            lacking = con.execute(f"select count(*) from ({b} except all {a})").fetchone()[0]
            if extra or lacking or n_got != n_expected:
                mismatches.append(
                    f"{schema}.{table}: {n_got} rows against {n_expected}; {extra} not in the full run, "
                    f"{lacking} missing"
                )
        return tables, rows, mismatches
    finally:
        con.close()


def _as_of(day: date) -> str:
    return day.isoformat()


# ---------------------------------------------------------------------------------------------- output


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def format_table(result: BenchResult) -> str:
    lines = [
        f"loyalty bench: {result.orders:,} orders, {result.records:,} records in {result.raw_files:,} files "
        f"({_size(result.raw_bytes)}), {result.threads} threads, commit {result.git_sha}",
        "",
        f"{'stage':<10} {'wall s':>9} {'CPU s':>9} {'peak RSS':>10} {'rows':>12} {'rows/s':>12}  unit",
    ]
    for s in result.stages:
        lines.append(
            f"{s.name:<10} {s.wall_s:>9.1f} {s.cpu_s:>9.1f} {_size(s.peak_rss_bytes):>10} {s.rows:>12,} "
            f"{s.rows_per_s:>12,.0f}  {s.rows_label}"
        )
    lines += [
        f"{'total':<10} {result.total_s:>9.1f} {result.total_cpu_s:>9.1f} {_size(result.peak_rss_bytes):>10} "
        f"{result.records:>12,} {result.records / result.total_s if result.total_s else 0:>12,.0f}  records",
        f"{'floor':<10} {result.floor_s:>9.1f} {result.floor_cpu_s:>9.1f} {'':>10} {result.floor_records:>12,} "
        f"{result.floor_records / result.floor_s if result.floor_s else 0:>12,.0f}  records (DuckDB, every byte once)",
        "",
        f"total / floor = {result.ratio:.1f}x wall, {result.cpu_ratio:.1f}x CPU; "
        f"peak RSS {_size(result.peak_rss_bytes)}",
    ]
    d = result.daily
    if d is not None:
        lines += [
            "",
            f"daily run: {d.files:,} files ({_size(d.raw_bytes)}) from {d.cut_day} on, added to the history as of "
            f"{d.history_as_of}; {d.records:,} records; canonical tables {d.canonical_mode} "
            f"({d.orders_merged:,} orders merged); ledger {d.ledger_mode} "
            f"({d.ledger_customers_computed:,} customers computed)",
        ]
        for s in d.stages:
            lines.append(f"{s.name:<10} {s.wall_s:>9.1f} {s.cpu_s:>9.1f} {_size(s.peak_rss_bytes):>10}")
        lines += [
            f"{'total':<10} {d.total_s:>9.1f} {d.total_cpu_s:>9.1f} {_size(d.peak_rss_bytes):>10}",
            f"daily / full run = {d.share_of_rebuild:.1%} of the wall time",
            f"compared with the full run: {d.tables_compared} tables, {d.rows_compared:,} rows: "
            + ("identical" if not d.mismatches else f"{len(d.mismatches)} differ"),
            *(f"  {m}" for m in d.mismatches),
        ]
    return "\n".join(lines)


def default_json_path(result: BenchResult) -> Path:
    day = result.started_at[:10]
    return RESULTS_DIR / f"{day}-{result.git_sha}-{result.orders}.json"


def write_json(result: BenchResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path
