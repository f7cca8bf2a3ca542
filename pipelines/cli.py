"""`loyalty`: the command line of SPEC §7.

Exit codes: 0 success, 1 the run finished with failures (failed checks or a failed step), 2 bad usage
(a missing raw directory, an invalid rules file, a malformed option). Never a raw traceback: errors are
one clear message on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage: reported in one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loyalty", description="Loyalty analytics pipeline.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="materialize every asset in-process and print a summary")
    run.add_argument("--raw-dir", help="raw exports directory (LOYALTY_RAW_DIR; default data/raw)")
    run.add_argument("--warehouse", help="DuckDB file (LOYALTY_WAREHOUSE; default data/warehouse/loyalty.duckdb)")
    run.add_argument("--rules", help="rules YAML file (LOYALTY_RULES; default: the packaged rules)")
    run.add_argument("--as-of", help="as-of date YYYY-MM-DD (LOYALTY_AS_OF; default today, UTC)")
    run.add_argument("--exports-dir", help="segment exports directory (LOYALTY_EXPORTS_DIR; default data/exports)")

    generate = commands.add_parser("generate", help="write realistic sample exports in all three formats")
    generate.add_argument("--orders", type=_positive_int, required=True, help="number of orders")
    generate.add_argument("--customers", type=_positive_int, help="number of customers (default orders / 4)")
    generate.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    generate.add_argument("--out", default="data/raw", help="output directory (default data/raw)")
    export = commands.add_parser("export", help="write an RFM segment as a contact file for an e-mail/SMS tool")
    export.add_argument("--segment", nargs="+", required=True, metavar="NAME", help="segment name(s), e.g. Champions")
    export.add_argument("--format", required=True, choices=["brevo", "esputnik", "klaviyo", "csv"])
    export.add_argument("--out", required=True, help="file to write")
    export.add_argument("--warehouse", help="DuckDB file (LOYALTY_WAREHOUSE; default data/warehouse/loyalty.duckdb)")

    report = commands.add_parser("report", help="write the HTML report and one PNG per chart from the marts")
    report.add_argument("--warehouse", help="DuckDB file (LOYALTY_WAREHOUSE; default data/warehouse/loyalty.duckdb)")
    report.add_argument("--out", help="output directory (default <LOYALTY_REPORTS_DIR or data/reports>/<as-of>)")
    report.add_argument("--as-of", help="as-of date YYYY-MM-DD the marts were built for (default: theirs)")

    bench = commands.add_parser("bench", help="time every stage on N generated orders against a DuckDB floor")
    bench.add_argument("--orders", type=_positive_int, required=True, help="number of orders to generate")
    bench.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    bench.add_argument(
        "--data-dir", default="/tmp/loyalty-bench", help="generated data (cached by orders and seed) and the run"
    )
    bench.add_argument("--json", help="write the figures here (default bench/results/<date>-<commit>-<N>.json)")
    bench.add_argument("--threads", type=_positive_int, help="DuckDB threads of the floor (default: CPU count)")
    bench.add_argument(
        "--skip", nargs="+", choices=["dbt"], default=[], help="leave dbt (and the exports that need it) out"
    )
    bench.add_argument(
        "--daily",
        action="store_true",
        help="also time a daily run (the latest ~1%% of the files added to the rest) and compare it with the full run",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    from pipelines.rules import RulesError, load_rules
    from pipelines.settings import ENV, Settings, SettingsError

    given = {
        "raw_dir": args.raw_dir,
        "warehouse": args.warehouse,
        "rules": args.rules,
        "as_of": args.as_of,
        "exports_dir": args.exports_dir,
    }
    try:
        settings = Settings.resolve(**given)
        rules = load_rules(settings.rules)
    except (SettingsError, RulesError) as exc:
        raise UsageError(str(exc)) from exc
    from pipelines.runs import currencies_without_rate

    missing = currencies_without_rate(settings, rules)
    if missing:
        raise UsageError(
            f"rules file {settings.rules or 'default'}: fx_rates has no rate for {', '.join(missing)}, "
            "which orders in the warehouse use"
        )
    if not settings.raw_dir.is_dir():
        raise UsageError(f"raw directory {settings.raw_dir} does not exist (set --raw-dir or LOYALTY_RAW_DIR)")
    # The assets read their settings from the environment at run time: pass the resolved values on.
    os.environ[ENV["raw_dir"]] = str(settings.raw_dir)
    os.environ[ENV["warehouse"]] = str(settings.warehouse)
    os.environ[ENV["as_of"]] = settings.as_of.isoformat()
    os.environ[ENV["exports_dir"]] = str(settings.exports_dir)
    if settings.rules:
        os.environ[ENV["rules"]] = str(settings.rules)

    from pipelines.orchestration import run_pipeline
    from pipelines.summary import print_summary

    log_path = settings.warehouse.parent / "loyalty-run.log"
    outcome = run_pipeline(log_path=log_path)
    print_summary(settings, rules, outcome)
    from pipelines.publish import docs_path

    for asset, label, path in [
        ("exports/segment_files", "exports", settings.exports_dir / settings.as_of.isoformat()),
        ("reports/loyalty_report", "report", settings.reports_dir / settings.as_of.isoformat() / "report.html"),
        ("docs/dbt_docs", "docs", docs_path(settings.warehouse)),
        ("warehouse/published", "published", settings.published_warehouse),
    ]:
        print(f"{label:<12} {path}" + ("" if asset in outcome.materialized else " (not updated by this run)"))
    print(f"log          {log_path} (dbt's output)")
    return EXIT_OK if outcome.success else EXIT_FAILED


def _cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.generate import generate

    out = Path(args.out)
    try:
        summary = generate(out, orders=args.orders, customers=args.customers, seed=args.seed)
    except FileExistsError as exc:
        raise UsageError(f"{exc} (choose an empty --out directory)") from exc
    total = sum(summary.records_per_source.values())
    print(f"wrote {len(summary.files)} files, {total} records for {args.orders} orders into {out}")
    for source, count in sorted(summary.records_per_source.items()):
        print(f"  {source:<9} {count:>10} records")
    bad = sum(summary.bad_records.values())
    print(f"  {bad} deliberately bad records: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.bad_records.items())))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from pipelines import warehouse
    from pipelines.exports import UnknownSegment, export_segments
    from pipelines.settings import Settings

    settings = Settings.resolve(warehouse=args.warehouse)
    if not settings.warehouse.exists():
        raise UsageError(f"warehouse {settings.warehouse} does not exist: run `loyalty run` first")
    with warehouse.connect(settings.warehouse, read_only=True) as con:
        try:
            result = export_segments(con, args.segment, args.format, Path(args.out))
        except UnknownSegment as exc:
            raise UsageError(str(exc)) from exc
    print(
        f"wrote {result.written} contacts to {result.path} ({args.format}); "
        f"skipped {result.skipped_without_contact} with neither e-mail nor phone"
    )
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from datetime import UTC, date, datetime

    import duckdb

    from pipelines import report, warehouse
    from pipelines.rules import RulesError, load_rules
    from pipelines.settings import Settings, SettingsError

    try:
        settings = Settings.resolve(warehouse=args.warehouse)
        rules = load_rules(settings.rules)
        as_of = date.fromisoformat(args.as_of) if args.as_of else None
    except (SettingsError, RulesError) as exc:
        raise UsageError(str(exc)) from exc
    except ValueError:
        raise UsageError(f"as-of date {args.as_of!r} is not YYYY-MM-DD") from None
    if not settings.warehouse.is_file():
        raise UsageError(f"warehouse {settings.warehouse} does not exist: run `loyalty run` first or set --warehouse")
    try:
        with warehouse.connect(settings.warehouse, read_only=True) as con:
            built_as_of = report.warehouse_as_of(con)
            default_out = settings.reports_dir / str(as_of or built_as_of or datetime.now(UTC).date())
            out = Path(args.out) if args.out else default_out
            if out.exists() and not out.is_dir():
                raise UsageError(f"--out {out} is a file, not a directory")
            result = report.build_report(con, out, as_of, rules=rules)
    except report.ReportError as exc:
        raise UsageError(str(exc)) from exc
    except duckdb.IOException as exc:  # another process (a run) holds the write lock: a failure, not bad usage
        print(
            f"loyalty report: cannot open {settings.warehouse} read-only ({exc}): wait for the run to finish, "
            f"or point --warehouse at the published copy {settings.published_warehouse}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if built_as_of is None:
        print(f"loyalty report: {settings.warehouse} holds no marts yet: every chart says no data", file=sys.stderr)
    print(f"report       {result.html}  (as of {result.as_of})")
    for chart in result.charts:
        print(f"  chart      {chart.png}" + ("  (no data)" if chart.empty else ""))
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from pipelines.bench import default_json_path, format_table, run_bench, write_json

    result = run_bench(
        args.orders,
        seed=args.seed,
        data_dir=Path(args.data_dir),
        threads=args.threads,
        skip=frozenset(args.skip),
        daily=args.daily,
        progress=lambda message: print(f"... {message}", file=sys.stderr, flush=True),
    )
    print(format_table(result))
    path = write_json(result, Path(args.json) if args.json else default_json_path(result))
    print(f"figures      {path}")
    if result.daily is not None and result.daily.mismatches:
        print("loyalty bench: the daily run does not match the full run (see above)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 with usage on a malformed option
    handlers = {
        "run": _cmd_run,
        "generate": _cmd_generate,
        "export": _cmd_export,
        "report": _cmd_report,
        "bench": _cmd_bench,
    }
    try:
        return handlers[args.command](args)
    except UsageError as exc:
        print(f"loyalty {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"loyalty {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the promise is one clear line, never a traceback
        print(f"loyalty {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("LOYALTY_DEBUG"):
            raise
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
